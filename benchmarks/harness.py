"""The benchmark harness (design 6): every script's methods, probes, metrics, protocol, parsers, readers, writers
and tables. The data live in ``benchmarks/data.py`` and are re-exported here, so a script needs ``harness`` alone.

Protocol of the cross-validated benchmark (:func:`run_benchmark`), per dataset, missingness kind, level (rate or
complete fraction) and seed: the amputation with that seed is applied to the whole data (train and test alike);
stratified K-fold with that seed; inside each fold every method's representation is fitted on the training rows
only, through ``Pipeline([rep, StandardScaler(), LogisticRegression(max_iter=2000)])``. All methods see the same
masks and the same folds.
"""

import ast
import csv
import gzip
import math
import os
import platform
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from benchmarks.baselines import GeneralizedCCA, MOFATransformer
from benchmarks.data import (  # noqa: F401 - re-exported: the harness is the scripts' one entry point
    DATASETS,
    DatasetUnavailable,
    ampute,
    digits_pair,
    load_dataset,
    load_split,
    load_tcga,
    observed,
    synthetic,
    tuning_split,
    widen,
)
from sklearn_calmrl import CalMRLTransformer, MultiViewPPCA
from sklearn_calmrl.diagnostics import anchor_shift

REPO = Path(__file__).resolve().parents[1]


