"""Regime sweep (issue 17): the defaults against the simple baselines where blocks are wide next to the rows.

    python benchmarks/sweep.py --rows tune --dataset multiple_features --n-train 150 all --widen 0 4
    python benchmarks/sweep.py --rows eval --dataset all --n-train 150 300 600 all --widen 0 1 4 --seeds 2

Every cell is (data set, training rows, widening, missing setting). The rows are the fixed tuning split of
``harness.tuning_split`` (``--rows tune``, where defaults are chosen) or the evaluation rows (``--rows eval``,
what ``doc/benchmarks.md`` reports). Widening appends, inside every block, ``w`` times its width of standard Gaussian
columns (uninformative, standardized like the rest, missing with their block). Per seed: amputation of all rows,
stratified K-fold; each fold's training rows are a stratified subsample of ``n`` rows (``all``: the whole training
fold); the test rows are the whole test fold. Every method is probed by ``StandardScaler + LogisticRegression``.

``--candidates`` adds representations computed from the same fitted default models (other outputs), for choosing
defaults on the tuning rows. Writes ``<out>/sweep_<rows>[_<tag>].csv`` (one line per cell, seed, fold and method)
and prints a table per cell with the margin of each method over the best simple baseline, plus the worst case.
"""

import argparse
import ast
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BASELINES = ["mean", "mean-indicator", "mean-pca", "knn", "knn-pca"]


def load(name):
    """(X, y, modalities) of a sweep data set: the benchmark's four and ``digits_pair``."""
    from benchmarks.harness import DATASETS

    if name == "digits_pair":
        return digits_pair()
    data = DATASETS[name]["loader"]()
    return np.asarray(data.data, dtype=np.float64), np.asarray(data.target), {k: list(map(int, v)) for k, v in data.modalities.items()}


def digits_pair(seed=0, noise=0.5):
    """A wide image pair from scikit-learn's bundled digits (no download): two views of 784 pixels.

    View ``a`` is the 8x8 digit upsampled to 28x28 (bilinear); view ``b`` is *another* image of the same class,
    upsampled the same way, plus Gaussian noise of ``noise`` times the pixels' standard deviation. The two views
    share only the class, as in the wide image pair of issue 17.
    """
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.RandomState(seed)
    images = np.stack([zoom(im, 3.5, order=1) for im in digits.images]).reshape(len(digits.images), -1)
    y = digits.target
    partner = np.empty(len(y), dtype=int)
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        partner[rows] = rng.permutation(rows)
    b = images[partner] + noise * images.std() * rng.randn(*images.shape)
    d = images.shape[1]
    return np.hstack([images, b]), y, {"a": list(range(d)), "b": list(range(d, 2 * d))}


def widen(X, modalities, factor, seed, kind="noise"):
    """Append ``factor * d_m`` columns inside every block ``m``.

    ``kind='noise'``: standard Gaussian columns (uninformative). ``kind='mix'``: random linear combinations of the
    block's standardized features plus as much Gaussian noise (signal-to-noise 1), informative but redundant, as
    co-expressed genes are in omics blocks: a low-rank signal that principal components denoise.
    """
    if factor == 0:
        return X, modalities
    rng = np.random.RandomState(seed + 7919)
    parts, out, start = [], {}, 0
    for name, idx in modalities.items():
        width = int(round(factor * len(idx)))
        extra = rng.randn(X.shape[0], width)
        if kind == "mix":
            B = X[:, idx]
            B = (B - B.mean(axis=0)) / np.where(B.std(axis=0) > 0, B.std(axis=0), 1)
            signal = B @ rng.randn(len(idx), width)
            extra = signal / signal.std(axis=0) + extra
        block = np.hstack([X[:, idx], extra])
        parts.append(block)
        out[name] = list(range(start, start + block.shape[1]))
        start += block.shape[1]
    return np.hstack(parts), out


def _kwargs(text):
    call = ast.parse(f"f({text})", mode="eval").body
    return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}


