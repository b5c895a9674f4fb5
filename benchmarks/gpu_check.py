"""Parts of the one-call GPU check (issue 12); ``benchmarks/gpu_check.sh`` runs them, each under its own time cap.

Every part appends JSON lines to ``--results``, one per finished measurement, so a part that fails or
runs out of time keeps what it had measured; ``report`` turns the file into Markdown tables.

    python benchmarks/gpu_check.py env        --results R.jsonl
    python benchmarks/gpu_check.py agreement  --results R.jsonl [--device cuda] [--rows 20000]
    python benchmarks/gpu_check.py timing     --results R.jsonl --device cuda --rows 100000
    python benchmarks/gpu_check.py report     --results R.jsonl [--pytest-log LOG]

Data: ``make_latent_modalities`` with 6 blocks of 20 to 64 features (244 columns), 16 latent factors,
noise sd 0.5, 30% of the rows missing modalities. Models: the default ``CalMRLTransformer`` (linear
encoders; since issue 19 its training is a budget of 30 x 2048 samples, whatever the rows) and the default
``MultiViewPPCA``, nothing capped. On the CPU side ``n_jobs=-1`` (all cores).
"""

import argparse
import json
import os
import pickle
import sys
import time
import warnings
from pathlib import Path

import _checkout  # noqa: F401 - this checkout's benchmarks and sklearn_calmrl first (benchmarks/_checkout.py)
import numpy as np

from benchmarks import data
from benchmarks.speed import sync

BLOCKS = (20, 28, 36, 44, 52, 64)
TRUE_Q = 16


def make_data(n, seed=0):
    return data.synthetic(n, blocks=BLOCKS, latent_dim=TRUE_Q, seed=seed)


def models(mods, device):
    """The two timed models, with their defaults, by label."""
    from sklearn_calmrl import CalMRLTransformer, MultiViewPPCA

    n_jobs = -1 if device == "cpu" else None
    return {
        "MultiViewPPCA (defaults)": MultiViewPPCA(mods, device=device, n_jobs=n_jobs, random_state=0),
        "CalMRLTransformer (defaults)": CalMRLTransformer(mods, device=device, n_jobs=n_jobs, random_state=0),
    }


def record(path, **fields):
    with open(path, "a") as fh:
        fh.write(json.dumps(fields) + "\n")
    print(json.dumps(fields), flush=True)


def on(est, device):
    """A copy of the fitted ``est`` computing on ``device`` (the pickling path re-resolves the device)."""
    return pickle.loads(pickle.dumps(est.set_params(device=device)))


# ----------------------------------------------------------------------------- parts
def part_env(args):
    import sklearn
    import torch

    cuda = torch.cuda.is_available()
    record(
        args.results,
        kind="env",
        torch=torch.__version__,
        cuda=cuda,
        gpu=torch.cuda.get_device_name(0) if cuda else None,
        torch_cuda=torch.version.cuda,
        sklearn=sklearn.__version__,
        numpy=np.__version__,
        python=sys.version.split()[0],
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
    )