def use_threads(threads):
    """BLAS and torch on ``threads`` threads (oversubscribed threads are very slow on shared cores); returns a
    progress logger that writes to stderr."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    return log


def pair_name(pair):
    return f"{pair[0]}-{pair[1]}"


# --------------------------------------------------------------------------- #
# Methods
# --------------------------------------------------------------------------- #


@dataclass
class Context:
    """What a method factory may use to build its (unfitted) representation."""

    modalities: dict
    n_features: int
    n_train: int
    seed: int
    calmrl_params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    name: str
    family: str  # 'calmrl' | 'imputer' | 'cca' | 'mofa' | 'raw'
    description: str
    make: Callable
    quick: bool = False
    requires: Optional[str] = None  # module that must import


def _calmrl(**fixed):
    def make(ctx):
        params = {**ctx.calmrl_params, **fixed}
        return CalMRLTransformer(ctx.modalities, random_state=ctx.seed, **params)

    return make


def _ppca(**fixed):
    def make(ctx):
        return MultiViewPPCA(ctx.modalities, random_state=ctx.seed, **fixed)

    return make


def _imputer_pca(make_imputer, size=64):
    def make(ctx):
        return Pipeline(
            [
                ("scale", StandardScaler()),
                ("impute", make_imputer(ctx)),
                ("pca", PCA(int(min(size, ctx.n_features, ctx.n_train - 1)), random_state=ctx.seed)),
            ]
        )

    return make


def _iterative(ctx):
    return IterativeImputer(
        max_iter=5, n_nearest_features=min(50, ctx.n_features - 1), skip_complete=True, random_state=ctx.seed
    )


def _concat_mean(ctx):
    return Pipeline([("scale", StandardScaler()), ("impute", SimpleImputer(strategy="mean"))])


def _cca(ctx):
    widths = sorted((len(idx) for idx in ctx.modalities.values()), reverse=True)
    n = min(64, widths[1] if len(widths) > 1 else widths[0])
    return GeneralizedCCA(ctx.modalities, n_components=n, reg=0.1)


METHODS = [
    Method("calmrl", "calmrl", "CalMRLTransformer with its defaults (linear encoders)", _calmrl(), quick=True),
    Method("calmrl-nocal", "calmrl", "CalMRLTransformer defaults with calibrate=False (observed-only alignment ablation)",
           _calmrl(calibrate=False), quick=True),
    Method("calmrl-mlp", "calmrl", "CalMRLTransformer defaults with encoder='mlp'", _calmrl(encoder="mlp")),
    Method("calmrl-gram", "calmrl", "CalMRLTransformer defaults with alignment='gram' (and its pairwise term)",
           _calmrl(alignment="gram")),
    Method("calmrl-mixture", "calmrl", "CalMRLTransformer defaults with n_components='auto', local_bandwidth=None",
           _calmrl(n_components="auto", local_bandwidth=None)),
    Method("ppca", "calmrl", "MultiViewPPCA with its defaults (the closed-form model alone)", _ppca(), quick=True),
    Method("ppca-plain", "calmrl", "MultiViewPPCA(latent_dim=32, local_bandwidth=None, add_indicator=False): "
           "the closed-form model as it was before the local correction", _ppca(latent_dim=32, local_bandwidth=None,
                                                                                 add_indicator=False)),
    Method("ppca-mixture", "calmrl", "MultiViewPPCA(n_components='auto', local_bandwidth=None)",
           _ppca(n_components="auto", local_bandwidth=None)),
    Method("ppca-mixture-local", "calmrl", "MultiViewPPCA(n_components='auto') with the default local correction "
           "on top of the mixture (issue 18)", _ppca(n_components="auto")),
    Method("mean-pca", "imputer", "standardize, mean imputation, PCA(min(64, d))",
           _imputer_pca(lambda ctx: SimpleImputer(strategy="mean")), quick=True),
    Method("mean-pca32", "imputer", "standardize, mean imputation, PCA(min(32, d)) (issue 26's multi-omics baseline)",
           _imputer_pca(lambda ctx: SimpleImputer(strategy="mean"), 32)),
    Method("knn-pca", "imputer", "standardize, KNNImputer(5), PCA(min(64, d))",
           _imputer_pca(lambda ctx: KNNImputer(n_neighbors=5))),
    Method("knn-pca32", "imputer", "standardize, KNNImputer(5), PCA(min(32, d))",
           _imputer_pca(lambda ctx: KNNImputer(n_neighbors=5), 32)),
    Method("iterative-pca", "imputer",
           "standardize, IterativeImputer(BayesianRidge, 5 rounds, 50 nearest features), PCA(min(64, d))",
           _imputer_pca(_iterative)),
    Method("concat-mean", "imputer", "standardized blocks side by side, mean imputation, no PCA", _concat_mean,
           quick=True),
    Method("mean-indicator", "imputer", "standardized features, mean imputation plus missing-value indicators, no PCA",
           lambda ctx: Pipeline([("scale", StandardScaler()), ("impute", SimpleImputer(add_indicator=True))])),
    Method("knn-concat", "imputer", "standardized features, KNNImputer(5), no PCA",
           lambda ctx: Pipeline([("scale", StandardScaler()), ("impute", KNNImputer(n_neighbors=5))])),
    Method("nan", "raw", "the raw features with their NaNs, for learners that take them (HistGradientBoosting)",
           lambda ctx: FunctionTransformer()),
    Method("cca-mean", "cca", "MAXVAR generalized CCA after mean imputation (ridge 0.1; min(64, second-largest "
           "block width) components, i.e. min(d1, d2) for two modalities)", _cca, quick=True),
    Method("mofa", "mofa", "MOFA+ (mofapy2, 20 factors) + closed-form factor posterior for new rows",
           lambda ctx: MOFATransformer(ctx.modalities, n_factors=20, random_state=ctx.seed), requires="mofapy2"),
]
METHODS_BY_NAME = {m.name: m for m in METHODS}


def available(method):
    """(ok, reason): whether the method can run here."""
    if method.requires:
        try:
            __import__(method.requires)
        except Exception as exc:  # noqa: BLE001
            return False, f"{method.requires} is not importable ({type(exc).__name__}: {exc})"
    return True, ""


def select_methods(names=None, quick=False, log=print):
    """Method objects for the given names (default: all, or the quick list), skipping unavailable ones."""
    if names:
        unknown = [n for n in names if n not in METHODS_BY_NAME]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS_BY_NAME)}")
        chosen = [METHODS_BY_NAME[n] for n in names]
    else:
        chosen = [m for m in METHODS if m.quick] if quick else list(METHODS)
    out = []
    for m in chosen:
        ok, reason = available(m)
        if ok:
            out.append(m)
        else:
            log(f"skipping method {m.name}: {reason}")
    return out


ESTIMATORS = {"calmrl": _calmrl, "ppca": _ppca}


def method_from_text(text):
    """A method named on a command line: a name of :data:`METHODS`, or ``calmrl(...)`` / ``ppca(...)``, one of the
    two estimators with keyword arguments written as Python (:func:`parse_kwargs`), e.g.
    ``ppca(local_bandwidth=None)``; the text is the method's name."""
    kind, _, args = text.partition("(")
    if not args:
        if text not in METHODS_BY_NAME:
            raise ValueError(f"unknown method {text!r}; choose from {list(METHODS_BY_NAME)} or calmrl(...) / ppca(...)")
        return METHODS_BY_NAME[text]
    if kind not in ESTIMATORS or not args.endswith(")"):
        raise ValueError(f"expected calmrl(name=value, ...) or ppca(name=value, ...), got {text!r}")
    return estimator_method(text, kind, parse_kwargs(args[:-1]))


