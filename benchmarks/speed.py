"""Timing and memory of the two estimators: one script, one mode per measurement (issues 4, 12, 19, 28).

Data: ``harness.synthetic`` (the latent model of ``make_latent_modalities``, noise sd 0.5, 30% of the rows losing a
random non-empty proper subset of modalities); by default 6 modalities of 10 features and 8 latent factors.

Modes (one per call; the default is ``--transform``):

- ``--transform`` (default; ``--quick``: n in 1e3, 1e4 and 2 epochs; ``--large`` adds n = 1e6): for each n, on one
  device, the linear-encoder fit (``--epochs`` epochs, PMRL, latent_dim 8, embed_dim 16, batch 256): total time, the
  closed-form share (``fit_time_em_``) and the gradient steps (``fit_time_gradient_``); transform throughput (rows/s)
  of that model, of ``MultiViewPPCA`` and of ``MultiViewPPCA`` without the local correction (``local_bandwidth=None``)
  and the time ratio of the last two; ``MultiViewPPCA``'s fit time; ``StandardScaler + IterativeImputer(max_iter=5) +
  PCA(8)`` and MOFA+ (mofapy2, 8 factors, at most ``--mofa-iter`` iterations, where it imports) fit times; log-log
  slopes of time against n (1 = linear).
- ``--fit-ratio``: the two estimators with their defaults fitted side by side on ``--ratio-rows`` rows of 3 blocks of
  50 features (issue 19's target: ``CalMRLTransformer`` within 3x ``MultiViewPPCA``), alternating, median of
  ``--repeats`` runs.
- ``--fit-time --repo LABEL=PATH ...``: the default fit of ``--fit-estimators`` (``CalMRLTransformer``) on
  ``--fit-datasets`` (Multiple Features; rate .5) for one or more checkouts side by side, each fit in a fresh process importing the package from its checkout, the
  checkouts alternating (``--repeats`` rounds): one JSON line per fit and a Markdown summary.
- ``--scaling``: fit time, transform time and peak memory against n (default 1e4, 1e5, 1e6) of both estimators with
  their defaults and of ``StandardScaler`` + ``SimpleImputer`` / ``KNNImputer`` / ``IterativeImputer`` + ``PCA(8)``,
  every (method, n) in a fresh process (its own ``ru_maxrss``), stopped at ``--timeout`` seconds (the method is then
  not tried on more rows). The torch threads are the library's default; scikit-learn's follow ``OMP_NUM_THREADS``.
- ``--memory``: the peak memory of ``transform`` on ``--memory-rows`` rows (default 10^6) in a fresh process per
  model (MultiViewPPCA and linear) and output, from ``ru_maxrss`` minus the resident size before the call, with glibc's
  default allocator and with a fixed mmap threshold.
- ``--busy``: the "busy neighbour" slowdown (issue 12): the default ``CalMRLTransformer`` fit on Multiple Features
  (half of the rows missing modalities) and ``transform`` of ``--busy-rows`` rows (6 blocks of 20 features, a default
  ``MultiViewPPCA``), first on the machine as it is and then beside one extra process that keeps a core busy, each
  measurement repeated (median reported) within ``--busy-budget`` seconds. It leaves the thread settings alone: run
  it without ``OMP_NUM_THREADS`` to measure what a user gets.
- ``--grid``: a small ``GridSearchCV`` with ``n_jobs=1`` and ``n_jobs=2``, and the torch thread count inside the
  loky workers.
- ``--estep``: the E-step with one Cholesky per missingness pattern (``sklearn_calmrl._latent.posterior``, design
  2.2) against one per row, batched (chunks of 4096 rows) and as a Python loop (up to ``--loop-max`` rows); k=6,
  q=32, d=64 (``--k --q --d``), best of ``--repeats`` runs; ``--quick``: n in 1e3, 1e4 and one run.
- ``--dask``: ``MultiViewPPCA`` fitted on a dask array on a ``--workers``-worker ``LocalCluster`` against the
  in-memory fit of the same rows in a child process (issue 12): ``--dask-rows`` rows of 6 modalities of 20 features
  (8 latent factors) generated in chunks of ``--chunk`` rows on the workers; wall times, EM iterations, final
  log-likelihood and resident memory of each process. Above 20,000 rows ``fit_dask`` initialises on a 20,000-row
  sample while ``fit`` initialises on every row, so the two fits agree to the EM tolerance, not to rounding.

    OMP_NUM_THREADS=1 python benchmarks/speed.py                  # --transform: n in 1e3, 1e4, 1e5
    OMP_NUM_THREADS=1 python benchmarks/speed.py --quick          # n in 1e3, 1e4; about a minute
    OMP_NUM_THREADS=1 python benchmarks/speed.py --large          # adds n = 1e6
    python benchmarks/speed.py --device cuda                      # the same on a GPU
    OMP_NUM_THREADS=1 python benchmarks/speed.py --fit-ratio      # default fits side by side, 1e5 rows x 3 x 50
    OMP_NUM_THREADS=1 python benchmarks/speed.py --fit-time --repo before=/tmp/calmrl-old --repo now=. --repeats 3
    OMP_NUM_THREADS=1 python benchmarks/speed.py --scaling        # n = 1e4, 1e5, 1e6; 600 s per fit at most
    OMP_NUM_THREADS=1 python benchmarks/speed.py --scaling --n 10000 --timeout 60    # a quick look
    OMP_NUM_THREADS=1 python benchmarks/speed.py --memory         # transform peak memory on 1e6 rows
    env -u OMP_NUM_THREADS python benchmarks/speed.py --busy      # quiet vs one busy neighbour, default threads
    python benchmarks/speed.py --grid                             # GridSearchCV n_jobs=1 vs 2
    OMP_NUM_THREADS=1 python benchmarks/speed.py --estep          # E-step per pattern vs per row, n in 1e3, 1e4, 1e5
    python benchmarks/speed.py --dask                             # 10^6 rows in 20 chunks of 50,000
    python benchmarks/speed.py --dask --dask-rows 100000          # a quicker run

Prints Markdown tables (progress on stderr).
"""

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import pickle
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import _checkout  # noqa: F401 - this checkout's benchmarks and sklearn_calmrl first (benchmarks/_checkout.py)
import numpy as np
import torch

