"""The EM driver of every latent model (design 2.7, 3.2): full-batch, chunked, streamed or incremental, with SQUAREM.

It calls the latent-model protocol (design 2.13) only: ``statistics``, ``m_step``, ``flat`` and ``unflat``.
"""

import math

import torch

from .gaussian import NOISE_FLOOR


def summed_statistics(parts):
    """Sum an iterable of :class:`SufficientStatistics` (chunks, mini-batches or workers); None if empty."""
    total = None
    for part in parts:
        total = part if total is None else total + part
    return total


def chunked_statistics(Z, observed, params, chunk_size=None):
    """:func:`~sklearn_calmrl._latent.protocol.sufficient_statistics` of in-memory rows, summed over chunks of ``chunk_size`` rows (all at once when None)."""
    n = observed.shape[0]
    step = max(1, n if chunk_size is None else int(chunk_size))
    return summed_statistics(params.statistics([z[s : s + step] for z in Z], observed[s : s + step]) for s in range(0, n, step))


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


def run_em(statistics, params, *, max_iter, tol, noise, noise_floor=NOISE_FLOOR, accelerate=True, callback=None):
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
    params : latent model (LatentParams or MixtureParams)
        Starting point (warm start); its kind's ``m_step``, ``flat`` and ``unflat`` are the EM map and SQUAREM's
        coordinates [design 2.13].
    max_iter : int
        Maximum number of E-steps (calls of ``statistics``, accelerated or not).
    tol : float
        Stop when an accepted step gains less than this in mean per-row log-likelihood.
    noise : {'isotropic', 'diagonal'}
    noise_floor : float, default=NOISE_FLOOR
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
        return p.m_step(stats, noise=noise, noise_floor=noise_floor)

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
        x0, x1, x2 = params.flat(), p1.flat(), p2.flat()
        r, v = x1 - x0, x2 - 2 * x1 + x0
        norm_v = float(torch.linalg.vector_norm(v))
        alpha = min(-float(torch.linalg.vector_norm(r)) / norm_v, -1.0) if norm_v > 0 else -1.0
        best = (p1, s1, ll1)  # fallback: the plain EM step, already evaluated
        while n_iter < max_iter:
            candidate = p2 if alpha == -1.0 else params.unflat(x0 - 2 * alpha * r + alpha**2 * v, noise_floor)
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


def fit_em(Z, observed, params, *, max_iter, tol, noise, noise_floor=NOISE_FLOOR, chunk_size=None, accelerate=True, callback=None):
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
            return summed_statistics(p.statistics(Zc, oc) for Zc, oc in Z())

    else:

        def statistics(p):
            return chunked_statistics(Z, observed, p, chunk_size)

    return run_em(statistics, params, max_iter=max_iter, tol=tol, noise=noise, noise_floor=noise_floor, accelerate=accelerate, callback=callback)