def estimator_method(name, kind, params):
    """The method ``name``: ``CalMRLTransformer`` (``kind='calmrl'``) or ``MultiViewPPCA`` (``'ppca'``) with
    ``params``, seeded by the fold's context."""
    return Method(name, "calmrl", name, ESTIMATORS[kind](**params))


# --------------------------------------------------------------------------- #
# Metrics
# --------------------------------------------------------------------------- #


def retrieval_recall(Q, G, ks=(1, 5)):
    """Recall@k of cross-modal retrieval: row i of ``Q`` should retrieve row i of ``G``.

    Cosine similarity ranking. Ties are broken at random in expectation (a query
    whose true match ties with ``t`` others scores the expected recall), so a
    degenerate representation (e.g. all zeros) scores chance, not 0 or 1.
    """
    Q = np.asarray(Q, dtype=np.float64)
    G = np.asarray(G, dtype=np.float64)
    Qn = Q / np.maximum(np.linalg.norm(Q, axis=1, keepdims=True), 1e-12)
    Gn = G / np.maximum(np.linalg.norm(G, axis=1, keepdims=True), 1e-12)
    S = Qn @ Gn.T
    true = np.diag(S)[:, None]
    greater = (S > true).sum(axis=1)
    ties = (S == true).sum(axis=1) - 1
    return {k: float(np.mean(np.clip((k - greater) / (ties + 1), 0.0, 1.0))) for k in ks}


def symmetric_recall(A, B, ks=(1, 5)):
    """Mean of A->B and B->A recall."""
    ab, ba = retrieval_recall(A, B, ks), retrieval_recall(B, A, ks)
    return {k: 0.5 * (ab[k] + ba[k]) for k in ks}


def _store_recall(res, kind, tag, A, B):
    r = symmetric_recall(A, B)
    res[f"r1_{kind}_{tag}"], res[f"r5_{kind}_{tag}"] = r[1], r[5]


def _cosine_distance(A, B):
    na = np.linalg.norm(A, axis=1)
    nb = np.linalg.norm(B, axis=1)
    cos = np.einsum("ij,ij->i", A, B) / np.maximum(na * nb, 1e-12)
    return 1.0 - cos


def only_block(X, blocks, keep):
    """Copy of X with every block except ``keep`` set to NaN."""
    out = X.copy()
    for name, idx in blocks.items():
        if name != keep:
            out[:, idx] = np.nan
    return out


class Timed(TransformerMixin, BaseEstimator):
    """Pipeline step that times the wrapped representation's fit (not its transform)."""

    def __init__(self, estimator):
        self.estimator = estimator

    def fit(self, X, y=None):
        t = time.perf_counter()
        self.estimator.fit(X, y)
        self.fit_time_ = time.perf_counter() - t
        return self

    def fit_transform(self, X, y=None):
        return self.fit(X, y).estimator.transform(X)

    def transform(self, X):
        return self.estimator.transform(X)


def latent(rep, X):
    """CalMRL latent posterior mean (output='latent', no indicator columns) of a fitted estimator, whatever its output."""
    old = rep.get_params()
    rep.set_params(output="latent", add_indicator=False)
    try:
        return rep.transform(X)
    finally:
        rep.set_params(output=old["output"], add_indicator=old["add_indicator"])


def parse_kwargs(*texts):
    """Keyword arguments written as Python, in one string or several: ``"latent_dim=8, output='latent'"`` or
    ``("latent_dim=8", "output='latent'")`` -> ``{'latent_dim': 8, 'output': 'latent'}``. A value that is not a
    Python literal is kept as its text (``output=latent``, ``device=cuda:0``). The one parser of the scripts'
    ``name=value`` options (``run.py --set``, ``sweep.py --methods 'ppca(...)'``, ``tune.py --config``)."""
    params = {}
    for text in texts:
        source = f"f({text})"
        try:
            call = ast.parse(source, mode="eval").body
        except SyntaxError:
            name, equals, value = text.partition("=")
            if not equals or not name.strip().isidentifier():
                raise ValueError(f"expected name=value, got {text!r}") from None
            params[name.strip()] = _literal_or_text(value)
            continue
        if call.args:
            raise ValueError(f"expected keyword arguments only (name=value, ...), got {text!r}")
        for kw in call.keywords:
            try:
                params[kw.arg] = ast.literal_eval(kw.value)
            except (ValueError, TypeError):
                params[kw.arg] = ast.get_source_segment(source, kw.value)
    return params


