"""Tune CalMRL defaults on the tuning rows only (never on the rows the benchmark reports).

    python benchmarks/tune.py --dataset multiple_features --rate 0.5 \\
        --config "encoder='identity'" --config "encoder='linear',max_epochs=20"

Each ``--config`` is a comma-separated list of CalMRLTransformer keyword arguments.
Inner stratified 3-fold cross-validation of ``Pipeline(CalMRL, StandardScaler,
LogisticRegression)`` on the fixed tuning split of ``harness.tuning_split``.
"""

import argparse
import ast
import os
import sys
import time
import warnings

from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.harness import DATASETS, tuning_split  # noqa: E402
from sklearn_calmrl import CalMRLTransformer  # noqa: E402
from sklearn_calmrl.datasets import ampute_modalities  # noqa: E402


def _kwargs(text):
    call = ast.parse(f"f({text})", mode="eval").body
    return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="multiple_features", choices=sorted(DATASETS))
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--config", action="append", default=[], help="CalMRL keyword arguments, e.g. \"encoder='mlp'\"")
    args = parser.parse_args(argv)
    data = DATASETS[args.dataset]["loader"]()
    tune, _ = tuning_split(data.target)
    X = ampute_modalities(data.data[tune], data.modalities, rate=args.rate, random_state=1)
    y = data.target[tune]
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    print(f"| config ({args.dataset}, rate {args.rate}, {len(y)} tuning rows) | accuracy | time |\n|---|---|---|")
    for text in args.config or [""]:
        pipe = make_pipeline(CalMRLTransformer(data.modalities, random_state=0, **_kwargs(text)), StandardScaler(),
                             LogisticRegression(max_iter=2000))
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score = cross_val_score(pipe, X, y, cv=cv).mean()
        print(f"| {text or 'defaults'} | {score:.4f} | {time.perf_counter() - start:.1f}s |", flush=True)


if __name__ == "__main__":
    main()
