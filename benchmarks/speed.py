"""Speed and memory benchmark of CalMRLTransformer (issue 4).

Synthetic data from the latent model (``make_latent_modalities``: 6 modalities of 10 features, 8 latent
factors, noise sd 0.5), 30% of the rows losing a random non-empty proper subset of modalities
(``ampute_modalities``). For each n it measures, on one device:

- the linear-encoder fit (``--epochs`` epochs, PMRL, latent_dim 8, embed_dim 16, batch 256): total time, the
  closed-form share (``fit_time_em_``: the model of the blocks, the start and refreshes of the model of the
  representations) and the gradient steps (``fit_time_gradient_``);
- transform throughput (rows/s) of that model, of ``MultiViewPPCA`` and of ``MultiViewPPCA`` without the local
  correction (``local_bandwidth=None``);
- ``MultiViewPPCA``'s fit time (closed-form multi-view PPCA by EM);
- ``StandardScaler + IterativeImputer(max_iter=5) + PCA(8)`` fit time on the same data, and MOFA+ (mofapy2,
  8 factors, at most ``--mofa-iter`` iterations) where it imports;
- log-log slopes of time against n (the cost exponent; 1 = linear).

``--fit-ratio`` instead times the two estimators with their defaults side by side on ``--ratio-rows`` rows of 3
blocks of 50 features (issue 19's target: ``CalMRLTransformer`` within 3x ``MultiViewPPCA``), alternating, median
of ``--repeats`` runs.

``--busy`` instead measures the "busy neighbour" slowdown (issue 12): the default ``CalMRLTransformer`` fit on
Multiple Features (half of the rows missing modalities) and ``transform`` of 300,000 rows (6 blocks of 20
features, a default ``MultiViewPPCA``), first on the machine as it is and then beside one extra process that
keeps a core busy, each measurement repeated (median reported) within a time budget. It leaves the thread
settings alone: run it without ``OMP_NUM_THREADS`` to measure what a user gets.

``--grid`` instead times a small ``GridSearchCV`` with ``n_jobs=1`` and ``n_jobs=2`` and reports the torch thread
count inside the loky workers. ``--memory`` instead measures the peak memory of ``transform`` on ``--memory-rows`` rows (default 10^6) in a
fresh subprocess per model (identity and linear), from ``ru_maxrss`` minus the resident size before the call.

    OMP_NUM_THREADS=1 python benchmarks/speed.py --fit-ratio      # default fits side by side, 1e5 rows x 3 x 50
    OMP_NUM_THREADS=1 python benchmarks/speed.py --quick          # n in 1e3, 1e4; about a minute
    OMP_NUM_THREADS=1 python benchmarks/speed.py                  # n in 1e3, 1e4, 1e5
    OMP_NUM_THREADS=1 python benchmarks/speed.py --large          # adds n = 1e6
    OMP_NUM_THREADS=1 python benchmarks/speed.py --memory         # transform peak memory on 1e6 rows
    python benchmarks/speed.py --grid                             # GridSearchCV n_jobs=1 vs 2
    env -u OMP_NUM_THREADS python benchmarks/speed.py --busy      # quiet vs one busy neighbour, default threads
    python benchmarks/speed.py --device cuda                      # the same on a GPU

Prints Markdown tables.
"""

import argparse
import contextlib
import multiprocessing
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sklearn_calmrl import CalMRLTransformer, MultiViewPPCA  # noqa: E402
from sklearn_calmrl.datasets import ampute_modalities, load_multiple_features, make_latent_modalities  # noqa: E402

K, WIDTH, TRUE_Q = 6, 10, 8
MODEL = dict(latent_dim=8, embed_dim=16, batch_size=256, alignment="pmrl")


def make_data(n, seed=0):
    X, mods, _ = make_latent_modalities(n, block_sizes=(WIDTH,) * K, latent_dim=TRUE_Q, noise=0.5, random_state=seed)
    return ampute_modalities(X, mods, rate=0.3, random_state=seed), mods


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- fits
def time_calmrl(X, mods, device, epochs):
    est = CalMRLTransformer(mods, encoder="linear", max_epochs=epochs, device=device, random_state=0, **MODEL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _sync(device)
        t0 = time.perf_counter()
        est.fit(X)
        _sync(device)
        total = time.perf_counter() - t0
    return {"est": est, "total": total, "em": est.fit_time_em_, "gradient": est.fit_time_gradient_}


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


def time_transform(est, X, device, repeats=3):
    """Rows per second of ``est.transform(X)``, the best of ``repeats`` runs after a warm-up."""
    est.transform(X[:100])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        est.transform(X)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return X.shape[0] / best


def time_ppca(X, mods, device, **params):
    est = MultiViewPPCA(mods, latent_dim=MODEL["latent_dim"], device=device, random_state=0, **params)
    t0 = time.perf_counter()
    est.fit(X)
    _sync(device)
    return est, time.perf_counter() - t0


def time_iterative_pca(X):
    from sklearn.decomposition import PCA
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = make_pipeline(StandardScaler(), IterativeImputer(max_iter=5, random_state=0), PCA(MODEL["latent_dim"], random_state=0))
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


def run_speed(args):
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


def run_fit_ratio(args):
    """The two estimators with their defaults, fitted side by side (alternating) on the same rows (issue 19)."""
    X, mods, _ = make_latent_modalities(args.ratio_rows, block_sizes=(50, 50, 50), latent_dim=TRUE_Q, noise=0.5, random_state=0)
    X = ampute_modalities(X, mods, rate=0.3, random_state=0)
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
          f"{'/'.join(f'{x:.2f}' for x in load_before)}, after {'/'.join(f'{x:.2f}' for x in os.getloadavg())}.")


