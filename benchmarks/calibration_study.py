"""Calibration study (issue 20): does calibrated training beat the uncalibrated ablation, and where?

    python benchmarks/calibration_study.py --quick                                   # smoke run, about a minute
    python benchmarks/calibration_study.py --study synthetic --seeds 5 --complete-fractions 0.01 0.05 0.2
    python benchmarks/calibration_study.py --study synthetic --seeds 5 --complete-fractions 0.05 \\
        --methods lin-cal lin-uncal --epoch-rows 0 --tag full-epochs                    # the samples-seen control
    python benchmarks/calibration_study.py --study mfeat --seeds 10 --folds 5
    python benchmarks/calibration_study.py --summarize doc/results/calibration/*.csv  # tables of every CSV

Two studies, every method on the same data, masks and folds (``--list-methods`` names them):

* ``synthetic``: per seed ``s`` and complete fraction ``c``, ``make_nonlinear_modalities(n_samples,
  complete_fraction=c, random_state=s)`` (4 modalities in a chain: ``m0-m1``, ``m1-m2``, ``m2-m3`` co-occur often,
  the other three pairs only in the complete rows). The networks and the samples depend on the seed only, so the
  three complete fractions of one seed share ``data_full`` and differ in their masks. The first ``n_train`` rows
  train, the last ``n_test`` rows test (their structured missingness is the training rows').
* ``mfeat``: Multiple Features, evaluation rows of ``harness.tuning_split`` only (never the tuning rows), the
  benchmark's structured missingness (``pix`` paired with each other modality, ``--mf-complete-fraction`` complete
  rows, seed ``s``), stratified ``--folds``-fold split with seed ``s`` as ``benchmarks/run.py`` does.

Metrics of every (study, complete fraction, seed[, fold], method):

* ``acc``: probe accuracy of ``Pipeline(method, StandardScaler(), LogisticRegression(max_iter=2000))`` fitted on
  the training rows, scored on the test rows (their own missingness); ``acc_rep``: the same probe on the method's
  aligned representation alone (CalMRL ``output='embeddings'``, ``MultiViewPPCA`` ``output='latent'``, with the
  indicator columns), where training changes every column.
* ``r1_<A>-<B>``: symmetric cross-modal Recall@1 (``harness.symmetric_recall``, cosine, ties at random) on
  ``n_retrieval`` test rows with *every* modality known (the generator's ``data_full``; Multiple Features' own
  complete rows): the query is the row with modality A alone, the gallery the rows with B alone. Kind: the
  per-modality embeddings (``emb``) for CalMRL, the latent posterior mean (``lat``) for ``MultiViewPPCA``; the
  ``r1_lat_*`` columns hold the latent of the CalMRL models too. ``r1_rare``: the mean over the pairs that co-occur
  only in complete rows; ``r1_freq``: over the pairs that a group observes.
* ``anchor_obs1`` / ``anchor_cal1``: mean anchor shift (design 4.5, ``diagnostics.anchor_shift``) of those rows
  with one random modality hidden, from the observed columns only / observed + imputed; ``anchor_obsP`` /
  ``anchor_calP``: the same keeping one random pair of modalities (what a structured row observes). The method
  ``start`` (``max_epochs=0``: the encoders' closed-form start) gives the shift before training.
* ``fit_s``: fit time of the method (one thread).

``--summarize`` prints, per study, epoch budget and complete fraction, the mean and seed standard deviation of
every method and the paired differences (per seed; Multiple Features: the fold mean per seed) with their 95%
t-interval. Writes one CSV line per (setting, seed[, fold], method) to ``<out>/<study>[_<tag>].csv`` (appended
as it runs, so a stopped run keeps its lines) and the tables to ``<out>/<study>[_<tag>].md``; progress to stderr.
"""

import argparse
import csv
import itertools
import math
import shlex
import sys
import time
import warnings
from pathlib import Path

import _checkout  # noqa: F401 - this checkout's benchmarks and sklearn_calmrl first (benchmarks/_checkout.py)
import numpy as np
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from benchmarks import harness
from sklearn_calmrl.diagnostics import anchor_shift

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parent / "doc" / "results" / "calibration"