def _literal_or_text(value):
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


PROBES = ("linear", "hgb")


def make_probe(kind, seed=0):
    """The downstream learner of a probe (issue 26): ``'linear'``, ``LogisticRegression(max_iter=2000)`` on the
    representation as the README's pipeline ``StandardScaler -> representation -> LogisticRegression`` feeds it (no
    scaling in between); ``'hgb'``, ``HistGradientBoostingClassifier``, which also takes NaN data directly."""
    if kind == "linear":
        return LogisticRegression(max_iter=2000)
    if kind == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(random_state=seed)
    raise ValueError(f"unknown probe {kind!r}; choose from {PROBES}")


def linear_probe(rep):
    """The benchmark's probe (design 6): ``Pipeline([rep, StandardScaler(), LogisticRegression(max_iter=2000)])``,
    the representation wrapped in :class:`Timed` (its fit time: ``named_steps['rep'].fit_time_``)."""
    return Pipeline([("rep", Timed(rep)), ("scale", StandardScaler()), ("clf", make_probe("linear"))])


def user_pipeline(method, ctx):
    """The representation of ``method`` as a user fits it: ``StandardScaler`` first (NaN-aware), then the method."""
    return Pipeline([("scale_in", StandardScaler()), ("rep", method.make(ctx))])


def _impute_features(method, rep, X):
    """Raw-unit X with missing blocks imputed, for methods that impute in feature space; else None."""
    if method.family == "imputer":  # (without the indicator columns of mean-indicator)
        scale = rep.named_steps["scale"]
        return scale.inverse_transform(rep.named_steps["impute"].transform(scale.transform(X))[:, : X.shape[1]])
    if method.family == "mofa":
        return rep.impute(X)
    if method.family == "calmrl":  # the closed-form model of the blocks (the encoders' start for torch encoders)
        return rep.impute(X)
    return None


