"""The bi-step training loop [design 3], shared by ``fit`` and ``partial_fit``.

Closed-form steps (E/M on the latent model, :mod:`sklearn_calmrl._latent`) alternate
with gradient steps of the alignment loss (:mod:`sklearn_calmrl._alignment`) on the
calibrated representations: observed columns from the encoders, missing columns
imputed from the posterior of the shared latent. With ``encoder='identity'`` there
are no encoders and only the closed-form steps run.

:class:`Trainer` holds everything the loop carries (encoders, loss, optimizer, latent
parameters, running EM statistics, curves and timings); ``fit`` runs
:meth:`Trainer.fit` (epochs over all rows) and ``partial_fit`` runs
:meth:`Trainer.partial_fit` (one pass over a chunk and one incremental M-step).
Optimizers are constructed here and nowhere else.

References ``[design x.y]`` point into ``doc/design.rst``.
"""

import copy
import time
import warnings
from dataclasses import dataclass, field
from typing import List, Tuple

import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning

from ._alignment import make_alignment_loss
from ._encoders import make_encoders
from ._latent import (
    RunningStatistics,
    chunked_statistics,
    fit_em,
    impute,
    init_params,
    m_step,
    posterior,
    single_modality_maps,
    sufficient_statistics,
    summed_statistics,
)

__all__ = ["TrainConfig", "History", "Trainer", "encode", "calibrated", "encode_all", "init_rows", "CHUNK", "INIT_ROWS"]


CHUNK = 4096  # rows per chunk of every no-grad pass (EM, transform): bounds the working set
STREAM_BYTES = 1 << 30  # above this, EM refreshes stream the representations instead of caching them
INIT_ROWS = 20000  # rows used to initialise the representation-level latent model [design 2.6]


@dataclass
class TrainConfig:
    """Hyper-parameters of the loop (the estimator's parameters of the same names)."""

    encoder: str = "linear"
    embed_dim: int = 64
    hidden_layer_sizes: Tuple[int, ...] = (128,)
    encoder_init: str = "ppca"
    latent_dim: int = 32
    alignment: str = "pmrl"
    calibrate: bool = True
    max_epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 1e-4
    em_every: int = 1
    em_init_iter: int = 200
    em_refresh_iter: int = 3
    em_tol: float = 1e-3
    noise: str = "isotropic"
    detach_imputation: bool = True
    normalize_imputed: bool = True
    tau_intra: float = 0.05
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
    validation_loss_curve: List[float] = field(default_factory=list)
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


def calibrated(Z, observed, params, *, normalize_imputed=True, post=None):
    """Observed columns kept, missing columns imputed as ``W_m m_i + mu_m`` [design 2.3].

    ``Z`` is in the dtype of ``params`` (float64 for the closed-form step); the
    imputed columns are re-normalized to unit length when ``normalize_imputed``.
    Returns the calibrated list and the posterior.
    """
    if post is None:
        post = posterior(Z, observed, params)
    Zhat = impute(post.mean, params)  # zhat^m' = W_m' m_i + mu_m'  [design 2.3]
    if normalize_imputed:
        Zhat = [F.normalize(z, dim=1) for z in Zhat]
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