# --------------------------------------------------------------------------- #
# Methods: name -> (description, CalMRLTransformer parameters or None for MultiViewPPCA)
# --------------------------------------------------------------------------- #


def _pmrl(**kw):
    from sklearn_calmrl import PMRL

    return PMRL(**kw)


METHODS = {
    "ppca": ("MultiViewPPCA with its defaults: the closed-form model alone (retrieval through its latent)", None),
    "start": ("CalMRLTransformer(max_epochs=0): the encoders' closed-form start, before training", dict(max_epochs=0)),
    "lin-cal": ("CalMRLTransformer defaults: linear encoders, calibrate=True", dict()),
    "lin-uncal": ("linear encoders, calibrate=False (the observed-only ablation)", dict(calibrate=False)),
    "mlp-cal": ("encoder='mlp', calibrate=True", dict(encoder="mlp")),
    "mlp-uncal": ("encoder='mlp', calibrate=False", dict(encoder="mlp", calibrate=False)),
    "lin-cal-match": ("linear, calibrate=True, PMRL(matching_weight=0.1) (the paper's matching loss, design 4.7)",
                      dict(alignment=("pmrl", dict(matching_weight=0.1)))),
    "lin-uncal-match": ("linear, calibrate=False, PMRL(matching_weight=0.1)",
                        dict(calibrate=False, alignment=("pmrl", dict(matching_weight=0.1)))),
    "lin-cal-drop0.3": ("linear, calibrate=True, PMRL(modality_dropout=0.3) (design 3.6)",
                        dict(alignment=("pmrl", dict(modality_dropout=0.3)))),
    "lin-cal-drop0.5": ("linear, calibrate=True, PMRL(modality_dropout=0.5)",
                        dict(alignment=("pmrl", dict(modality_dropout=0.5)))),
    "lin-cal-wimp": ("linear, calibrate=True, PMRL(weight_imputations=True) (design 2.14)",
                     dict(alignment=("pmrl", dict(weight_imputations=True)))),
    "lin-cal-drop0.3-wimp": ("linear, calibrate=True, PMRL(modality_dropout=0.3, weight_imputations=True)",
                             dict(alignment=("pmrl", dict(modality_dropout=0.3, weight_imputations=True)))),
    "lin-cal-drop0.5-wimp": ("linear, calibrate=True, PMRL(modality_dropout=0.5, weight_imputations=True)",
                             dict(alignment=("pmrl", dict(modality_dropout=0.5, weight_imputations=True)))),
    "lin-cal-drop0.3-match": ("linear, calibrate=True, PMRL(modality_dropout=0.3, matching_weight=0.1)",
                              dict(alignment=("pmrl", dict(modality_dropout=0.3, matching_weight=0.1)))),
    "lin-cal-match-wimp": ("linear, calibrate=True, PMRL(matching_weight=0.1, weight_imputations=True)",
                           dict(alignment=("pmrl", dict(matching_weight=0.1, weight_imputations=True)))),
    "lin-cal-all": ("linear, calibrate=True, PMRL(modality_dropout=0.3, weight_imputations=True, "
                    "matching_weight=0.1)",
                    dict(alignment=("pmrl", dict(modality_dropout=0.3, weight_imputations=True, matching_weight=0.1)))),
    "ppca-q8": ("MultiViewPPCA(latent_dim=8): the generator's latent size (a check of latent_dim='auto')",
                dict(_ppca=True, latent_dim=8)),
    "start-q8": ("CalMRLTransformer(max_epochs=0, latent_dim=8)", dict(max_epochs=0, latent_dim=8)),
    "lin-cal-q8": ("linear, calibrate=True, latent_dim=8", dict(latent_dim=8)),
    "lin-uncal-q8": ("linear, calibrate=False, latent_dim=8", dict(calibrate=False, latent_dim=8)),
    "mlp-cal-q8": ("encoder='mlp', calibrate=True, latent_dim=8", dict(encoder="mlp", latent_dim=8)),
    "mlp-uncal-q8": ("encoder='mlp', calibrate=False, latent_dim=8", dict(encoder="mlp", calibrate=False, latent_dim=8)),
    "lin-cal-q8-drop0.3": ("linear, calibrate=True, latent_dim=8, PMRL(modality_dropout=0.3)",
                           dict(latent_dim=8, alignment=("pmrl", dict(modality_dropout=0.3)))),
    "lin-cal-q8-match-wimp": ("linear, calibrate=True, latent_dim=8, PMRL(matching_weight=0.1, weight_imputations=True)",
                              dict(latent_dim=8, alignment=("pmrl", dict(matching_weight=0.1, weight_imputations=True)))),
    "mlp-cal-drop0.3": ("encoder='mlp', calibrate=True, PMRL(modality_dropout=0.3)",
                        dict(encoder="mlp", alignment=("pmrl", dict(modality_dropout=0.3)))),
    # where calibration starts to help: other latent sizes (a check of a calibrate rule by latent size)
    **{f"{kind}-q{q}": (f"linear, calibrate={kind == 'lin-cal'}, latent_dim={q}", dict(latent_dim=q, **({} if kind == "lin-cal" else {"calibrate": False})))
       for q in (4, 12, 16) for kind in ("lin-cal", "lin-uncal")},
    **{f"start-q{q}": (f"CalMRLTransformer(max_epochs=0, latent_dim={q})", dict(max_epochs=0, latent_dim=q)) for q in (4, 12, 16)},
}
CORE = ["ppca", "start", "lin-cal", "lin-uncal", "mlp-cal", "mlp-uncal"]
VARIANTS = ["lin-cal-match", "lin-uncal-match", "lin-cal-drop0.3", "lin-cal-drop0.5", "lin-cal-wimp"]
QUICK = ["ppca", "start", "lin-cal", "lin-uncal", "lin-cal-drop0.3"]