from benchmarks import data
from sklearn_calmrl import CalMRLTransformer, MultiViewPPCA
from sklearn_calmrl.datasets import ampute_modalities, load_multiple_features, make_latent_modalities

K, WIDTH, TRUE_Q = 6, 10, 8
MODEL = dict(latent_dim=8, embed_dim=16, batch_size=256, alignment="pmrl")


def make_data(n, seed=0):
    """The default data of the modes: ``n`` rows, 6 modalities of 10 features, 8 latent factors, 30% amputed."""
    return data.synthetic(n, blocks=(WIDTH,) * K, latent_dim=TRUE_Q, seed=seed)


def sync(device):
    """Wait for the device's queued work (CUDA) before reading a clock."""
    if device == "cuda":
        torch.cuda.synchronize()


def fit_and_transform_seconds(est, X):
    """Seconds of ``est.fit(X)`` and then ``est.transform(X)``, warnings silenced (the benchmarks' own timing)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        est.fit(X)
        fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        est.transform(X)
    return fit, time.perf_counter() - t0


def best_time(fn, repeats):
    """The shortest of ``repeats`` timed calls of ``fn()``."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def child(*args, **kwargs):
    """Run ``python *args`` in a fresh process; the JSON object of the last line it prints."""
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=True, **kwargs)
    return json.loads(out.stdout.strip().splitlines()[-1])


def load_average():
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def rss_mb():
    """Current and peak resident memory of this process (MB)."""
    with open("/proc/self/status") as fh:
        current = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
    return current / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- --transform (default)
def time_calmrl(X, mods, device, epochs):
    est = CalMRLTransformer(mods, encoder="linear", max_epochs=epochs, device=device, random_state=0, **MODEL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sync(device)
        t0 = time.perf_counter()
        est.fit(X)
        sync(device)
        total = time.perf_counter() - t0
    return {"est": est, "total": total, "em": est.fit_time_em_, "gradient": est.fit_time_gradient_}


def time_transform(est, X, device, repeats=3):
    """Rows per second of ``est.transform(X)``, the best of ``repeats`` runs after a warm-up."""
    est.transform(X[:100])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        est.transform(X)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return X.shape[0] / best


def time_ppca(X, mods, device, **params):
    est = MultiViewPPCA(mods, latent_dim=MODEL["latent_dim"], device=device, random_state=0, **params)
    t0 = time.perf_counter()
    est.fit(X)
    sync(device)
    return est, time.perf_counter() - t0


def peer(imputer, n_components=MODEL["latent_dim"]):
    """What a user picks instead: ``StandardScaler`` + ``imputer`` + ``PCA(8)``."""
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), imputer, PCA(n_components, random_state=0))


