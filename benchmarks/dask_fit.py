"""MultiViewPPCA fitted on a dask array on a 2-worker LocalCluster against the in-memory fit (issue 12).

Data from the latent model (6 modalities of 20 features, 8 latent factors, noise sd 0.5, 30% of the rows
missing modalities), generated chunk by chunk on the workers (``--chunk`` rows each) and persisted there, so
the client never holds the rows. The same chunks, generated in a child process and concatenated, give the
in-memory fit (torch's default thread count there; one thread per dask worker). Reported: wall times,
EM iterations, the final mean log-likelihood of both fits and the resident memory of each process.

    python benchmarks/dask_fit.py                   # 10^6 rows in 20 chunks of 50,000
    python benchmarks/dask_fit.py --rows 100000     # a quicker run

Note: above 20,000 rows ``fit_dask`` initialises on a 20,000-row sample while ``fit`` initialises on every row,
so the two fits start from different points and agree to the EM tolerance, not to rounding (the exact
equality is tested on smaller data in ``tests/test_distributed.py``).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

K, WIDTH, TRUE_Q, LATENT = 6, 20, 8, 8
MODALITIES = {f"m{m}": list(range(m * WIDTH, (m + 1) * WIDTH)) for m in range(K)}


def make_chunk(index, rows):
    """Rows ``index``-th chunk: the same model for every chunk (``make_latent_modalities``' parameters, seed 0)."""
    from sklearn_calmrl.datasets import ampute_modalities, make_latent_modalities

    _, mods, truth = make_latent_modalities(1, block_sizes=(WIDTH,) * K, latent_dim=TRUE_Q, noise=0.5, random_state=0)
    rng = np.random.default_rng([0, index])
    b = rng.standard_normal((rows, TRUE_Q))
    X = np.concatenate([b @ W.T + mu + rng.standard_normal((rows, WIDTH)) * np.sqrt(s2) for W, mu, s2 in zip(truth["W"], truth["mu"], truth["noise_variance"])], axis=1)
    return ampute_modalities(X, mods, rate=0.3, random_state=index)


def chunk_sizes(rows, chunk):
    return [min(chunk, rows - s) for s in range(0, rows, chunk)]


def model(tol):
    from sklearn_calmrl import MultiViewPPCA

    return MultiViewPPCA(MODALITIES, latent_dim=LATENT, output="latent", tol=tol, device="cpu", random_state=0)


def rss_mb():
    """Current and peak resident memory of this process (MB)."""
    with open("/proc/self/status") as fh:
        current = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
    return current / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_memory(args):
    """Child process: the same rows in memory, ``fit`` and ``transform``."""
    import torch

    X = np.concatenate([make_chunk(i, r) for i, r in enumerate(chunk_sizes(args.rows, args.chunk))])
    rss_data, _ = rss_mb()
    from benchmarks.speed import fit_and_transform_seconds

    est = model(args.tol)
    fit, transform = fit_and_transform_seconds(est, X)
    np.save(args.in_memory, np.concatenate(est.components_))
    _, peak = rss_mb()
    print(json.dumps({"fit": fit, "transform": transform, "n_iter": est.n_iter_, "loglik": est.loglik_curve_[-1], "rss_data": rss_data, "peak": peak, "threads": torch.get_num_threads()}))


def on_cluster(args):
    import dask
    import dask.array as da
    import distributed

    from sklearn_calmrl.distributed import fit_dask, transform_dask

    sizes = chunk_sizes(args.rows, args.chunk)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with distributed.LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster, distributed.Client(cluster) as client:
            t0 = time.perf_counter()
            parts = [da.from_delayed(dask.delayed(make_chunk)(i, r), shape=(r, K * WIDTH), dtype=np.float64) for i, r in enumerate(sizes)]
            X = client.persist(da.concatenate(parts))
            distributed.wait(X)
            generate = time.perf_counter() - t0
            held = client.run(rss_mb)
            t0 = time.perf_counter()
            est = fit_dask(model(args.tol), X)
            fit = time.perf_counter() - t0
            t0 = time.perf_counter()
            distributed.wait(client.persist(transform_dask(est, X)))
            transform = time.perf_counter() - t0
            after = client.run(rss_mb)
    return est, {"generate": generate, "fit": fit, "transform": transform, "held": held, "after": after}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tol", type=float, default=1e-4, help="EM tolerance of both fits")
    parser.add_argument("--in-memory", help=argparse.SUPPRESS)  # child mode: path for the components
    args = parser.parse_args(argv)
    if args.in_memory:
        return in_memory(args)

    with tempfile.TemporaryDirectory() as tmp:  # first, while the environment is the user's (dask's nanny changes it)
        path = os.path.join(tmp, "W.npy")
        command = [sys.executable, __file__, "--rows", str(args.rows), "--chunk", str(args.chunk), "--tol", str(args.tol), "--in-memory", path]
        child = subprocess.run(command, check=True, capture_output=True, text=True)
        m = json.loads(child.stdout.strip().splitlines()[-1])
        W_mem = np.load(path)
    client_before, _ = rss_mb()
    est, d = on_cluster(args)
    client_now, client_peak = rss_mb()
    W_dask = np.concatenate(est.components_)
    gram_diff = np.linalg.norm(W_dask @ W_dask.T - W_mem @ W_mem.T) / np.linalg.norm(W_mem @ W_mem.T)

    gb = args.rows * K * WIDTH * 8 / 2**20
    print(
        f"{args.rows} rows x {K} modalities x {WIDTH} features (float64, {gb:.0f} MB), {len(chunk_sizes(args.rows, args.chunk))} chunks "
        f"of {args.chunk}; MultiViewPPCA(latent_dim={LATENT}, tol={args.tol:g}); load average {'/'.join(f'{x:.2f}' for x in os.getloadavg())}, "
        f"{os.cpu_count()} cores\n"
    )
    print("| | dask, LocalCluster (2 workers x 1 thread) | in memory (one process) |")
    print("|---|---|---|")
    print(f"| data | generated on the workers and persisted: {d['generate']:.1f} s | generated in the process |")
    print(f"| fit (s) | {d['fit']:.1f} | {m['fit']:.1f} ({m['threads']} torch threads) |")
    print(f"| EM iterations | {est.n_iter_} | {m['n_iter']} |")
    print(f"| s per EM iteration (incl. init) | {d['fit'] / est.n_iter_:.2f} | {m['fit'] / m['n_iter']:.2f} |")
    print(f"| final mean log-likelihood | {est.loglik_curve_[-1]:.6f} | {m['loglik']:.6f} |")
    print(f"| transform (s) | {d['transform']:.1f} (kept on the workers) | {m['transform']:.1f} |")
    held = ", ".join(f"{v[0]:.0f}" for v in d["held"].values())
    peaks = ", ".join(f"{v[1]:.0f}" for v in d["after"].values())
    print(f"| memory (MB) | per worker: RSS holding its chunks {held}; peak RSS {peaks}. Client: RSS {client_before:.0f} before, {client_now:.0f} after, peak {client_peak:.0f} | RSS with the data {m['rss_data']:.0f}, peak {m['peak']:.0f} |")
    print(f"\nRelative difference of W W^T between the two fits: {gram_diff:.1e} (different starts: see the module docstring).")


if __name__ == "__main__":
    main()
