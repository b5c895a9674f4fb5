"""The bi-step training loop [design 3], shared by ``fit`` and ``partial_fit``.

Closed-form steps (E/M on the latent model, :mod:`sklearn_calmrl._latent`) alternate
with gradient steps of the alignment loss (:mod:`sklearn_calmrl._alignment`) on the
calibrated representations: observed columns from the encoders, missing columns
imputed from the posterior of the shared latent. With ``encoder='identity'`` there
are no encoders and only the closed-form model of the blocks is fitted.

:class:`Trainer` holds everything the loop carries (the closed-form model of the
blocks, encoders, loss, optimizer, the latent model of the representations, running
EM statistics, curves and timings); ``fit`` runs :meth:`Trainer.fit` (epochs over all
rows) and ``partial_fit`` runs :meth:`Trainer.partial_fit` (one pass over a chunk and
one incremental M-step). Optimizers are constructed here and nowhere else.

References ``[design x.y]`` point into ``doc/design.rst``.
"""

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning

from ._alignment import make_alignment_loss, pair_infonce
from ._encoders import make_encoder, make_encoders
from ._latent import (
    LatentParams,
    MixtureParams,
    MixturePrior,
    MixtureStatistics,
    RunningStatistics,
    SufficientStatistics,
    chunked_statistics,
    fit_em,
    impute,
    init_mixture,
    init_params,
    local_corrections,
    log_likelihood,
    m_step,
    posterior,
    predictive_variance,
    single_modality_maps,
    sufficient_statistics,
    summed_statistics,
    variance_explained,
)
from ._utils import warn

__all__ = ["TrainConfig", "History", "Trainer", "encode", "calibrated", "encode_all", "init_rows", "CHUNK", "INIT_ROWS"]


CHUNK = 4096  # rows per chunk of every no-grad pass (EM, transform): bounds the working set
STREAM_BYTES = 1 << 30  # above this, EM refreshes stream the representations instead of caching them
INIT_ROWS = 20000  # rows used to initialise the representation-level latent model [design 2.6]
EM_REFRESH_ITER = 3  # EM iterations of each per-epoch refresh [design 3.1]
MAX_CENTRES = 4096  # stored rows of the local correction: bounds its cost per imputed row [design 2.9]
REPRESENTATION_START_ITER = 20  # EM steps of the first model of the representations: the encoders move next [design 3.1]
COMPONENT_CANDIDATES = (1, 2, 4, 8, 16)  # n_components='auto' [design 2.8]
CROSS_FIT_ITER = 50  # EM steps of each half-sample model of the cross-fitted imputation weights [design 2.11]
CROSS_FIT_QUERIES = 1024  # held-out imputations per half-sample model (drawn at random beyond that) [design 2.11]