# Paired differences reported by the summary (both methods must be present): (a, b) means a - b.
COMPARISONS = [
    ("lin-cal", "lin-uncal"), ("mlp-cal", "mlp-uncal"), ("lin-cal", "ppca"), ("lin-cal", "start"),
    ("lin-uncal", "start"), ("mlp-cal", "lin-cal"),
    ("lin-cal-match", "lin-uncal-match"), ("lin-cal-match", "lin-cal"), ("lin-uncal-match", "lin-uncal"),
    ("lin-cal-drop0.3", "lin-cal"), ("lin-cal-drop0.3", "lin-uncal"),
    ("lin-cal-drop0.5", "lin-cal"), ("lin-cal-drop0.5", "lin-uncal"),
    ("lin-cal-wimp", "lin-cal"), ("lin-cal-wimp", "lin-uncal"),
    ("lin-cal-drop0.3-wimp", "lin-cal"), ("lin-cal-drop0.3-wimp", "lin-uncal"),
    ("lin-cal-drop0.5-wimp", "lin-cal"), ("lin-cal-drop0.5-wimp", "lin-uncal"),
    ("lin-cal-drop0.3-match", "lin-cal"), ("lin-cal-drop0.3-match", "lin-uncal"),
    ("lin-cal-match-wimp", "lin-cal"), ("lin-cal-match-wimp", "lin-uncal"),
    ("lin-cal-match-wimp", "lin-uncal-match"),
    ("lin-cal-all", "lin-cal"), ("lin-cal-all", "lin-uncal"),
    ("lin-cal-q8", "lin-uncal-q8"), ("lin-cal-q8", "start-q8"), ("lin-uncal-q8", "start-q8"), ("start-q8", "start"),
    ("lin-cal-q8", "lin-cal"), ("mlp-cal-q8", "mlp-uncal-q8"), ("mlp-cal-q8", "start-q8"), ("mlp-uncal-q8", "start-q8"),
    ("lin-cal-q8-drop0.3", "lin-cal-q8"), ("lin-cal-q8-drop0.3", "lin-uncal-q8"),
    ("lin-cal-q8-match-wimp", "lin-cal-q8"), ("lin-cal-q8-match-wimp", "lin-uncal-q8"),
    ("mlp-cal-drop0.3", "mlp-cal"), ("mlp-cal-drop0.3", "mlp-uncal"),
    *[pair for q in (4, 12, 16) for pair in ((f"lin-cal-q{q}", f"lin-uncal-q{q}"), (f"lin-cal-q{q}", f"start-q{q}"))],
]