def _pipe(*steps):
    from sklearn.pipeline import make_pipeline

    return make_pipeline(*steps)


def baseline(name, n_features, n_train, seed):
    from sklearn.decomposition import PCA
    from sklearn.impute import KNNImputer, SimpleImputer
    from sklearn.preprocessing import StandardScaler

    n_pca = int(min(64, n_features, n_train - 1))
    return {
        "mean": lambda: _pipe(StandardScaler(), SimpleImputer()),
        "mean-indicator": lambda: _pipe(StandardScaler(), SimpleImputer(add_indicator=True)),
        "mean-pca": lambda: _pipe(StandardScaler(), SimpleImputer(), PCA(n_pca, random_state=seed)),
        "knn": lambda: _pipe(StandardScaler(), KNNImputer(n_neighbors=5)),
        "knn-pca": lambda: _pipe(StandardScaler(), KNNImputer(n_neighbors=5), PCA(n_pca, random_state=seed)),
    }[name]()


def probe(Ztr, ytr, Zte, yte):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    clf = _pipe(StandardScaler(), LogisticRegression(max_iter=2000)).fit(Ztr, ytr)
    return float((clf.predict(Zte) == yte).mean())


def _omega(beta):
    """Gavish & Donoho's optimal hard threshold factor for an unknown noise level (IEEE T-IT 2014, eq. 5)."""
    return 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43


def _axes(S, rule):
    """Leading principal axes of one standardized block (rows that observe it) kept by ``rule``."""
    n, d = S.shape
    S = S - S.mean(axis=0)
    _, s, Vt = np.linalg.svd(S, full_matrices=False)
    if rule == "gd":
        keep = s > _omega(min(n, d) / max(n, d)) * np.median(s)
    elif rule == "mp":
        keep = s**2 / n > (1 + np.sqrt(d / n)) ** 2
    else:
        raise ValueError(rule)
    return Vt[: max(1, int(keep.sum()))].T


def candidates(est, Xtr, Xte):
    """Other representations from one fitted estimator, tried on the tuning rows (design 2.11 says what they scored).

    ``latent`` / ``embeddings`` (with the indicator columns); ``proj-gd`` / ``proj-mp``: every block's imputed
    standardized columns projected on its leading principal axes, kept by the Gavish-Donoho or Marchenko-Pastur
    threshold (alone, or beside the latent or the embeddings); ``zero``: the observed standardized blocks with
    zeros for missing ones (mean imputation), alone or beside the latent or the embeddings.
    """
    out = {}
    old = est.get_params()
    est.set_params(add_indicator=False)
    base = {}
    for output in ("latent", "embeddings") if getattr(est, "encoders_", None) is not None else ("latent",):
        est.set_params(output=output)
        base[output] = (est.transform(Xtr), est.transform(Xte))
    est.set_params(**{k: old[k] for k in ("output", "add_indicator")})
    ind = [np.stack([~np.isnan(X[:, idx]).all(axis=1) for idx in est.modalities_.values()], 1).astype(float) for X in (Xtr, Xte)]
    blocks = [(est.impute(X) - est.feature_mean_) / est.feature_scale_ for X in (Xtr, Xte)]
    Str = (Xtr - est.feature_mean_) / est.feature_scale_
    for rule in ("gd", "mp"):
        proj = [[], []]
        for m, idx in enumerate(est.modalities_.values()):
            V = _axes(Str[~np.isnan(Str[:, idx]).all(axis=1)][:, idx], rule)
            for t in range(2):
                proj[t].append(blocks[t][:, idx] @ V)
        P = [np.hstack(p) for p in proj]
        out[f"proj-{rule}"] = (np.hstack([P[0], ind[0]]), np.hstack([P[1], ind[1]]))
        for name, (A, B) in base.items():
            out[f"{name}+proj-{rule}"] = (np.hstack([A, P[0], ind[0]]), np.hstack([B, P[1], ind[1]]))
    zero = [np.nan_to_num(S) for S in ((Xtr - est.feature_mean_) / est.feature_scale_, (Xte - est.feature_mean_) / est.feature_scale_)]
    out["zero"] = (np.hstack([zero[0], ind[0]]), np.hstack([zero[1], ind[1]]))
    for name, (A, B) in base.items():
        out[name] = (np.hstack([A, ind[0]]), np.hstack([B, ind[1]]))
        out[f"{name}+zero"] = (np.hstack([A, zero[0], ind[0]]), np.hstack([B, zero[1], ind[1]]))
    return out