def time_iterative_pca(X):
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer

    pipe = peer(IterativeImputer(max_iter=5, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        pipe.fit(X)
    return time.perf_counter() - t0


def time_mofa(X, mods, max_iter):
    try:
        import mofapy2  # noqa: F401

        from benchmarks.baselines import MOFATransformer
    except ImportError as exc:
        return None, f"skipped ({exc})"
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MOFATransformer(mods, n_factors=MODEL["latent_dim"], max_iter=max_iter, random_state=0).fit(X)
    return time.perf_counter() - t0, ""


def slope(ns, ts):
    ns, ts = np.asarray(ns, float), np.asarray(ts, float)
    ok = np.isfinite(ts) & (ts > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(ns[ok]), np.log(ts[ok]), 1)[0])


def _fmt(x, digits=3):
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return f"{x:.{digits}g}"


def run_transform(args):
    device = args.device
    print(
        f"CalMRL speed, device={device}, torch threads={torch.get_num_threads()}, data: {K} modalities x {WIDTH} "
        f"features, 30% rows amputed; linear encoder {MODEL}, {args.epochs} epochs\n"
    )
    X, mods = make_data(500)
    time_calmrl(X, mods, device, 1)  # warm-up: first-call costs (lazy imports, allocator) stay out of the table
    rows = []
    for n in args.n:
        X, mods = make_data(n)
        r = {"n": n, "fit": time_calmrl(X, mods, device, args.epochs)}
        r["tput_linear"] = time_transform(r["fit"]["est"], X, device)
        ppca, r["ppca_fit"] = time_ppca(X, mods, device)
        r["tput_ppca"] = time_transform(ppca, X, device)
        r["tput_plain"] = time_transform(time_ppca(X, mods, device, local_bandwidth=None)[0], X, device)
        if n <= args.baseline_max:
            r["iterative"] = time_iterative_pca(X)
            r["mofa"], note = time_mofa(X, mods, args.mofa_iter) if n <= args.mofa_max else (None, "skipped (n)")
            r["mofa_note"] = note
        else:
            r["iterative"], r["mofa"], r["mofa_note"] = None, None, "skipped (n)"
        rows.append(r)
        print(f"  n={n}: done", file=sys.stderr, flush=True)

    print("| n | linear fit total (s) | closed-form (fit_time_em_, s) | gradient steps (fit_time_gradient_, s) |")
    print("|---|---|---|---|")
    for r in rows:
        x = r["fit"]
        print(f"| {r['n']} | {_fmt(x['total'])} | {_fmt(x['em'])} | {_fmt(x['gradient'])} |")
    print()
    print(
        "| n | transform linear (rows/s) | transform MultiViewPPCA (rows/s) | transform MultiViewPPCA, no local correction (rows/s) "
        "| time ratio, default / no correction | MultiViewPPCA fit (s) | IterativeImputer+PCA fit (s) | MOFA+ fit (s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        mofa = _fmt(r["mofa"]) if r["mofa"] is not None else r["mofa_note"]
        print(
            f"| {r['n']} | {r['tput_linear']:.3g} | {r['tput_ppca']:.3g} | {r['tput_plain']:.3g} | {r['tput_plain'] / r['tput_ppca']:.2f}x | "
            f"{_fmt(r['ppca_fit'])} | {_fmt(r['iterative'])} | {mofa} |"
        )
    print()
    ns = [r["n"] for r in rows]
    print("Log-log slope of time against n (1 = linear):\n")
    print("| quantity | exponent, all n | exponent, two largest n |")
    print("|---|---|---|")
    for label, ts in [
        ("linear fit, total", [r["fit"]["total"] for r in rows]),
        ("transform, linear", [r["n"] / r["tput_linear"] for r in rows]),
        ("MultiViewPPCA fit", [r["ppca_fit"] for r in rows]),
        ("IterativeImputer+PCA fit", [r["iterative"] if r["iterative"] is not None else np.nan for r in rows]),
        ("MOFA+ fit", [r["mofa"] if r["mofa"] is not None else np.nan for r in rows]),
    ]:
        print(f"| {label} | {_fmt(slope(ns, ts), 3)} | {_fmt(slope(ns[-2:], ts[-2:]), 3)} |")


# ----------------------------------------------------------------------------- --fit-ratio
def run_fit_ratio(args):
    """The two estimators with their defaults, fitted side by side (alternating) on the same rows (issue 19)."""
    X, mods = data.synthetic(args.ratio_rows, blocks=(50, 50, 50), latent_dim=TRUE_Q)
    times = {"MultiViewPPCA": [], "CalMRLTransformer": []}
    load_before = os.getloadavg()
    for _ in range(args.repeats):
        for name, cls in (("MultiViewPPCA", MultiViewPPCA), ("CalMRLTransformer", CalMRLTransformer)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                cls(mods, random_state=0).fit(X)
                times[name].append(time.perf_counter() - t0)
            print(f"  {name}: {times[name][-1]:.1f} s", file=sys.stderr, flush=True)
    ppca, calmrl = (float(np.median(times[k])) for k in ("MultiViewPPCA", "CalMRLTransformer"))
    print(f"Default fits on {args.ratio_rows:,} rows x 3 blocks of 50 (30% of the rows missing blocks), torch threads "
          f"{torch.get_num_threads()}, median of {args.repeats} alternating runs\n")
    print("| estimator | fit (s), median | runs (s) |")
    print("|---|---|---|")
    for name, value in (("MultiViewPPCA", ppca), ("CalMRLTransformer", calmrl)):
        print(f"| {name} | {value:.1f} | {', '.join(f'{t:.1f}' for t in times[name])} |")
    print(f"\nCalMRLTransformer / MultiViewPPCA: {calmrl / ppca:.2f}x. Load average before "
          f"{'/'.join(f'{x:.2f}' for x in load_before)}, after {load_average()}.")


# ----------------------------------------------------------------------------- --fit-time
FIT_TIME_CHILD = r"""
import json, time, warnings
from sklearn_calmrl import {estimator} as Estimator
from sklearn_calmrl.datasets import ampute_modalities, load_{dataset} as load
data = load()
X = ampute_modalities(data.data, data.modalities, rate=0.5, random_state=0)
warnings.simplefilter("ignore")
start = time.perf_counter()
est = Estimator(data.modalities, random_state=0).fit(X)
total = time.perf_counter() - start
print(json.dumps(dict(total=total, em=getattr(est, "fit_time_em_", total), gradient=getattr(est, "fit_time_gradient_", 0.0))))
"""


def run_fit_time(args):
    """The default fit of each ``--fit-estimators`` on each ``--fit-datasets`` (rate .5), one fresh process per fit
    with ``PYTHONPATH`` set to the checkout it measures, the checkouts alternating."""
    if not args.repo:
        raise SystemExit("--fit-time needs one or more --repo LABEL=PATH")
    repos = dict(item.split("=", 1) for item in args.repo)
    cases = [(e, d) for d in args.fit_datasets for e in args.fit_estimators]
    runs = {(e, d, label): [] for e, d in cases for label in repos}
    for _ in range(args.repeats):
        for estimator, dataset in cases:
            for label, path in repos.items():
                load = os.getloadavg()[0]
                env = {**os.environ, "PYTHONPATH": str(Path(path).resolve())}
                code = FIT_TIME_CHILD.format(estimator=estimator, dataset=dataset)
                result = dict(child("-c", code, cwd="/", env=env), estimator=estimator, dataset=dataset, label=label, load=round(load, 2))
                runs[estimator, dataset, label].append(result)
                print(json.dumps(result), flush=True)
    first = next(iter(repos))
    print(f"\n| estimator | data set | checkout | fit (s), median | closed-form part (s) | closed-form share | against {first} | runs |")
    print("|---|---|---|---|---|---|---|---|")
    for (estimator, dataset, label), results in runs.items():
        total = statistics.median(r["total"] for r in results)
        em = statistics.median(r["em"] for r in results)
        base = statistics.median(r["total"] for r in runs[estimator, dataset, first])
        print(f"| {estimator} | {dataset} | {label} | {total:.2f} | {em:.2f} | {em / total:.0%} | {total / base:.2f}x | {len(results)} |")


# ----------------------------------------------------------------------------- --scaling
SCALING_METHODS = ("MultiViewPPCA", "CalMRLTransformer", "SimpleImputer+PCA", "KNNImputer+PCA", "IterativeImputer+PCA")


def scaling_method(name, mods):
    """The estimator ``name`` with its defaults (the peers reduce to 8 dimensions, the true latent size)."""
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer

    return {
        "MultiViewPPCA": lambda: MultiViewPPCA(mods, random_state=0),
        "CalMRLTransformer": lambda: CalMRLTransformer(mods, random_state=0),
        "SimpleImputer+PCA": lambda: peer(SimpleImputer()),
        "KNNImputer+PCA": lambda: peer(KNNImputer()),
        "IterativeImputer+PCA": lambda: peer(IterativeImputer(random_state=0)),
    }[name]()


def scaling_child(name, n):
    """Fit and transform one method on n rows in this process; print a JSON line."""
    X, mods = make_data(int(n))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    fit, transform = fit_and_transform_seconds(scaling_method(name, mods), X)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"method": name, "n": int(n), "fit_s": fit, "transform_s": transform, "peak_mb": peak, "before_mb": before, "data_mb": X.nbytes / 2**20}))


