"""Closed-form latent model over modality representations (design 2).

Pure tensor functions, no estimator state. The generative model is

    z^m = W_m b + mu_m + e_m,   b ~ N(0, I_q),   e_m ~ N(0, Psi_m)        [design 2.1]

with ``Psi_m = s_m^2 I`` (isotropic, the paper's model), ``diag(psi_m)`` (factor
analysis) or one ``s^2`` shared by all modalities. Representations are passed as a
list ``Z`` of ``k`` tensors of shape ``(n, d_m)`` plus a boolean ``observed`` of shape
``(n, k)``; entries of unobserved rows are ignored (they may hold anything, NaN too).
The noise is always stored as a per-dimension vector ``psi_m`` so one code path
serves the three noise models.

References ``[design x.y]`` point into ``doc/design.rst``.
"""

import math
from dataclasses import dataclass
from typing import List, NamedTuple

import torch

from ._modalities import missingness_patterns

__all__ = [
    "LatentParams",
    "Posterior",
    "SufficientStatistics",
    "NOISE_MODELS",
    "posterior",
    "impute",
    "single_modality_maps",
    "predictive_variance",
    "log_likelihood",
    "sufficient_statistics",
    "summed_statistics",
    "chunked_statistics",
    "RunningStatistics",
    "m_step",
    "init_params",
    "run_em",
    "fit_em",
]

NOISE_MODELS = ("isotropic", "diagonal", "shared")


class LatentParams(NamedTuple):
    """Parameters ``theta = {W_m, mu_m, Psi_m}`` of design 2.1, one entry per modality."""

    W: List[torch.Tensor]  # (d_m, q) loadings
    mu: List[torch.Tensor]  # (d_m,) means
    psi: List[torch.Tensor]  # (d_m,) noise variances (constant vector unless diagonal)

    def to(self, *args, **kwargs):
        """Move / cast every tensor (same arguments as ``torch.Tensor.to``)."""
        return LatentParams(*([t.to(*args, **kwargs) for t in group] for group in self))


class Posterior(NamedTuple):
    """Posterior ``N(mean_i, V_{O_i})`` of the shared latent [design 2.2]."""

    mean: torch.Tensor  # (n, q) posterior means m_i
    cov: torch.Tensor  # (P, q, q) V_O, one per distinct missingness pattern
    chol: torch.Tensor  # (P, q, q) Cholesky factor of the precision V_O^-1
    pattern_index: torch.Tensor  # (n,) row -> pattern
    patterns: torch.Tensor  # (P, k) bool, the distinct patterns
    h: torch.Tensor  # (n, q) sum_{m in O_i} W_m^T Psi_m^-1 (z_i^m - mu_m)


def _masked_residuals(Z, observed, params):
    """``r_i^m = z_i^m - mu_m`` on observed rows, zero elsewhere."""
    return [
        torch.where(observed[:, m, None], Z[m] - params.mu[m], torch.zeros((), dtype=Z[m].dtype, device=Z[m].device))
        for m in range(len(Z))
    ]


def posterior(Z, observed, params):
    """E-step: posterior of the shared latent given the observed modalities [design 2.2].

    One Cholesky factorisation of ``V_O^-1`` per distinct missingness pattern ``O``,
    then a matrix product per row. A row with no observed modality gets ``m = 0, V = I``.

    Parameters
    ----------
    Z : list of Tensor of shape (n, d_m)
    observed : bool Tensor of shape (n, k)
    params : LatentParams

    Returns
    -------
    Posterior
    """
    q = params.W[0].shape[1]
    dtype, device = params.W[0].dtype, params.W[0].device
    patterns, pattern_index = missingness_patterns(observed)
    # W_m^T Psi_m^-1 W_m, the precision each modality contributes [design 2.2]
    lam = torch.stack([W.T @ (W / psi[:, None]) for W, psi in zip(params.W, params.psi)])
    # V_O^-1 = I_q + sum_{m in O} W_m^T W_m / s_m^2  [design 2.2], one per pattern
    precision = torch.eye(q, dtype=dtype, device=device) + torch.einsum("pk,kab->pab", patterns.to(dtype), lam)
    chol = torch.linalg.cholesky(precision)
    cov = torch.cholesky_inverse(chol)
    residuals = _masked_residuals(Z, observed, params)
    # h_i = sum_{m in O_i} W_m^T (z_i^m - mu_m) / s_m^2  [design 2.2]
    h = sum((r / psi) @ W for r, W, psi in zip(residuals, params.W, params.psi))
    # m_i = V_{O_i} h_i  [design 2.2]
    mean = torch.bmm(cov[pattern_index], h[:, :, None])[:, :, 0]
    return Posterior(mean, cov, chol, pattern_index, patterns, h)