META = ["study", "epoch_rows", "complete_fraction", "seed", "fold", "method", "n_train", "n_test", "n_retrieval",
        "latent_dim", "n_iter"]
SUMMARY_METRICS = ["r1_rare", "r1_freq", "acc", "acc_rep", "r1_lat_rare", "r1_lat_freq", "anchor_obs1",
                   "anchor_cal1", "anchor_obsP", "anchor_calP", "fit_s"]
DIFF_METRICS = ["r1_rare", "r1_freq", "acc", "acc_rep", "anchor_cal1", "anchor_calP"]
LABELS = {"r1_rare": "R@1 rare", "r1_freq": "R@1 frequent", "acc": "probe acc", "acc_rep": "probe acc (rep only)",
          "r1_lat_rare": "latent R@1 rare", "r1_lat_freq": "latent R@1 frequent",
          "anchor_obs1": "shift obs (1 hidden)", "anchor_cal1": "shift cal (1 hidden)",
          "anchor_obsP": "shift obs (pair kept)", "anchor_calP": "shift cal (pair kept)", "fit_s": "fit s"}
POINTS = {"r1_rare", "r1_freq", "acc", "acc_rep", "r1_lat_rare", "r1_lat_freq"}  # shown in percentage points


def make_method(name, modalities, seed, max_epochs=None):
    """The unfitted estimator of a method (one thread, seeded)."""
    from sklearn_calmrl import CalMRLTransformer, MultiViewPPCA

    params = METHODS[name][1]
    if params is None or params.get("_ppca"):
        return MultiViewPPCA(modalities, random_state=seed, n_jobs=1,
                             **{k: v for k, v in (params or {}).items() if k != "_ppca"})
    params = dict(params)
    if isinstance(params.get("alignment"), tuple):
        params["alignment"] = _pmrl(**params["alignment"][1])
    if max_epochs is not None and not name.startswith("start"):
        params["max_epochs"] = max_epochs
    return CalMRLTransformer(modalities, random_state=seed, n_jobs=1, **params)


# --------------------------------------------------------------------------- #
# One fitted method, every metric
# --------------------------------------------------------------------------- #


def pair_tag(pair):
    return f"{pair[0]}-{pair[1]}"


def evaluate(name, est, Xtr, ytr, Xte, yte, Xret, modalities, rare, frequent, rng):
    """Fit ``est`` on the training rows and compute every metric (module docstring).

    ``Xret`` are test rows with every modality known (retrieval and anchor shift); ``rng`` draws the hidden
    modalities of the anchor shift (the same draws for every method of a setting when seeded alike).
    """
    res = {}
    pipe = harness.linear_probe(est)
    pipe.fit(Xtr, ytr)
    res["fit_s"] = pipe.named_steps["rep"].fit_time_
    res["acc"] = float(pipe.score(Xte, yte))
    res["latent_dim"] = int(est.latent_dim_)
    torch_model = getattr(est, "encoders_", None) is not None
    res["n_iter"] = int(getattr(est, "n_iter_", 0)) if torch_model else 0

    # The probe on the aligned representation alone (every column changes with training).
    old = est.get_params()["output"]
    est.set_params(output="embeddings" if torch_model else "latent")
    try:
        Rtr, Rte = est.transform(Xtr), est.transform(Xte)
    finally:
        est.set_params(output=old)
    scaler = StandardScaler().fit(Rtr)
    clf = harness.make_probe("linear").fit(scaler.transform(Rtr), ytr)
    res["acc_rep"] = float(clf.score(scaler.transform(Rte), yte))

    # Cross-modal retrieval on rows with every modality known: each modality alone, then every pair.
    names = list(modalities)
    alone_emb, alone_lat = {}, {}
    for m in names:
        Xm = harness.only_block(Xret, modalities, m)
        alone_lat[m] = harness.latent(est, Xm)
        if torch_model:
            alone_emb[m] = est.impute_representations(Xm)[m]
    primary = alone_emb if torch_model else alone_lat

    for kind, reps in (("", primary), ("lat_", alone_lat)):
        for group, pairs in (("rare", rare), ("freq", frequent)):
            vals = []
            for a, b in pairs:
                v = harness.symmetric_recall(reps[a], reps[b], ks=(1,))[1]
                res[f"r1_{kind}{pair_tag((a, b))}"] = v
                vals.append(v)
            res[f"r1_{kind}{group}"] = float(np.mean(vals)) if vals else math.nan

    # Anchor shift [design 4.5]: one modality hidden; one random pair kept.
    k, n = len(names), Xret.shape[0]
    hide_one = rng.randint(k, size=n)
    keep_pair = np.array([rng.choice(k, size=2, replace=False) for _ in range(n)])
    if torch_model:
        for tag, hidden_of in (("1", lambda r: [hide_one[r]]),
                               ("P", lambda r: [m for m in range(k) if m not in keep_pair[r]])):
            Xm = Xret.copy()
            for r in range(n):
                for m in hidden_of(r):
                    Xm[r, modalities[names[m]]] = np.nan
            obs, cal = anchor_shift(est, Xret, Xm)
            res[f"anchor_obs{tag}"], res[f"anchor_cal{tag}"] = float(np.mean(obs)), float(np.mean(cal))
    return res


