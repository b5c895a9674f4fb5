"""The closed-form model of a set of blocks, fitted by EM [design 2].

:class:`ClosedFormModel` is the fitted object behind both estimators:
:class:`~sklearn_calmrl.MultiViewPPCA` fits one on the standardized blocks
(:meth:`ClosedFormModel.fit`: EM, the local correction's stored rows [design 2.9],
the cross-fitted weights of the imputations [design 2.11] and the variance explained
[design 2.12]) and completes blocks with it (:meth:`ClosedFormModel.complete`);
:class:`~sklearn_calmrl.CalMRLTransformer` holds such a ``MultiViewPPCA`` for its
blocks, and its training loop fits a second one, without stored rows or weights, on
the encoders' representations (:meth:`ClosedFormModel.initialise`,
:meth:`ClosedFormModel.refresh`). Both kinds of latent model (one linear-Gaussian
model, a mixture of them) are reached through the latent-model protocol
[design 2.13] only.

References ``[design x.y]`` point into ``doc/design.rst``.
"""

import copy
import time
from typing import NamedTuple

import torch
from sklearn.exceptions import ConvergenceWarning

from ._chunks import chunk_rows
from ._latent import (
    CentreCache,
    RunningStatistics,
    calibrated,
    chunked_statistics,
    concat_centres,
    fit_em,
    init_mixture,
    init_params,
    local_corrections,
    log_likelihood,
    m_step,
    predictive_variance,
    representatives,
    training_centres,
    variance_explained,
)
from ._modalities import linking_rows
from ._persistence import plain, unplain
from ._streams import Seeded, init_rows
from ._utils import warn

__all__ = ["ClosedFormModel", "Completion", "finite", "principal_axes", "resolve_latent_dim"]

CENTRE_POOL = 4096  # training rows (and rows of each partial_fit chunk) the stored rows are chosen from [design 2.9]
MAX_CENTRES = 256  # weighted stored rows of the local correction: bounds its cost per imputed row [design 2.9]
COMPONENT_CANDIDATES = (1, 2, 4, 8, 16)  # n_components='auto' [design 2.8]
CROSS_FIT_ITER = 50  # EM steps of each half-sample model of the cross-fitted imputation weights [design 2.11]
CROSS_FIT_QUERIES = 1024  # held-out imputations per half-sample model (drawn at random beyond that) [design 2.11]
EXACT_SVD_WIDTH = 1024  # principal axes of a block by an exact SVD up to this many rows or columns, else randomized [design 5.1]



