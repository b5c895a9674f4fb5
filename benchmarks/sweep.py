"""Regime sweep (issues 17, 26): the defaults against the simple baselines over data sets, row counts and missingness.

    python benchmarks/sweep.py --rows tune --dataset tcga_brca --n-train 150 all --settings 0.5 structured
    python benchmarks/sweep.py --rows eval --dataset multiple_features --n-train 150 600 all --widen 0 1 4
    python benchmarks/sweep.py --summarize doc/results/sweep/sweep_eval_*.csv.gz

Every cell is (data set, training rows, widening, missing setting). The rows are the fixed tuning split of
``harness.tuning_split`` (``--rows tune``, where defaults are chosen) or the evaluation rows (``--rows eval``, what
``doc/benchmarks.md`` reports). Widening appends, inside every block, ``w`` times its width of standard Gaussian
columns. Per seed: amputation of all rows (a missing rate, or ``structured``: 10% complete rows, the others in groups
that keep fixed modalities), stratified K-fold; each fold's training rows are a stratified subsample of ``n`` rows
(``all``: the whole training fold); the test rows are the whole test fold.

Each method is fitted as a user fits it (``StandardScaler`` first, then the method; ``harness.user_pipeline``) and
read by two probes (``harness.make_probe``): ``linear``, ``LogisticRegression(max_iter=2000)`` on the
representation (the README's pipeline), and with ``--hgb`` also ``HistGradientBoostingClassifier``, which
additionally runs on the NaN data itself (``nan``). ``tcga_brca`` downloads itself (``harness.load_tcga``) and is
skipped, with a message, when it cannot.

Writes ``<out>/sweep_<rows>[_<tag>].csv`` (one line per cell, seed, fold, method and probe) and ``.md``: per probe, a
table of every cell with each default's margin over the best simple baseline, and the worst and mean margins.
"""

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import _checkout  # noqa: F401 - this checkout's benchmarks and sklearn_calmrl first (benchmarks/_checkout.py)
import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.preprocessing import StandardScaler

from benchmarks import harness

HERE = Path(__file__).resolve().parent
DATASETS = [*harness.DATASETS, "digits_pair", "tcga_brca"]
BASELINES = ["mean", "mean-indicator", "mean-pca", "mean-pca32", "knn", "knn-pca", "knn-pca32"]
HARNESS_NAMES = {"mean": "concat-mean", "knn": "knn-concat"}  # sweep name -> harness method
DEFAULTS = ["calmrl", "ppca"]


def _method(name):
    """The harness's method of a sweep name (``mean``, ``knn`` or a harness name), or ``calmrl(...)`` / ``ppca(...)``
    with parameters, e.g. ``ppca(local_bandwidth=None)`` (``harness.method_from_text``)."""
    return harness.method_from_text(HARNESS_NAMES.get(name, name))


def heldout_blocks(observed, rng):
    """Rows (indices) that observe at least two modalities and, per such row, one of its blocks to hide."""
    rows = np.flatnonzero(observed.sum(axis=1) >= 2)
    return rows, np.array([rng.choice(np.flatnonzero(observed[r])) for r in rows], dtype=int)


def imputation_error(pipe, X, rows, hidden, mods, scale):
    """Mean squared error of the hidden blocks imputed by a fitted user pipeline's estimator (``impute``), in the
    units of ``scale`` (a ``StandardScaler`` of the cell's data): the hidden entries only, averaged per row."""
    Xm = X[rows].copy()
    blocks = list(mods.values())
    for m, idx in enumerate(blocks):
        Xm[np.ix_(hidden == m, idx)] = np.nan
    scale_in, est = pipe.named_steps["scale_in"], pipe.named_steps["rep"]
    filled = scale_in.inverse_transform(est.impute(scale_in.transform(Xm)))
    errors = (scale.transform(filled) - scale.transform(X[rows])) ** 2
    return float(np.mean([errors[i, blocks[m]].mean() for i, m in enumerate(hidden)]))


def amputed(X, mods, setting, seed):
    """``X`` with whole blocks missing by a cell's ``setting``: a missing rate, or ``'structured'`` (10% complete
    rows, the others in groups that keep one modality (two modalities) or a modality and the next one (more))."""
    if setting != "structured":
        return harness.ampute(X, mods, rate=float(setting), seed=seed)
    names = list(mods)
    pairs = [(n,) for n in names] if len(names) == 2 else [(names[i], names[(i + 1) % len(names)]) for i in range(len(names))]
    return harness.ampute(X, mods, pairs=pairs, complete_fraction=0.1, seed=seed)


def training_folds(y, folds, seed, n_train):
    """``(fold, train, test, subsampled)`` of stratified K-fold with ``seed``, each training fold cut to a stratified
    ``n_train`` rows (``'all'``, or about as many rows as the fold has: the whole fold)."""
    n_classes = len(np.unique(y))
    for fold, (train, test) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)):
        subsampled = n_train != "all" and int(n_train) < len(train) - n_classes
        if subsampled:
            train, _ = train_test_split(train, train_size=int(n_train), stratify=y[train], random_state=seed + fold)
        yield fold, train, test, subsampled


