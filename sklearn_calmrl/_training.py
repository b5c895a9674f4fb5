"""The bi-step training loop (DESIGN.md section 3).

Closed-form steps (E/M on the latent model, :mod:`sklearn_calmrl._latent`) alternate
with gradient steps of the alignment loss (:mod:`sklearn_calmrl._alignment`) on the
calibrated representations: observed columns from the encoders, missing columns
imputed from the posterior of the shared latent.
"""

import copy
import time
import warnings
from dataclasses import dataclass, field
from typing import List

import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning

from ._alignment import make_alignment_loss
from ._latent import fit_em, impute, init_params, m_step, posterior, sufficient_statistics, summed_statistics

__all__ = ["TrainConfig", "TrainResult", "encode", "calibrated", "encode_all", "gradient_pass", "train"]


CHUNK = 4096  # rows per chunk of the no-grad passes
STREAM_BYTES = 1 << 30  # above this, EM refreshes stream the representations instead of caching them
INIT_ROWS = 20000  # rows used to initialise the latent model (DESIGN 2.6)


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train` (the estimator's parameters of the same names)."""

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
class TrainResult:
    """What :func:`train` learned and recorded."""

    encoders: torch.nn.ModuleList
    params: object
    loss_curve: List[float] = field(default_factory=list)
    validation_curve: List[float] = field(default_factory=list)
    loglik_curve: List[float] = field(default_factory=list)
    n_epochs: int = 0
    em_iter: int = 0
    time_em: float = 0.0
    time_gradient: float = 0.0


def encode(encoders, X, observed):
    """``z_i^m = normalize(f_m(x_i^m))`` for every modality; rows that miss ``m`` get zeros (DESIGN 2).

    Training runs float32 encoders; ``transform`` runs a float64 copy so that a
    row's output does not depend on which other rows share its batch.
    """
    zero = torch.zeros((), dtype=X[0].dtype, device=X[0].device)
    return [
        torch.where(observed[:, m, None], F.normalize(enc(x), dim=1), zero)
        for m, (enc, x) in enumerate(zip(encoders, X))
    ]


def calibrated(Z, observed, params, *, normalize_imputed=True, post=None):
    """Observed columns kept, missing columns imputed as ``W_m m_i + mu_m`` (DESIGN 2.3).

    ``Z`` is in the dtype of ``params`` (float64 for the closed-form step); the
    imputed columns are re-normalized to unit length when ``normalize_imputed``.
    Returns the calibrated list and the posterior.
    """
    if post is None:
        post = posterior(Z, observed, params)
    Zhat = impute(post.mean, params)  # zhat^m' = W_m' m_i + mu_m'  (DESIGN 2.3)
    if normalize_imputed:
        Zhat = [F.normalize(z, dim=1) for z in Zhat]
    return [torch.where(observed[:, m, None], Z[m], Zhat[m]) for m in range(len(Z))], post


@torch.no_grad()
def encode_all(encoders, X, observed, *, chunk_size=CHUNK, dtype=torch.float64):
    """Encode every row without gradients, in chunks (bounded working set)."""
    parts = [
        encode(encoders, [x[s : s + chunk_size] for x in X], observed[s : s + chunk_size])
        for s in range(0, observed.shape[0], chunk_size)
    ]
    return [torch.cat([p[m] for p in parts]).to(dtype) for m in range(len(X))]


def _snapshot(encoders, loss_fn, params):
    return copy.deepcopy(encoders.state_dict()), copy.deepcopy(loss_fn.state_dict()), params


def _restore(encoders, loss_fn, snap):
    encoders.load_state_dict(snap[0])
    loss_fn.load_state_dict(snap[1])
    return snap[2]


def _parameters_finite(*modules):
    """True when every parameter is finite (one reduction and one host sync per call)."""
    flags = [torch.isfinite(p).all() for mod in modules for p in mod.parameters()]
    return bool(torch.stack(flags).all()) if flags else True


def _batch_loss(encoders, loss_fn, xb, ob, params, cfg, stats_sink=None):
    """Alignment loss of one mini-batch on observed + imputed columns (DESIGN 3)."""
    Z = encode(encoders, xb, ob)
    Z64 = [z.double() for z in Z]
    source = [z.detach() for z in Z64] if cfg.detach_imputation else Z64
    post = posterior(source, ob, params)  # E-step with theta fixed (DESIGN 3)
    if stats_sink is not None:
        stats_sink.append(sufficient_statistics([z.detach() for z in Z64], ob, params, post if cfg.detach_imputation else None))
    if cfg.calibrate:
        Zhat, _ = calibrated(source, ob, params, normalize_imputed=cfg.normalize_imputed, post=post)
        # observed columns keep their gradient; imputed ones are calibrated targets unless not detached
        Zhat = [torch.where(ob[:, m, None], Z[m], Zhat[m].to(Z[m].dtype)) for m in range(len(Z))]
        return loss_fn(torch.stack(Zhat, dim=1))
    return loss_fn(torch.stack(Z, dim=1), observed=ob)  # the observed-only ablation


def gradient_pass(encoders, loss_fn, optimizer, X, observed, params, cfg, *, generator, stats_sink=None):
    """One shuffled pass of mini-batch steps of the alignment loss, latent parameters fixed (DESIGN 3).

    Returns the mean loss over the rows, NaN when a step made a weight
    non-finite (the pass then stops early and the caller restores a snapshot).
    """
    n = observed.shape[0]
    encoders.train()
    order = torch.randperm(n, generator=generator).to(observed.device)
    total = torch.zeros((), dtype=torch.float64, device=observed.device)
    for start in range(0, n, cfg.batch_size):
        idx = order[start : start + cfg.batch_size]
        loss = _batch_loss(encoders, loss_fn, [x[idx] for x in X], observed[idx], params, cfg, stats_sink)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * idx.shape[0]
        if not _parameters_finite(encoders, loss_fn):  # an overflowing step: end the pass
            total += float("nan")
            break
    encoders.eval()
    return float(total) / n


def train(encoders, X, observed, cfg, *, generator, device, validation=None):
    """Fit encoders and the latent model by the bi-step loop of DESIGN 3.

    Parameters
    ----------
    encoders : torch.nn.ModuleList
        One encoder per modality, already initialised, on ``device``.
    X : list of Tensor (n, d_in_m), float32 on ``device``
        Standardized blocks, zeros where a modality is missing.
    observed : bool Tensor (n, k)
    cfg : TrainConfig
    generator : torch.Generator
        CPU generator for the shuffles and the random initialisation.
    validation : tuple (X_val, observed_val) or None
        Held-out rows for early stopping.

    Returns
    -------
    TrainResult
        With the best encoders restored when early stopping is on. Training that
        diverges (non-finite loss or log-likelihood) stops with a RuntimeWarning and
        keeps the last finite state.
    """
    n = observed.shape[0]
    loss_fn = make_alignment_loss(cfg.alignment, **({"tau_intra": cfg.tau_intra, "tau_inter": cfg.tau_inter} if cfg.alignment == "pmrl" else {})).to(device)
    optimizer = torch.optim.Adam(list(encoders.parameters()) + list(loss_fn.parameters()), lr=cfg.learning_rate)
    result = TrainResult(encoders=encoders, params=None)

    def em_refresh(params, max_iter, label):
        """Encode all rows (no grad), then EM warm-started from ``params`` (DESIGN 3).

        Representations are cached for the EM iterations when they fit in
        ``STREAM_BYTES``; otherwise every EM iteration re-encodes chunk by chunk
        and sums the statistics, so they are never all in memory.
        """
        t0 = time.perf_counter()
        if params is None:  # DESIGN 2.6 initialisation, on at most INIT_ROWS rows
            rows = torch.randperm(n, generator=generator)[:INIT_ROWS].sort().values.to(device) if n > INIT_ROWS else slice(None)
            Z0 = encode_all(encoders, [x[rows] for x in X], observed[rows])
            init_gen = torch.Generator(device=device).manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
            params = init_params(Z0, observed[rows], cfg.latent_dim, generator=init_gen)
            del Z0
        if n * sum(e.linear.out_features for e in encoders) * 8 <= STREAM_BYTES:
            Z = encode_all(encoders, X, observed)
        else:
            def Z():
                for s in range(0, n, CHUNK):
                    yield encode_all(encoders, [x[s : s + CHUNK] for x in X], observed[s : s + CHUNK]), observed[s : s + CHUNK]
        params, history, n_em = fit_em(Z, observed, params, max_iter=max_iter, tol=cfg.em_tol, noise=cfg.noise, chunk_size=CHUNK)
        result.em_iter += n_em
        result.loglik_curve.append(history[-1])
        result.time_em += time.perf_counter() - t0
        if cfg.verbose >= 2:
            print(f"[CalMRL] {label}: {n_em} EM iterations, log-likelihood {history[0]:.4f} -> {history[-1]:.4f}")
        return params

    params = em_refresh(None, cfg.em_init_iter, "initial EM")

    best_loss, best_state, no_improve = float("inf"), None, 0
    converged = False
    snap = _snapshot(encoders, loss_fn, params)
    for epoch in range(1, cfg.max_epochs + 1):
        t_epoch = time.perf_counter()
        if cfg.em_every and epoch > 1 and (epoch - 1) % cfg.em_every == 0:
            params = em_refresh(params, cfg.em_refresh_iter, f"epoch {epoch} refresh")

        t0 = time.perf_counter()
        stats = [] if not cfg.em_every else None
        epoch_loss = gradient_pass(encoders, loss_fn, optimizer, X, observed, params, cfg, generator=generator, stats_sink=stats)
        result.time_gradient += time.perf_counter() - t0

        if stats is not None:  # streaming EM: one M-step from the epoch's running statistics (DESIGN 3)
            t0 = time.perf_counter()
            summed = summed_statistics(stats)
            params = m_step(summed, params, noise=cfg.noise)
            result.loglik_curve.append(float(summed.loglik) / n)
            result.time_em += time.perf_counter() - t0

        finite_params = all(torch.isfinite(t).all() for group in params for t in group)
        if not (torch.isfinite(torch.tensor(epoch_loss)) and finite_params and torch.isfinite(torch.tensor(result.loglik_curve[-1]))):
            params = _restore(encoders, loss_fn, snap)
            warnings.warn(
                f"CalMRL training diverged at epoch {epoch} (loss={epoch_loss}); kept the parameters of "
                f"epoch {epoch - 1} and stopped. Lower learning_rate (now {cfg.learning_rate}).",
                RuntimeWarning,
                stacklevel=3,
            )
            converged = True
            break
        result.loss_curve.append(epoch_loss)
        result.n_epochs = epoch

        monitored = epoch_loss
        if validation is not None:
            with torch.no_grad():
                encoders.eval()
                Xv, Ov = validation
                val = sum(
                    float(_batch_loss(encoders, loss_fn, [x[s : s + cfg.batch_size] for x in Xv], Ov[s : s + cfg.batch_size], params, cfg)) * Ov[s : s + cfg.batch_size].shape[0]
                    for s in range(0, Ov.shape[0], cfg.batch_size)
                ) / max(Ov.shape[0], 1)
            result.validation_curve.append(val)
            monitored = val
        if cfg.verbose >= 1:
            extra = f", validation loss {monitored:.4f}" if validation is not None else ""
            print(
                f"[CalMRL] epoch {epoch}/{cfg.max_epochs}: loss {epoch_loss:.4f}{extra}, "
                f"log-likelihood {result.loglik_curve[-1]:.4f}, {time.perf_counter() - t_epoch:.2f}s"
            )
        if monitored < best_loss - cfg.tol:
            best_loss, no_improve = monitored, 0
            if validation is not None:
                best_state = _snapshot(encoders, loss_fn, params)
        else:
            no_improve += 1
        snap = _snapshot(encoders, loss_fn, params)
        if no_improve >= cfg.n_iter_no_change:
            converged = True
            break

    if best_state is not None:
        params = _restore(encoders, loss_fn, best_state)
    if not converged:
        warnings.warn(
            f"CalMRL stopped at max_epochs={cfg.max_epochs} before the loss stopped improving "
            f"(tol={cfg.tol}, n_iter_no_change={cfg.n_iter_no_change}); consider raising max_epochs.",
            ConvergenceWarning,
            stacklevel=3,
        )
    encoders.eval()
    result.params = params
    return result