def single_modality_maps(params):
    """Affine maps ``x^m -> E[b | x^m] = A_m x^m + c_m`` of the posterior mean from modality m alone.

    [design 2.2] with ``O = {m}``: ``A_m = V_m W_m^T Psi_m^-1``, ``c_m = -A_m mu_m``.

    Returns
    -------
    list of (Tensor (q, d_m), Tensor (q,))
    """
    q = params.W[0].shape[1]
    eye = torch.eye(q, dtype=params.W[0].dtype, device=params.W[0].device)
    maps = []
    for W, mu, psi in zip(*params):
        Wp = W / psi[:, None]
        # V_{m} = (I + W_m^T Psi_m^-1 W_m)^-1 ; A_m = V_m W_m^T Psi_m^-1  [design 2.2]
        A = torch.linalg.solve(eye + W.T @ Wp, Wp.T)
        maps.append((A, -(A @ mu)))
    return maps


def impute(mean, params):
    """Representation-level imputation ``zhat^m = W_m m_i + mu_m`` for every modality [design 2.3]."""
    return [mean @ W.T + mu for W, mu in zip(params.W, params.mu)]


def predictive_variance(post, params):
    """Diagonal of the predictive covariance ``W_m V_O W_m^T + Psi_m`` per row and modality [design 2.3]."""
    out = []
    for W, psi in zip(params.W, params.psi):
        per_pattern = torch.einsum("dq,pqr,dr->pd", W, post.cov, W) + psi
        out.append(per_pattern[post.pattern_index])
    return out


def log_likelihood(Z, observed, params, post=None):
    """Observed-data log-likelihood ``log p(z_i^O)`` of every row [design 2.5].

    Returns
    -------
    Tensor of shape (n,)
    """
    if post is None:
        post = posterior(Z, observed, params)
    obs = observed.to(params.W[0].dtype)
    residuals = _masked_residuals(Z, observed, params)
    # sum_{m in O} (d_m log 2pi + sum_j log psi_mj)  [design 2.5]
    const = obs @ torch.stack([psi.numel() * math.log(2 * math.pi) + torch.log(psi).sum() for psi in params.psi])
    # sum_{m in O} ||r_m||^2 / s_m^2  [design 2.5]
    quad = sum(((r * r) / psi).sum(dim=1) for r, psi in zip(residuals, params.psi))
    # log det P with P = V_O^-1 = L L^T  [design 2.5]
    logdet = 2 * torch.log(torch.diagonal(post.chol, dim1=-2, dim2=-1)).sum(-1)
    # c^T V_O c = c^T m  (design 2.5, c = h)
    cvc = (post.h * post.mean).sum(dim=1)
    return -0.5 * (const + logdet[post.pattern_index] + quad - cvc)


