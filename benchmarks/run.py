"""Benchmark entry point (issue 3; protocol in design 6).

Examples
--------
python benchmarks/run.py --quick --dataset image_segmentation
python benchmarks/run.py --dataset multiple_features --rates 0 0.3 0.5 0.7 --seeds 3
python benchmarks/run.py --dataset all --structured --complete-fractions 0.1
python benchmarks/run.py --dataset image_segmentation --methods calmrl mean-pca --set latent_dim=16

Writes ``<out>/<dataset>_<kind>[_<tag>].md`` and ``.csv`` per (dataset, kind) and prints the
Markdown tables to stdout; progress goes to stderr.
"""

import argparse
import shlex
import sys
import time
from pathlib import Path

import _checkout  # noqa: F401 - this checkout's benchmarks and sklearn_calmrl first (benchmarks/_checkout.py)

from benchmarks import harness

HERE = Path(__file__).resolve().parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", nargs="+", default=["all"],
                   choices=[*harness.DATASETS, "all"],
                   help="one or more data sets (default all four)")
    p.add_argument("--rates", type=float, nargs="+", default=None,
                   help="missingness rates of the random kind (default 0 0.3 0.5 0.7; quick: 0.5 0.7)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (masks and folds), default 3 (quick: 1)")
    p.add_argument("--folds", type=int, default=None, help="stratified folds, default 5 (quick: 3)")
    p.add_argument("--structured", action="store_true",
                   help="structured missingness (the paper's setting) instead of random")
    p.add_argument("--kinds", nargs="+", choices=["random", "structured"], default=None,
                   help="missingness kinds to run (overrides --structured), e.g. --kinds random structured")
    p.add_argument("--complete-fractions", type=float, nargs="+", default=[0.1],
                   help="fractions of complete rows for the structured kind (default 0.1)")
    p.add_argument("--pairs", nargs="+", default=None,
                   help="structured groups as comma-separated modality names, e.g. fou,pix kar,pix "
                        "(single dataset only; default per dataset)")
    p.add_argument("--retrieval", nargs="+", default=None, metavar="A,B",
                   help="modality pairs for cross-modal retrieval, e.g. pix,fac fou,kar (single dataset only; "
                        "default per dataset)")
    p.add_argument("--methods", nargs="+", default=None, help="subset of methods (default all; quick: reduced list)")
    p.add_argument("--list-methods", action="store_true", help="print the methods and exit")
    p.add_argument("--epochs", type=int, default=None, help="max_epochs for the CalMRL methods (quick: 10)")
    p.add_argument("--set", dest="params", nargs="+", default=[], metavar="KEY=VALUE",
                   help="extra CalMRLTransformer parameters for every CalMRL method, e.g. latent_dim=16 "
                        "output='latent' (a variant's own setting, such as calibrate=False, wins)")
    p.add_argument("--detail-level", type=float, default=None,
                   help="level of the all-metrics and by-#observed tables (default 0.5 if run, else the middle one)")
    p.add_argument("--max-rows", type=int, default=None, help="stratified subset of rows (smoke tests)")
    p.add_argument("--quick", action="store_true",
                   help="1 seed, 3 folds, rates 0.5 0.7, 10 CalMRL epochs, reduced method list")
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS/torch threads (default 1: oversubscribed torch threads are very slow on shared cores)")
    p.add_argument("--out", default=str(HERE / "results"), help="output folder (default benchmarks/results)")
    p.add_argument("--tag", default=None, help="suffix of the output file names (default 'quick' with --quick)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    log = harness.use_threads(args.threads)
    if args.list_methods:
        for m in harness.METHODS:
            ok, reason = harness.available(m)
            print(f"{m.name:<22} {'quick ' if m.quick else '      '}{m.description}" + ("" if ok else f"  [skipped: {reason}]"))
        return 0

    quick = args.quick
    rates = args.rates or ([0.5, 0.7] if quick else [0.0, 0.3, 0.5, 0.7])
    seeds = args.seeds or (1 if quick else 3)
    folds = args.folds or (3 if quick else 5)
    kinds = args.kinds or (["structured"] if args.structured else ["random"])
    try:
        calmrl_params = harness.parse_kwargs(*args.params)
    except ValueError as exc:
        raise SystemExit(f"--set expects KEY=VALUE: {exc}") from None
    if args.epochs is not None:
        calmrl_params["max_epochs"] = args.epochs
    elif quick:
        calmrl_params.setdefault("max_epochs", 10)
    datasets = list(harness.DATASETS) if "all" in args.dataset else list(dict.fromkeys(args.dataset))
    if len(datasets) > 1 and (args.pairs or args.retrieval):
        raise SystemExit("--pairs and --retrieval need a single --dataset")
    pairs = [tuple(p.split(",")) for p in args.pairs] if args.pairs else None
    retrieval_pairs = [tuple(p.split(",")) for p in args.retrieval] if args.retrieval else None
    tag = args.tag if args.tag is not None else ("quick" if quick else "")
    methods = harness.select_methods(args.methods, quick=quick, log=log)
    command = "python benchmarks/run.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    env = harness.environment_summary()
    out_dir = Path(args.out)
    t_all = time.perf_counter()
    for dataset in datasets:
        for kind in kinds:
            levels = rates if kind == "random" else args.complete_fractions
            t0 = time.perf_counter()
            rows = harness.run_benchmark(
                dataset, kind=kind, levels=levels, n_seeds=seeds, n_folds=folds, methods=methods,
                calmrl_params=calmrl_params, retrieval=retrieval_pairs, pairs=pairs, max_rows=args.max_rows, log=log,
            )
            wall = time.perf_counter() - t0
            spec = harness.DATASETS[dataset]
            names = list(harness.load_dataset(dataset)[2])
            retrieval = retrieval_pairs or spec["retrieval"]
            missing = ("random: a fraction `rate` of rows lose a random non-empty proper subset of modalities"
                       if kind == "random" else
                       f"structured: groups {pairs or spec['pairs']}, the rest complete")
            preamble = "\n".join([
                f"Command: `{command}`",
                f"Protocol: {seeds} seed(s) × {folds} stratified folds; {missing}; same masks and folds for every "
                f"method; representation fitted on training rows inside `Pipeline(rep, StandardScaler(), "
                "LogisticRegression(max_iter=2000))`. Retrieval pairs: "
                + ", ".join(f"{a} ↔ {b}" for a, b in retrieval) + ". "
                f"CalMRL overrides: {calmrl_params or 'none'}.",
                env,
                f"Wall time of this table: {wall:.0f} s.",
                "",
                "Methods:",
                harness.method_legend(methods),
            ])
            md = harness.markdown_tables(rows, dataset=dataset, kind=kind, levels=levels,
                                         detail_level=args.detail_level, names=names, retrieval=retrieval,
                                         preamble=preamble)
            stem = f"{dataset}_{kind}" + (f"_{tag}" if tag else "")
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / f"{stem}.md").write_text(md + "\n")
            harness.write_csv(rows, out_dir / f"{stem}.csv")
            print(md, flush=True)
            log(f"wrote {out_dir / stem}.md and .csv ({wall:.0f} s)")
    log(f"total wall time {time.perf_counter() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