# --------------------------------------------------------------------------- #
# The two studies
# --------------------------------------------------------------------------- #


class Writer:
    """Appends one CSV line per result (the header once), so a stopped run keeps what it measured."""

    def __init__(self, path, columns):
        self.path, self.columns = Path(path), columns
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            with open(self.path) as fh:
                header = next(csv.reader(fh), None)
            if header != columns:
                raise SystemExit(f"{self.path} exists with other columns: use another --tag or remove it")
        else:
            with open(self.path, "w", newline="") as fh:
                csv.writer(fh).writerow(columns)

    def write(self, row):
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore").writerow(
                {c: harness.fmt_csv(row.get(c, "")) for c in self.columns})


def _columns(rare, frequent):
    pairs = [pair_tag(p) for p in list(rare) + list(frequent)]
    return (META + SUMMARY_METRICS + [f"r1_{p}" for p in pairs] + [f"r1_lat_{p}" for p in pairs]
            + ["warnings", "error"])


def _run_one(name, make, data, base, writer, log, seed_rng):
    """Fit and evaluate one method, record the line (errors recorded, not raised)."""
    row = dict(base, method=name, error="", warnings="")
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            row.update(evaluate(name, make(), *data, rng=np.random.RandomState(seed_rng)))
        except Exception as exc:  # noqa: BLE001 - one failing method must not stop the study
            row["error"] = f"{type(exc).__name__}: {exc}"
            log(f"  ERROR {name}: {row['error']}")
    row["warnings"] = " | ".join(sorted({f"{w.category.__name__}: {str(w.message)[:120]}" for w in caught}))
    writer.write(row)
    log(f"{base['study']} c={base['complete_fraction']:g} seed={base['seed']} fold={base.get('fold', '')} "
        f"{name:<22} R@1 rare={row.get('r1_rare', math.nan):.3f} freq={row.get('r1_freq', math.nan):.3f} "
        f"acc={row.get('acc', math.nan):.3f} rep={row.get('acc_rep', math.nan):.3f} "
        f"shift cal1={row.get('anchor_cal1', math.nan):.3f} fit={row.get('fit_s', math.nan):.1f}s "
        f"({time.perf_counter() - t0:.1f}s)")
    return row


def run_synthetic(args, methods, writer_for, log):
    from sklearn_calmrl.datasets import make_nonlinear_modalities

    n_samples = args.n_train + args.n_test
    writer = None
    for seed in range(args.seed_start, args.seed_start + args.seeds):
        for cf in args.complete_fractions:
            extra = dict(hidden_layer_sizes=()) if args.generator == "linear" else {}
            d = make_nonlinear_modalities(n_samples, complete_fraction=cf, random_state=seed, **extra)
            if writer is None:
                writer = writer_for(_columns(d.rare_pairs, d.frequent_pairs))
            tr, te = np.arange(args.n_train), np.arange(args.n_train, n_samples)
            ret = te[: args.n_retrieval]
            data = (d.data[tr], d.target[tr], d.data[te], d.target[te], d.data_full[ret], d.modalities,
                    d.rare_pairs, d.frequent_pairs)
            study = "synthetic" if args.generator == "nonlinear" else "synthetic-linear"
            base = dict(study=study, epoch_rows=args.epoch_rows_label, complete_fraction=cf, seed=seed, fold="",
                        n_train=len(tr), n_test=len(te), n_retrieval=len(ret))
            for name in methods:
                _run_one(name, lambda name=name: make_method(name, d.modalities, seed, args.epochs), data, base, writer,
                         log, seed_rng=1000 * seed + 7)