@dataclass
class SufficientStatistics:
    """Expected complete-data statistics of design 2.4, additive over row chunks.

    Attributes
    ----------
    count : Tensor of shape (k,)
        ``|I_m|``, rows observing modality m.
    A : list of Tensor (q+1, q+1)
        ``sum_{i in I_m} E[b~ b~^T]`` with ``b~ = [b; 1]``.
    C : list of Tensor (d_m, q+1)
        ``sum_{i in I_m} z_i^m E[b~]^T``.
    S : list of Tensor (d_m,)
        ``sum_{i in I_m} (z_i^m)^2`` element-wise.
    loglik : Tensor
        Sum of the observed-data log-likelihood of the rows (under the parameters used).
    n_rows : int
        Number of rows summed.
    """

    count: torch.Tensor
    A: List[torch.Tensor]
    C: List[torch.Tensor]
    S: List[torch.Tensor]
    loglik: torch.Tensor
    n_rows: int

    def __add__(self, other):
        return SufficientStatistics(
            self.count + other.count,
            [a + b for a, b in zip(self.A, other.A)],
            [a + b for a, b in zip(self.C, other.C)],
            [a + b for a, b in zip(self.S, other.S)],
            self.loglik + other.loglik,
            self.n_rows + other.n_rows,
        )

    def __neg__(self):
        return SufficientStatistics(-self.count, [-a for a in self.A], [-c for c in self.C], [-s for s in self.S], -self.loglik, -self.n_rows)

    def __sub__(self, other):
        return self + (-other)

    def to(self, device):
        """The same statistics with every tensor on ``device``."""
        move = lambda t: t.to(device)  # noqa: E731
        return SufficientStatistics(move(self.count), [move(a) for a in self.A], [move(c) for c in self.C], [move(s) for s in self.S], move(self.loglik), self.n_rows)


def sufficient_statistics(Z, observed, params, post=None):
    """E-step statistics for the M-step [design 2.4] and the log-likelihood [design 2.5] of a chunk.

    ``post`` may pass the chunk's already computed :func:`posterior` under ``params``.
    """
    if post is None:
        post = posterior(Z, observed, params)
    dtype = params.W[0].dtype
    obs = observed.to(dtype)
    pattern_counts = torch.bincount(post.pattern_index, minlength=post.patterns.shape[0]).to(dtype)
    ones = torch.ones(post.mean.shape[0], 1, dtype=dtype, device=post.mean.device)
    b_aug = torch.cat([post.mean, ones], dim=1)  # E[b~_i] = [m_i; 1]
    A, C, S = [], [], []
    for m, z in enumerate(Z):
        w = obs[:, m]
        z = torch.where(observed[:, m, None], z, torch.zeros((), dtype=z.dtype, device=z.device))
        # sum_{i in I_m} V_i, grouped by pattern [design 2.4]
        v_sum = torch.einsum("p,pab->ab", pattern_counts * post.patterns[:, m].to(dtype), post.cov)
        # A_m = sum_{i in I_m} [[V_i + m_i m_i^T, m_i], [m_i^T, 1]]  [design 2.4]
        a = (b_aug * w[:, None]).T @ b_aug
        a[:-1, :-1] += v_sum
        A.append(a)
        # C_m = sum_{i in I_m} z_i^m [m_i^T, 1]  [design 2.4]
        C.append(z.T @ (b_aug * w[:, None]))
        S.append((z * z).sum(dim=0))
    loglik = log_likelihood(Z, observed, params, post).sum()
    return SufficientStatistics(obs.sum(dim=0), A, C, S, loglik, int(observed.shape[0]))


def summed_statistics(parts):
    """Sum an iterable of :class:`SufficientStatistics` (chunks, mini-batches or workers); None if empty."""
    total = None
    for part in parts:
        total = part if total is None else total + part
    return total


def chunked_statistics(Z, observed, params, chunk_size=None):
    """:func:`sufficient_statistics` of in-memory rows, summed over chunks of ``chunk_size`` rows (all at once when None)."""
    n = observed.shape[0]
    step = max(1, n if chunk_size is None else int(chunk_size))
    return summed_statistics(sufficient_statistics([z[s : s + step] for z in Z], observed[s : s + step], params) for s in range(0, n, step))


