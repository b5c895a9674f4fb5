"""Compare CalMRL settings on the tuning rows only (never on the rows the benchmark reports).

    python benchmarks/tune.py --dataset multiple_features --setting 0.5 \\
        --config "estimator='MultiViewPPCA'" --config "alignment='gram'" --config "output='embeddings'"

Each ``--config`` is a comma-separated list of CalMRLTransformer keyword arguments (``harness.parse_kwargs``;
``estimator='MultiViewPPCA'`` uses that estimator instead). ``--setting`` is a missing rate or ``structured``
(complete fraction 0.1, the data set's groups). Stratified 3-fold cross-validation inside the fixed tuning split of
``harness.tuning_split``, with the benchmark's own protocol (``harness.run_benchmark`` with ``rows='tune'``): prints
the probe accuracy and, per retrieval pair, the Recall@1 of each kind (emb / lat / rep, as in the benchmark).
"""

import argparse
import math
import time

import _checkout  # noqa: F401 - this checkout's benchmarks and sklearn_calmrl first (benchmarks/_checkout.py)
import numpy as np

from benchmarks import harness


def _method(text):
    kwargs = harness.parse_kwargs(text)
    kind = "ppca" if kwargs.pop("estimator", "CalMRLTransformer") == "MultiViewPPCA" else "calmrl"
    return harness.estimator_method(text or "defaults", kind, kwargs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="multiple_features", choices=sorted(harness.DATASETS))
    parser.add_argument("--setting", default="0.5", help="missing rate, or 'structured'")
    parser.add_argument("--seeds", type=int, default=1, help="masks and folds seeds")
    parser.add_argument("--config", action="append", default=[], help="CalMRL keyword arguments, e.g. \"encoder='mlp'\"")
    args = parser.parse_args(argv)
    pairs = harness.DATASETS[args.dataset]["retrieval"]
    missing, level = ("structured", 0.1) if args.setting == "structured" else ("random", float(args.setting))
    n_rows = len(harness.load_split(args.dataset, "tune")[1])
    header = ["config", "accuracy"] + [f"R@1 {harness.pair_name(p)}" for p in pairs] + ["fit s"]
    print(f"{args.dataset}, setting {args.setting}, {n_rows} tuning rows, {args.seeds} seed(s) x 3 folds\n")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for text in args.config or [""]:
        rows = harness.run_benchmark(args.dataset, kind=missing, levels=[level], n_seeds=args.seeds, n_folds=3,
                                     methods=[_method(text)], rows="tune")
        cells = [f"{np.mean([r['acc'] for r in rows]):.4f}"]
        for p in pairs:
            kinds = [(kind, [r.get(f"r1_{kind}_{harness.pair_name(p)}", math.nan) for r in rows]) for kind in harness.RETRIEVAL_KINDS]
            cells.append(" / ".join(f"{kind} {np.nanmean(v):.3f}" for kind, v in kinds if not all(math.isnan(x) for x in v)))
        cells.append(f"{np.mean([r['fit_s'] for r in rows]):.1f}")
        print("| " + " | ".join([text or "defaults"] + cells) + " |", flush=True)


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"\n({time.perf_counter() - start:.0f} s)")