def evaluate_fold(method, ctx, X, y, observed, names, train, test, *, retrieval, imp_rng, n_classes, eval_scaler):
    """Fit one method on one fold and compute every metric. Returns a dict of metrics."""
    blocks = ctx.modalities
    k = len(names)
    res = {}
    rep = method.make(ctx)
    pipe = linear_probe(rep)
    pipe.fit(X[train], y[train])
    res["fit_s"] = pipe.named_steps["rep"].fit_time_
    Xte = X[test]
    t = time.perf_counter()
    R = rep.transform(Xte)
    res["transform_s"] = time.perf_counter() - t
    Rs = pipe.named_steps["scale"].transform(R)
    pred = pipe.named_steps["clf"].predict(Rs)
    correct = pred == y[test]
    res["acc"] = float(correct.mean())
    n_obs = observed[test].sum(axis=1)
    for j in range(1, k + 1):
        sel = n_obs == j
        res[f"acc_obs{j}"] = float(correct[sel].mean()) if sel.any() else math.nan
        res[f"n_obs{j}"] = int(sel.sum())

    # Clustering of the (probe-scaled) test representation.
    km = KMeans(n_clusters=n_classes, n_init=4, random_state=ctx.seed).fit(Rs)
    res["nmi"] = float(normalized_mutual_info_score(y[test], km.labels_))
    res["ari"] = float(adjusted_rand_score(y[test], km.labels_))

    # Cross-modal retrieval A <-> B per pair, on test rows observing both, each side from one modality alone.
    scaler = pipe.named_steps["scale"]
    for a, b in retrieval:
        tag = pair_name((a, b))
        ia, ib = names.index(a), names.index(b)
        rows = test[observed[test, ia] & observed[test, ib]]
        res[f"n_retrieval_{tag}"] = int(rows.size)
        if rows.size < 2:
            continue
        XA, XB = only_block(X[rows], blocks, a), only_block(X[rows], blocks, b)
        _store_recall(res, "rep", tag, scaler.transform(rep.transform(XA)), scaler.transform(rep.transform(XB)))
        if method.family == "calmrl":
            if getattr(rep, "encoders_", None) is not None:  # each modality's own representation
                _store_recall(res, "emb", tag, rep.impute_representations(XA)[a], rep.impute_representations(XB)[b])
            _store_recall(res, "lat", tag, latent(rep, XA), latent(rep, XB))
        elif method.family == "cca":  # two-view CCA fitted on the training rows that observe both modalities
            co = train[observed[train, ia] & observed[train, ib]]
            cols = list(blocks[a]) + list(blocks[b])
            two = {a: list(range(len(blocks[a]))), b: list(range(len(blocks[a]), len(cols)))}
            cca = GeneralizedCCA(two, n_components=min(64, len(blocks[a]), len(blocks[b])), reg=0.1).fit(X[np.ix_(co, cols)])
            _store_recall(res, "lat", tag, cca.transform(XA[:, cols]), cca.transform(XB[:, cols]))
        elif method.family == "mofa":  # its transform is a shared latent space
            _store_recall(res, "lat", tag, rep.transform(XA), rep.transform(XB))

    # Anchor shift [design 4.5] of the complete test rows with a random proper subset of modalities hidden.
    complete = test[observed[test].all(axis=1)]
    if method.family == "calmrl" and getattr(rep, "encoders_", None) is not None and complete.size and k > 1:
        X_masked = X[complete].copy()
        for r in range(complete.size):
            hidden = imp_rng.choice(k, size=imp_rng.randint(1, k), replace=False)
            for m in hidden:
                X_masked[r, blocks[names[m]]] = np.nan
        shift_obs, shift_cal = anchor_shift(rep, X[complete], X_masked)
        res["anchor_obs"], res["anchor_cal"] = float(np.mean(shift_obs)), float(np.mean(shift_cal))

    # Imputation of held-out observed blocks: test rows with >= 2 modalities lose one of them.
    res["imp_mse"] = res["imp_cos"] = math.nan
    rows = test[n_obs >= 2]
    res["n_imputed"] = int(rows.size)
    if rows.size:
        drop = np.array([imp_rng.choice(np.flatnonzero(observed[r])) for r in rows])
        Xfull = X[rows]
        Xm = Xfull.copy()
        for m, name in enumerate(names):
            Xm[np.ix_(drop == m, blocks[name])] = np.nan
        scaler = eval_scaler  # one fixed yardstick for every method and fold
        Ximp = _impute_features(method, rep, Xm)
        if Ximp is not None:
            S_imp, S_true = scaler.transform(Ximp), scaler.transform(Xfull)
            mse, cosd = np.empty(rows.size), np.empty(rows.size)
            for m, name in enumerate(names):
                sel = drop == m
                if sel.any():
                    d = S_imp[np.ix_(sel, blocks[name])] - S_true[np.ix_(sel, blocks[name])]
                    mse[sel] = np.mean(d**2, axis=1)
                    cosd[sel] = _cosine_distance(S_imp[np.ix_(sel, blocks[name])], S_true[np.ix_(sel, blocks[name])])
            res["imp_mse"] = float(np.mean(mse))
            res["imp_cos"] = float(np.mean(cosd))
    return res


# --------------------------------------------------------------------------- #
# Protocol
# --------------------------------------------------------------------------- #

METRICS = ["acc", "nmi", "ari", "imp_mse", "imp_cos", "anchor_obs", "anchor_cal", "fit_s", "transform_s", "n_imputed"]
RETRIEVAL_KINDS = ("emb", "lat", "rep")  # each modality's representation, the shared latent, the method's output


def retrieval_metrics(pairs):
    """Names of the retrieval columns for these pairs."""
    return [f"r{r}_{kind}_{pair_name(p)}" for p in pairs for kind in RETRIEVAL_KINDS for r in (1, 5)] + [
        f"n_retrieval_{pair_name(p)}" for p in pairs
    ]