class RunningStatistics:
    """Statistics summed over the chunks of incremental EM (Neal & Hinton 1998) [design 3.2].

    Each chunk's contribution is kept under a key; a chunk seen again has its
    old contribution *replaced*, so passing the same chunks repeatedly converges
    to the full-batch EM fixed point, while new chunks add to the totals.
    Memory: one set of statistics per distinct chunk. Statistics are never
    modified in place, so :meth:`copy` is shallow.
    """

    def __init__(self):
        self.total = None
        self.parts = {}

    def update(self, key, stats):
        """Add a chunk's statistics, replacing its earlier contribution when ``key`` was seen before."""
        old = self.parts.get(key)
        if self.total is None:
            self.total = stats
        elif old is None:
            self.total = self.total + stats
        else:
            self.total = self.total - old + stats
        self.parts[key] = stats

    def copy(self):
        new = RunningStatistics()
        new.total, new.parts = self.total, dict(self.parts)
        return new

    def to(self, device):
        """A copy with every tensor on ``device``."""
        new = RunningStatistics()
        new.total = None if self.total is None else self.total.to(device)
        new.parts = {k: s.to(device) for k, s in self.parts.items()}
        return new


def m_step(stats, params, *, noise="isotropic", noise_floor=1e-6, ridge=1e-8):
    """M-step: exact maximiser of the expected complete-data log-likelihood [design 2.4].

    ``W~_m = [W_m, mu_m] = C_m A_m^-1`` (solved with a small ridge on the loading
    block), then the noise update. A modality with no observed row keeps its
    previous parameters.
    """
    if noise not in NOISE_MODELS:
        raise ValueError(f"noise must be one of {NOISE_MODELS}, got {noise!r}.")
    q = params.W[0].shape[1]
    W_new, mu_new, resid = [], [], []
    for m, (A, C, S) in enumerate(zip(stats.A, stats.C, stats.S)):
        n_m = stats.count[m]
        if n_m <= 0:
            W_new.append(params.W[m])
            mu_new.append(params.mu[m])
            resid.append(None)
            continue
        A_reg = A.clone()
        A_reg[:-1, :-1] += ridge * (1.0 + torch.diagonal(A[:-1, :-1]).mean()) * torch.eye(q, dtype=A.dtype, device=A.device)
        # W~_m <- C_m A_m^-1  (design 2.4; a solve, not an inverse)
        Wt = torch.linalg.solve(A_reg, C.T).T
        W_new.append(Wt[:, :q].contiguous())
        mu_new.append(Wt[:, q].contiguous())
        # E||z - W~ b~||^2 per dimension: S - 2 diag(W~ C^T) + diag(W~ A W~^T)  (design 2.4 noise update)
        resid.append((S - 2 * (Wt * C).sum(dim=1) + ((Wt @ A) * Wt).sum(dim=1)) / n_m)
    if noise == "shared":
        # one s^2 for all modalities: the pooled mean over every observed entry
        shared = sum(stats.count[m] * r.sum() for m, r in enumerate(resid) if r is not None) / sum(
            stats.count[m] * r.numel() for m, r in enumerate(resid) if r is not None
        )
    psi_new = []
    for m, r in enumerate(resid):
        if r is None:
            psi_new.append(params.psi[m])
        elif noise == "isotropic":
            # s_m^2 <- 1/(|I_m| d) sum_{i in I_m} E||z_i^m - W_m b - mu_m||^2  [design 2.4]
            psi_new.append((torch.zeros_like(r) + r.mean()).clamp_min(noise_floor))
        elif noise == "diagonal":
            psi_new.append(r.clamp_min(noise_floor))
        else:
            psi_new.append((torch.zeros_like(r) + shared).clamp_min(noise_floor))
    return LatentParams(W_new, mu_new, psi_new)


