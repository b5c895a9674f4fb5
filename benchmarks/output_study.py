"""Which output on wide blocks (issue 26, design 5.1): candidate outputs of one fitted ``MultiViewPPCA`` on the tuning rows.

    python benchmarks/output_study.py --dataset all --n-train 150 all --settings 0.5 structured --seeds 3
    python benchmarks/output_study.py --dataset multiple_features image_segmentation digits_halves breast_cancer_views --widen 1 4 --seeds 2

Per cell and fold (the protocol of ``sweep.py``: tuning rows, amputation, stratified folds, training rows cut to
``n``) the default ``MultiViewPPCA`` is fitted once inside the user's pipeline (``StandardScaler`` first) and every
candidate below is read by the linear probe (``LogisticRegression(max_iter=2000)`` on the candidate), beside the
simple baselines of ``sweep.py``:

- ``every-column``: every calibrated standardized column (the output before issue 26, ``max_block_width=None``);
- ``block-<r>``: a block wider than ``r`` as its scores on its ``r`` leading principal axes (``max_block_width=r``);
- ``joint-<r>``: all calibrated columns projected on their ``r`` leading principal axes together;
- ``joint-cv``: as many joint axes as the rank with the best held-out log-likelihood of a probabilistic PCA of the
  completed training rows (2 folds; candidates 1 to 256); ``joint-gd``: as many as the Gavish-Donoho threshold keeps;
- ``latent``: the latent posterior mean; ``latent+block-96``: the latent beside the default output.

Every candidate ends with the observed-modality indicators. Prints (and writes to ``--out``) the per-cell table and the
worst and mean margin of every candidate over the best simple baseline (``sweep.summarize``).
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import _checkout  # noqa: F401 - this checkout's benchmarks and sklearn_calmrl first (benchmarks/_checkout.py)
import numpy as np

from benchmarks import harness, sweep

HERE = Path(__file__).resolve().parent
WIDTHS = (16, 32, 64, 96, 128, 192, 256)


def _gd_rank(S):
    """Gavish & Donoho's optimal hard threshold for an unknown noise level (IEEE T-IT 2014, eq. 5): axes kept."""
    s = np.linalg.svd(S - S.mean(axis=0), compute_uv=False)
    beta = min(S.shape) / max(S.shape)
    omega = 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43
    return max(1, int((s > omega * np.median(s)).sum()))