def resolve_latent_dim(latent_dim, n_linking, width):
    """``latent_dim``, or for ``'auto'`` ``clip(n_linking // 8, 4, 32)`` below the total width [design 2.10].

    ``n_linking`` counts the rows that observe at least two modalities (all rows
    with one modality): they are what estimates the cross-modality loadings.
    """
    if latent_dim != "auto":
        return int(latent_dim)
    return int(max(1, min(max(4, n_linking // 8), 32, width - 1)))


def linking_rows(observed):
    """Rows that observe at least two modalities, or all rows of a single-modality model [design 2.10]."""
    return int(observed.shape[0]) if observed.shape[1] == 1 else int((observed.sum(dim=1) >= 2).sum())


@dataclass
class TrainConfig:
    """Hyper-parameters of the loop (the estimator's parameters of the same names)."""

    encoder: str = "linear"
    embed_dim: Optional[int] = None  # None: latent_dim
    hidden_layer_sizes: Tuple[int, ...] = (128,)
    latent_dim: Union[int, str] = "auto"
    n_components: Union[int, str] = 1
    local_bandwidth: Optional[float] = None
    alignment: str = "pmrl"
    calibrate: bool = True
    pair_weight: float = 0.0
    max_epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 3e-3
    em_every: int = 2
    em_init_iter: int = 200
    em_tol: float = 1e-3
    noise: str = "isotropic"
    tau_intra: float = 0.3
    tau_inter: float = 0.1
    early_stopping: bool = False
    validation_fraction: float = 0.1
    n_iter_no_change: int = 10
    tol: float = 1e-4
    verbose: int = 0


@dataclass
class History:
    """What training recorded: curves, counts and the time spent in each kind of step."""

    loss_curve: List[float] = field(default_factory=list)
    loss_terms: Dict[str, List[float]] = field(default_factory=dict)  # per-epoch mean of each loss term
    validation_scores: List[float] = field(default_factory=list)
    best_validation_score: float = float("nan")
    loglik_curve: List[float] = field(default_factory=list)
    n_iter: int = 0  # epochs (fit), calls (partial_fit), EM iterations (identity fit)
    time_em: float = 0.0
    time_gradient: float = 0.0


def encode(encoders, X, observed):
    """``z_i^m = normalize(f_m(x_i^m))`` for every modality; rows that miss ``m`` get zeros [design 2].

    Training runs float32 encoders; ``transform`` runs a float64 copy so that a
    row's output does not depend on which other rows share its batch.
    """
    zero = torch.zeros((), dtype=X[0].dtype, device=X[0].device)
    return [
        torch.where(observed[:, m, None], F.normalize(enc(x), dim=1), zero)
        for m, (enc, x) in enumerate(zip(encoders, X))
    ]


def calibrated(Z, observed, params, *, max_norm=None, post=None):
    """Observed columns kept, missing columns imputed as ``W_m m_i + mu_m`` [design 2.3].

    ``Z`` is in the dtype of ``params`` (float64 for the closed-form step). With
    ``max_norm`` (unit encoder outputs), an imputed vector longer than that is
    shortened to it; a shorter one keeps the norm the posterior shrank it to, so
    an uncertain imputation weighs less in the alignment than an observed column.
    Returns the calibrated list and the posterior.
    """
    if post is None:
        post = posterior(Z, observed, params)
    Zhat = impute(post, params)  # zhat^m' = W_m' m_i + mu_m'  [design 2.3]
    if max_norm is not None:
        Zhat = [z / (z.norm(dim=1, keepdim=True) / max_norm).clamp_min(1.0) for z in Zhat]  # ||zhat|| <= max_norm
    return [torch.where(observed[:, m, None], Z[m], Zhat[m]) for m in range(len(Z))], post


@torch.no_grad()
def encode_all(encoders, X, observed, *, chunk_size=CHUNK, dtype=torch.float64):
    """Encode every row without gradients, in chunks (bounded working set); identity when ``encoders`` is None."""
    if encoders is None:
        return [x.to(dtype) for x in X]
    parts = [
        encode(encoders, [x[s : s + chunk_size] for x in X], observed[s : s + chunk_size])
        for s in range(0, observed.shape[0], chunk_size)
    ]
    return [torch.cat([p[m] for p in parts]).to(dtype) for m in range(len(X))]


# the named random streams of a trainer's seed [design 3.5]; append new names at the end (the order is the spawn key)
STREAMS = ("latent start", "mixture start", "component selection", "stored rows", "cross-fitting", "variance explained", "encoders", "training", "partial_fit")


def random_stream(seed, name, *key):
    """The CPU generator of the random stream ``name`` (and ``key``) of ``seed`` [design 3.5].

    ``np.random.SeedSequence(seed, spawn_key=(STREAMS.index(name), *key))``: the
    streams of one seed are independent and never coincide (unlike seed offsets),
    and a CPU generator gives the same draws on every device.
    """
    state = np.random.SeedSequence(seed, spawn_key=(STREAMS.index(name), *key)).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def init_rows(n, generator, size=INIT_ROWS):
    """Indices of the rows that initialise a latent model [design 2.6], in increasing order.

    All ``n`` rows when ``n <= size`` (``generator`` is then not used), else ``size``
    rows drawn without replacement by ``generator``.
    """
    return torch.randperm(n, generator=generator)[:size].sort().values if n > size else torch.arange(n)


def alignment_score(Z, observed, min_rows=3):
    """Mean symmetric cross-modal Recall@1 over the modality pairs observed together on ``min_rows`` rows [design 3.3].

    ``Z`` are unit representations per modality; None when no pair qualifies.
    """
    scores = []
    for a in range(len(Z)):
        for b in range(a + 1, len(Z)):
            rows = observed[:, a] & observed[:, b]
            if int(rows.sum()) < min_rows:
                continue
            S = Z[a][rows] @ Z[b][rows].T
            hit = torch.diagonal(S)
            recall = 0.5 * ((S.max(dim=1).values <= hit).double().mean() + (S.max(dim=0).values <= hit).double().mean())
            scores.append(float(recall))
    return float(np.mean(scores)) if scores else None


def _finite(*values):
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


def _params_finite(params):
    """True when every tensor of a latent model of any kind [design 2.13] is finite."""
    return _finite(*params.tensors())


class Trainer:
    """State and steps of the bi-step loop [design 3].

    Parameters
    ----------
    cfg : TrainConfig
    device : str
    seed : int
        Seeds every draw: the encoders' initial weights, the shuffles and the
        latent model's initialisation (never the global torch RNG).

    Attributes
    ----------
    block_params : LatentParams or None
        The closed-form model of the standardized blocks [design 7.1]: the encoders'
        start, the blocks of ``output='concat'`` and :meth:`impute`; it is
        ``params`` itself for ``encoder='identity'``.
    encoders : torch.nn.ModuleList or None
        None for ``encoder='identity'``.
    params : LatentParams or None
        The latent model of the representations; None before the first fit.
    statistics, block_statistics : RunningStatistics
        Per-chunk EM statistics of ``partial_fit`` (empty after ``fit``).
    history : History
    """

    def __init__(self, cfg, *, device, seed):
        self.cfg = cfg
        self.device = device
        self.seed = seed
        self.encoders = None
        self.loss_fn = None
        self.optimizer = None
        self.params = None
        self._block_params = None
        self.centres = None  # (stored blocks, their mask) of the local correction [design 2.9]
        self.imputation_weights = None  # per-feature weights of the imputed blocks [design 2.11]
        self.variance_scales = None  # per-feature factors of their predictive variances [design 2.11]
        self.variance_explained = None  # (R2 per modality and latent dimension, R2 per modality) [design 2.12]
        self.statistics = RunningStatistics()
        self.block_statistics = RunningStatistics()
        self.history = History()
        self.incremental = True  # False after fit: the next partial_fit starts fresh totals and curves

    @property
    def deep(self):
        """Whether there are torch encoders to train."""
        return self.cfg.encoder != "identity"

    @property
    def block_params(self):
        return self._block_params if self.deep else self.params

    # ------------------------------------------------------------------ set-up
    def tensors(self, Xs, dtype=torch.float64):
        """The standardized numpy blocks as tensors on the device."""
        return [torch.as_tensor(b, dtype=dtype, device=self.device) for b in Xs]

    def resolve_dims(self, n_linking, width):
        """Fix ``latent_dim`` (``'auto'``: from the linking rows [design 2.10]) and ``embed_dim`` for this fit."""
        cfg = self.cfg
        if cfg.latent_dim != "auto" and cfg.latent_dim > width:
            raise ValueError(
                f"latent_dim={cfg.latent_dim} is larger than the {width} feature(s) of X in all blocks together: the "
                f"shared latent cannot have more dimensions than the data (use latent_dim <= {width} or 'auto')."
            )
        self.latent_dim = resolve_latent_dim(cfg.latent_dim, n_linking, width)
        self.embed_dim = self.latent_dim if cfg.embed_dim is None else cfg.embed_dim
        if self.deep and self.embed_dim < self.latent_dim:
            raise ValueError(
                f"embed_dim={self.embed_dim} is smaller than latent_dim={self.latent_dim}: the encoders start as the "
                "posterior-mean map onto the latent_dim shared coordinates, which needs embed_dim >= latent_dim "
                "(embed_dim=None makes them equal)."
            )

    def initial_params(self, Z, observed):
        """``init_params`` of ``Z`` with a CPU generator seeded by ``seed`` (the same draws on every device) [design 2.6]."""
        return init_params(Z, observed, self.latent_dim, generator=self.random("latent start"))

    def random(self, name, *key):
        """The generator of the named random stream of this trainer's seed (:func:`random_stream`) [design 3.5]."""
        return random_stream(self.seed, name, *key)

    def _log(self, message):
        print(f"[CalMRL] {message}", flush=True)

    def _em(self, Z, observed, params, max_iter, label, level=1, warn_cap=False):
        """``fit_em`` with progress: a summary line from verbose ``level`` on (and every 10 s of a long fit),
        every E-step at verbose 2. ``warn_cap``: a ConvergenceWarning when EM stops at ``max_iter`` still gaining
        ``tol`` or more (the user-visible fits; the internally capped ones stay quiet)."""
        cfg, t0 = self.cfg, time.perf_counter()
        last = [t0]

        def progress(n_iter, loglik):
            now = time.perf_counter()
            if cfg.verbose >= 2 or now - last[0] >= 10:
                self._log(f"{label}: EM step {n_iter}, log-likelihood {loglik:.4f}, {now - t0:.1f}s")
                last[0] = now

        params, history, n_em = fit_em(
            Z, observed, params, max_iter=max_iter, tol=cfg.em_tol, noise=cfg.noise, chunk_size=CHUNK, callback=progress if cfg.verbose else None
        )
        self.history.time_em += time.perf_counter() - t0
        if cfg.verbose >= level:
            self._log(f"{label}: {n_em} EM steps, log-likelihood {history[0]:.4f} -> {history[-1]:.4f}, {time.perf_counter() - t0:.2f}s")
        gain = history[-1] - history[-2] if len(history) > 1 else float("inf")
        if warn_cap and n_em >= max_iter and gain >= cfg.em_tol:
            warn(
                f"EM of the {label} stopped at its cap of {max_iter} steps while the mean log-likelihood still gained "
                f"{gain:.3g} per step (tol={cfg.em_tol}); raise the cap (em_max_iter, or max_iter for MultiViewPPCA) "
                "or the tolerance.",
                ConvergenceWarning,
            )
        return params, history, n_em

    def _fit_model(self, Z, observed, base, n_components, label, level=1, max_iter=None, warn_cap=False):
        """EM of the model of ``Z``: the single model ``base`` is fitted; more components start from it [design 2.8].
        ``max_iter`` lowers the user's cap (``em_init_iter``); ``warn_cap`` warns when the fit stops unconverged."""
        max_iter = self.cfg.em_init_iter if max_iter is None else min(max_iter, self.cfg.em_init_iter)
        params, loglik, n_iter = self._em(Z, observed, base, max_iter, label, level, warn_cap=warn_cap and n_components == 1)
        if n_components == 1:
            return params, params, loglik, n_iter
        start = init_mixture(Z, observed, params, n_components, generator=self.random("mixture start"))
        mixture, loglik, n_iter = self._em(Z, observed, start, max_iter, f"{label}, {n_components} components", level, warn_cap=warn_cap)
        return mixture, params, loglik, n_iter

    def _select_components(self, X, observed):
        """``n_components='auto'``: the candidate with the best held-out log-likelihood (20% of the rows) [design 2.8]."""
        n = observed.shape[0]
        perm = torch.randperm(n, generator=self.random("component selection")).to(observed.device)
        held, rows = perm[: max(1, n // 5)], perm[max(1, n // 5) :]
        X_fit, o_fit = [x[rows] for x in X], observed[rows]
        base, _, _ = self._em(X_fit, o_fit, self.initial_params(X_fit, o_fit), self.cfg.em_init_iter, "component selection", level=2)
        scores = {}
        for k in COMPONENT_CANDIDATES:
            if k > 1 and k * (self.latent_dim + 1) > rows.numel():  # too few rows per component
                break
            params = base if k == 1 else self._fit_model(X_fit, o_fit, base, k, "component selection", level=2)[0]
            scores[k] = float(log_likelihood([x[held] for x in X], observed[held], params).mean())
        best = max(scores, key=scores.get)
        if self.cfg.verbose:
            self._log("n_components='auto': held-out log-likelihood " + ", ".join(f"{k}: {v:.3f}" for k, v in scores.items()) + f" -> {best}")
        return best

    def start(self, X, observed, *, n_linking=None, fit_model=None):
        """Fit the closed-form model of the blocks ``X`` (float64) and start the encoders from it [design 7.1].

        Encoder m's first ``latent_dim`` outputs start as the posterior-mean map
        ``x^m -> E[b | x^m]`` of the single model of the blocks, so all modalities
        start in one latent coordinate system (outputs beyond ``latent_dim``
        project on the block's principal axes). For ``encoder='identity'`` the
        model of the blocks is the whole model. With ``n_components > 1`` it is a
        mixture started from that single model [design 2.8]; with a
        ``local_bandwidth`` rows are kept for the local correction [design 2.9].

        ``X`` may be a sample of the rows (:func:`~sklearn_calmrl.distributed.fit_dask`):
        ``n_linking`` then gives the linking rows of all of them [design 2.10], and
        ``fit_model(start) -> (params, loglik_curve, n_iter)`` fits the single model
        of the blocks on all of them from ``start`` (the default is EM on ``X``);
        the stored rows, the cross-fitted weights and the variance explained come
        from ``X``.
        """
        cfg = self.cfg
        self.resolve_dims(linking_rows(observed) if n_linking is None else n_linking, sum(x.shape[1] for x in X))
        if fit_model is not None and cfg.n_components != 1:
            raise ValueError(f"a model fitted outside the trainer is a single latent model (n_components=1), got n_components={cfg.n_components!r}.")
        self.n_components = self._select_components(X, observed) if cfg.n_components == "auto" else int(cfg.n_components)
        label = "closed-form model of the blocks" if self.deep else "closed-form fit"
        if fit_model is None:
            block, base, loglik, n_iter = self._fit_model(X, observed, self.initial_params(X, observed), self.n_components, label, warn_cap=True)
        else:
            t0 = time.perf_counter()
            block, loglik, n_iter = fit_model(self.initial_params(X, observed))
            base = block
            self.history.time_em += time.perf_counter() - t0
        if cfg.local_bandwidth is not None:
            self.centres = ([], observed[:0])
            self._keep_centres(X, observed)
        self.calibrate_imputations(X, observed)
        self.explain_variance(X, observed, block)
        if not self.deep:
            self.params = block
            self.history.loglik_curve, self.history.n_iter = loglik, n_iter
            return
        self._block_params = block
        maps = [(A.float(), c.float()) for A, c in single_modality_maps(base)]
        X32 = [x.float() for x in X]
        self.encoders = make_encoders(
            cfg.encoder, X32, observed, self.embed_dim, cfg.hidden_layer_sizes, shared_maps=maps, generator=self.random("encoders"), device=self.device
        )
        self._new_loss()

    def explain_variance(self, X, observed, params):
        """Set ``variance_explained`` from at most ``INIT_ROWS`` of the rows (seeded) [design 2.12]."""
        rows = init_rows(observed.shape[0], self.random("variance explained")).to(observed.device)
        r2, total = variance_explained([x[rows] for x in X], observed[rows], params)
        self.variance_explained = (r2.cpu(), total.cpu())

    def calibrate_imputations(self, X, observed):
        """Set ``imputation_weights`` and ``variance_scales`` by 2-fold cross-fitting [design 2.11].

        Per feature ``j``: the weight ``a_j`` of its imputations and the factor
        ``c_j`` of its predictive variance.

        The rows are split in two halves (seeded); a model of the same kind (and
        local correction) is fitted on each half and imputes every block of the
        other half's rows that observe it and another modality, with that block
        hidden (at most ``CROSS_FIT_QUERIES`` such imputations per half, drawn at
        random). ``a_j = clip(<x_j, xhat_j> / <xhat_j, xhat_j>, 0, 1)`` over those
        held-out imputations is the least-squares shrinkage of feature ``j``'s
        imputation towards its mean (0 after standardization): about 1 where the
        other modalities predict it, about 0 where they do not (noise, or
        cross-modal loadings estimated from too few linking rows). ``c_j`` is the
        held-out mean squared error of the weighted imputations over their mean
        predictive variance, so that the predictive standard deviations of
        :meth:`impute` match the errors they describe. Features with no held-out
        imputation keep ``a_j = c_j = 1``.
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
            model = self._fit_model(X_fit, o_fit, self.initial_params(X_fit, o_fit), self.n_components, "cross-fitted imputation weights", level=2, max_iter=CROSS_FIT_ITER)[0]
            centres = init_rows(rest.numel(), generator, MAX_CENTRES).to(observed.device)
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
            guess, post = calibrated(Z, hidden, model)  # [design 2.3]
            variance = predictive_variance(post, model)
            if self.cfg.local_bandwidth is not None:  # [design 2.9]
                correction, spread = local_corrections(
                    Z, hidden, model, [x[centres] for x in X_fit], o_fit[centres], self.cfg.local_bandwidth, return_variance=True
                )
                guess = [g + c for g, c in zip(guess, correction)]
                variance = [self.cfg.local_bandwidth * v + sp for v, sp in zip(variance, spread)]  # as impute computes it
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

    def _keep_centres(self, X, observed):
        """Add rows to the stored rows of the local correction, up to ``MAX_CENTRES`` [design 2.9]."""
        kept, kept_observed = self.centres
        room = MAX_CENTRES - kept_observed.shape[0]
        if room <= 0:
            return
        rows = init_rows(observed.shape[0], self.random("stored rows", kept_observed.shape[0]), room).to(observed.device)
        new = [x[rows] for x in X]
        self.centres = (new if not kept else [torch.cat([a, b]) for a, b in zip(kept, new)], torch.cat([kept_observed, observed[rows]]))

    def _new_loss(self):
        """A fresh alignment loss module (GRAM learns its temperature) and a fresh optimizer."""
        cfg = self.cfg
        kw = {"tau_intra": cfg.tau_intra, "tau_inter": cfg.tau_inter} if cfg.alignment == "pmrl" else {}
        self.loss_fn = make_alignment_loss(cfg.alignment, **kw).to(self.device)
        self.optimizer = self._optimizer()

    def _optimizer(self, state=None):
        """Adam over the encoders and the loss module (the only place an optimizer is built), optionally with ``state``."""
        optimizer = torch.optim.Adam(list(self.encoders.parameters()) + list(self.loss_fn.parameters()), lr=self.cfg.learning_rate)
        if state is not None:
            optimizer.load_state_dict(state)  # Adam moves its state to the parameters' device
        return optimizer

    def clone(self):
        """An independent copy (``partial_fit`` works on one, so a failed call changes nothing)."""
        new = copy.copy(self)
        if self.deep:
            new.encoders, new.loss_fn = copy.deepcopy((self.encoders, self.loss_fn))
            new.optimizer = new._optimizer(copy.deepcopy(self.optimizer.state_dict()))
        new.statistics = self.statistics.copy()
        new.block_statistics = self.block_statistics.copy()
        new.history = copy.deepcopy(self.history)
        return new

    def to(self, device):
        """Move every tensor the loop carries to ``device`` (after unpickling on another machine)."""
        self.device = device
        if self.deep:
            self.encoders.to(device)
            self.loss_fn.to(device)
            self.optimizer = self._optimizer(self.optimizer.state_dict())
            self._block_params = self._block_params.to(device)
        if self.params is not None:
            self.params = self.params.to(device)
        self.statistics = self.statistics.to(device)
        self.block_statistics = self.block_statistics.to(device)
        if self.centres is not None:
            self.centres = ([x.to(device) for x in self.centres[0]], self.centres[1].to(device))
        for name in ("imputation_weights", "variance_scales"):
            if getattr(self, name) is not None:
                setattr(self, name, [a.to(device) for a in getattr(self, name)])
        return self

    def __getstate__(self):
        """The trainer as plain data [design 7.3]: numpy arrays, numbers, strings, lists and dicts only.

        Tensors become CPU numpy arrays, the parameter objects and records their
        fields, the encoders, the loss module and the optimizer their state
        dicts; :meth:`__setstate__` rebuilds the torch objects. Pickle, joblib and
        ``skops.io`` (which loads no code it has not been told to trust) all read
        this state.
        """
        state = {k: v for k, v in self.__dict__.items() if k not in ("encoders", "loss_fn", "optimizer")}
        if self.deep:
            state["encoders"] = [{"n_features": e.linear.in_features, "weights": dict(e.state_dict())} for e in self.encoders]
            state["loss_fn"] = dict(self.loss_fn.state_dict())
            optimizer = self.optimizer.state_dict()
            state["optimizer"] = {"state": {str(i): s for i, s in optimizer["state"].items()}, "param_groups": optimizer["param_groups"]}
        return _plain(state)

    def __setstate__(self, state):
        state = _unplain(state)
        encoders, loss_state, optimizer = (state.pop(k, None) for k in ("encoders", "loss_fn", "optimizer"))
        self.__dict__.update(state)
        self.device = "cpu"
        self.encoders = self.loss_fn = self.optimizer = None
        if self.deep:
            cfg = self.cfg
            self.encoders = torch.nn.ModuleList(make_encoder(cfg.encoder, e["n_features"], self.embed_dim, cfg.hidden_layer_sizes) for e in encoders)
            for module, e in zip(self.encoders, encoders):
                module.load_state_dict(e["weights"])
            self._new_loss()
            self.loss_fn.load_state_dict(loss_state)
            self.optimizer = self._optimizer({"state": {int(i): s for i, s in optimizer["state"].items()}, "param_groups": optimizer["param_groups"]})

    # ------------------------------------------------------------------ closed-form steps on the representations
    def _em_refresh(self, X, observed, generator, max_iter, label, level=1):
        """Encode all rows (no grad), then EM warm-started from ``params`` [design 3.1].

        The first call initialises the latent model on at most ``INIT_ROWS`` rows
        [design 2.6]. Representations are cached for the EM iterations when they
        fit in ``STREAM_BYTES``; otherwise every EM iteration re-encodes chunk by
        chunk and sums the statistics, so they are never all in memory.
        """
        encoders, n = self.encoders, observed.shape[0]
        t0, em_before = time.perf_counter(), self.history.time_em
        params = self.params
        if params is None:
            rows = init_rows(n, generator).to(self.device)
            Z0 = encode_all(encoders, [x[rows] for x in X], observed[rows])
            init_gen = torch.Generator().manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
            params = init_params(Z0, observed[rows], self.latent_dim, generator=init_gen)
            if self.n_components > 1:  # a mixture of the representations too, started from one model [design 2.8]
                params = self._fit_model(Z0, observed[rows], params, self.n_components, "latent model of the representations (start)", level=2)[0]
            del Z0
        if n * sum(e.linear.out_features for e in encoders) * 8 <= STREAM_BYTES:
            Z = encode_all(encoders, X, observed)
        else:

            def Z():
                for s in range(0, n, CHUNK):
                    yield encode_all(encoders, [x[s : s + CHUNK] for x in X], observed[s : s + CHUNK]), observed[s : s + CHUNK]

        self.params, history, _ = self._em(Z, observed, params, max_iter, label, level)
        self.history.loglik_curve.append(history[-1])
        self.history.time_em = em_before + time.perf_counter() - t0  # the refresh's encoding counts as closed-form time

    # ------------------------------------------------------------------ gradient steps
    def _batch_terms(self, xb, ob, stats_sink=None):
        """Alignment loss terms of one mini-batch on observed + imputed columns [design 3.1, 4].

        Imputed columns are detached calibrated targets: no gradient flows through
        the imputation into the observed encoders (letting it flow cost 3 to 26
        points of retrieval on the tuning rows, [design 7.2]).
        """
        cfg, params = self.cfg, self.params
        Z = encode(self.encoders, xb, ob)
        source = [z.detach().double() for z in Z]
        post = posterior(source, ob, params)  # E-step with theta fixed [design 3.1]
        if stats_sink is not None:
            stats_sink.append(sufficient_statistics(source, ob, params, post))
        if cfg.calibrate:
            Zhat, _ = calibrated(source, ob, params, max_norm=1.0, post=post)
            Zhat = [torch.where(ob[:, m, None], Z[m], Zhat[m].to(Z[m].dtype)) for m in range(len(Z))]  # observed keep their gradient
            terms = self.loss_fn.terms(torch.stack(Zhat, dim=1))
        else:
            terms = self.loss_fn.terms(torch.stack(Z, dim=1), observed=ob)  # the observed-only ablation [design 4.4]
        if cfg.pair_weight > 0:
            terms["pair"] = cfg.pair_weight * pair_infonce(Z, ob)  # [design 4.6]
        return terms

    def gradient_pass(self, X, observed, generator, stats_sink=None):
        """One shuffled pass of mini-batch steps of the alignment loss, latent parameters fixed [design 3.1].

        Returns the per-term mean over the rows; the total is NaN when a step
        made a weight non-finite (the pass then stops early and the caller
        restores a snapshot).
        """
        n, bs = observed.shape[0], self.cfg.batch_size
        t0 = time.perf_counter()
        self.encoders.train()
        order = torch.randperm(n, generator=generator).to(observed.device)
        sums = {}
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            terms = self._batch_terms([x[idx] for x in X], observed[idx], stats_sink)
            loss = sum(terms.values())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            for name, value in {**terms, "total": loss}.items():
                sums[name] = sums.get(name, 0.0) + value.detach() * idx.shape[0]
            if not _finite(self.encoders, self.loss_fn):  # an overflowing step: end the pass
                sums["total"] = sums["total"] + float("nan")
                break
        self.encoders.eval()
        self.history.time_gradient += time.perf_counter() - t0
        return {name: float(v) / n for name, v in sums.items()}

    def _record_terms(self, means):
        self.history.loss_curve.append(means["total"])
        for name, value in means.items():
            if name != "total":
                self.history.loss_terms.setdefault(name, []).append(value)

    def _validation_score(self, X, observed):
        """Alignment of held-out rows [design 3.3]: their cross-modal Recall@1, or minus their loss when no pair is observed."""
        score = alignment_score(encode_all(self.encoders, X, observed), observed)
        if score is not None:
            return score
        with torch.no_grad():
            return -float(sum(self._batch_terms(X, observed).values()))

    # ------------------------------------------------------------------ snapshots
    def _snapshot(self):
        if not self.deep:
            return (None, None, None, self.params)
        return copy.deepcopy((self.encoders.state_dict(), self.loss_fn.state_dict(), self.optimizer.state_dict())) + (self.params,)

    def _restore(self, snap):
        if self.deep:
            self.encoders.load_state_dict(snap[0])
            self.loss_fn.load_state_dict(snap[1])
            self.optimizer.load_state_dict(snap[2])
        self.params = snap[3]

    def _diverged(self, snap, message):
        self._restore(snap)
        warn(f"{message} Lower learning_rate (now {self.cfg.learning_rate}).", RuntimeWarning)

    # ------------------------------------------------------------------ fit
    def fit(self, Xs, observed):
        """Closed-form start and epochs of the bi-step loop on the standardized blocks ``Xs`` [design 3].

        Parameters
        ----------
        Xs : list of ndarray (n, d_in_m)
            Standardized blocks, zeros where a modality is missing.
        observed : bool Tensor (n, k)

        With ``early_stopping`` a share ``validation_fraction`` of the rows, drawn
        from the trainer's seeded generator, is held out *before* anything is
        fitted; their cross-modal Recall@1 is monitored and the best epoch (the
        start included) is restored [design 3.3].

        Training that diverges (non-finite loss or log-likelihood) stops with a
        RuntimeWarning and keeps the last finite state.
        """
        cfg = self.cfg
        generator = self.random("training")
        self.incremental = False
        rows, validation = slice(None), None
        if self.deep and cfg.early_stopping:
            n = observed.shape[0]
            n_val = max(1, int(round(cfg.validation_fraction * n)))
            if n - n_val < 2:
                raise ValueError(f"early_stopping needs more rows: {n} rows leave {n - n_val} for training.")
            perm = torch.randperm(n, generator=generator).numpy()
            rows, held_out = perm[n_val:], perm[:n_val]
            validation = (self.tensors([b[held_out] for b in Xs], torch.float32), observed[torch.as_tensor(held_out, device=observed.device)])
            observed = observed[torch.as_tensor(rows, device=observed.device)]
        X64 = self.tensors([b[rows] for b in Xs])
        self.start(X64, observed)
        if not self.deep:
            return self
        X = [x.float() for x in X64]
        del X64
        self._em_refresh(X, observed, generator, min(cfg.em_init_iter, REPRESENTATION_START_ITER), "latent model of the representations")

        n = observed.shape[0]
        best, no_improve, stopped = None, 0, False
        if validation is not None:
            best = (self._validation_score(*validation), self._snapshot())
        snap = self._snapshot()
        for epoch in range(1, cfg.max_epochs + 1):
            t_epoch = time.perf_counter()
            if cfg.em_every and epoch > 1 and (epoch - 1) % cfg.em_every == 0:
                self._em_refresh(X, observed, generator, EM_REFRESH_ITER, f"epoch {epoch} refresh", level=2)
            stats = [] if not cfg.em_every else None
            terms = self.gradient_pass(X, observed, generator, stats_sink=stats)
            if stats is not None:  # streaming EM: one M-step from the epoch's running statistics [design 3.1]
                t0 = time.perf_counter()
                summed = summed_statistics(stats)
                self.params = m_step(summed, self.params, noise=cfg.noise)
                self.history.loglik_curve.append(float(summed.loglik) / n)
                self.history.time_em += time.perf_counter() - t0
            if not (_finite(terms["total"], self.history.loglik_curve[-1]) and _params_finite(self.params)):
                self._diverged(snap, f"CalMRL training diverged at epoch {epoch} (loss={terms['total']}); kept the parameters of epoch {epoch - 1} and stopped.")
                stopped = True
                break
            self._record_terms(terms)
            self.history.n_iter = epoch
            line = f"epoch {epoch}/{cfg.max_epochs}: loss {terms['total']:.4f} (" + ", ".join(f"{k} {v:.4f}" for k, v in terms.items() if k != "total") + ")"
            if validation is not None:
                score = self._validation_score(*validation)
                self.history.validation_scores.append(score)
                line += f", validation score {score:.4f}"
                if score > best[0] + cfg.tol:
                    best, no_improve = (score, self._snapshot()), 0
                else:
                    no_improve += 1
            if cfg.verbose >= 1:
                self._log(f"{line}, log-likelihood {self.history.loglik_curve[-1]:.4f}, {time.perf_counter() - t_epoch:.2f}s")
            snap = self._snapshot()
            if validation is not None and no_improve >= cfg.n_iter_no_change:
                stopped = True
                break

        if best is not None:
            self.history.best_validation_score = best[0]
            self._restore(best[1])
            if not stopped and cfg.max_epochs > 0:
                warn(
                    f"CalMRL's validation score was still improving at max_epochs={cfg.max_epochs} "
                    f"(tol={cfg.tol}, n_iter_no_change={cfg.n_iter_no_change}); consider raising max_epochs.",
                    ConvergenceWarning,
                )
        self.encoders.eval()
        return self

    # ------------------------------------------------------------------ partial_fit
    def partial_fit(self, Xs, observed, key):
        """One incremental step on a chunk [design 3.2]; returns False when the chunk was rejected.

        The first call fits the closed-form model of the blocks and the latent
        model on the chunk. Every call then runs one pass of gradient steps over
        the chunk (torch encoders), recomputes the chunk's EM statistics under the
        current models, replaces its earlier contribution (``key``) in the running
        totals and does one M-step from them.
        """
        cfg = self.cfg
        if not self.incremental:  # continuing a fitted model: fresh running totals and curves
            self.history, self.statistics, self.block_statistics, self.incremental = History(), RunningStatistics(), RunningStatistics(), True
        generator = self.random("partial_fit", self.history.n_iter)
        X64 = self.tensors(Xs)
        first = self.params is None
        if first:
            self.start(X64, observed)
            if self.deep:
                self._em_refresh([x.float() for x in X64], observed, generator, min(cfg.em_init_iter, REPRESENTATION_START_ITER), "latent model of the representations")
            self.history.loglik_curve, self.history.n_iter = [], 0
        elif self.centres is not None:
            self._keep_centres(X64, observed)
        if self.deep:
            snap = self._snapshot()
            terms = self.gradient_pass([x.float() for x in X64], observed, generator)
            if not (_finite(terms["total"]) and _params_finite(self.params)):
                self._diverged(snap, f"partial_fit diverged on this chunk (loss={terms['total']}); " + ("kept the initial encoders." if first else "the model was left as it was."))
                if not first:
                    return False
                self._new_loss()
            else:
                self._record_terms(terms)
        t0 = time.perf_counter()
        stats = chunked_statistics(encode_all(self.encoders, [x.float() for x in X64] if self.deep else X64, observed), observed, self.params, CHUNK)
        self.statistics.update(key, stats)
        params = m_step(self.statistics.total, self.params, noise=cfg.noise)
        block_params = None
        if self.deep:  # the closed-form model of the blocks learns incrementally too
            self.block_statistics.update(key, chunked_statistics(X64, observed, self._block_params, CHUNK))
            block_params = m_step(self.block_statistics.total, self._block_params, noise=cfg.noise)
        self.history.time_em += time.perf_counter() - t0
        if not (_params_finite(params) and (block_params is None or _params_finite(block_params))):
            if first:
                raise ValueError("partial_fit's M-step on the first chunk gave non-finite latent parameters; rescale X.")
            warn("partial_fit's M-step gave non-finite parameters; the model was left as it was.", RuntimeWarning)
            return False
        self.params = params
        if block_params is not None:
            self._block_params = block_params
        self.history.n_iter += 1
        self.history.loglik_curve.append(float(stats.loglik) / stats.n_rows)
        return True


# the records and parameter objects a saved trainer holds, by name [design 7.3]
_RECORDS = {cls.__name__: cls for cls in (TrainConfig, History, LatentParams, MixtureParams, MixturePrior, SufficientStatistics, MixtureStatistics)}


def _plain(obj):
    """``obj`` as plain data: tensors as CPU numpy arrays (tagged), records and tuples as tagged dicts [design 7.3]."""
    if torch.is_tensor(obj):
        return {"__tensor__": obj.detach().cpu().numpy().copy()}
    if isinstance(obj, RunningStatistics):
        return {"__record__": "RunningStatistics", "fields": {"total": _plain(obj.total), "parts": _plain(obj.parts)}}
    if type(obj).__name__ in _RECORDS and type(obj) is _RECORDS[type(obj).__name__]:
        names = obj._fields if isinstance(obj, tuple) else [f.name for f in dataclasses.fields(obj)]
        return {"__record__": type(obj).__name__, "fields": {k: _plain(getattr(obj, k)) for k in names}}
    if isinstance(obj, tuple):
        return {"__tuple__": [_plain(v) for v in obj]}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    return obj


def _unplain(obj):
    """Inverse of :func:`_plain`."""
    if isinstance(obj, list):
        return [_unplain(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return torch.from_numpy(np.array(obj["__tensor__"]))
    if "__tuple__" in obj:
        return tuple(_unplain(v) for v in obj["__tuple__"])
    if "__record__" in obj:
        fields = {k: _unplain(v) for k, v in obj["fields"].items()}
        if obj["__record__"] == "RunningStatistics":
            running = RunningStatistics()
            running.total, running.parts = fields["total"], fields["parts"]
            return running
        return _RECORDS[obj["__record__"]](**fields)
    return {k: _unplain(v) for k, v in obj.items()}