def init_params(Z, observed, latent_dim, *, generator=None, noise_floor=1e-6):
    """Initial parameters [design 2.6].

    Probabilistic PCA (Tipping & Bishop's closed form) of the concatenated
    representations of complete rows when there are at least ``2 * latent_dim``
    (and 10) of them; otherwise small random loadings. Means are the observed-row
    means (the M-step then moves them to the maximiser) and the noise starts at
    each modality's mean per-dimension variance.
    """
    dtype, device = Z[0].dtype, Z[0].device
    q = latent_dim
    mu, var = [], []
    for m, z in enumerate(Z):
        rows = z[observed[:, m]]
        mu.append(rows.mean(dim=0) if rows.shape[0] else torch.zeros(z.shape[1], dtype=dtype, device=device))
        v = rows.var(dim=0, unbiased=False).mean() if rows.shape[0] > 1 else torch.ones((), dtype=dtype, device=device)
        var.append(v.clamp_min(noise_floor))
    dims = [z.shape[1] for z in Z]
    complete = observed.all(dim=1)
    n_complete = int(complete.sum())
    # drawn on the CPU (``generator`` is a CPU generator) and moved: the same start on every device
    W_full = 0.1 * torch.randn(sum(dims), q, dtype=dtype, generator=generator).to(device)
    W_full *= torch.cat([v.sqrt().expand(d) for v, d in zip(var, dims)])[:, None]
    psi = [torch.zeros(d, dtype=dtype, device=device) + v for d, v in zip(dims, var)]
    if n_complete >= max(2 * q, 10):
        Zc = torch.cat([z[complete] - mu_m for z, mu_m in zip(Z, mu)], dim=1)
        _, sing, Vh = torch.linalg.svd(Zc, full_matrices=False)
        eig = sing**2 / n_complete
        r = min(q, eig.numel())
        rest = eig[r:]
        sigma2 = (rest.mean() if rest.numel() else eig[-1] * 0.01).clamp_min(noise_floor)
        # PPCA: W = U_q (Lambda_q - sigma^2 I)^{1/2}  (Tipping & Bishop 1999)
        W_full[:, :r] = Vh[:r].T * (eig[:r] - sigma2).clamp_min(0).sqrt()
        psi = [torch.zeros(d, dtype=dtype, device=device) + sigma2 for d in dims]
    W = list(torch.split(W_full, dims, dim=0))
    return LatentParams([w.contiguous() for w in W], mu, psi)


def _flat(params):
    """``theta`` as one vector: loadings, means and log noise variances (so extrapolation keeps them positive)."""
    return torch.cat([t.reshape(-1) for t in params.W] + [t.reshape(-1) for t in params.mu] + [torch.log(t).reshape(-1) for t in params.psi])


def _unflat(vec, like, noise_floor):
    """Inverse of :func:`_flat`, with the noise floored as in the M-step."""
    out, pos = [], 0
    for group in like:
        parts = []
        for t in group:
            parts.append(vec[pos : pos + t.numel()].reshape(t.shape))
            pos += t.numel()
        out.append(parts)
    return LatentParams(out[0], out[1], [torch.exp(p).clamp_min(noise_floor) for p in out[2]])