def run_benchmark(dataset, *, kind="random", levels=(0.5,), n_seeds=1, n_folds=5, methods=None, calmrl_params=None,
                  retrieval=None, pairs=None, rows="eval", max_rows=None, log=None):
    """Run the protocol on one dataset and missingness kind; return one dict per (method, level, seed, fold).

    Parameters
    ----------
    dataset : str
        A key of :data:`DATASETS`.
    kind : {'random', 'structured'}
        'random': ``levels`` are rates of :func:`ampute_modalities`. 'structured':
        ``levels`` are complete fractions of :func:`ampute_modalities_structured`
        with the dataset's (or the given) ``pairs``.
    methods : list of Method, default all available
    calmrl_params : dict
        Extra parameters for every CalMRL method (each variant's own setting wins).
    retrieval : list of (str, str)
        The modality pairs of the retrieval metric (default: the dataset's).
    rows : {'eval', 'tune'}
        The evaluation rows (what the docs report) or the tuning rows (``benchmarks/tune.py``) of :func:`tuning_split`.
    max_rows : int, default None
        Use a stratified subset of this many rows (smoke tests).
    log : callable, default None
        Progress lines (e.g. ``print`` to stderr).
    """
    log = log or (lambda *a, **k: None)
    spec = DATASETS[dataset]
    X0, y, modalities = load_split(dataset, rows, max_rows)  # never report on the rows the defaults were tuned on
    names = list(modalities)
    retrieval = [tuple(p) for p in (retrieval or spec["retrieval"])]
    pairs = pairs or spec["pairs"]
    methods = methods if methods is not None else select_methods(log=log)
    n_classes = len(np.unique(y))
    # Imputation error is measured in features standardized by the complete data's mean and std (a fixed
    # yardstick, not fitted by any method).
    eval_scaler = StandardScaler().fit(X0)
    rows_out = []
    for seed in range(n_seeds):
        folds = list(StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(X0, y))
        for level in levels:
            if kind == "random":
                X = ampute(X0, modalities, rate=level, seed=seed)
            else:
                X = ampute(X0, modalities, pairs=pairs, complete_fraction=level, seed=seed)
            seen = observed(X, modalities)
            for fold, (train, test) in enumerate(folds):
                for method in methods:
                    ctx = Context(modalities, X.shape[1], len(train), seed, dict(calmrl_params or {}))
                    imp_rng = np.random.RandomState(10007 * seed + 101 * fold + 7)  # same held-out blocks for all
                    row = dict(method=method.name, dataset=dataset, kind=kind,
                               rate=level if kind == "random" else math.nan,
                               complete_fraction=level if kind == "structured" else math.nan,
                               level=level, seed=seed, fold=fold, error="", warnings="")
                    t0 = time.perf_counter()
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        try:
                            row.update(evaluate_fold(method, ctx, X, y, seen, names, train, test,
                                                     retrieval=retrieval, imp_rng=imp_rng, n_classes=n_classes,
                                                     eval_scaler=eval_scaler))
                        except Exception as exc:  # noqa: BLE001 - one failing method must not stop the run
                            row["error"] = f"{type(exc).__name__}: {exc}"
                            log(f"  ERROR {method.name}: {row['error']}\n" + traceback.format_exc(limit=3))
                    msgs = sorted({f"{w.category.__name__}: {str(w.message)[:150]}" for w in caught})
                    row["warnings"] = " | ".join(msgs)
                    for metric in METRICS + retrieval_metrics(retrieval):
                        row.setdefault(metric, math.nan)
                    rows_out.append(row)
                    r1 = " ".join(f"{pair_name(p)}={best_recall(row, p)[0]:.3f}" for p in retrieval)
                    log(f"{dataset} {kind} level={level} seed={seed} fold={fold} {method.name:<20} "
                        f"acc={row['acc']:.3f} R@1 {r1} fit={row['fit_s']:.1f}s ({time.perf_counter() - t0:.1f}s total)")
    return rows_out


def best_recall(row, pair, r=1):
    """(value, kind): the best Recall@r of a result row over the retrieval kinds it has for ``pair``."""
    vals = [(row.get(f"r{r}_{kind}_{pair_name(pair)}", math.nan), kind) for kind in RETRIEVAL_KINDS]
    vals = [v for v in vals if v[0] == v[0]]
    return max(vals) if vals else (math.nan, "")


# --------------------------------------------------------------------------- #
# Readers and writers of results
# --------------------------------------------------------------------------- #