def run_cell(X, y, mods, *, setting, n_train, seed, folds, methods, cand, log):
    from sklearn.model_selection import StratifiedKFold, train_test_split

    from sklearn_calmrl import CalMRLTransformer, MultiViewPPCA
    from sklearn_calmrl.datasets import ampute_modalities, ampute_modalities_structured

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if setting == "structured":
            names = list(mods)
            pairs = [(n,) for n in names] if len(names) == 2 else [(names[i], names[(i + 1) % len(names)]) for i in range(len(names))]
            Xa = ampute_modalities_structured(X, mods, pairs=pairs, complete_fraction=0.1, random_state=seed)
        else:
            Xa = ampute_modalities(X, mods, rate=float(setting), random_state=seed)
    rows = []
    for fold, (train, test) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(Xa, y)):
        if n_train != "all" and int(n_train) < len(train):
            train, _ = train_test_split(train, train_size=int(n_train), stratify=y[train], random_state=seed + fold)
        Xtr, Xte, ytr, yte = Xa[train], Xa[test], y[train], y[test]
        for method in methods:
            t0 = time.perf_counter()
            reps = {}
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if method in BASELINES:
                    rep = baseline(method, X.shape[1], len(train), seed)
                else:  # 'calmrl' / 'ppca', optionally with parameters: "ppca(local_bandwidth=None)"
                    kind, _, text = method.partition("(")
                    cls = {"calmrl": CalMRLTransformer, "ppca": MultiViewPPCA}[kind]
                    rep = cls(mods, random_state=seed, **(_kwargs(text[:-1]) if text else {}))
                Ztr = rep.fit_transform(Xtr)
                fit_s = time.perf_counter() - t0
                reps[method] = (Ztr, rep.transform(Xte))
                if cand and method not in BASELINES:
                    reps.update({f"{method}:{k}": v for k, v in candidates(rep, Xtr, Xte).items()})
            warned = "; ".join(sorted({str(w.message)[:80] for w in caught if issubclass(w.category, UserWarning)}))
            for name, (A, B) in reps.items():
                acc = probe(A, ytr, B, yte)
                rows.append(dict(method=name, fold=fold, n_used=len(train), acc=acc, fit_s=fit_s, width=A.shape[1], warnings=warned))
            log(f"    fold {fold} {method:<15} acc={rows[-len(reps)]['acc']:.3f} fit {fit_s:.1f}s")
    return rows


def _cell(record):
    """A cell's label; a subsample at least as large as the training fold is the whole fold ('all')."""
    n, used = record["n_train"], record.get("n_used")
    if n != "all" and used and int(n) > int(used):  # the fold had fewer training rows than n: not subsampled
        n = "all"
    kind = "m" if record.get("widen_kind") == "mix" else ""
    return f"{record['dataset']} n={n} w={float(record['widen']):g}{kind} {record['setting']}"


