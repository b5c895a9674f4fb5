"""Compare CalMRL settings on the tuning rows only (never on the rows the benchmark reports).

    python benchmarks/tune.py --dataset multiple_features --setting 0.5 \\
        --config "estimator='MultiViewPPCA'" --config "alignment='gram'" --config "output='embeddings'"

Each ``--config`` is a comma-separated list of CalMRLTransformer keyword arguments
(``estimator='MultiViewPPCA'`` uses that estimator instead). ``--setting`` is a
missing rate or ``structured`` (complete fraction 0.1). Stratified 3-fold
cross-validation inside the fixed tuning split of ``harness.tuning_split``, with
the benchmark's own fold evaluation (``harness.evaluate_fold``): probe accuracy
and, per retrieval pair, the Recall@1 of each kind (emb / lat / rep, as in the benchmark).
"""

import argparse
import ast
import math
import os
import sys
import time
import warnings

import numpy as np
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.harness import DATASETS, RETRIEVAL_KINDS, Context, Method, evaluate_fold, pair_name, tuning_split  # noqa: E402
from sklearn_calmrl import CalMRLTransformer, MultiViewPPCA  # noqa: E402
from sklearn_calmrl.datasets import ampute_modalities, ampute_modalities_structured  # noqa: E402


def _kwargs(text):
    call = ast.parse(f"f({text})", mode="eval").body
    return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}


def _method(text):
    kwargs = _kwargs(text)
    cls = MultiViewPPCA if kwargs.pop("estimator", "CalMRLTransformer") == "MultiViewPPCA" else CalMRLTransformer
    return Method(text or "defaults", "calmrl", text, lambda ctx: cls(ctx.modalities, random_state=ctx.seed, **kwargs))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="multiple_features", choices=sorted(DATASETS))
    parser.add_argument("--setting", default="0.5", help="missing rate, or 'structured'")
    parser.add_argument("--seeds", type=int, default=1, help="masks and folds seeds")
    parser.add_argument("--config", action="append", default=[], help="CalMRL keyword arguments, e.g. \"encoder='mlp'\"")
    args = parser.parse_args(argv)
    spec = DATASETS[args.dataset]
    data = spec["loader"]()
    tune, _ = tuning_split(data.target)
    X0, y = np.asarray(data.data, dtype=np.float64)[tune], np.asarray(data.target)[tune]
    mods = {name: list(map(int, idx)) for name, idx in data.modalities.items()}
    names, pairs = list(mods), spec["retrieval"]
    header = ["config", "accuracy"] + [f"R@1 {pair_name(p)}" for p in pairs] + ["fit s"]
    print(f"{args.dataset}, setting {args.setting}, {len(y)} tuning rows, {args.seeds} seed(s) x 3 folds\n")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for text in args.config or [""]:
        method, rows = _method(text), []
        for seed in range(args.seeds):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if args.setting == "structured":
                    X = ampute_modalities_structured(X0, mods, pairs=spec["pairs"], complete_fraction=0.1, random_state=seed)
                else:
                    X = ampute_modalities(X0, mods, rate=float(args.setting), random_state=seed)
            observed = np.stack([~np.isnan(X[:, idx]).all(axis=1) for idx in mods.values()], axis=1)
            for fold, (train, test) in enumerate(StratifiedKFold(3, shuffle=True, random_state=seed).split(X, y)):
                ctx = Context(mods, X.shape[1], len(train), seed)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    rows.append(evaluate_fold(method, ctx, X, y, observed, names, train, test, retrieval=pairs,
                                              imp_rng=np.random.RandomState(101 * fold + seed), n_classes=len(np.unique(y)),
                                              eval_scaler=StandardScaler().fit(X0)))
        cells = [f"{np.mean([r['acc'] for r in rows]):.4f}"]
        for p in pairs:
            kinds = [(kind, [r.get(f"r1_{kind}_{pair_name(p)}", math.nan) for r in rows]) for kind in RETRIEVAL_KINDS]
            cells.append(" / ".join(f"{kind} {np.nanmean(v):.3f}" for kind, v in kinds if not all(math.isnan(x) for x in v)))
        cells.append(f"{np.mean([r['fit_s'] for r in rows]):.1f}")
        print("| " + " | ".join([text or "defaults"] + cells) + " |", flush=True)


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"\n({time.perf_counter() - start:.0f} s)")