def run_mfeat(args, methods, writer_for, log):
    # the evaluation rows only: never report on the rows the defaults were tuned on
    X0, y, modalities = harness.load_split("multiple_features", "eval", args.mf_max_rows or None)
    names = list(modalities)
    groups = harness.DATASETS["multiple_features"]["pairs"]
    frequent = sorted({tuple(sorted(p, key=names.index)) for g in groups for p in itertools.combinations(g, 2)},
                      key=lambda p: (names.index(p[0]), names.index(p[1])))
    rare = [p for p in itertools.combinations(names, 2) if p not in frequent]
    writer = writer_for(_columns(rare, frequent))
    cf = args.mf_complete_fraction
    for seed in range(args.seed_start, args.seed_start + args.seeds):
        X = harness.ampute(X0, modalities, pairs=groups, complete_fraction=cf, seed=seed)
        folds = list(StratifiedKFold(args.folds, shuffle=True, random_state=seed).split(X0, y))
        for fold, (tr, te) in enumerate(folds):
            fdata = (X[tr], y[tr], X[te], y[te], X0[te], modalities, rare, frequent)
            base = dict(study="mfeat", epoch_rows=args.epoch_rows_label, complete_fraction=cf, seed=seed, fold=fold,
                        n_train=len(tr), n_test=len(te), n_retrieval=len(te))
            for name in methods:
                _run_one(name, lambda name=name: make_method(name, modalities, seed, args.epochs), fdata, base,
                         writer, log, seed_rng=1000 * seed + 10 * fold + 7)


# --------------------------------------------------------------------------- #
# Summary: means, seed sd, paired differences with 95% t-intervals
# --------------------------------------------------------------------------- #


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def per_seed(rows):
    """{(study, epoch_rows, cf): {method: {seed: {metric: value}}}}, folds averaged within a seed."""
    acc = {}
    for r in rows:
        if r.get("error"):
            continue
        key = (r["study"], r["epoch_rows"], float(r["complete_fraction"]))
        cell = acc.setdefault(key, {}).setdefault(r["method"], {}).setdefault(int(r["seed"]), {})
        for metric in SUMMARY_METRICS:
            cell.setdefault(metric, []).append(_num(r.get(metric)))
    return {key: {m: {s: {k: float(np.nanmean(v)) if np.isfinite(v).any() else math.nan for k, v in metrics.items()}
                      for s, metrics in seeds.items()} for m, seeds in methods.items()} for key, methods in acc.items()}


def t_interval(diffs):
    """(mean, half-width of the 95% t-interval, n) of paired differences."""
    from scipy import stats

    d = np.asarray([x for x in diffs if x == x], dtype=float)
    if d.size < 2:
        return (float(d.mean()) if d.size else math.nan), math.nan, int(d.size)
    return float(d.mean()), float(stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)), int(d.size)


def _scale(metric):
    return 100.0 if metric in POINTS else 1.0


def _cell(vals, metric):
    vals = np.asarray([v for v in vals if v == v], dtype=float) * _scale(metric)
    if vals.size == 0:
        return "-"
    digits = 1 if metric in POINTS or metric == "fit_s" else 3
    sd = f" ({vals.std(ddof=1):.{digits}f})" if vals.size > 1 else ""
    return f"{vals.mean():.{digits}f}{sd}"


def _diff_cell(mean, half, n, metric):
    if mean != mean:
        return "-"
    digits = 1 if metric in POINTS or metric == "fit_s" else 3
    star = "*" if half == half and abs(mean) > half else ""
    return f"{mean:+.{digits}f} ± {half:.{digits}f}{star}" if half == half else f"{mean:+.{digits}f}"