def summarize(records, methods_order):
    """Per cell: mean accuracy of every method, its margin over the best baseline; the worst and mean margins."""
    cells = {}
    for r in records:
        cells.setdefault(_cell(r), {}).setdefault(r["method"], {})[(r["seed"], r["fold"])] = float(r["acc"])
    cells = {c: {m: list(v.values()) for m, v in accs.items()} for c, accs in cells.items()}
    names = [m for m in methods_order if any(m in c for c in cells.values())]
    extra = sorted({m for c in cells.values() for m in c} - set(names))
    names += extra
    lines = ["| cell | best baseline | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    margins = {m: [] for m in names if m not in BASELINES}
    for cell, accs in cells.items():
        mean = {m: float(np.mean(v)) for m, v in accs.items()}
        best_name = max((m for m in BASELINES if m in mean), key=lambda m: mean[m], default=None)
        best = mean[best_name] if best_name else math.nan
        cols = []
        for m in names:
            if m not in mean:
                cols.append("")
            elif m in BASELINES:
                cols.append(f"{mean[m]:.3f}")
            else:
                margins[m].append(100 * (mean[m] - best))
                cols.append(f"{mean[m]:.3f} ({100 * (mean[m] - best):+.1f})")
        lines.append(f"| {cell} | {best:.3f} {best_name} | " + " | ".join(cols) + " |")
    lines.append("")
    lines.append("| method | worst margin (points) | mean margin | cells |")
    lines.append("|---|---|---|---|")
    for m, v in margins.items():
        if v:
            lines.append(f"| {m} | {min(v):+.1f} | {np.mean(v):+.1f} | {len(v)} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", choices=["tune", "eval"], default="tune")
    p.add_argument("--dataset", nargs="+", default=["all"])
    p.add_argument("--n-train", nargs="+", default=["150", "300", "600", "all"])
    p.add_argument("--widen", type=float, nargs="+", default=[0, 1, 4])
    p.add_argument("--widen-kind", choices=["noise", "mix"], default="noise", help="what the widening columns hold (see widen)")
    p.add_argument("--settings", nargs="+", default=["0.5"], help="missing rates and/or 'structured'")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--methods", nargs="+", default=BASELINES + ["calmrl", "ppca"])
    p.add_argument("--candidates", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--tag", default="")
    p.add_argument("--summarize", nargs="+", metavar="CSV", help="only print the tables of earlier runs' CSV files (.csv or .csv.gz), merged")
    args = p.parse_args(argv)
    if args.summarize:
        import csv
        import gzip

        records = []
        for path in args.summarize:
            with (gzip.open(path, "rt") if path.endswith(".gz") else open(path)) as fh:
                records += list(csv.DictReader(fh))
        print(summarize(records, BASELINES + ["calmrl", "ppca"]))
        return 0
    sys.path.insert(0, str(HERE.parent))
    from benchmarks.run import setup

    log = setup(args.threads)
    from benchmarks.harness import tuning_split

    datasets = ["multiple_features", "image_segmentation", "digits_halves", "breast_cancer_views", "digits_pair"] if "all" in args.dataset else args.dataset
    records, t_all = [], time.perf_counter()
    for ds in datasets:
        X0, y0, mods0 = load(ds)
        tune, evaluate = tuning_split(y0)
        rows = tune if args.rows == "tune" else evaluate
        X0, y0 = X0[rows], y0[rows]
        for w in args.widen:
            for seed in range(args.seeds):
                X, mods = widen(X0, mods0, w, seed, args.widen_kind)
                for n in args.n_train:
                    for setting in args.settings:
                        cell = f"{ds} n={n} w={w:g}{'' if args.widen_kind == 'noise' else 'm'} {setting}"
                        log(f"{cell} seed {seed} ({X.shape[1]} features, {len(y0)} rows)")
                        for r in run_cell(X, y0, mods, setting=setting, n_train=n, seed=seed, folds=args.folds,
                                          methods=args.methods, cand=args.candidates, log=log):
                            records.append(dict(cell=cell, dataset=ds, n_train=n, widen=w, widen_kind=args.widen_kind, setting=setting, seed=seed, **r))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"sweep_{args.rows}" + (f"_{args.tag}" if args.tag else "")
    import csv

    with open(out / f"{stem}.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    command = "python benchmarks/sweep.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = f"Command: `{command}`\n\n" + summarize(records, BASELINES + ["calmrl", "ppca"])
    text += f"\n\nWall time {time.perf_counter() - t_all:.0f} s.\n"
    (out / f"{stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