def _cv_rank(S, seed=0):
    """The rank (of 1, 2, 4, ... 256) with the best 2-fold held-out log-likelihood of a probabilistic PCA of ``S``."""
    rng = np.random.RandomState(seed)
    perm = rng.permutation(S.shape[0])
    halves = S[perm[: S.shape[0] // 2]], S[perm[S.shape[0] // 2 :]]

    def loglik(train, test, r):  # Tipping & Bishop's closed form, up to a constant
        mu = train.mean(axis=0)
        _, s, Vt = np.linalg.svd(train - mu, full_matrices=False)
        lam = s**2 / train.shape[0]
        sigma2 = max(lam[r:].sum() / (S.shape[1] - r), 1e-8)
        B = test - mu
        P = B @ Vt[:r].T
        quad = (P**2 / lam[:r]).sum(axis=1) + ((B**2).sum(axis=1) - (P**2).sum(axis=1)) / sigma2
        return float(np.mean(-0.5 * (quad + np.log(lam[:r]).sum() + (S.shape[1] - r) * np.log(sigma2))))

    ranks = [r for r in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256) if r < min(min(len(h) for h in halves) - 1, S.shape[1])]
    scores = {r: loglik(halves[0], halves[1], r) + loglik(halves[1], halves[0], r) for r in ranks}
    return max(scores, key=scores.get)


def candidates(pipe, Xtr, Xte):
    """``{name: (train features, test features)}`` of every candidate output of a fitted user pipeline."""
    from sklearn.decomposition import PCA

    scale_in, est = pipe.named_steps["scale_in"], pipe.named_steps["rep"]
    A, B = scale_in.transform(Xtr), scale_in.transform(Xte)
    indicator = [np.stack([~np.isnan(Z[:, idx]).all(axis=1) for idx in est.modalities_.values()], axis=1).astype(float) for Z in (A, B)]
    completed = [(est.impute(Z) - est.feature_mean_) / est.feature_scale_ for Z in (A, B)]
    out = {}

    def add(name, parts):
        out[name] = tuple(np.hstack(p + [i]) for p, i in zip(parts, indicator))

    old = est.get_params()
    est.set_params(output="latent", add_indicator=False)
    latent = [est.transform(Z) for Z in (A, B)]
    est.set_params(output=old["output"], add_indicator=old["add_indicator"])
    add("every-column", [[c] for c in completed])
    add("latent", [[z] for z in latent])
    S = completed[0]
    axes = {}  # per block wider than the smallest width, its leading right singular vectors from the rows that observe it
    for m, idx in enumerate(est.modalities_.values()):
        if len(idx) > min(WIDTHS):
            seen = ~np.isnan(A[:, idx]).all(axis=1)
            axes[m] = np.linalg.svd(S[seen][:, idx] - S[seen][:, idx].mean(axis=0), full_matrices=False)[2][: max(WIDTHS)]
    for r in WIDTHS:
        parts = [[], []]
        for m, idx in enumerate(est.modalities_.values()):
            for t in range(2):
                parts[t].append(completed[t][:, idx] if len(idx) <= r else completed[t][:, idx] @ axes[m][:r].T)
        add(f"block-{r}", parts)
        if r == 96:
            add("latent+block-96", [[latent[t]] + parts[t] for t in range(2)])
    for name, r in (("joint-32", 32), ("joint-64", 64), ("joint-128", 128), ("joint-cv", _cv_rank(S)), ("joint-gd", _gd_rank(S))):
        pca = PCA(int(min(r, S.shape[1], S.shape[0] - 1))).fit(S)
        add(name, [[pca.transform(c)] for c in completed])
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", nargs="+", default=["all"])
    p.add_argument("--n-train", nargs="+", default=["150", "all"])
    p.add_argument("--settings", nargs="+", default=["0.5", "structured"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--widen", type=float, nargs="+", default=[0], help="noise columns per block, in multiples of its width (harness.widen)")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)
    log = harness.use_threads(1)
    records, t0 = [], time.perf_counter()
    for ds in sweep.DATASETS if "all" in args.dataset else args.dataset:
        try:
            X0, y, mods0 = harness.load_split(ds, "tune")
        except harness.DatasetUnavailable as exc:
            log(f"skipping {ds}: {exc}")
            continue
        for w, seed, setting in [(w, seed, setting) for w in args.widen for seed in range(args.seeds) for setting in args.settings]:
            Xw, mods = harness.widen(X0, mods0, w, seed)
            X = sweep.amputed(Xw, mods, setting, seed)
            for n in args.n_train:
                for fold, train, test, subsampled in sweep.training_folds(y, 3, seed, n):
                    reps = {}
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        for name in sweep.BASELINES + ["ppca"]:
                            pipe = harness.user_pipeline(sweep._method(name), harness.Context(mods, X.shape[1], len(train), seed))
                            reps[name] = (pipe.fit_transform(X[train]), pipe.transform(X[test]))
                        reps.update({f"ppca:{k}": v for k, v in candidates(pipe, X[train], X[test]).items()})
                    for name, (A, B) in reps.items():
                        clf = harness.make_probe("linear", seed).fit(A, y[train])
                        records.append(dict(dataset=ds, n_train=n, n_used=len(train), subsampled=subsampled, widen=w, setting=setting, seed=seed,
                                            method=name, probe="linear", fold=fold, acc=float((clf.predict(B) == y[test]).mean()), width=A.shape[1]))
                    log(f"{ds} n={n} w={w:g} {setting} seed {seed} fold {fold}: {len(reps)} representations")
    sweep.write_report(records, Path(args.out) / ("output_study_tune" + (f"_{args.tag}" if args.tag else "")), "output_study.py", argv, sweep.summarize(records), t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