def run_em(statistics, params, *, max_iter=100, tol=1e-4, noise="isotropic", noise_floor=1e-6, accelerate=True, callback=None):
    """EM from a function that sums the statistics of all rows, until the log-likelihood gains less than ``tol`` [design 2.7].

    With ``accelerate`` every two EM steps are followed by a SQUAREM
    extrapolation (Varadhan & Roland 2008, scheme S3) along the EM path; the
    extrapolated point is kept only when its log-likelihood is at least that of
    the second EM step (step length halved towards the plain EM step otherwise),
    so the recorded log-likelihood never decreases and the fixed point is EM's.
    The statistics may come from anywhere: chunks of in-memory rows
    (:func:`fit_em`), a stream, or dask workers
    (:mod:`sklearn_calmrl.distributed`).

    Parameters
    ----------
    statistics : callable
        ``statistics(params) -> SufficientStatistics`` summed over every row under ``params``.
    params : LatentParams
        Starting point (warm start).
    max_iter : int
        Maximum number of E-steps (calls of ``statistics``, accelerated or not).
    tol : float
        Stop when an accepted step gains less than this in mean per-row log-likelihood.
    noise : {'isotropic', 'diagonal', 'shared'}
    noise_floor : float
    accelerate : bool, default=True
        SQUAREM extrapolation between EM steps.
    callback : callable or None
        Called as ``callback(n_iter, loglik)`` after every accepted point (progress).

    Returns
    -------
    params : LatentParams
        One M-step past the last accepted point.
    history : list of float
        Mean log-likelihood of every accepted point (non-decreasing, [design 2.5]).
    n_iter : int
        E-steps run (rejected extrapolations included).
    """

    def e_step(p):
        stats = statistics(p)
        return stats, float(stats.loglik) / max(stats.n_rows, 1)

    def em_map(stats, p):
        return m_step(stats, p, noise=noise, noise_floor=noise_floor)

    def accept(loglik):
        history.append(loglik)
        if callback is not None:
            callback(n_iter, loglik)

    history, n_iter = [], 1
    stats, ll = e_step(params)
    accept(ll)
    while n_iter < max_iter:
        p1 = em_map(stats, params)  # one EM step x -> F(x)
        s1, ll1 = e_step(p1)
        n_iter += 1
        accept(ll1)
        if abs(ll1 - ll) < tol or not accelerate or n_iter >= max_iter:
            params, stats, ll = p1, s1, ll1
            if abs(history[-1] - history[-2]) < tol:
                break
            continue
        # SQUAREM S3: r = F(x) - x, v = F(F(x)) - 2 F(x) + x, x' = x - 2 alpha r + alpha^2 v, alpha <= -1  [design 2.7]
        p2 = em_map(s1, p1)
        x0, x1, x2 = _flat(params), _flat(p1), _flat(p2)
        r, v = x1 - x0, x2 - 2 * x1 + x0
        norm_v = float(torch.linalg.vector_norm(v))
        alpha = min(-float(torch.linalg.vector_norm(r)) / norm_v, -1.0) if norm_v > 0 else -1.0
        best = (p1, s1, ll1)  # fallback: the plain EM step, already evaluated
        while n_iter < max_iter:
            candidate = p2 if alpha == -1.0 else _unflat(x0 - 2 * alpha * r + alpha**2 * v, params, noise_floor)
            s_c, ll_c = e_step(candidate)
            n_iter += 1
            if math.isfinite(ll_c) and ll_c >= ll1:
                best = (candidate, s_c, ll_c)
                accept(ll_c)
                break
            if alpha == -1.0:
                break
            alpha = (alpha - 1.0) / 2.0 if alpha < -2.0 else -1.0  # halve the extrapolation, then plain EM
        params, stats, ll = best
        if ll - ll1 < tol and best[0] is not p1:
            break
    return em_map(stats, params), history, n_iter


def fit_em(Z, observed, params, *, max_iter=100, tol=1e-4, noise="isotropic", noise_floor=1e-6, chunk_size=None, accelerate=True, callback=None):
    """:func:`run_em` on in-memory or streamed representations [design 2.7].

    Parameters
    ----------
    Z : list of Tensor (n, d_m), or callable
        In-memory representations, or a function returning a fresh iterable of
        ``(Z_chunk, observed_chunk)`` pairs over all rows (streaming EM: the
        representations never need to be in memory at once; ``observed`` is then
        ignored).
    observed : bool Tensor (n, k) or None
    params : LatentParams
        Starting point (warm start).
    chunk_size : int, default=None
        Rows per chunk for in-memory ``Z`` (bounded working set); all rows at once when None.
    max_iter, tol, noise, noise_floor, accelerate, callback
        As :func:`run_em`.

    Returns
    -------
    params, history, n_iter
        As :func:`run_em`.
    """
    if callable(Z):

        def statistics(p):
            return summed_statistics(sufficient_statistics(Zc, oc, p) for Zc, oc in Z())

    else:

        def statistics(p):
            return chunked_statistics(Z, observed, p, chunk_size)

    return run_em(statistics, params, max_iter=max_iter, tol=tol, noise=noise, noise_floor=noise_floor, accelerate=accelerate, callback=callback)