def run_cell(X, y, mods, *, setting, n_train, seed, folds, methods, probes, log, imputation=False):
    """One cell: every method and probe on every fold. Returns one record per (fold, method, probe); with
    ``imputation`` the estimators' records also hold ``imp_mse`` (:func:`imputation_error` of one block hidden in
    every test row that observes two or more, the same blocks for every method)."""
    Xa = amputed(X, mods, setting, seed)
    observed = harness.observed(Xa, mods)
    scale = StandardScaler().fit(X)
    rows = []
    for fold, train, test, subsampled in training_folds(y, folds, seed, n_train):
        Xtr, Xte, ytr, yte = Xa[train], Xa[test], y[train], y[test]
        held, hidden = heldout_blocks(observed[test], np.random.RandomState(10007 * seed + 101 * fold + 7))
        for name in methods:
            method = _method(name)
            wanted = [p for p in probes if method.family != "raw" or p == "hgb"]
            if not wanted:
                continue
            ctx = harness.Context(mods, X.shape[1], len(train), seed)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                t0 = time.perf_counter()
                rep = harness.user_pipeline(method, ctx)
                Ztr = rep.fit_transform(Xtr)
                fit_s = time.perf_counter() - t0
                Zte = rep.transform(Xte)
            warned = "; ".join(sorted({str(w.message)[:80] for w in caught if issubclass(w.category, UserWarning)}))
            imp = math.nan
            if imputation and method.family == "calmrl" and held.size:
                imp = imputation_error(rep, Xa[test], held, hidden, mods, scale)
            for probe in wanted:
                clf = harness.make_probe(probe, seed).fit(Ztr, ytr)
                acc = float((clf.predict(Zte) == yte).mean())
                rows.append(dict(method=name, probe=probe, fold=fold, n_used=len(train), subsampled=subsampled, acc=acc, imp_mse=imp, fit_s=fit_s, width=Ztr.shape[1], warnings=warned))
            log(f"    fold {fold} {name:<15} " + " ".join(f"{r['probe']}={r['acc']:.3f}" for r in rows[-len(wanted):]) + f" fit {fit_s:.1f}s width {Ztr.shape[1]}")
    return rows


def _cell(record):
    """A cell's label; a training fold not subsampled (it has about ``n`` rows or fewer) is the whole fold ('all')."""
    n, used = record["n_train"], record.get("n_used")
    if str(record.get("subsampled", "")) == "False" or (n != "all" and used and int(n) > int(used)):
        n = "all"
    kind = "m" if record.get("widen_kind") == "mix" else ""
    return f"{record['dataset']} n={n} w={float(record['widen']):g}{kind} {record['setting']}"


def margins(records, probe):
    """Per cell of one probe: the mean accuracy of every method, the best baseline (its name) and every other
    method's margin over it in points."""
    cells = {}
    for r in records:
        if r.get("probe", "linear") == probe:
            cells.setdefault(_cell(r), {}).setdefault(r["method"], {})[(r["seed"], r["fold"])] = float(r["acc"])
    out = {}
    for cell, accs in cells.items():
        mean = {m: float(np.mean(list(v.values()))) for m, v in accs.items()}
        best = max((m for m in mean if m in BASELINES or m == "nan"), key=lambda m: mean[m], default=None)
        margin = {} if best is None else {m: 100 * (a - mean[best]) for m, a in mean.items() if m not in BASELINES and m != "nan"}
        out[cell] = (mean, best, margin)
    return out


