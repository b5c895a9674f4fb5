"""Figure of the cross-validated benchmark: linear-probe accuracy by missing rate, one panel per data set.

Reads the per-run CSV files that ``benchmarks/run.py`` writes (``<dataset>_<kind>_<tag>.csv``, optionally
gzipped) and draws the mean accuracy over the seed x fold runs with one standard deviation as a band, for the
random missing rates and, at the right of each panel, the structured setting with one complete fraction.

    python benchmarks/plot_results.py --results doc/results --tag final --out doc/_static/benchmark_accuracy.png
"""

import argparse

import _checkout  # noqa: F401 - this checkout's benchmarks and sklearn_calmrl first (benchmarks/_checkout.py)
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks import harness  # noqa: E402

DATASETS = {
    "multiple_features": "Multiple Features (6 views)",
    "image_segmentation": "Image Segmentation (2 views)",
    "digits_halves": "digits, left / right halves",
    "breast_cancer_views": "breast cancer (3 views)",
}
METHODS = {
    "calmrl": ("CalMRLTransformer (defaults)", "C3", "o", "-"),
    "ppca": ("MultiViewPPCA (defaults)", "C0", "s", "-"),
    "knn-concat": ("KNN imputation", "C2", "^", "--"),
    "mean-indicator": ("mean imputation + indicators", "C1", "v", "--"),
    "mean-pca": ("mean imputation + PCA", "C7", "x", ":"),
    "cca-mean": ("multi-view CCA", "C4", "d", ":"),
}


def summary(frame, method):
    rows = frame[(frame["method"] == method) & frame["error"].isna()]
    return rows.groupby("level")["acc"].agg(["mean", "std"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="doc/results")
    parser.add_argument("--tag", default="final")
    parser.add_argument("--complete-fraction", type=float, default=0.1, help="structured setting shown")
    parser.add_argument("--out", default="doc/_static/benchmark_accuracy.png")
    args = parser.parse_args(argv)

    fig, axes = plt.subplots(2, 2, figsize=(9, 7.2), layout="constrained", sharey=False)
    axes = axes.ravel()
    for ax, (dataset, title) in zip(axes, DATASETS.items()):
        random, structured = (harness.read_run(args.results, dataset, kind, args.tag) for kind in ("random", "structured"))
        if random is None:
            ax.set_visible(False)
            continue
        rates = sorted(random["level"].unique())
        ticks = [f"{r:g}" for r in rates] + [f"structured,\n{args.complete_fraction:g} complete"]
        for method, (label, colour, marker, style) in METHODS.items():
            stats = summary(random, method).reindex(rates)
            if stats["mean"].isna().all():
                continue
            x = list(range(len(rates)))
            ax.plot(x, stats["mean"], color=colour, marker=marker, linestyle=style, label=label)
            ax.fill_between(x, stats["mean"] - stats["std"], stats["mean"] + stats["std"], color=colour, alpha=0.12)
            if structured is not None:  # another protocol: a point with its error bar, not joined to the rates
                s = summary(structured, method)
                if args.complete_fraction in s.index:
                    mean, std = s.loc[args.complete_fraction]
                    ax.errorbar(len(rates), mean, yerr=std, color=colour, marker=marker, capsize=3)
        ax.axvline(len(rates) - 0.5, color="0.6", linewidth=0.8)
        ax.set_xticks(range(len(ticks)), ticks)
        ax.set_xlabel("fraction of rows missing modalities")
        ax.set_title(title, fontsize="medium")
        ax.grid(alpha=0.3)
    for ax in axes[::2]:
        ax.set_ylabel("linear-probe accuracy")
    handles, labels = max((ax.get_legend_handles_labels() for ax in axes), key=lambda hl: len(hl[0]))
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize="small")
    fig.suptitle("Mean over 3 seeds x 5 folds (band: one standard deviation), evaluation rows only", fontsize="medium")
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