def _order(methods):
    known = list(METHODS)
    return sorted(methods, key=lambda m: known.index(m) if m in known else len(known))


def summarize(rows):
    """Markdown tables: per (study, epoch budget, complete fraction) the means (seed sd) and the paired differences."""
    cells = per_seed(rows)
    out = []
    for key in sorted(cells, key=lambda k: (k[0], k[1] != "2048", k[1], k[2])):
        study, epoch_rows, cf = key
        methods = cells[key]
        seeds_all = sorted({s for m in methods.values() for s in m})
        n_folds = len({r["fold"] for r in rows if r["study"] == study and float(r["complete_fraction"]) == cf})
        unit = "seed" if study.startswith("synthetic") else f"seed (mean of {n_folds} folds)"
        out += [f"### {study}, complete fraction {cf:g}, epoch budget {epoch_rows} rows", "",
                f"Mean ({unit} sd) over seeds {seeds_all[0]}..{seeds_all[-1]} (n per method in the last column); "
                "R@1 and accuracies in points, anchor shifts as distances, fit in seconds.", ""]
        body = []
        for m in _order(methods):
            seeds = methods[m]
            body.append([m] + [_cell([seeds[s][k] for s in seeds], k) for k in SUMMARY_METRICS] + [str(len(seeds))])
        out += [harness.markdown_table(["method"] + [LABELS[k] for k in SUMMARY_METRICS] + ["n"], body), ""]
        body = []
        for a, b in COMPARISONS:
            if a not in methods or b not in methods:
                continue
            common = sorted(set(methods[a]) & set(methods[b]))
            cells_ab = []
            for k in DIFF_METRICS:
                mean, half, n = t_interval([(methods[a][s][k] - methods[b][s][k]) * _scale(k) for s in common])
                cells_ab.append(_diff_cell(mean, half, n, k))
            body.append([f"{a} − {b}"] + cells_ab + [str(len(common))])
        if body:
            out += ["Paired differences, mean ± half-width of the 95% t-interval over seeds (points for R@1 and "
                    "accuracy; * where the interval excludes 0):", "",
                    harness.markdown_table(["difference"] + [LABELS[k] for k in DIFF_METRICS] + ["n"], body), ""]
    # The epoch budget: a method trained with every row every epoch against the same method and seeds on the
    # default budget (design 3.1).
    for (study, epoch_rows, cf), methods in sorted(cells.items()):
        base = cells.get((study, "2048", cf))
        if epoch_rows == "2048" or base is None:
            continue
        body = []
        for m in _order(methods):
            if m not in base:
                continue
            common = sorted(set(methods[m]) & set(base[m]))
            row = []
            for k in DIFF_METRICS + ["fit_s"]:
                mean, half, n = t_interval([(methods[m][s][k] - base[m][s][k]) * _scale(k) for s in common])
                row.append(_diff_cell(mean, half, n, k))
            body.append([f"{m}: {epoch_rows} − 2048"] + row + [str(len(common))])
        if body:
            out += [f"### {study}, complete fraction {cf:g}: epoch budget {epoch_rows} rows against 2048", "",
                    "Paired differences of the same method and seeds, mean ± half-width of the 95% t-interval:", "",
                    harness.markdown_table(["difference"] + [LABELS[k] for k in DIFF_METRICS + ["fit_s"]] + ["n"], body), ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- #
# Entry point
# --------------------------------------------------------------------------- #


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", choices=["synthetic", "mfeat"], default="synthetic")
    p.add_argument("--methods", nargs="+", default=None,
                   help=f"methods to run (default: {' '.join(CORE + VARIANTS)}; quick: {' '.join(QUICK)})")
    p.add_argument("--list-methods", action="store_true", help="print the methods and exit")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 5; quick 2)")
    p.add_argument("--seed-start", type=int, default=0, help="first seed (to split a run over processes)")
    p.add_argument("--complete-fractions", type=float, nargs="+", default=None,
                   help="synthetic: fractions of complete rows (default 0.01 0.05 0.2; quick 0.05)")
    p.add_argument("--generator", choices=["nonlinear", "linear"], default="nonlinear",
                   help="synthetic: the generator's random tanh networks (default) or linear maps "
                        "(hidden_layer_sizes=(), a control where the latent model is exact); "
                        "the linear one is recorded as study 'synthetic-linear'")
    p.add_argument("--n-train", type=int, default=None, help="synthetic training rows (default 20000; quick 1500)")
    p.add_argument("--n-test", type=int, default=None, help="synthetic test rows (default 5000; quick 500)")
    p.add_argument("--n-retrieval", type=int, default=1000,
                   help="synthetic: test rows (every modality known) for retrieval and anchor shift (default 1000)")
    p.add_argument("--folds", type=int, default=None, help="mfeat: stratified folds per seed (default 5; quick 2)")
    p.add_argument("--mf-complete-fraction", type=float, default=0.1, help="mfeat: complete rows (default 0.1)")
    p.add_argument("--mf-max-rows", type=int, default=None, help="mfeat: stratified subset of rows (smoke tests)")
    p.add_argument("--epochs", type=int, default=None, help="max_epochs of the trained methods (default 30; quick 5)")
    p.add_argument("--epoch-rows", type=int, default=None,
                   help="set sklearn_calmrl._training.EPOCH_ROWS (0: every row every epoch); default: the library's")
    p.add_argument("--quick", action="store_true", help="smoke run: small data, 2 seeds, 5 epochs, few methods")
    p.add_argument("--threads", type=int, default=1, help="BLAS/torch threads (default 1)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default doc/results/calibration)")
    p.add_argument("--tag", default=None, help="suffix of the output file names (default 'quick' with --quick)")
    p.add_argument("--summarize", nargs="+", default=None, metavar="CSV",
                   help="print the tables of these CSV files (.csv or .csv.gz) and exit")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    log = harness.use_threads(args.threads)
    if args.list_methods:
        for name, (desc, _) in METHODS.items():
            print(f"{name:<22} {desc}")
        return 0
    if args.summarize:
        md = summarize(harness.read_records(args.summarize))
        print(md, flush=True)
        return 0

    from sklearn_calmrl import _training

    q = args.quick
    methods = args.methods or (QUICK if q else CORE + VARIANTS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    args.seeds = args.seeds or (2 if q else 5)
    args.complete_fractions = args.complete_fractions or ([0.05] if q else [0.01, 0.05, 0.2])
    args.n_train = args.n_train or (1500 if q else 20000)
    args.n_test = args.n_test or (500 if q else 5000)
    args.n_retrieval = min(args.n_retrieval, args.n_test)
    args.epochs = args.epochs if args.epochs is not None else (5 if q else None)
    args.folds = args.folds or (2 if q else 5)
    if q and args.mf_max_rows is None:
        args.mf_max_rows = 400
    if args.epoch_rows is not None:
        _training.EPOCH_ROWS = args.epoch_rows if args.epoch_rows > 0 else 2**62  # a budget in samples seen, or none
    args.epoch_rows_label = "all" if args.epoch_rows == 0 else str(_training.EPOCH_ROWS)
    tag = args.tag if args.tag is not None else ("quick" if q else "")
    out = Path(args.out)
    stem = (args.study if args.generator == "nonlinear" or args.study != "synthetic" else "synthetic-linear") + (
        f"_{tag}" if tag else "")
    csv_path = out / f"{stem}.csv"
    command = "python benchmarks/calibration_study.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    log(f"{command}\nwriting {csv_path}")
    t0 = time.perf_counter()
    writer_box = {}

    def writer_for(columns):
        writer_box["w"] = Writer(csv_path, columns)
        return writer_box["w"]

    (run_synthetic if args.study == "synthetic" else run_mfeat)(args, methods, writer_for, log)
    wall = time.perf_counter() - t0
    md = "\n".join([f"Command: `{command}`", "", harness.environment_summary(), "", f"Wall time: {wall:.0f} s.", "",
                    summarize(harness.read_records([csv_path]))])
    (out / f"{stem}.md").write_text(md + "\n")
    print(md, flush=True)
    log(f"wrote {csv_path} and {out / stem}.md ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