def summarize(records, probe="linear"):
    """One probe's table: every cell's accuracies, each default's margin over the best baseline; worst and mean."""
    cells = margins(records, probe)
    if not cells:
        return ""
    present = {m for mean, _, _ in cells.values() for m in mean}
    names = [m for m in BASELINES + ["nan"] if m in present] + sorted(present - set(BASELINES) - {"nan"})
    lines = [f"### Probe: {probe}", "", "| cell | best baseline | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    diffs = {m: [] for m in names if m not in BASELINES and m != "nan"}
    for cell, (mean, best, margin) in cells.items():
        cols = []
        for m in names:
            if m not in mean:
                cols.append("")
            elif m in margin:
                diffs[m].append(margin[m])
                cols.append(f"{mean[m]:.3f} ({margin[m]:+.1f})")
            else:
                cols.append(f"{mean[m]:.3f}")
        lines.append(f"| {cell} | {mean[best]:.3f} {best} | " + " | ".join(cols) + " |" if best else f"| {cell} | | " + " | ".join(cols) + " |")
    lines += ["", "| method | worst margin (points) | mean margin | cells below -0.5 | cells |", "|---|---|---|---|---|"]
    for m, v in diffs.items():
        if v:
            lines.append(f"| {m} | {min(v):+.1f} | {np.mean(v):+.2f} | {sum(x < -0.5 for x in v)} | {len(v)} |")
    return "\n".join(lines + by_regime(cells, [m for m, v in diffs.items() if v]))


def regimes(cell):
    """The regimes a cell label (``_cell``) belongs to: its data set, widened or not, the missingness, the rows."""
    dataset, n, widen, setting = cell.split(" ")
    added = "no added columns" if float(widen[2:].rstrip("m")) == 0 else ("mixed columns" if widen.endswith("m") else "noise columns")
    return [dataset, added, "structured" if setting == "structured" else "random missing", f"{n[2:]} training rows"]


def by_regime(cells, methods):
    """Lines of a table: every default's worst / mean margin over the cells of each regime (``regimes``)."""
    groups = {}
    if len(cells) < 2:
        return []
    for cell, (_, _, margin) in cells.items():
        for regime in regimes(cell):
            for m in methods:
                if m in margin:
                    groups.setdefault(regime, {}).setdefault(m, []).append(margin[m])
    lines = ["", "| regime (cells) | " + " | ".join(f"{m}: worst / mean" for m in methods) + " |", "|---|" + "---|" * len(methods)]
    order = {}  # a regime's kind (data set, widening, ...), then its first cell
    for k, cell in enumerate(cells):
        for i, regime in enumerate(regimes(cell)):
            order.setdefault(regime, (i, k))
    for regime, per in sorted(groups.items(), key=lambda item: order[item[0]]):
        n = max(len(v) for v in per.values())
        lines.append(f"| {regime} ({n}) | " + " | ".join(f"{min(per[m]):+.1f} / {np.mean(per[m]):+.2f}" if m in per else "" for m in methods) + " |")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", choices=["tune", "eval"], default="tune")
    p.add_argument("--dataset", nargs="+", default=["all"], help=f"any of {DATASETS}, or all")
    p.add_argument("--n-train", nargs="+", default=["150", "300", "600", "all"])
    p.add_argument("--widen", type=float, nargs="+", default=[0])
    p.add_argument("--widen-kind", choices=["noise", "mix"], default="noise", help="what the widening columns hold (harness.widen)")
    p.add_argument("--settings", nargs="+", default=["0.5"], help="missing rates and/or 'structured'")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--methods", nargs="+", default=BASELINES + DEFAULTS)
    p.add_argument("--hgb", action="store_true", help="also the HistGradientBoosting probe (and HGB on the NaN data)")
    p.add_argument("--imputation", action="store_true", help="also the estimators' error on a held-out block of every test row (imp_mse)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--tag", default="")
    p.add_argument("--summarize", nargs="+", metavar="CSV", help="only print the tables of earlier runs' CSV files, merged")
    args = p.parse_args(argv)
    if args.summarize:
        records = harness.read_records(args.summarize)
        print("\n\n".join(t for t in (summarize(records, probe) for probe in ("linear", "hgb")) if t))
        return 0
    log = harness.use_threads(args.threads)
    probes = ["linear", "hgb"] if args.hgb else ["linear"]
    methods = args.methods + (["nan"] if args.hgb and "nan" not in args.methods else [])
    datasets = DATASETS if "all" in args.dataset else args.dataset
    records, t_all = [], time.perf_counter()
    for ds in datasets:
        try:
            X0, y0, mods0 = harness.load_split(ds, args.rows)
        except harness.DatasetUnavailable as exc:
            log(f"skipping {ds}: {exc}")
            continue
        for w in args.widen:
            for seed in range(args.seeds):
                X, mods = harness.widen(X0, mods0, w, seed, args.widen_kind)
                # a row count that cuts no training fold is the whole fold: run that cell once, as 'all'
                counts = dict.fromkeys(n if any(s for *_, s in training_folds(y0, args.folds, seed, n)) else "all" for n in args.n_train)
                for n in counts:
                    for setting in args.settings:
                        log(f"{ds} n={n} w={w:g} {setting} seed {seed} ({X.shape[1]} features, {len(y0)} rows)")
                        for r in run_cell(X, y0, mods, setting=setting, n_train=n, seed=seed, folds=args.folds,
                                          methods=methods, probes=probes, log=log, imputation=args.imputation):
                            records.append(dict(dataset=ds, n_train=n, widen=w, widen_kind=args.widen_kind, setting=setting, seed=seed, **r))
    if not records:
        log("nothing ran")
        return 1
    tables = "\n\n".join(t for t in (summarize(records, probe) for probe in probes) if t)
    write_report(records, Path(args.out) / (f"sweep_{args.rows}" + (f"_{args.tag}" if args.tag else "")), "sweep.py", argv, tables, t_all)
    return 0


def write_report(records, stem, script, argv, tables, start):
    """``<stem>.csv`` (the records) and ``<stem>.md`` (the command, the environment, ``tables``, the wall time since
    ``start``), and the Markdown on stdout."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    harness.write_csv(records, stem.with_suffix(".csv"), formatted=False)
    command = f"python benchmarks/{script} " + " ".join(argv if argv is not None else sys.argv[1:])
    text = f"Command: `{command}`\n\n{harness.environment_summary()}\n\n{tables}\n\nWall time {time.perf_counter() - start:.0f} s.\n"
    stem.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