def init_rows(n, generator, size=INIT_ROWS):
    """Indices of the rows that initialise a latent model [design 2.6], in increasing order.

    All ``n`` rows when ``n <= size`` (``generator`` is then not used), else ``size``
    rows drawn without replacement by ``generator``.
    """
    return torch.randperm(n, generator=generator)[:size].sort().values if n > size else torch.arange(n)


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
    return _finite(*[t for group in params for t in group])


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
    encoders : torch.nn.ModuleList or None
        None for ``encoder='identity'``.
    params : LatentParams or None
        The latent model; None before the first closed-form fit.
    statistics : RunningStatistics
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
        self.statistics = RunningStatistics()
        self.history = History()
        self.incremental = True  # False after fit: the next partial_fit starts fresh totals and curves

    @property
    def deep(self):
        """Whether there are torch encoders to train."""
        return self.cfg.encoder != "identity"

    # ------------------------------------------------------------------ set-up
    def tensors(self, Xs, dtype=None):
        """The standardized numpy blocks as tensors on the device: float32 for encoders, float64 otherwise."""
        dtype = dtype or (torch.float32 if self.deep else torch.float64)
        return [torch.as_tensor(b, dtype=dtype, device=self.device) for b in Xs]

    def initial_params(self, Z, observed):
        """``init_params`` of the representations ``Z`` with the generator seeded by ``seed`` [design 2.6]."""
        return init_params(Z, observed, self.cfg.latent_dim, generator=torch.Generator(device=self.device).manual_seed(self.seed))

    def _closed_form_fit(self, Z, observed):
        """Closed-form model of the standardized blocks: ``init_params`` and EM to convergence [design 2.6]."""
        params = self.initial_params(Z, observed)
        return fit_em(Z, observed, params, max_iter=self.cfg.em_init_iter, tol=self.cfg.em_tol, noise=self.cfg.noise, chunk_size=CHUNK)

    def start(self, Xs, observed):
        """Build and initialise the encoders, the alignment loss and the optimizer from the blocks ``Xs``.

        With ``encoder_init='ppca'`` the closed-form model of the blocks is fitted
        first and encoder m's first ``latent_dim`` outputs start as its
        posterior-mean map ``x^m -> E[b | x^m]`` [design 7]. Returns the blocks as tensors.
        """
        cfg = self.cfg
        X = self.tensors(Xs)
        if not self.deep:
            return X
        maps = None
        if cfg.encoder_init == "ppca":
            ppca, _, _ = self._closed_form_fit(self.tensors(Xs, torch.float64), observed)
            maps = [(A.float(), c.float()) for A, c in single_modality_maps(ppca)]
        self.encoders = make_encoders(
            cfg.encoder, X, observed, cfg.embed_dim, cfg.hidden_layer_sizes, shared_maps=maps, seed=self.seed, device=self.device
        )
        self._new_loss()
        return X

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
        new.history = copy.deepcopy(self.history)
        return new

    def to(self, device):
        """Move every tensor the loop carries to ``device`` (after unpickling on another machine)."""
        self.device = device
        if self.deep:
            self.encoders.to(device)
            self.loss_fn.to(device)
            self.optimizer = self._optimizer(self.optimizer.state_dict())
        if self.params is not None:
            self.params = self.params.to(device)
        self.statistics = self.statistics.to(device)
        return self

    def __getstate__(self):
        """Pickle with every tensor on the CPU."""
        state = self.__dict__.copy()
        state["statistics"] = self.statistics.to("cpu")
        state["params"] = None if self.params is None else self.params.to("cpu")
        if self.encoders is not None:
            state["encoders"], state["loss_fn"] = copy.deepcopy((self.encoders, self.loss_fn))
            state["encoders"].cpu()
            state["loss_fn"].cpu()
            state["optimizer"] = _cpu_state(self.optimizer.state_dict())
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.device = "cpu"
        if self.deep:
            self.optimizer = self._optimizer(self.optimizer)

    # ------------------------------------------------------------------ closed-form steps
    def _em_refresh(self, X, observed, generator, max_iter, label):
        """Encode all rows (no grad), then EM warm-started from ``params`` [design 3].

        The first call initialises the latent model on at most ``INIT_ROWS`` rows
        [design 2.6]. Representations are cached for the EM iterations when they
        fit in ``STREAM_BYTES``; otherwise every EM iteration re-encodes chunk by
        chunk and sums the statistics, so they are never all in memory.
        """
        cfg, encoders, n = self.cfg, self.encoders, observed.shape[0]
        t0 = time.perf_counter()
        params = self.params
        if params is None:
            rows = init_rows(n, generator).to(self.device)
            Z0 = encode_all(encoders, [x[rows] for x in X], observed[rows])
            init_gen = torch.Generator(device=self.device).manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
            params = init_params(Z0, observed[rows], cfg.latent_dim, generator=init_gen)
            del Z0
        if n * sum(e.linear.out_features for e in encoders) * 8 <= STREAM_BYTES:
            Z = encode_all(encoders, X, observed)
        else:

            def Z():
                for s in range(0, n, CHUNK):
                    yield encode_all(encoders, [x[s : s + CHUNK] for x in X], observed[s : s + CHUNK]), observed[s : s + CHUNK]

        self.params, history, n_em = fit_em(Z, observed, params, max_iter=max_iter, tol=cfg.em_tol, noise=cfg.noise, chunk_size=CHUNK)
        self.history.loglik_curve.append(history[-1])
        self.history.time_em += time.perf_counter() - t0
        if cfg.verbose >= 2:
            print(f"[CalMRL] {label}: {n_em} EM iterations, log-likelihood {history[0]:.4f} -> {history[-1]:.4f}")

    def _initial_fit(self, X, observed, generator):
        """First closed-form fit: the latent model of the blocks (identity) or of the encoded rows."""
        if self.deep:
            self._em_refresh(X, observed, generator, self.cfg.em_init_iter, "initial EM")
            return
        t0 = time.perf_counter()
        self.params, loglik, n_iter = self._closed_form_fit(encode_all(None, X, observed), observed)
        self.history.time_em += time.perf_counter() - t0
        self.history.loglik_curve, self.history.n_iter = loglik, n_iter

    # ------------------------------------------------------------------ gradient steps
    def _batch_loss(self, xb, ob, stats_sink=None):
        """Alignment loss of one mini-batch on observed + imputed columns [design 3]."""
        cfg, params = self.cfg, self.params
        Z = encode(self.encoders, xb, ob)
        Z64 = [z.double() for z in Z]
        source = [z.detach() for z in Z64] if cfg.detach_imputation else Z64
        post = posterior(source, ob, params)  # E-step with theta fixed [design 3]
        if stats_sink is not None:
            stats_sink.append(sufficient_statistics([z.detach() for z in Z64], ob, params, post if cfg.detach_imputation else None))
        if cfg.calibrate:
            Zhat, _ = calibrated(source, ob, params, normalize_imputed=cfg.normalize_imputed, post=post)
            # observed columns keep their gradient; imputed ones are calibrated targets unless not detached
            Zhat = [torch.where(ob[:, m, None], Z[m], Zhat[m].to(Z[m].dtype)) for m in range(len(Z))]
            return self.loss_fn(torch.stack(Zhat, dim=1))
        return self.loss_fn(torch.stack(Z, dim=1), observed=ob)  # the observed-only ablation [design 4]

    def gradient_pass(self, X, observed, generator, stats_sink=None):
        """One shuffled pass of mini-batch steps of the alignment loss, latent parameters fixed [design 3].

        Returns the mean loss over the rows, NaN when a step made a weight
        non-finite (the pass then stops early and the caller restores a snapshot).
        """
        n, bs = observed.shape[0], self.cfg.batch_size
        t0 = time.perf_counter()
        self.encoders.train()
        order = torch.randperm(n, generator=generator).to(observed.device)
        total = torch.zeros((), dtype=torch.float64, device=observed.device)
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            loss = self._batch_loss([x[idx] for x in X], observed[idx], stats_sink)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.detach() * idx.shape[0]
            if not _finite(self.encoders, self.loss_fn):  # an overflowing step: end the pass
                total += float("nan")
                break
        self.encoders.eval()
        self.history.time_gradient += time.perf_counter() - t0
        return float(total) / n

    @torch.no_grad()
    def _validation_loss(self, X, observed):
        bs = self.cfg.batch_size
        total = sum(
            float(self._batch_loss([x[s : s + bs] for x in X], observed[s : s + bs])) * observed[s : s + bs].shape[0]
            for s in range(0, observed.shape[0], bs)
        )
        return total / max(observed.shape[0], 1)

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
        warnings.warn(f"{message} Lower learning_rate (now {self.cfg.learning_rate}).", RuntimeWarning, stacklevel=4)

    # ------------------------------------------------------------------ fit
    def fit(self, X, observed, *, rng):
        """Initial closed-form fit on the training rows, then epochs of the bi-step loop [design 3].

        Parameters
        ----------
        X : list of Tensor (n, d_in_m)
            The blocks from :meth:`start`.
        observed : bool Tensor (n, k)
        rng : numpy.random.RandomState
            Draws the early-stopping split: with ``early_stopping`` a share
            ``validation_fraction`` of the rows is held out, its loss is monitored
            instead of the training loss and the best epoch is restored.

        Training that diverges (non-finite loss or log-likelihood) stops with a
        RuntimeWarning and keeps the last finite state.
        """
        cfg = self.cfg
        generator = torch.Generator().manual_seed(self.seed)
        self.incremental = False
        validation = None
        if self.deep and cfg.early_stopping:
            n = observed.shape[0]
            n_val = max(1, int(round(cfg.validation_fraction * n)))
            if n - n_val < 2:
                raise ValueError(f"early_stopping needs more rows: {n} rows leave {n - n_val} for training.")
            perm = torch.as_tensor(rng.permutation(n), device=observed.device)
            validation = ([x[perm[:n_val]] for x in X], observed[perm[:n_val]])
            X, observed = [x[perm[n_val:]] for x in X], observed[perm[n_val:]]
        self._initial_fit(X, observed, generator)
        if not self.deep:
            return self

        n = observed.shape[0]
        best_loss, best_state, no_improve, converged = float("inf"), None, 0, False
        snap = self._snapshot()
        for epoch in range(1, cfg.max_epochs + 1):
            t_epoch = time.perf_counter()
            if cfg.em_every and epoch > 1 and (epoch - 1) % cfg.em_every == 0:
                self._em_refresh(X, observed, generator, cfg.em_refresh_iter, f"epoch {epoch} refresh")
            stats = [] if not cfg.em_every else None
            epoch_loss = self.gradient_pass(X, observed, generator, stats_sink=stats)
            if stats is not None:  # streaming EM: one M-step from the epoch's running statistics [design 3]
                t0 = time.perf_counter()
                summed = summed_statistics(stats)
                self.params = m_step(summed, self.params, noise=cfg.noise)
                self.history.loglik_curve.append(float(summed.loglik) / n)
                self.history.time_em += time.perf_counter() - t0
            if not (_finite(epoch_loss, self.history.loglik_curve[-1]) and _params_finite(self.params)):
                self._diverged(snap, f"CalMRL training diverged at epoch {epoch} (loss={epoch_loss}); kept the parameters of epoch {epoch - 1} and stopped.")
                converged = True
                break
            self.history.loss_curve.append(epoch_loss)
            self.history.n_iter = epoch

            monitored = epoch_loss
            if validation is not None:
                monitored = self._validation_loss(*validation)
                self.history.validation_loss_curve.append(monitored)
            if cfg.verbose >= 1:
                extra = f", validation loss {monitored:.4f}" if validation is not None else ""
                print(
                    f"[CalMRL] epoch {epoch}/{cfg.max_epochs}: loss {epoch_loss:.4f}{extra}, "
                    f"log-likelihood {self.history.loglik_curve[-1]:.4f}, {time.perf_counter() - t_epoch:.2f}s"
                )
            if monitored < best_loss - cfg.tol:
                best_loss, no_improve = monitored, 0
                if validation is not None:
                    best_state = self._snapshot()
            else:
                no_improve += 1
            snap = self._snapshot()
            if no_improve >= cfg.n_iter_no_change:
                converged = True
                break

        if best_state is not None:
            self._restore(best_state)
        if not converged:
            warnings.warn(
                f"CalMRL stopped at max_epochs={cfg.max_epochs} before the loss stopped improving "
                f"(tol={cfg.tol}, n_iter_no_change={cfg.n_iter_no_change}); consider raising max_epochs.",
                ConvergenceWarning,
                stacklevel=3,
            )
        self.encoders.eval()
        return self

    # ------------------------------------------------------------------ partial_fit
    def partial_fit(self, X, observed, key):
        """One incremental step on a chunk [design 3.2]; returns False when the chunk was rejected.

        The first call fits the latent model on the chunk. Every call then runs one
        pass of gradient steps over the chunk (torch encoders), recomputes the
        chunk's EM statistics under the current model, replaces its earlier
        contribution (``key``) in the running totals and does one M-step from them.
        """
        cfg = self.cfg
        if not self.incremental:  # continuing a fitted model: fresh running totals and curves
            self.history, self.statistics, self.incremental = History(), RunningStatistics(), True
        generator = torch.Generator().manual_seed(self.seed + self.history.n_iter)
        first = self.params is None
        if first:
            self._initial_fit(X, observed, generator)
            self.history.loglik_curve, self.history.n_iter = [], 0
        if self.deep:
            snap = self._snapshot()
            loss = self.gradient_pass(X, observed, generator)
            if not (_finite(loss) and _params_finite(self.params)):
                self._diverged(snap, f"partial_fit diverged on this chunk (loss={loss}); " + ("kept the initial encoders." if first else "the model was left as it was."))
                if not first:
                    return False
                self._new_loss()
            else:
                self.history.loss_curve.append(loss)
        t0 = time.perf_counter()
        Z = encode_all(self.encoders, X, observed)
        stats = chunked_statistics(Z, observed, self.params, CHUNK)
        del Z
        self.statistics.update(key, stats)
        params = m_step(self.statistics.total, self.params, noise=cfg.noise)
        self.history.time_em += time.perf_counter() - t0
        if not _params_finite(params):
            if first:
                raise ValueError("partial_fit's M-step on the first chunk gave non-finite latent parameters; rescale X.")
            warnings.warn("partial_fit's M-step gave non-finite parameters; the model was left as it was.", RuntimeWarning, stacklevel=3)
            return False
        self.params = params
        self.history.n_iter += 1
        self.history.loglik_curve.append(float(stats.loglik) / stats.n_rows)
        return True


def _cpu_state(optimizer_state):
    """An optimizer ``state_dict`` with every tensor on the CPU."""
    return {
        "state": {i: {k: v.cpu() if torch.is_tensor(v) else v for k, v in s.items()} for i, s in optimizer_state["state"].items()},
        "param_groups": optimizer_state["param_groups"],
    }