# ----------------------------------------------------------------------------- transform memory
def _rss_bytes():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _memory_child(model_path, data_path, out_path):
    """Runs in a fresh process: load X and the fitted model, then measure transform's peak."""
    import tracemalloc

    X = np.load(data_path)
    with open(model_path, "rb") as fh:
        est = pickle.load(fh)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.transform(X[:1000])  # warm-up: imports, lazy allocations
        before = _rss_bytes()
        tracemalloc.start()
        t0 = time.perf_counter()
        Z = est.transform(X)
        elapsed = time.perf_counter() - t0
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    with open(out_path, "w") as fh:
        fh.write(repr({"before": before, "peak": peak, "traced": traced_peak, "input": X.nbytes, "output": Z.nbytes, "seconds": elapsed}))


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
                out_path = os.path.join(tmp, "out.txt")
                code = (
                    f"import sys; sys.path.insert(0, {str(ROOT)!r}); from benchmarks.speed import _memory_child; "
                    f"_memory_child({model_path!r}, {data_path!r}, {out_path!r})"
                )
                # glibc's default raises its mmap threshold after large frees, so freed temporaries stay in the
                # heap and count in RSS; a fixed threshold shows the live working set
                for allocator, extra_env in [("glibc default", {}), ("MALLOC_MMAP_THRESHOLD_=128k", {"MALLOC_MMAP_THRESHOLD_": "131072"})]:
                    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **extra_env}
                    subprocess.run([sys.executable, "-c", code], check=True, env=env)
                    with open(out_path) as fh:
                        m = eval(fh.read())  # our own repr of a dict of numbers
                    mb = 2.0**20
                    extra = m["peak"] - m["before"]
                    print(
                        f"| {name} | {output} | {allocator} | {m['input'] / mb:.0f} | {m['output'] / mb:.0f} | "
                        f"{m['before'] / mb:.0f} | {extra / mb:.0f} | {(extra - m['output']) / mb:.0f} | "
                        f"{m['traced'] / mb:.0f} | {m['seconds']:.2f} |"
                    )


# ----------------------------------------------------------------------------- parallel grid search
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


# ----------------------------------------------------------------------------- busy neighbour
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
    data = load_multiple_features()
    X_mf = ampute_modalities(data.data, data.modalities, rate=0.5, random_state=0)
    X_big, mods, _ = make_latent_modalities(args.busy_rows, block_sizes=(20,) * 6, latent_dim=TRUE_Q, noise=0.5, random_state=0)
    X_big = ampute_modalities(X_big, mods, rate=0.3, random_state=0)
    ppca = MultiViewPPCA(mods, random_state=0).fit(X_big[:20_000])
    ppca.transform(X_big[:1000])  # warm-up: lazy imports and first-call costs stay out of the table

    def fit():
        est = CalMRLTransformer(data.modalities, random_state=0)
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--large", action="store_true", help="add n = 1e6")
    parser.add_argument("--quick", action="store_true", help="n in 1e3, 1e4, 2 epochs")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--baseline-max", type=int, default=100_000, help="largest n for IterativeImputer / MOFA+")
    parser.add_argument("--mofa-max", type=int, default=100_000)
    parser.add_argument("--mofa-iter", type=int, default=100, help="MOFA+ iteration cap")
    parser.add_argument("--grid", action="store_true", help="time GridSearchCV with n_jobs=1 vs 2 instead")
    parser.add_argument("--grid-rows", type=int, default=3000)
    parser.add_argument("--memory", action="store_true", help="measure transform peak memory instead")
    parser.add_argument("--memory-rows", type=int, default=1_000_000)
    parser.add_argument("--memory-outputs", nargs="+", default=["concat", "latent"])
    parser.add_argument("--fit-ratio", action="store_true", help="time the default fits side by side instead")
    parser.add_argument("--ratio-rows", type=int, default=100_000, help="rows of the --fit-ratio fits")
    parser.add_argument("--busy", action="store_true", help="measure quiet vs beside one busy process instead")
    parser.add_argument("--busy-rows", type=int, default=300_000, help="rows of the --busy transform")
    parser.add_argument("--repeats", type=int, default=3, help="--busy: most runs per measurement")
    parser.add_argument("--busy-budget", type=float, default=120.0, help="--busy: no new run of a measurement after this many seconds")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.epochs = [1_000, 10_000], 2
    if args.large and 1_000_000 not in args.n:
        args.n = list(args.n) + [1_000_000]
    if args.grid:
        run_grid(args)
    elif args.memory:
        run_memory(args)
    elif args.busy:
        run_busy(args)
    elif args.fit_ratio:
        run_fit_ratio(args)
    else:
        run_speed(args)


if __name__ == "__main__":
    main()
