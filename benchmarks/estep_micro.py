"""Micro-benchmark of the E-step (issue 4): one Cholesky per missingness pattern vs one per row.

``sklearn_calmrl._latent.posterior`` factorises ``V_O^-1 = I + sum_{m in O} W_m^T Psi_m^-1 W_m`` once per
distinct pattern ``O`` (at most ``2^k - 1``) and then does a matrix product per row [design 2.2]. The naive
version factorises the precision of every row. Two naive variants are timed: a batched one (one batched
Cholesky call over the rows, in chunks of 4096 rows to bound memory) and a Python loop (one Cholesky call per
row; only up to ``--loop-max`` rows, it is slow).

    OMP_NUM_THREADS=1 python benchmarks/estep_micro.py            # n in 1e3, 1e4, 1e5; k=6, q=32, d=64
    OMP_NUM_THREADS=1 python benchmarks/estep_micro.py --quick    # n in 1e3, 1e4

Prints a Markdown table (best of ``--repeat`` runs). Both versions share the ``O(n k d q)`` products
``h_i = sum_m W_m^T Psi_m^-1 (z_i^m - mu_m)``; the "factorisation only" column times the part that differs (the
precisions and their Cholesky factors).
"""

import argparse
import math
import time

import numpy as np
import torch

from sklearn_calmrl._latent import LatentParams, posterior

__all__ = ["make_problem", "naive_posterior", "naive_posterior_loop", "main"]


def make_problem(n, k=6, q=32, d=64, missing_rate=0.3, seed=0, dtype=torch.float64):
    """Representations drawn from the latent model and a random missingness mask.

    A fraction ``missing_rate`` of the rows lose a random non-empty proper subset of the ``k`` modalities
    (as ``ampute_modalities`` does), so up to ``2^k - 1`` distinct patterns occur.
    """
    g = torch.Generator().manual_seed(seed)
    W = [torch.randn(d, q, generator=g, dtype=dtype) / math.sqrt(q) for _ in range(k)]
    mu = [0.1 * torch.randn(d, generator=g, dtype=dtype) for _ in range(k)]
    psi = [torch.full((d,), 0.1 + 0.1 * m, dtype=dtype) for m in range(k)]
    params = LatentParams(W, mu, psi)
    b = torch.randn(n, q, generator=g, dtype=dtype)
    Z = [b @ W[m].T + mu[m] + psi[m].sqrt() * torch.randn(n, d, generator=g, dtype=dtype) for m in range(k)]
    rng = np.random.RandomState(seed)
    observed = np.ones((n, k), dtype=bool)
    rows = rng.choice(n, int(round(missing_rate * n)), replace=False)
    codes = rng.randint(1, 2**k - 1, size=rows.size)  # non-empty proper subsets of modalities to drop
    observed[rows] = ((codes[:, None] >> np.arange(k)) & 1) == 0
    observed = torch.as_tensor(observed)
    Z = [torch.where(observed[:, m, None], z, torch.zeros((), dtype=dtype)) for m, z in enumerate(Z)]
    return Z, observed, params


def _lam_and_h(Z, observed, params):
    lam = torch.stack([W.T @ (W / psi[:, None]) for W, psi in zip(params.W, params.psi)])  # (k, q, q)
    h = sum(
        ((torch.where(observed[:, m, None], Z[m] - params.mu[m], torch.zeros((), dtype=Z[m].dtype)) / psi) @ W)
        for m, (W, psi) in enumerate(zip(params.W, params.psi))
    )
    return lam, h


def naive_posterior(Z, observed, params, *, chunk_size=4096, return_cov=False):
    """Per-row E-step: one Cholesky factorisation of ``V_i^-1`` per row (batched over rows, chunked).

    Returns the posterior means ``(n, q)`` and, with ``return_cov``, the per-row covariances ``(n, q, q)``.
    """
    q = params.W[0].shape[1]
    lam, h = _lam_and_h(Z, observed, params)
    eye = torch.eye(q, dtype=lam.dtype)
    means, covs = [], []
    for s in range(0, observed.shape[0], chunk_size):
        o = observed[s : s + chunk_size].to(lam.dtype)
        precision = eye + torch.einsum("nk,kab->nab", o, lam)  # V_i^-1, one per row
        chol = torch.linalg.cholesky(precision)
        means.append(torch.cholesky_solve(h[s : s + chunk_size, :, None], chol)[:, :, 0])
        if return_cov:
            covs.append(torch.cholesky_inverse(chol))
    mean = torch.cat(means)
    return (mean, torch.cat(covs)) if return_cov else mean