def resolve_latent_dim(latent_dim, n_linking, width):
    """``latent_dim``, or for ``'auto'`` ``clip(n_linking // 8, 4, 32)`` below the total width [design 2.10].

    ``n_linking`` counts the rows that observe at least two modalities (all rows
    with one modality): they are what estimates the cross-modality loadings.
    """
    if latent_dim != "auto":
        if latent_dim > width:
            raise ValueError(
                f"latent_dim={latent_dim} is larger than the {width} feature(s) of X in all blocks together: the "
                f"shared latent cannot have more dimensions than the data (use latent_dim <= {width} or 'auto')."
            )
        return int(latent_dim)
    return int(max(1, min(max(4, n_linking // 8), 32, width - 1)))


def principal_axes(B, width, generator, exact_below=EXACT_SVD_WIDTH):
    """The ``width`` leading principal axes ``(d, width)`` of the rows ``B`` (n, d) of one standardized block, or None
    when the block has at most ``width`` columns (or ``width`` is None) [design 5.1].

    The rows are centred on their mean. An exact SVD up to ``exact_below`` rows or columns, else a randomized
    one (Halko, Martinsson & Tropp 2011: a Gaussian test matrix from ``generator``, 4 power iterations, 16 extra
    columns). Each axis's sign makes its largest loading positive, so that the axes do not depend on the LAPACK
    build. Axes beyond the rank of the centred rows (fewer rows than ``width``) are zero.
    """
    n, d = B.shape
    if width is None or d <= width:
        return None
    A = B - B.mean(dim=0)
    if min(n, d) <= exact_below:
        _, S, Vh = torch.linalg.svd(A, full_matrices=False)
        V = Vh.T
    else:
        Q = A.T @ torch.randn(n, width + 16, generator=generator, dtype=A.dtype).to(A.device)  # range of A^T
        for _ in range(4):
            Q = A.T @ (A @ torch.linalg.qr(Q).Q)
        Q = torch.linalg.qr(Q).Q  # (d, width + 16), an orthonormal basis of the dominant row space
        _, S, Vh = torch.linalg.svd(A @ Q, full_matrices=False)
        V = Q @ Vh.T
    rank = int((S > S[:1] * max(n, d) * torch.finfo(A.dtype).eps).sum()) if S.numel() else 0
    V = V[:, : min(width, rank)]
    if V.shape[1] < width:  # fewer rows (or a lower rank) than axes: the rest are zero
        V = torch.cat([V, V.new_zeros(d, width - V.shape[1])], dim=1)
    signs = torch.sign(V.gather(0, V.abs().argmax(dim=0, keepdim=True)))
    return V * torch.where(signs == 0, 1.0, signs)


def finite(*values):
    """True when every tensor, float or module parameter given is finite (one host sync)."""
    flags = []
    for v in values:
        if isinstance(v, torch.nn.Module):
            flags += [torch.isfinite(p).all() for p in v.parameters()]
        elif torch.is_tensor(v):
            flags.append(torch.isfinite(v).all())
        else:
            flags.append(torch.isfinite(torch.tensor(float(v))))
    return bool(torch.stack(flags).all()) if flags else True


class Completion(NamedTuple):
    """What every chunk of one inference call reads from a model of the blocks (:meth:`ClosedFormModel.completion`)."""

    params: object  # the latent model, float64 on the device
    centres: object  # the stored rows of the local correction (Centres) [design 2.9], or None
    cache: object  # CentreCache of those stored rows, or None
    weights: object  # the cross-fitted weights of the imputed blocks [design 2.11], or None
    variance_scales: object  # the cross-fitted factors of their predictive variances [design 2.11], or None
    axes: object  # per block, its leading principal axes (d_m, max_block_width) or None: the output's width [design 5.1]


class ClosedFormModel(Seeded):
    """A latent model of a set of blocks, fitted by EM in closed form [design 2].

    Parameters
    ----------
    latent_dim : int or 'auto'
    n_components : int or 'auto'
    noise : {'isotropic', 'diagonal'}
    max_iter : int
        EM steps of :meth:`fit` (and of the mixture start of :meth:`initialise`).
    tol : float
        EM stops when the mean per-row log-likelihood gains less than this.
    local_bandwidth : float or None
        ``h`` of the local correction [design 2.9]; None keeps no stored rows.
    max_block_width : int or None
        A block wider than this is given (:meth:`compact`) as its scores on this
        many leading principal axes [design 5.1]; None keeps every block whole.
    seed : int
        Seed of the named random streams [design 3.5].
    verbose : int
    label : str
        Names the model in progress lines and warnings.

    Attributes
    ----------
    params : LatentParams or MixtureParams
        The fitted latent model (None before a fit).
    single : LatentParams
        The single model a mixture started from (``params`` itself for one component).
    latent_dim_, n_components_ : int
    centres : Centres or None
        Stored rows of the local correction, each standing for a group of
        training rows [design 2.9].
    imputation_weights, variance_scales : list of Tensor or None
        Cross-fitted weights and variance factors of the imputations [design 2.11].
    axes : list of (Tensor or None) or None
        Per block, its leading principal axes ``(d_m, max_block_width)`` when it
        is wider than ``max_block_width``, else None [design 5.1].
    variance_explained : (Tensor, Tensor) or None
        R^2 per modality and latent dimension, and per modality [design 2.12].
    statistics : RunningStatistics
        Per-chunk EM statistics of incremental fits [design 3.2].
    loglik_curve : list of float
    n_iter : int
        EM steps of the last fit.
    time_em : float
        Seconds spent in EM.
    incremental : bool
        False after a fit: the next incremental :meth:`fit` starts fresh totals and curves.
    """

    def __init__(self, *, latent_dim, n_components, noise, max_iter, tol, local_bandwidth=None, max_block_width=None, seed, verbose=0, label):
        self.latent_dim, self.n_components, self.noise, self.max_iter, self.tol = latent_dim, n_components, noise, max_iter, tol
        self.local_bandwidth, self.max_block_width = local_bandwidth, max_block_width
        self.seed, self.verbose, self.label = seed, verbose, label
        self.params = self.single = None
        self.centres = self.imputation_weights = self.variance_scales = self.variance_explained = self.axes = None
        self.statistics = RunningStatistics()
        self.loglik_curve, self.n_iter, self.time_em = [], 0, 0.0
        self.incremental = True  # False after a fit: the next incremental fit starts fresh totals and curves

    # ------------------------------------------------------------------ EM
    def _em(self, Z, observed, params, max_iter, label, level=1, warn_cap=False):
        """:func:`fit_em` with progress: a summary line from verbose ``level`` on (and every 10 s of a long fit),
        every E-step at verbose 2. ``warn_cap``: a ConvergenceWarning when EM stops at ``max_iter`` still gaining
        ``tol`` or more (the user-visible fits; the internally capped ones stay quiet)."""
        t0 = time.perf_counter()
        last = [t0]

        def progress(n_iter, loglik):
            now = time.perf_counter()
            if self.verbose >= 2 or now - last[0] >= 10:
                self.log(f"{label}: EM step {n_iter}, log-likelihood {loglik:.4f}, {now - t0:.1f}s")
                last[0] = now

        params, history, n_em = fit_em(
            Z, observed, params, max_iter=max_iter, tol=self.tol, noise=self.noise, chunk_size=chunk_rows(observed.device), callback=progress if self.verbose else None
        )
        self.time_em += time.perf_counter() - t0
        if self.verbose >= level:
            self.log(f"{label}: {n_em} EM steps, log-likelihood {history[0]:.4f} -> {history[-1]:.4f}, {time.perf_counter() - t0:.2f}s")
        gain = history[-1] - history[-2] if len(history) > 1 else float("inf")
        if warn_cap and n_em >= max_iter and gain >= self.tol:
            warn(
                f"EM of the {label} stopped at its cap of {max_iter} steps while the mean log-likelihood still gained "
                f"{gain:.3g} per step (tol={self.tol}); raise max_iter or tol.",
                ConvergenceWarning,
            )
        return params, history, n_em

    def _fit_model(self, Z, observed, base, n_components, label, level=1, max_iter=None, warn_cap=False):
        """EM of the model of ``Z``: the single model ``base`` is fitted; more components start from it [design 2.8].
        ``max_iter`` lowers the cap; ``warn_cap`` warns when the fit stops unconverged.
        Returns the model, the single model, the log-likelihood curve and the EM steps."""
        max_iter = self.max_iter if max_iter is None else min(max_iter, self.max_iter)
        params, loglik, n_iter = self._em(Z, observed, base, max_iter, label, level, warn_cap=warn_cap and n_components == 1)
        if n_components == 1:
            return params, params, loglik, n_iter
        start = init_mixture(Z, observed, params, n_components, generator=self.random("mixture start"))
        mixture, loglik, n_iter = self._em(Z, observed, start, max_iter, f"{label}, {n_components} components", level, warn_cap=warn_cap)
        return mixture, params, loglik, n_iter

    def _initial_params(self, Z, observed):
        """``init_params`` with the CPU generator of the "latent start" stream (the same draws on every device) [design 2.6]."""
        return init_params(Z, observed, self.latent_dim_, generator=self.random("latent start"))

    def _select_components(self, X, observed):
        """``n_components='auto'``: the candidate with the best held-out log-likelihood (20% of the rows) [design 2.8]."""
        n = observed.shape[0]
        perm = torch.randperm(n, generator=self.random("component selection")).to(observed.device)
        held, rows = perm[: max(1, n // 5)], perm[max(1, n // 5) :]
        X_fit, o_fit = [x[rows] for x in X], observed[rows]
        base, _, _ = self._em(X_fit, o_fit, self._initial_params(X_fit, o_fit), self.max_iter, "component selection", level=2)
        scores = {}
        for k in COMPONENT_CANDIDATES:
            if k > 1 and k * (self.latent_dim_ + 1) > rows.numel():  # too few rows per component
                break
            params = base if k == 1 else self._fit_model(X_fit, o_fit, base, k, "component selection", level=2)[0]
            scores[k] = float(log_likelihood([x[held] for x in X], observed[held], params).mean())
        best = max(scores, key=scores.get)
        if self.verbose:
            self.log("n_components='auto': held-out log-likelihood " + ", ".join(f"{k}: {v:.3f}" for k, v in scores.items()) + f" -> {best}")
        return best

    # ------------------------------------------------------------------ the model of the blocks
    def fit(self, X, observed, *, incremental=False, key=None, n_linking=None, fit_single=None, warn_cap=False):
        """Fit the model of the standardized blocks ``X`` (float64 tensors, zeros where missing) [design 2], or take
        one incremental step on a chunk of them [design 3.2]; returns False when an incremental M-step was not
        finite (the model is then only partly updated: the caller works on a :meth:`clone`).

        A fit (and the first chunk of an incremental fit) resolves ``latent_dim``
        (from the linking rows [design 2.10]) and ``n_components`` [design 2.8],
        runs EM from the start of [design 2.6], keeps stored rows for the local
        correction [design 2.9], cross-fits the imputation weights [design 2.11]
        and computes the variance explained [design 2.12]; a later chunk adds
        stored rows. An incremental step then replaces chunk ``key``'s EM
        statistics in the running totals and takes one M-step from them
        (:meth:`incremental_step`).

        ``n_linking`` gives the linking rows of all the data when ``X`` is a part
        of it (the first chunk, or :func:`~sklearn_calmrl.distributed.fit_dask`'s
        sample). ``fit_single(start) -> (params, loglik_curve, n_iter)`` fits the
        single model on all the rows from ``start`` (the default is EM on ``X``);
        the stored rows, the weights and the variance explained come from ``X``.
        ``warn_cap``: a ConvergenceWarning when EM stops at ``max_iter``.
        """
        first = self.params is None
        if first or not incremental:
            self._fit_blocks(X, observed, n_linking, fit_single, warn_cap)
        elif self.centres is not None:
            self._keep_centres(X, observed)
        if not incremental:
            return True
        if not self.incremental:  # the first chunk, or continuing a fitted model: fresh totals and curves
            self.statistics, self.loglik_curve, self.n_iter, self.incremental = RunningStatistics(), [], 0, True
        return self.incremental_step(X, observed, key, first=first)

    def _fit_blocks(self, X, observed, n_linking, fit_single, warn_cap):
        """The fit of :meth:`fit` on all of ``X``."""
        self.latent_dim_ = resolve_latent_dim(self.latent_dim, linking_rows(observed) if n_linking is None else n_linking, sum(x.shape[1] for x in X))
        self.n_components_ = self._select_components(X, observed) if self.n_components == "auto" else int(self.n_components)
        if fit_single is None:
            self.params, self.single, self.loglik_curve, self.n_iter = self._fit_model(
                X, observed, self._initial_params(X, observed), self.n_components_, self.label, warn_cap=warn_cap
            )
        else:
            t0 = time.perf_counter()
            self.params, self.loglik_curve, self.n_iter = fit_single(self._initial_params(X, observed))
            self.single = self.params
            self.time_em += time.perf_counter() - t0
        self.axes = [self._block_axes(x[observed[:, m]], m) for m, x in enumerate(X)]
        if self.local_bandwidth is not None:
            self.centres = None
            self._keep_centres(X, observed)
        self._cross_fit(X, observed)
        rows = init_rows(observed.shape[0], self.random("variance explained")).to(observed.device)
        r2, total = variance_explained([x[rows] for x in X], observed[rows], self.params)
        self.variance_explained = (r2.cpu(), total.cpu())
        self.statistics, self.incremental = RunningStatistics(), False

    def _block_axes(self, B, m):
        """Block ``m``'s leading principal axes from its observed rows ``B`` (at most ``INIT_ROWS`` of them, drawn from
        the "block axes" stream), or None for a block no wider than ``max_block_width`` [design 5.1]."""
        if self.max_block_width is None or B.shape[1] <= self.max_block_width:
            return None
        generator = self.random("block axes", m)
        rows = init_rows(B.shape[0], generator).to(B.device)
        return principal_axes(B[rows], self.max_block_width, generator)

    def _keep_centres(self, X, observed):
        """Choose the stored rows of the local correction [design 2.9]: :meth:`_centres` of ``X`` and of the stored
        rows so far, drawn from the "stored rows" stream keyed by the weight stored so far."""
        seen = 0 if self.centres is None else int(round(float(self.centres.weights.sum())))
        self.centres = self._centres(X, observed, self.params, self.random("stored rows", seen), kept=self.centres)

    def _centres(self, X, observed, params, generator, kept=None):
        """At most ``MAX_CENTRES`` representatives (:func:`~sklearn_calmrl._latent.representatives`) of ``kept`` and
        of at most ``CENTRE_POOL`` rows of ``X`` drawn by ``generator``, completed by ``params``, each drawn row
        weighing ``len(X) / CENTRE_POOL`` or 1 [design 2.9]."""
        rows = init_rows(observed.shape[0], generator, CENTRE_POOL).to(observed.device)
        weights = torch.full((rows.numel(),), observed.shape[0] / max(rows.numel(), 1), dtype=X[0].dtype, device=X[0].device)
        centres = training_centres([x[rows] for x in X], observed[rows], params, weights)
        if kept is not None:
            centres = concat_centres(kept, centres)
        return representatives(centres, params, MAX_CENTRES, generator, axes=self.axes)

    def _cross_fit(self, X, observed):
        """Set ``imputation_weights`` and ``variance_scales`` by 2-fold cross-fitting [design 2.11].

        Per feature ``j``: the weight ``a_j`` of its imputations and the factor
        ``c_j`` of its predictive variance. The rows are split in two halves
        (seeded); a model of the same kind (and local correction) is fitted on
        each half and imputes every block of the other half's rows that observe
        it and another modality, with that block hidden (at most
        ``CROSS_FIT_QUERIES`` such imputations per half, drawn at random).
        ``a_j = clip(<x_j, xhat_j> / <xhat_j, xhat_j>, 0, 1)`` over those held-out
        imputations is the least-squares shrinkage of feature ``j``'s imputation
        towards its mean (0 after standardization); ``c_j`` is the held-out mean
        squared error of the weighted imputations over their mean predictive
        variance. Features with no held-out imputation keep ``a_j = c_j = 1``.
        """
        n, k = observed.shape
        num = [torch.zeros(x.shape[1], dtype=x.dtype, device=x.device) for x in X]
        den, sxx, svar = ([torch.zeros_like(v) for v in num] for _ in range(3))
        generator = self.random("cross-fitting")  # the halves, then per half its stored rows and queries, in order
        perm = torch.randperm(n, generator=generator).to(observed.device)
        halves = (perm[: n // 2], perm[n // 2 :])
        for held, rest in (halves, halves[::-1]):
            X_fit, o_fit = [x[rest] for x in X], observed[rest]
            if k < 2 or held.numel() == 0 or not bool(o_fit.any(dim=0).all()):
                continue  # a modality unseen in this half: no honest imputation of it
            model = self._fit_model(X_fit, o_fit, self._initial_params(X_fit, o_fit), self.n_components_, "cross-fitted imputation weights", level=2, max_iter=CROSS_FIT_ITER)[0]
            # this half's stored rows, chosen as the fit chooses them
            centres = None if self.local_bandwidth is None else self._centres(X_fit, o_fit, model, generator)
            # one query per (held-out row, block it observes beside another modality), that block hidden
            o_held = observed[held]
            pairs = (o_held & (o_held.sum(dim=1, keepdim=True) >= 2)).nonzero()
            if pairs.shape[0] == 0:
                continue
            if pairs.shape[0] > CROSS_FIT_QUERIES:
                pairs = pairs[init_rows(pairs.shape[0], generator, CROSS_FIT_QUERIES).to(pairs.device)]
            rows, hidden_block = held[pairs[:, 0]], pairs[:, 1]
            Z, hidden = [x[rows] for x in X], observed[rows].clone()
            hidden[torch.arange(rows.numel(), device=rows.device), hidden_block] = False
            state = Completion(model, centres, None, None, None, None)
            guess, _, variance = self.complete(Z, hidden, state, return_variance=True)
            for m in range(k):
                sel = hidden_block == m
                num[m] += (Z[m][sel] * guess[m][sel]).sum(dim=0)
                den[m] += (guess[m][sel] ** 2).sum(dim=0)
                sxx[m] += (Z[m][sel] ** 2).sum(dim=0)
                svar[m] += variance[m][sel].sum(dim=0)
        tiny = torch.finfo(num[0].dtype).tiny
        self.imputation_weights = [torch.where(d > 0, (u / d.clamp_min(tiny)).clamp(0.0, 1.0), torch.ones_like(d)) for u, d in zip(num, den)]
        # held-out squared error of a_j xhat_j: sum x^2 - 2 a sum x xhat + a^2 sum xhat^2  [design 2.11]
        errors = [(xx - 2 * a * u + a * a * d).clamp_min(0.0) for xx, a, u, d in zip(sxx, self.imputation_weights, num, den)]
        self.variance_scales = [torch.where((v > 0) & (d > 0), e / v.clamp_min(tiny), torch.ones_like(v)) for e, v, d in zip(errors, svar, den)]

    # ------------------------------------------------------------------ a model of representations
    def initialise(self, Z, observed, generator):
        """Start a model of representations ``Z`` (the rows that initialise it) with dimensions already resolved
        (``latent_dim`` and ``n_components`` integers) [design 2.6, 3.1]: the closed-form start, and with more than
        one component a mixture fitted from it [design 2.8]."""
        self.latent_dim_, self.n_components_ = int(self.latent_dim), int(self.n_components)
        init_gen = torch.Generator().manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
        params = init_params(Z, observed, self.latent_dim_, generator=init_gen)
        if self.n_components_ > 1:
            params = self._fit_model(Z, observed, params, self.n_components_, f"{self.label} (start)", level=2)[0]
        self.params = self.single = params

    def refresh(self, Z, observed, max_iter, label, level=1):
        """EM warm-started from the current model [design 3.1]; ``Z`` may be a function streaming
        ``(Z_chunk, observed_chunk)`` pairs (:func:`~sklearn_calmrl._latent.fit_em`)."""
        self.params, history, self.n_iter = self._em(Z, observed, self.params, max_iter, label, level)
        self.loglik_curve.append(history[-1])

    # ------------------------------------------------------------------ incremental EM
    def incremental_step(self, Z, observed, key, *, first):
        """Replace chunk ``key``'s statistics in the running totals and take one M-step from them [design 3.2]; the
        step counts in ``n_iter`` and ``loglik_curve`` (the chunk's mean log-likelihood before it). Returns whether the
        step was taken: an M-step that is not finite leaves the parameters as they were, with a warning (an error on
        the ``first`` chunk, which has no parameters to keep)."""
        t0 = time.perf_counter()
        stats = chunked_statistics(Z, observed, self.params, chunk_rows(observed.device))
        self.statistics.update(key, stats)
        params = m_step(self.statistics.total, self.params, noise=self.noise)
        self.time_em += time.perf_counter() - t0
        if not finite(*params.tensors()):
            if first:
                raise ValueError("partial_fit's M-step on the first chunk gave non-finite latent parameters; rescale X.")
            warn("partial_fit's M-step gave non-finite parameters; the model was left as it was.", RuntimeWarning)
            return False
        self.params = params
        self.n_iter += 1
        self.loglik_curve.append(float(stats.loglik) / stats.n_rows)
        return True

    # ------------------------------------------------------------------ inference
    def completion(self, device, corrected=True):
        """The float64 model, stored rows (when ``corrected``), their cache and the cross-fitted weights that every
        chunk of one inference call reads: prepared once per call (once for all chunks of
        :func:`~sklearn_calmrl.distributed.transform_dask`)."""
        float64 = lambda tensors: None if tensors is None else [a.to(device=device, dtype=torch.float64) for a in tensors]  # noqa: E731
        centres = None
        if self.centres is not None and corrected:
            centres = self.centres.to(device=device, dtype=torch.float64)
        return Completion(
            self.params.to(dtype=torch.float64, device=device),
            centres,
            CentreCache() if centres is not None else None,
            float64(self.imputation_weights),
            float64(self.variance_scales),
            None if self.axes is None else [None if a is None else a.to(device=device, dtype=torch.float64) for a in self.axes],
        )

    def complete(self, B, observed, state, *, return_variance=False):
        """Blocks with their missing ones imputed under ``state`` [design 2.3]: the model's conditional mean, the
        local correction [design 2.9] and the weights [design 2.11]; with ``return_variance`` their predictive
        variances (0 where observed, ``h (W V W^T + Psi)`` plus the neighbours' spread with the correction, scaled
        by the cross-fitted factors). Returns the blocks, the posterior and the variances (or None)."""
        Bhat, post = calibrated(B, observed, state.params)  # [design 2.3]
        spread = None
        if state.centres is not None:  # the stored rows' residuals [design 2.9]
            correction, spread = local_corrections(
                B, observed, state.params, state.centres, self.local_bandwidth, cache=state.cache, return_variance=return_variance
            )
            Bhat = [b + c for b, c in zip(Bhat, correction)]
        if state.weights is not None:  # imputed entries shrunk by the cross-fitted weights [design 2.11]
            Bhat = [torch.where(observed[:, m, None], b, b * a) for m, (b, a) in enumerate(zip(Bhat, state.weights))]
        if not return_variance:
            return Bhat, post, None
        variance = predictive_variance(post, state.params)
        if spread is not None:  # h (W V W^T + Psi) plus the neighbours' spread [design 2.9]
            variance = [self.local_bandwidth * v + s for v, s in zip(variance, spread)]
        if state.variance_scales is not None:  # matched to held-out errors [design 2.11]
            variance = [v * c for v, c in zip(variance, state.variance_scales)]
        return Bhat, post, [torch.where(observed[:, m, None], 0.0, v) for m, v in enumerate(variance)]

    @staticmethod
    def compact(blocks, state):
        """The blocks as the output gives them [design 5.1]: a block with principal axes as its scores on them
        (``B_m A_m``), the others whole."""
        axes = state.axes or [None] * len(blocks)
        return [b if a is None else b @ a for b, a in zip(blocks, axes)]

    # ------------------------------------------------------------------ copies, devices, persistence
    def clone(self):
        """An independent copy for an incremental step (so that a failed step changes nothing)."""
        new = copy.copy(self)
        new.statistics = self.statistics.copy()
        new.loglik_curve = list(self.loglik_curve)
        return new

    def to(self, device):
        """Move every tensor to ``device`` (after unpickling on another machine)."""
        move = lambda tensors: None if tensors is None else [a.to(device) for a in tensors]  # noqa: E731
        self.params = None if self.params is None else self.params.to(device)
        self.single = None if self.single is None else self.single.to(device)
        self.statistics = self.statistics.to(device)
        if self.centres is not None:
            self.centres = self.centres.to(device=device)
        self.imputation_weights, self.variance_scales = move(self.imputation_weights), move(self.variance_scales)
        if self.axes is not None:
            self.axes = [None if a is None else a.to(device) for a in self.axes]
        return self

    def __getstate__(self):
        """The model as plain data [design 7.3]: numpy arrays, numbers, strings, lists and dicts only."""
        return plain(self.__dict__)

    def __setstate__(self, state):
        self.__dict__.update(unplain(state))


