"""Summary tables of a finished benchmark run, for doc/benchmarks.md: accuracy per data set and setting, the gap
of the default CalMRLTransformer to the best other method, and the retrieval comparisons of issue 10.

Reads the per-run CSV files of ``benchmarks/run.py`` (``<dataset>_<kind>_<tag>.csv``, optionally gzipped).

    python benchmarks/summarize.py --results doc/results --tag final
"""

import argparse

import _checkout  # noqa: F401 - this checkout's benchmarks and sklearn_calmrl first (benchmarks/_checkout.py)
import pandas as pd

from benchmarks import harness

CALMRL = ("calmrl", "calmrl-nocal", "calmrl-mlp", "calmrl-gram", "calmrl-mixture")
# the pairs issue 10 names; the closed-form latent is MultiViewPPCA's posterior mean from one modality
RETRIEVAL = {"multiple_features": ["pix-fac", "fou-kar", "fac-zer"], "image_segmentation": ["shape-color"],
             "digits_halves": ["left-right"], "breast_cancer_views": ["mean-worst", "error-worst"]}


def read(results, tag, dataset, kind):
    """The runs without an error of one table of ``run.py`` (``harness.read_run``), or None."""
    frame = harness.read_run(results, dataset, kind, tag)
    return None if frame is None else frame[frame["error"].isna()]


def level_name(kind, level):
    return f"rate {level:g}" if kind == "random" else f"struct. {level:g}"


def mean_std(values):
    return f"{values.mean():.3f} ± {values.std(ddof=0):.3f}"


def accuracy_table(frames):
    """Methods x (data set, level): mean accuracy; the best per column in bold; CalMRL's gap to the best other."""
    columns, cells = [], {}
    for (dataset, kind), frame in frames.items():
        for level, rows in frame.groupby("level"):
            column = (dataset, level_name(kind, level))
            columns.append(column)
            means = rows.groupby("method")["acc"].mean()
            best = means.max()
            for method, value in means.items():
                cells[(method, column)] = f"**{value:.3f}**" if value == best else f"{value:.3f}"
            others = means.drop([m for m in means.index if m in CALMRL or m.startswith("ppca")], errors="ignore")
            if "calmrl" in means and len(others):  # a table of CalMRL / MultiViewPPCA alone has no gap
                gap = means["calmrl"] - others.max()
                cells[("calmrl - best non-CalMRL", column)] = f"{100 * gap:+.1f} ({others.idxmax()})"
    methods = sorted({m for m, _ in cells}, key=lambda m: (m.startswith("calmrl -"), m))
    lines = []
    for dataset in dict.fromkeys(d for d, _ in columns):
        cols = [c for c in columns if c[0] == dataset]
        lines += [f"**{dataset}**", "", "| method | " + " | ".join(c[1] for c in cols) + " |",
                  "|---" * (len(cols) + 1) + "|"]
        for method in methods:
            if any((method, c) in cells for c in cols):
                lines.append(f"| {method} | " + " | ".join(cells.get((method, c), "-") for c in cols) + " |")
        lines.append("")
    return "\n".join(lines)


def retrieval_table(frames):
    """Issue 10: CalMRL's embedding R@1 against CCA (two-view, co-observed rows), the closed-form latent and knn-pca."""
    lines = ["| data set | pair | setting | calmrl emb | calmrl-nocal emb | ppca lat | cca-mean lat | knn-pca rep | "
             "knn-concat rep | calmrl emb - best of (ppca lat, cca lat, knn-pca rep) |", "|---" * 10 + "|"]
    for (dataset, kind), frame in frames.items():
        for pair in RETRIEVAL.get(dataset, []):
            for level, rows in frame.groupby("level"):
                def stat(method, col, rows=rows, pair=pair):
                    values = rows.loc[rows["method"] == method, f"r1_{col}_{pair}"].dropna()
                    return values if len(values) else None

                cells = {
                    "calmrl": stat("calmrl", "emb"), "nocal": stat("calmrl-nocal", "emb"), "ppca": stat("ppca", "lat"),
                    "cca": stat("cca-mean", "lat"), "knn": stat("knn-pca", "rep"), "knnc": stat("knn-concat", "rep"),
                }
                refs = [cells[k].mean() for k in ("ppca", "cca", "knn") if cells[k] is not None]
                gap = f"{100 * (cells['calmrl'].mean() - max(refs)):+.1f}" if cells["calmrl"] is not None and refs else "-"
                text = [mean_std(v) if v is not None else "-" for v in cells.values()]
                lines.append(f"| {dataset} | {pair} | {level_name(kind, level)} | " + " | ".join(text) + f" | {gap} |")
    return "\n".join(lines)