def write_csv(rows, path, formatted=True):
    """One CSV line per result (a dict), the columns in the order they first appear. ``formatted``: floats with 6
    significant digits and NaN as an empty cell (``run.py``, ``calibration_study.py``); else every value as Python
    prints it (``sweep.py``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = []
    for row in rows:
        for key in row:
            if key not in keys:
                keys.append(key)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: fmt_csv(row.get(k, "")) if formatted else row.get(k, "") for k in keys})


def fmt_csv(v):
    """A CSV cell: floats with 6 significant digits, NaN empty."""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def read_records(paths):
    """The results of CSV files (``.csv`` or ``.csv.gz``), merged: one dict of strings per line."""
    records = []
    for path in paths:
        with (gzip.open(path, "rt", newline="") if str(path).endswith(".gz") else open(path, newline="")) as fh:
            records += list(csv.DictReader(fh))
    return records


def read_run(results, dataset, kind, tag):
    """The results of one ``run.py`` table, ``<results>/<dataset>_<kind>_<tag>.csv`` (or ``.csv.gz``) as a pandas
    DataFrame, or None when there is none."""
    import pandas as pd

    for suffix in (".csv", ".csv.gz"):
        path = Path(results) / f"{dataset}_{kind}_{tag}{suffix}"
        if path.exists():
            return pd.read_csv(path)
    return None


# --------------------------------------------------------------------------- #
# Tables
# --------------------------------------------------------------------------- #


def _values(rows, method, level, metric):
    return np.array([r[metric] for r in rows if r["method"] == method and r["level"] == level
                     and isinstance(r.get(metric), (int, float))], dtype=float)


def _mean_std(vals, digits=3):
    vals = vals[~np.isnan(vals)]
    if vals.size == 0:
        return "-"
    if vals.size == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{vals.mean():.{digits}f} ± {vals.std():.{digits}f}"


def _mean(vals, fmt="{:.3f}"):
    vals = vals[~np.isnan(vals)]
    return fmt.format(vals.mean()) if vals.size else "-"


def _level_label(kind, level):
    return f"rate {level:g}" if kind == "random" else f"complete {level:g}"


def _bold_best(cells, scores):
    """Bold the cell(s) with the highest score in a column."""
    finite = [s for s in scores if s == s]
    if not finite:
        return cells
    best = max(finite)
    return [f"**{c}**" if s == s and abs(s - best) < 1e-12 else c for c, s in zip(cells, scores)]


def markdown_table(header, body):
    """A Markdown table of a header and rows of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def markdown_tables(rows, *, dataset, kind, levels, detail_level=None, names=None, retrieval=None, preamble=""):
    """The Markdown report of one (dataset, kind): accuracy by level, Recall@1 of every retrieval pair by level,
    all metrics at ``detail_level``, accuracy by number of observed modalities at ``detail_level``."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    levels = list(levels)
    if detail_level is None:
        detail_level = 0.5 if 0.5 in levels else levels[len(levels) // 2]
    names = names or []
    retrieval = [tuple(p) for p in (retrieval or [])]
    k = len(names)
    n_runs = len({(r["seed"], r["fold"]) for r in rows})
    out = [f"## {dataset}, {kind} missingness", ""]
    if preamble:
        out += [preamble, ""]

    # 1. Accuracy by level.
    out += [f"### Linear-probe accuracy (mean ± std over {n_runs} seed×fold runs)", ""]
    cols = []
    for level in levels:
        vals = [_values(rows, m, level, "acc") for m in methods]
        scores = [np.nanmean(v) if np.isfinite(v).any() else math.nan for v in vals]
        cols.append(_bold_best([_mean_std(v) for v in vals], scores))
    body = [[m] + [c[i] for c in cols] for i, m in enumerate(methods)]
    out += [markdown_table(["method"] + [_level_label(kind, lv) for lv in levels], body), ""]

    # 2. Recall@1 of every pair by level, each kind a method has (emb: each modality's own representation,
    # lat: the shared latent, rep: the method's output).
    for pair in retrieval:
        tag = pair_name(pair)
        out += [f"### Cross-modal Recall@1 {pair[0]} ↔ {pair[1]} (mean ± std; emb / lat / rep)", ""]
        cols = []
        for level in levels:
            cells, scores = [], []
            for m in methods:
                parts, best = [], math.nan
                for kind_r in RETRIEVAL_KINDS:
                    v = _values(rows, m, level, f"r1_{kind_r}_{tag}")
                    v = v[~np.isnan(v)]
                    if v.size:
                        parts.append(f"{kind_r} {_mean_std(v)}")
                        best = v.mean() if best != best else max(best, v.mean())
                cells.append(" · ".join(parts) or "-")
                scores.append(best)
            cols.append(_bold_best(cells, scores))
        body = [[m] + [c[i] for c in cols] for i, m in enumerate(methods)]
        out += [markdown_table(["method"] + [_level_label(kind, lv) for lv in levels], body), ""]

    # 3. Every other metric at the detail level.
    out += [f"### All metrics at {_level_label(kind, detail_level)} (means over runs)", ""]
    spec = [("acc", "acc", "{:.3f}"), ("NMI", "nmi", "{:.3f}"), ("ARI", "ari", "{:.3f}"),
            ("imp MSE", "imp_mse", "{:.3f}"), ("imp cos", "imp_cos", "{:.3f}"),
            ("anchor shift obs", "anchor_obs", "{:.3f}"), ("anchor shift cal", "anchor_cal", "{:.3f}"),
            ("fit s", "fit_s", "{:.2f}"), ("transform s", "transform_s", "{:.3f}")]
    body = [[m] + [_mean(_values(rows, m, detail_level, key), fmt) for _, key, fmt in spec] for m in methods]
    out += [markdown_table(["method"] + [h for h, _, _ in spec], body), ""]
    if any(r["level"] == detail_level for r in rows):
        counts = ", ".join(f"{pair_name(p)} ~{_mean(_values(rows, methods[0], detail_level, 'n_retrieval_' + pair_name(p)), '{:.0f}')}"
                           for p in retrieval)
        n_imp = _mean(_values(rows, methods[0], detail_level, "n_imputed"), "{:.0f}")
        out += [f"Retrieval test rows per fold observing both modalities: {counts} (chance R@1 ≈ 1/rows); "
                f"imputation error on ~{n_imp} test rows per fold with one observed block held out; anchor shift "
                "[design 4.5] on the complete test rows with a random proper subset of modalities hidden "
                "(observed columns only vs observed + imputed).", ""]

    # 4. Accuracy by number of observed modalities at the detail level.
    if k:
        out += [f"### Accuracy by number of observed modalities of the test sample, {_level_label(kind, detail_level)}",
                ""]
        body = [[m] + [_mean(_values(rows, m, detail_level, f"acc_obs{j}")) for j in range(1, k + 1)]
                for m in methods]
        body.append(["(test rows per fold)"] + [_mean(_values(rows, methods[0], detail_level, f"n_obs{j}"), "{:.0f}")
                                                for j in range(1, k + 1)])
        out += [markdown_table(["method"] + [f"{j} obs" for j in range(1, k + 1)], body), ""]

    errors = sorted({(r["method"], r["error"]) for r in rows if r.get("error")})
    if errors:
        out += ["Errors (runs recorded as NaN):", ""] + [f"- {m}: {e}" for m, e in errors] + [""]
    return "\n".join(out)


def environment_summary():
    """One paragraph: machine, versions, git commit, CalMRL defaults."""
    import sklearn
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "sklearn_calmrl"], cwd=REPO, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        commit += " (sklearn_calmrl/ has uncommitted changes)" if dirty else ""
    except Exception:  # noqa: BLE001
        commit = "unknown"
    cpu = platform.processor() or platform.machine()
    try:
        n_cpu = len(os.sched_getaffinity(0))
    except Exception:  # noqa: BLE001
        n_cpu = "?"
    defaults = CalMRLTransformer().get_params()
    keep = ["latent_dim", "embed_dim", "n_components", "local_bandwidth", "add_indicator", "output", "alignment",
            "max_epochs", "batch_size", "learning_rate", "noise"]
    dflt = ", ".join(f"{k}={defaults[k]!r}" for k in keep if k in defaults)
    return (f"Machine: {platform.system()} {cpu}, {n_cpu} CPUs; Python {platform.python_version()}, "
            f"scikit-learn {sklearn.__version__}, torch {torch.__version__}, numpy {np.__version__}; "
            f"git {commit}. CalMRL defaults: {dflt}.")


def method_legend(methods):
    return "\n".join(f"- `{m.name}`: {m.description}" for m in methods)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("a module of the benchmark scripts: see benchmarks/README.md")

