"""Fit time and peak memory against the number of rows, both estimators with their defaults beside what a user would
pick instead (issue 19).

    OMP_NUM_THREADS=1 python benchmarks/scaling.py                      # n = 1e4, 1e5, 1e6; 600 s per fit at most
    OMP_NUM_THREADS=1 python benchmarks/scaling.py --n 10000 --timeout 60   # a quick look

Data: ``benchmarks/speed.py``'s synthetic set (6 modalities of 10 features from the latent model, 8 latent factors,
30% of the rows losing a random non-empty proper subset of modalities). Methods, each with its defaults:
``MultiViewPPCA``, ``CalMRLTransformer``, and ``StandardScaler`` + ``SimpleImputer`` / ``KNNImputer`` /
``IterativeImputer`` + ``PCA(8)``. Every (method, n) runs in a fresh process (``--one``), so its peak resident memory
(``ru_maxrss``) is its own; the process is stopped at ``--timeout`` seconds and the method is not tried on more rows
(the table says where it stopped). Fit and transform of the training rows are timed separately. The torch thread
count is the library's default (one thread); scikit-learn's own steps run with the caller's ``OMP_NUM_THREADS``.
Prints a Markdown table and the load average before and after.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
METHODS = ("MultiViewPPCA", "CalMRLTransformer", "SimpleImputer+PCA", "KNNImputer+PCA", "IterativeImputer+PCA")


def _peer(imputer):
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), imputer, PCA(8, random_state=0))


def make_method(name, mods):
    """The estimator ``name`` with its defaults (the peers reduce to 8 dimensions, the true latent size)."""
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer

    from sklearn_calmrl import CalMRLTransformer, MultiViewPPCA

    return {
        "MultiViewPPCA": lambda: MultiViewPPCA(mods, random_state=0),
        "CalMRLTransformer": lambda: CalMRLTransformer(mods, random_state=0),
        "SimpleImputer+PCA": lambda: _peer(SimpleImputer()),
        "KNNImputer+PCA": lambda: _peer(KNNImputer()),
        "IterativeImputer+PCA": lambda: _peer(IterativeImputer(random_state=0)),
    }[name]()


def run_one(name, n):
    """Fit and transform one method on n rows in this process; print a JSON line."""
    sys.path.insert(0, str(HERE.parent))
    from benchmarks.speed import fit_and_transform_seconds, make_data

    X, mods = make_data(n)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    fit, transform = fit_and_transform_seconds(make_method(name, mods), X)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"method": name, "n": n, "fit_s": fit, "transform_s": transform, "peak_mb": peak, "before_mb": before, "data_mb": X.nbytes / 2**20}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds one (method, n) may run")
    p.add_argument("--one", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        return run_one(args.one[0], int(args.one[1]))
    print(f"load average before: {'/'.join(f'{x:.2f}' for x in os.getloadavg())}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)
    results, stopped = {}, {}
    for name in args.methods:
        for n in sorted(args.n):
            if name in stopped:
                break
            try:
                out = subprocess.run(
                    [sys.executable, __file__, "--one", name, str(n)], capture_output=True, text=True, timeout=args.timeout, check=True
                )
                results[name, n] = json.loads(out.stdout.strip().splitlines()[-1])
                print(json.dumps(results[name, n]), file=sys.stderr, flush=True)
            except subprocess.TimeoutExpired:
                stopped[name] = f"stopped: over {args.timeout:.0f} s at {n:,} rows"
            except subprocess.CalledProcessError as exc:
                stopped[name] = f"failed at {n:,} rows: {exc.stderr.strip().splitlines()[-1] if exc.stderr.strip() else exc}"
    ns = sorted(args.n)
    print("\n| method | " + " | ".join(f"fit {n:,} rows (s)" for n in ns) + " | peak memory at the largest n (MB) | transform, largest n (s) | note |")
    print("|---|" + "---|" * (len(ns) + 3))
    for name in args.methods:
        done = [n for n in ns if (name, n) in results]
        cells = [f"{results[name, n]['fit_s']:.3g}" if (name, n) in results else "-" for n in ns]
        last = results[name, done[-1]] if done else None
        peak = f"{last['peak_mb']:.0f} ({last['before_mb']:.0f} before the fit)" if last else "-"
        transform = f"{last['transform_s']:.3g}" if last else "-"
        print(f"| {name} | " + " | ".join(cells) + f" | {peak} | {transform} | {stopped.get(name, '')} |")
    print(f"\nload average after: {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