def calibration_table(frames):
    """Issue 10: calibrated vs uncalibrated, structured setting, on every pair (mean ± std over runs)."""
    lines = ["| data set | pair | setting | calmrl emb | calmrl-nocal emb | difference | std of the difference over runs |",
             "|---" * 7 + "|"]
    for (dataset, kind), frame in frames.items():
        if kind != "structured":
            continue
        for pair in RETRIEVAL.get(dataset, []):
            col = f"r1_emb_{pair}"
            for level, rows in frame.groupby("level"):
                a = rows[rows["method"] == "calmrl"].set_index(["seed", "fold"])[col]
                b = rows[rows["method"] == "calmrl-nocal"].set_index(["seed", "fold"])[col]
                if a.empty or b.empty:
                    continue
                diff = (a - b).dropna()
                lines.append(f"| {dataset} | {pair} | {level_name(kind, level)} | {mean_std(a)} | {mean_std(b)} | "
                             f"{100 * diff.mean():+.1f} | {100 * diff.std(ddof=0):.1f} |")
    return "\n".join(lines)


def extras_table(frames, extras, reference=("calmrl", "ppca", "knn-concat")):
    """Methods run on seed 0 only, beside the seed-0 runs of ``reference`` methods from the main run (same masks and
    folds): mean accuracy over the 5 folds, and mean embedding / latent R@1 over the data set's pairs."""
    lines = ["| data set | setting | method | accuracy (seed 0) | emb R@1, mean over pairs | lat R@1 | rep R@1 | fit s |",
             "|---" * 8 + "|"]
    for key, extra in extras.items():
        dataset, kind = key
        main = frames.get(key)
        main = main[(main["seed"] == 0) & main["level"].isin(extra["level"].unique())] if main is not None else None
        rows = pd.concat([main[main["method"].isin(reference)], extra]) if main is not None else extra
        for (level, method), r in rows.groupby(["level", "method"], sort=False):
            def r1(col, r=r):
                cols = [f"r1_{col}_{p}" for p in RETRIEVAL.get(dataset, []) if f"r1_{col}_{p}" in r]
                value = r[cols].mean(axis=1).mean() if cols else float("nan")
                return "-" if pd.isna(value) else f"{value:.3f}"

            lines.append(f"| {dataset} | {level_name(kind, level)} | {method} | {r['acc'].mean():.3f} | {r1('emb')} | "
                         f"{r1('lat')} | {r1('rep')} | {r['fit_s'].mean():.1f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="doc/results")
    parser.add_argument("--tag", default="final")
    parser.add_argument("--extra-tags", nargs="*", default=[], help="runs of further methods on seed 0 (e.g. further_methods mixture_rerun)")
    args = parser.parse_args(argv)
    frames = {}
    for dataset in harness.DATASETS:
        for kind in ("random", "structured"):
            frame = read(args.results, args.tag, dataset, kind)
            if frame is not None:
                frames[(dataset, kind)] = frame
    print("## Accuracy (mean over seed x fold runs)\n")
    print(accuracy_table(frames))
    print("\n## Embedding retrieval R@1 against the references of issue 10\n")
    print(retrieval_table(frames))
    print("\n## Calibrated vs uncalibrated embedding retrieval, structured setting\n")
    print(calibration_table(frames))
    extras = {}
    for tag in args.extra_tags:
        for key in frames:
            frame = read(args.results, tag, *key)
            if frame is not None:
                extras[key] = pd.concat([extras[key], frame]) if key in extras else frame
    if extras:
        print("\n## Further methods, seed 0 only, beside the same folds of the main run\n")
        print(extras_table(frames, extras))


if __name__ == "__main__":
    main()