def part_agreement(args):
    """transform of one fitted model on the CPU and on ``device``; then models fitted on each, same seed."""
    X, mods = make_data(args.rows, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label, est in models(mods, "cpu").items():
            est.fit(X)
            cpu, dev = on(est, "cpu"), on(est, args.device)
            a = cpu.transform(X)

            def agree(comparison, other, **extra):
                record(
                    args.results,
                    kind="agreement",
                    model=label,
                    comparison=comparison,
                    max_abs=float(np.abs(a - other.transform(X)).max()),
                    max_abs_output=float(np.abs(a).max()),
                    score_diff=float(abs(cpu.score(X) - other.score(X))),
                    **extra,
                )

            agree(f"one model fitted on the CPU, transform on cpu vs {dev.device_}", dev)
            t0 = time.perf_counter()
            other = models(mods, args.device)[label].fit(X)
            fit_device = other.device_
            seconds = time.perf_counter() - t0
            agree(f"fitted on cpu vs fitted on {fit_device} (same seed), both transformed on cpu", on(other, "cpu"), fit_seconds=seconds)


def part_timing(args):
    """Fit and transform times of both models on ``args.rows`` rows on ``args.device``, after a small warm-up."""
    X, mods = make_data(args.rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label, est in models(mods, args.device).items():
            est.fit(X[:2000]).transform(X[:2000])  # warm-up: CUDA context, kernels, lazy imports
            sync(args.device)
            t0 = time.perf_counter()
            est.fit(X)
            sync(args.device)
            fit = time.perf_counter() - t0
            t0 = time.perf_counter()
            est.transform(X)
            sync(args.device)
            record(
                args.results,
                kind="timing",
                device=args.device,
                rows=args.rows,
                model=label,
                fit_seconds=fit,
                transform_seconds=time.perf_counter() - t0,
                fit_time_em=getattr(est, "fit_time_em_", None),
                n_iter=est.n_iter_,
            )


# ----------------------------------------------------------------------------- report
def _fmt(x, spec=".3g"):
    return "not run" if x is None else format(x, spec)


def part_report(args):
    rows = [json.loads(line) for line in open(args.results)] if os.path.exists(args.results) else []
    by = lambda kind: [r for r in rows if r.get("kind") == kind]  # noqa: E731
    out = ["# GPU check", ""]
    for env in by("env"):
        out.append(
            f"torch {env['torch']} (CUDA {env['torch_cuda']}), CUDA available: {env['cuda']}, GPU: {env['gpu']}; "
            f"scikit-learn {env['sklearn']}, numpy {env['numpy']}, Python {env['python']}; "
            f"{env['cpu_count']} CPUs, {env['torch_threads']} torch threads."
        )
    out += ["", "| part | exit code | seconds | status |", "|---|---|---|---|"]
    for p in by("part"):
        status = "ok" if p["rc"] == 0 else ("timed out" if p["rc"] in (124, 137) else "failed")
        out.append(f"| {p['name']} | {p['rc']} | {p['seconds']:.1f} | {status} |")
    if args.pytest_log and os.path.exists(args.pytest_log):
        lines = [line.strip() for line in open(args.pytest_log) if line.strip()]
        out += ["", f"CUDA tests: `{lines[-1] if lines else 'no output'}`"]
    out += ["", "## CPU vs GPU agreement (float64 transform)", ""]
    out += ["| model | comparison | max abs diff | max abs output | score diff |", "|---|---|---|---|---|"]
    for a in by("agreement"):
        out.append(f"| {a['model']} | {a['comparison']} | {a['max_abs']:.2e} | {a['max_abs_output']:.3g} | {a['score_diff']:.2e} |")
    out += ["", "## Speed (seconds; GPU side against the CPU with all its cores)", ""]
    timings = {(t["device"], t["rows"], t["model"]): t for t in by("timing")}
    labels = list(dict.fromkeys(m for _, _, m in timings)) or list(models({"m0": [0]}, "cpu"))
    gpu = [d for d in dict.fromkeys(d for d, _, _ in timings) if d != "cpu"] or ["cuda"]
    out += [
        f"| rows | model | {gpu[0]} fit | cpu fit | fit speed-up | {gpu[0]} transform | cpu transform | transform speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in args.rows_list:
        for label in labels:
            g, c = timings.get((gpu[0], n, label), {}), timings.get(("cpu", n, label), {})
            cells = []
            for key in ("fit_seconds", "transform_seconds"):
                gs, cs = g.get(key), c.get(key)
                cells += [_fmt(gs), _fmt(cs), f"{cs / gs:.1f}x" if gs and cs else "-"]
            out.append(f"| {n} | {label} | " + " | ".join(cells) + " |")
    text = "\n".join(out) + "\n"
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["env", "agreement", "timing", "report"])
    parser.add_argument("--results", required=True, help="JSON-lines file the parts append to")
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rows-list", type=int, nargs="+", default=[100_000, 1_000_000], help="report: the timed sizes")
    parser.add_argument("--pytest-log", help="report: the CUDA tests' output")
    parser.add_argument("--markdown", help="report: also write the tables here")
    args = parser.parse_args(argv)
    {"env": part_env, "agreement": part_agreement, "timing": part_timing, "report": part_report}[args.part](args)


if __name__ == "__main__":
    main()