def run_scaling(args):
    ns = sorted(args.n or [10_000, 100_000, 1_000_000])
    print(f"load average before: {load_average()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)
    results, stopped = {}, {}
    for name in args.methods:
        for n in ns:
            if name in stopped:
                break
            try:
                results[name, n] = child(__file__, "--child", "scaling", name, str(n), timeout=args.timeout)
                print(json.dumps(results[name, n]), file=sys.stderr, flush=True)
            except subprocess.TimeoutExpired:
                stopped[name] = f"stopped: over {args.timeout:.0f} s at {n:,} rows"
            except subprocess.CalledProcessError as exc:
                stopped[name] = f"failed at {n:,} rows: {exc.stderr.strip().splitlines()[-1] if exc.stderr.strip() else exc}"
    print("\n| method | " + " | ".join(f"fit {n:,} rows (s)" for n in ns) + " | peak memory at the largest n (MB) | transform, largest n (s) | note |")
    print("|---|" + "---|" * (len(ns) + 3))
    for name in args.methods:
        done = [n for n in ns if (name, n) in results]
        cells = [f"{results[name, n]['fit_s']:.3g}" if (name, n) in results else "-" for n in ns]
        last = results[name, done[-1]] if done else None
        peak = f"{last['peak_mb']:.0f} ({last['before_mb']:.0f} before the fit)" if last else "-"
        transform = f"{last['transform_s']:.3g}" if last else "-"
        print(f"| {name} | " + " | ".join(cells) + f" | {peak} | {transform} | {stopped.get(name, '')} |")
    print(f"\nload average after: {load_average()}")


# ----------------------------------------------------------------------------- --memory
def memory_child(model_path, data_path):
    """Runs in a fresh process: load X and the fitted model, then measure transform's peak; print a JSON line."""
    import tracemalloc

    X = np.load(data_path)
    with open(model_path, "rb") as fh:
        est = pickle.load(fh)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.transform(X[:1000])  # warm-up: imports, lazy allocations
        before = rss_mb()[0] * 2**20
        tracemalloc.start()
        t0 = time.perf_counter()
        Z = est.transform(X)
        elapsed = time.perf_counter() - t0
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    print(json.dumps({"before": before, "peak": peak, "traced": traced_peak, "input": X.nbytes, "output": Z.nbytes, "seconds": elapsed}))


def run_memory(args):
    n = args.memory_rows
    print(f"Transform peak memory on {n} rows x {K} modalities x {WIDTH} features (float64), device=cpu\n")
    with tempfile.TemporaryDirectory() as tmp:
        X, mods = make_data(n)
        data_path = os.path.join(tmp, "X.npy")
        np.save(data_path, X)
        fit_rows = X[: min(n, 10_000)]
        del X
        models = {
            "MultiViewPPCA": MultiViewPPCA(mods, latent_dim=MODEL["latent_dim"], device="cpu", random_state=0),
            "linear": CalMRLTransformer(mods, encoder="linear", max_epochs=1, device="cpu", random_state=0, **MODEL),
        }
        print(
            "| model | output | allocator | input (MB) | output (MB) | RSS before (MB) | peak RSS - RSS before (MB) "
            "| peak - before - output (MB) | tracemalloc peak, numpy (MB) | transform (s) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, est in models.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est.fit(fit_rows)
            for output in args.memory_outputs:
                est.set_params(output=output)
                model_path = os.path.join(tmp, f"{name}.pkl")
                with open(model_path, "wb") as fh:
                    pickle.dump(est, fh)
                # glibc's default raises its mmap threshold after large frees, so freed temporaries stay in the
                # heap and count in RSS; a fixed threshold shows the live working set
                for allocator, extra_env in [("glibc default", {}), ("MALLOC_MMAP_THRESHOLD_=128k", {"MALLOC_MMAP_THRESHOLD_": "131072"})]:
                    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **extra_env}
                    m = child(__file__, "--child", "memory", model_path, data_path, env=env)
                    mb = 2.0**20
                    extra = m["peak"] - m["before"]
                    print(
                        f"| {name} | {output} | {allocator} | {m['input'] / mb:.0f} | {m['output'] / mb:.0f} | "
                        f"{m['before'] / mb:.0f} | {extra / mb:.0f} | {(extra - m['output']) / mb:.0f} | "
                        f"{m['traced'] / mb:.0f} | {m['seconds']:.2f} |"
                    )


# ----------------------------------------------------------------------------- --grid
def _torch_threads():
    return torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")


def run_grid(args):
    """GridSearchCV over the estimator with n_jobs=1 (torch at its default threads, then at 1) and n_jobs=2."""
    import joblib
    from sklearn.model_selection import GridSearchCV, KFold

    X, mods = make_data(args.grid_rows)
    est = CalMRLTransformer(mods, encoder="linear", max_epochs=args.epochs, device=args.device, random_state=0, **MODEL)
    grid = {"latent_dim": [4, 8], "alignment": ["pmrl", "gram"]}
    workers = joblib.Parallel(n_jobs=2)(joblib.delayed(_torch_threads)() for _ in range(2))
    print(
        f"GridSearchCV, {args.grid_rows} rows, grid {grid}, 3-fold, {args.epochs} epochs, cpu_count={joblib.cpu_count()}; "
        f"torch threads inside loky workers (n_jobs=2): {sorted(set(workers))}\n"
    )
    print("| n_jobs | torch threads per fit | wall (s) | best_params_ | max abs diff of mean_test_score vs first row |")
    print("|---|---|---|---|---|")
    default_threads = torch.get_num_threads()
    reference = None
    for n_jobs, threads in [(1, default_threads), (1, 1), (2, None)]:
        if threads is not None:
            torch.set_num_threads(threads)
        search = GridSearchCV(est, grid, cv=KFold(3), n_jobs=n_jobs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            search.fit(X)
            wall = time.perf_counter() - t0
        torch.set_num_threads(default_threads)
        scores = search.cv_results_["mean_test_score"]
        reference = scores if reference is None else reference
        label = threads if threads is not None else "set by loky: " + ",".join(str(t) for t, _ in sorted(set(workers)))
        print(f"| {n_jobs} | {label} | {wall:.1f} | {search.best_params_} | {np.abs(scores - reference).max():.1e} |")


# ----------------------------------------------------------------------------- --busy
def _spin(started):
    """The busy neighbour: one process that keeps one core fully busy until it is terminated."""
    started.set()
    x = 0
    while True:
        x = (x + 1) % 1_000_003


@contextlib.contextmanager
def busy_neighbour():
    """One extra CPU-bound process for the duration of the block (started, then terminated)."""
    ctx = multiprocessing.get_context("spawn")
    started = ctx.Event()
    proc = ctx.Process(target=_spin, args=(started,), daemon=True)
    proc.start()
    try:
        if not started.wait(60):
            raise RuntimeError("the busy process did not start")
        time.sleep(1.0)  # let the scheduler see it running
        yield proc
    finally:
        proc.terminate()
        proc.join()


def _repeat(measure, repeats, budget):
    """Up to ``repeats`` results of ``measure()``, stopping early once ``budget`` seconds have been spent."""
    results, t0 = [], time.perf_counter()
    while len(results) < repeats and (not results or time.perf_counter() - t0 < budget):
        results.append(measure())
    return results


def run_busy(args):
    """Default fit on Multiple Features and transform of 300,000 rows, quiet and beside one busy process."""
    mf = load_multiple_features()
    X_mf = ampute_modalities(mf.data, mf.modalities, rate=0.5, random_state=0)
    X_big, mods = data.synthetic(args.busy_rows, blocks=(20,) * 6, latent_dim=TRUE_Q)
    ppca = MultiViewPPCA(mods, random_state=0).fit(X_big[:20_000])
    ppca.transform(X_big[:1000])  # warm-up: lazy imports and first-call costs stay out of the table

    def fit():
        est = CalMRLTransformer(mf.modalities, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            est.fit(X_mf)
        total = time.perf_counter() - t0
        return total, est.fit_time_em_ / total

    def transform():
        t0 = time.perf_counter()
        ppca.transform(X_big)
        return time.perf_counter() - t0, None

    env = os.environ.get("OMP_NUM_THREADS")
    print(
        f"Busy neighbour, cpu_count={os.cpu_count()}, torch threads={torch.get_num_threads()} (torch's default"
        f"{'' if env is None else f'; OMP_NUM_THREADS={env} is SET, so this is not the default'}), "
        f"torch {torch.__version__}; up to {args.repeats} runs per cell within {args.busy_budget:.0f} s, median reported\n"
    )
    cells, loads = {}, {}
    for phase in ("quiet", "busy"):
        with busy_neighbour() if phase == "busy" else contextlib.nullcontext():
            loads[phase] = os.getloadavg()
            for name, measure in (("fit", fit), ("transform", transform)):
                cells[name, phase] = _repeat(measure, args.repeats, args.busy_budget)
                print(f"  {name}, {phase}: {[round(t, 2) for t, _ in cells[name, phase]]}", file=sys.stderr, flush=True)
        loads[phase] = loads[phase] + os.getloadavg()

    def median(name, phase, i=0):
        return float(np.median([r[i] for r in cells[name, phase]]))

    print("| measurement | quiet (s) | beside one busy process (s) | busy / quiet | runs (quiet, busy) |")
    print("|---|---|---|---|---|")
    for name, label in (("fit", "default CalMRLTransformer fit, Multiple Features, rate .5"), ("transform", f"MultiViewPPCA transform, {args.busy_rows} rows x 6 x 20")):
        quiet, busy = median(name, "quiet"), median(name, "busy")
        print(f"| {label} | {quiet:.2f} | {busy:.2f} | {busy / quiet:.1f}x | {len(cells[name, 'quiet'])}, {len(cells[name, 'busy'])} |")
    print(
        f"\nClosed-form share of the fit (fit_time_em_ / total): quiet {100 * median('fit', 'quiet', 1):.0f}%, "
        f"busy {100 * median('fit', 'busy', 1):.0f}%."
    )
    for phase in ("quiet", "busy"):
        before, after = loads[phase][:3], loads[phase][3:]
        print(f"Load average (1, 5, 15 min) {phase}: before {'/'.join(f'{x:.2f}' for x in before)}, after {'/'.join(f'{x:.2f}' for x in after)}")
    if loads["quiet"][0] > 0.5:
        print(
            f"Note: the load average was already {loads['quiet'][0]:.2f} before the quiet phase: other processes were "
            "running, so 'quiet' is the machine as found, not an idle one, and the ratios understate the slowdown."
        )


# ----------------------------------------------------------------------------- --estep
def make_problem(n, k=6, q=32, d=64, missing_rate=0.3, seed=0, dtype=torch.float64):
    """Representations drawn from the latent model and a random missingness mask.

    A fraction ``missing_rate`` of the rows lose a random non-empty proper subset of the ``k`` modalities
    (as ``ampute_modalities`` does), so up to ``2^k - 1`` distinct patterns occur.
    """
    from sklearn_calmrl._latent import LatentParams

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


def run_estep(args):
    """Both versions share the ``O(n k d q)`` products ``h_i = sum_m W_m^T Psi_m^-1 (z_i^m - mu_m)``; the
    "factorisation only" column times the part that differs (the precisions and their Cholesky factors)."""
    from sklearn_calmrl._latent import posterior

    ns = args.n or [1_000, 10_000, 100_000]
    print(f"E-step, k={args.k}, q={args.q}, d={args.d}, 30% rows amputed, float64, torch threads={torch.get_num_threads()}\n")
    print(
        "| n | patterns | per-pattern (s) | per-row batched (s) | per-row loop (s) | batched / per-pattern "
        "| loop / per-pattern | factorisation only: per-pattern / per-row (s) | max abs diff of means |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n in ns:
        Z, observed, params = make_problem(n, args.k, args.q, args.d)
        with torch.no_grad():
            post = posterior(Z, observed, params)
            diff = float((naive_posterior(Z, observed, params) - post.mean).abs().max())
            t_pat = best_time(lambda: posterior(Z, observed, params), args.repeats)
            t_row = best_time(lambda: naive_posterior(Z, observed, params), args.repeats)
            t_loop = best_time(lambda: naive_posterior_loop(Z, observed, params), 1) if n <= args.loop_max else float("nan")
            lam, _ = _lam_and_h(Z, observed, params)
            f_pat = best_time(lambda: _factor_per_pattern(observed, lam), args.repeats)
            f_row = best_time(lambda: _factor_per_row(observed, lam), args.repeats)
        loop = f"{t_loop:.4f}" if math.isfinite(t_loop) else "skipped"
        loop_ratio = f"{t_loop / t_pat:.1f}x" if math.isfinite(t_loop) else "-"
        print(
            f"| {n} | {post.patterns.shape[0]} | {t_pat:.4f} | {t_row:.4f} | {loop} | {t_row / t_pat:.1f}x | {loop_ratio} "
            f"| {f_pat:.4f} / {f_row:.4f} | {diff:.1e} |"
        )


# ----------------------------------------------------------------------------- --dask
DASK_WIDTH, DASK_LATENT = 20, 8
DASK_MODALITIES = {f"m{m}": list(range(m * DASK_WIDTH, (m + 1) * DASK_WIDTH)) for m in range(K)}


def make_chunk(index, rows):
    """Rows ``index``-th chunk: the same model for every chunk (``make_latent_modalities``' parameters, seed 0)."""
    _, mods, truth = make_latent_modalities(1, block_sizes=(DASK_WIDTH,) * K, latent_dim=TRUE_Q, noise=0.5, random_state=0)
    rng = np.random.default_rng([0, index])
    b = rng.standard_normal((rows, TRUE_Q))
    X = np.concatenate([b @ W.T + mu + rng.standard_normal((rows, DASK_WIDTH)) * np.sqrt(s2) for W, mu, s2 in zip(truth["W"], truth["mu"], truth["noise_variance"])], axis=1)
    return ampute_modalities(X, mods, rate=0.3, random_state=index)


def chunk_sizes(rows, chunk):
    return [min(chunk, rows - s) for s in range(0, rows, chunk)]


def dask_model(tol):
    return MultiViewPPCA(DASK_MODALITIES, latent_dim=DASK_LATENT, output="latent", tol=tol, device="cpu", random_state=0)


def dask_child(rows, chunk, tol, path):
    """Child process: the same rows in memory, ``fit`` and ``transform``; the components saved to ``path``."""
    X = np.concatenate([make_chunk(i, r) for i, r in enumerate(chunk_sizes(int(rows), int(chunk)))])
    rss_data, _ = rss_mb()
    est = dask_model(float(tol))
    fit, transform = fit_and_transform_seconds(est, X)
    np.save(path, np.concatenate(est.components_))
    _, peak = rss_mb()
    print(json.dumps({"fit": fit, "transform": transform, "n_iter": est.n_iter_, "loglik": est.loglik_curve_[-1], "rss_data": rss_data, "peak": peak, "threads": torch.get_num_threads()}))


def on_cluster(args):
    import dask
    import dask.array as da
    import distributed

    from sklearn_calmrl.distributed import fit_dask, transform_dask

    sizes = chunk_sizes(args.dask_rows, args.chunk)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with distributed.LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster, distributed.Client(cluster) as client:
            t0 = time.perf_counter()
            parts = [da.from_delayed(dask.delayed(make_chunk)(i, r), shape=(r, K * DASK_WIDTH), dtype=np.float64) for i, r in enumerate(sizes)]
            X = client.persist(da.concatenate(parts))
            distributed.wait(X)
            generate = time.perf_counter() - t0
            held = client.run(rss_mb)
            t0 = time.perf_counter()
            est = fit_dask(dask_model(args.tol), X)
            fit = time.perf_counter() - t0
            t0 = time.perf_counter()
            distributed.wait(client.persist(transform_dask(est, X)))
            transform = time.perf_counter() - t0
            after = client.run(rss_mb)
    return est, {"generate": generate, "fit": fit, "transform": transform, "held": held, "after": after}


def run_dask(args):
    with tempfile.TemporaryDirectory() as tmp:  # first, while the environment is the user's (dask's nanny changes it)
        path = os.path.join(tmp, "W.npy")
        m = child(__file__, "--child", "dask", str(args.dask_rows), str(args.chunk), str(args.tol), path)
        W_mem = np.load(path)
    client_before, _ = rss_mb()
    est, d = on_cluster(args)
    client_now, client_peak = rss_mb()
    W_dask = np.concatenate(est.components_)
    gram_diff = np.linalg.norm(W_dask @ W_dask.T - W_mem @ W_mem.T) / np.linalg.norm(W_mem @ W_mem.T)

    gb = args.dask_rows * K * DASK_WIDTH * 8 / 2**20
    print(
        f"{args.dask_rows} rows x {K} modalities x {DASK_WIDTH} features (float64, {gb:.0f} MB), {len(chunk_sizes(args.dask_rows, args.chunk))} chunks "
        f"of {args.chunk}; MultiViewPPCA(latent_dim={DASK_LATENT}, tol={args.tol:g}); load average {load_average()}, "
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


# ----------------------------------------------------------------------------- command line
CHILDREN = {"scaling": scaling_child, "memory": memory_child, "dask": dask_child}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    for name, text in (("transform", "the fit and transform table against n (the default)"),
                       ("fit-ratio", "the two default fits side by side"),
                       ("fit-time", "the default fits on the bundled sets for the --repo checkouts, side by side"),
                       ("scaling", "fit, transform and peak memory against n, a fresh process per (method, n)"),
                       ("memory", "the peak memory of transform"), ("busy", "quiet vs beside one busy process"),
                       ("grid", "GridSearchCV with n_jobs=1 vs 2"), ("estep", "the E-step per pattern vs per row"),
                       ("dask", "MultiViewPPCA on a dask LocalCluster vs in memory")):
        mode.add_argument(f"--{name}", dest="mode", action="store_const", const=name.replace("-", "_"), help=text)
    p.add_argument("--n", type=int, nargs="+", default=None,
                   help="row counts (--transform: 1e3 1e4 1e5; --scaling: 1e4 1e5 1e6; --estep: 1e3 1e4 1e5)")
    p.add_argument("--large", action="store_true", help="--transform: add n = 1e6")
    p.add_argument("--quick", action="store_true", help="n in 1e3, 1e4 and 2 epochs (--estep: one run)")
    p.add_argument("--epochs", type=int, default=3, help="--transform, --grid: epochs of the linear encoders")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--repeats", "--repeat", type=int, default=3,
                   help="--fit-ratio, --fit-time: runs; --busy: most runs per measurement; --estep: best of")
    p.add_argument("--baseline-max", type=int, default=100_000, help="--transform: largest n for IterativeImputer / MOFA+")
    p.add_argument("--mofa-max", type=int, default=100_000)
    p.add_argument("--mofa-iter", type=int, default=100, help="MOFA+ iteration cap")
    p.add_argument("--ratio-rows", type=int, default=100_000, help="rows of the --fit-ratio fits")
    p.add_argument("--repo", action="append", default=[], metavar="LABEL=PATH", help="--fit-time: a checkout to time")
    p.add_argument("--fit-estimators", nargs="+", default=["CalMRLTransformer"], choices=["CalMRLTransformer", "MultiViewPPCA"], help="--fit-time: the estimators")
    p.add_argument("--fit-datasets", nargs="+", default=["multiple_features"], choices=["multiple_features", "image_segmentation"], help="--fit-time: the bundled sets")
    p.add_argument("--methods", nargs="+", default=list(SCALING_METHODS), choices=SCALING_METHODS, help="--scaling: methods")
    p.add_argument("--timeout", type=float, default=600.0, help="--scaling: seconds one (method, n) may run")
    p.add_argument("--memory-rows", type=int, default=1_000_000)
    p.add_argument("--memory-outputs", nargs="+", default=["concat", "latent"])
    p.add_argument("--busy-rows", type=int, default=300_000, help="rows of the --busy transform")
    p.add_argument("--busy-budget", type=float, default=120.0, help="--busy: no new run of a measurement after this many seconds")
    p.add_argument("--grid-rows", type=int, default=3000)
    p.add_argument("--k", type=int, default=6, help="--estep: modalities")
    p.add_argument("--q", type=int, default=32, help="--estep: latent dimension")
    p.add_argument("--d", type=int, default=64, help="--estep: width of a representation")
    p.add_argument("--loop-max", type=int, default=10_000, help="--estep: largest n for the Python-loop variant")
    p.add_argument("--dask-rows", type=int, default=1_000_000, help="--dask: rows")
    p.add_argument("--chunk", type=int, default=50_000, help="--dask: rows per chunk")
    p.add_argument("--workers", type=int, default=2, help="--dask: worker processes")
    p.add_argument("--tol", type=float, default=1e-4, help="--dask: EM tolerance of both fits")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)  # a mode's fresh process: KIND ARGS...
    args = p.parse_args(argv)
    args.mode = args.mode or "transform"
    if args.quick:
        args.n, args.epochs = [1_000, 10_000], 2
        args.repeats = 1 if args.mode == "estep" else args.repeats
    if args.mode == "transform":
        args.n = list(args.n or [1_000, 10_000, 100_000])
        if args.large and 1_000_000 not in args.n:
            args.n = args.n + [1_000_000]
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        return CHILDREN[args.child[0]](*args.child[1:])
    {"transform": run_transform, "fit_ratio": run_fit_ratio, "fit_time": run_fit_time, "scaling": run_scaling,
     "memory": run_memory, "busy": run_busy, "grid": run_grid, "estep": run_estep, "dask": run_dask}[args.mode](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