def naive_posterior_loop(Z, observed, params):
    """Per-row E-step as a Python loop: one ``torch.linalg.cholesky`` call per row."""
    q = params.W[0].shape[1]
    lam, h = _lam_and_h(Z, observed, params)
    eye = torch.eye(q, dtype=lam.dtype)
    o = observed.to(lam.dtype)
    mean = torch.empty_like(h)
    for i in range(observed.shape[0]):
        chol = torch.linalg.cholesky(eye + torch.einsum("k,kab->ab", o[i], lam))
        mean[i] = torch.cholesky_solve(h[i, :, None], chol)[:, 0]
    return mean


def _factor_per_pattern(observed, lam):
    """The factorisation part of :func:`posterior`: unique patterns, one Cholesky and inverse per pattern."""
    patterns, index = torch.unique(observed, dim=0, return_inverse=True)
    eye = torch.eye(lam.shape[1], dtype=lam.dtype)
    chol = torch.linalg.cholesky(eye + torch.einsum("pk,kab->pab", patterns.to(lam.dtype), lam))
    return torch.cholesky_inverse(chol), index


def _factor_per_row(observed, lam, chunk_size=4096):
    """The factorisation part of :func:`naive_posterior`: one Cholesky per row."""
    eye = torch.eye(lam.shape[1], dtype=lam.dtype)
    return [
        torch.linalg.cholesky(eye + torch.einsum("nk,kab->nab", observed[s : s + chunk_size].to(lam.dtype), lam))
        for s in range(0, observed.shape[0], chunk_size)
    ]


def _best_time(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--q", type=int, default=32)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--loop-max", type=int, default=10_000, help="largest n for the Python-loop variant")
    parser.add_argument("--quick", action="store_true", help="n in 1e3, 1e4 and one repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.repeat = [1_000, 10_000], 1
    print(f"E-step, k={args.k}, q={args.q}, d={args.d}, 30% rows amputed, float64, torch threads={torch.get_num_threads()}\n")
    print(
        "| n | patterns | per-pattern (s) | per-row batched (s) | per-row loop (s) | batched / per-pattern "
        "| loop / per-pattern | factorisation only: per-pattern / per-row (s) | max abs diff of means |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n in args.n:
        Z, observed, params = make_problem(n, args.k, args.q, args.d)
        with torch.no_grad():
            post = posterior(Z, observed, params)
            diff = float((naive_posterior(Z, observed, params) - post.mean).abs().max())
            t_pat = _best_time(lambda: posterior(Z, observed, params), args.repeat)
            t_row = _best_time(lambda: naive_posterior(Z, observed, params), args.repeat)
            t_loop = _best_time(lambda: naive_posterior_loop(Z, observed, params), 1) if n <= args.loop_max else float("nan")
            lam, _ = _lam_and_h(Z, observed, params)
            f_pat = _best_time(lambda: _factor_per_pattern(observed, lam), args.repeat)
            f_row = _best_time(lambda: _factor_per_row(observed, lam), args.repeat)
        loop = f"{t_loop:.4f}" if math.isfinite(t_loop) else "skipped"
        loop_ratio = f"{t_loop / t_pat:.1f}x" if math.isfinite(t_loop) else "-"
        print(
            f"| {n} | {post.patterns.shape[0]} | {t_pat:.4f} | {t_row:.4f} | {loop} | {t_row / t_pat:.1f}x | {loop_ratio} "
            f"| {f_pat:.4f} / {f_row:.4f} | {diff:.1e} |"
        )


if __name__ == "__main__":
    main()
