"""Smoke tests of the benchmark harness (benchmarks/): fast, tiny settings; the full benchmark is not a test."""

import math

import numpy as np
import pytest

from benchmarks import harness
from benchmarks.baselines import GeneralizedCCA


def test_retrieval_recall_identity_and_chance():
    rng = np.random.RandomState(0)
    Q = rng.randn(50, 8)
    r = harness.retrieval_recall(Q, Q.copy(), ks=(1, 5))
    assert r[1] == 1.0 and r[5] == 1.0
    # A degenerate representation scores chance (ties broken at random in expectation), not 0 or 1.
    r = harness.retrieval_recall(np.zeros((50, 8)), np.zeros((50, 8)), ks=(1, 5))
    assert r[1] == pytest.approx(1 / 50) and r[5] == pytest.approx(5 / 50)
    # Shuffled gallery: near chance.
    r = harness.retrieval_recall(Q, Q[rng.permutation(50)], ks=(1,))
    assert r[1] < 0.2


def test_generalized_cca_recovers_shared_signal():
    rng = np.random.RandomState(0)
    n = 400
    z = rng.randn(n, 2)
    X1 = z @ rng.randn(2, 5) + 0.1 * rng.randn(n, 5)
    X2 = z @ rng.randn(2, 6) + 0.1 * rng.randn(n, 6)
    X = np.hstack([X1, X2])
    cca = GeneralizedCCA([5, 6], n_components=2, reg=1e-3).fit(X)
    assert cca.singular_values_[0] > 1.35  # sqrt(2) when the two views agree perfectly
    only1, only2 = X.copy(), X.copy()
    only1[:, 5:] = np.nan
    only2[:, :5] = np.nan
    G1, G2 = cca.transform(only1), cca.transform(only2)
    for c in range(2):
        assert abs(np.corrcoef(G1[:, c], G2[:, c])[0, 1]) > 0.95
    # On the training rows the projection reproduces the left singular vectors (orthonormal columns).
    G = cca.transform(X)
    np.testing.assert_allclose(G.T @ G, np.eye(2), atol=1e-8)


def test_harness_smoke(tmp_path, one_thread):
    methods = [harness.METHODS_BY_NAME[name] for name in ("ppca", "calmrl", "mean-pca", "mean-indicator", "cca-mean")]
    rows = harness.run_benchmark(
        "image_segmentation", kind="random", levels=[0.5], n_seeds=1, n_folds=2, methods=methods,
        calmrl_params={"max_epochs": 2, "device": "cpu"}, max_rows=300,
    )
    assert len(rows) == len(methods) * 2
    pair = ("shape", "color")
    for row in rows:
        assert row["error"] == "", row["error"]
        assert 0.3 < row["acc"] <= 1.0
        assert 0.0 <= row["r1_rep_shape-color"] <= row["r5_rep_shape-color"] <= 1.0 and 0.0 <= row["nmi"] <= 1.0
        assert -1.0 <= row["ari"] <= 1.0
        assert row["fit_s"] >= 0 and row["transform_s"] >= 0
        assert row["n_obs1"] + row["n_obs2"] == 150
        assert 0.0 <= row["imp_cos"] <= 2.0 or (row["method"] == "cca-mean" and math.isnan(row["imp_cos"]))
    by = {r["method"]: r for r in rows if r["fold"] == 0}
    assert 0.0 <= by["calmrl"]["r1_emb_shape-color"] <= 1.0 and 0.0 <= by["calmrl"]["r1_lat_shape-color"] <= 1.0
    assert math.isnan(by["ppca"]["r1_emb_shape-color"])  # raw blocks of other widths: no embedding recall
    assert 0.0 <= by["cca-mean"]["r1_lat_shape-color"] <= 1.0  # two-view CCA on the co-observed training rows
    assert harness.best_recall(by["calmrl"], pair)[1] in harness.RETRIEVAL_KINDS
    assert 0.0 <= by["calmrl"]["anchor_cal"] and 0.0 <= by["calmrl"]["anchor_obs"]
    assert math.isnan(by["mean-pca"]["anchor_cal"])
    assert all(by[m]["imp_mse"] >= 0 for m in ("ppca", "mean-pca", "mean-indicator"))
    assert by["calmrl"]["imp_mse"] >= 0  # torch encoders impute features with their closed-form start

    md = harness.markdown_tables(rows, dataset="image_segmentation", kind="random", levels=[0.5],
                                 names=["shape", "color"], retrieval=[pair])
    for method in ("ppca", "calmrl", "mean-pca"):
        assert f"| {method} |" in md
    assert "rate 0.5" in md and "Recall@1 shape ↔ color" in md and "emb " in md and "2 obs" in md
    harness.write_csv(rows, tmp_path / "out.csv")
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert len(lines) == 1 + len(rows) and "acc_obs1" in lines[0]


@pytest.mark.parametrize("dataset", ["digits_halves", "breast_cancer_views"])
def test_structured_kind_runs(one_thread, dataset):
    rows = harness.run_benchmark(
        dataset, kind="structured", levels=[0.2], n_seeds=1, n_folds=2,
        methods=[harness.METHODS_BY_NAME["knn-concat"], harness.METHODS_BY_NAME["cca-mean"]], max_rows=200,
    )
    assert all(r["error"] == "" for r in rows)
    # The pair that co-occurs only in the complete rows: about 20% of the 100 test rows per fold.
    tag = harness.pair_name(harness.DATASETS[dataset]["retrieval"][-1])
    assert all(10 <= r[f"n_retrieval_{tag}"] <= 30 for r in rows)
    assert all(r["complete_fraction"] == 0.2 for r in rows)


def test_method_selection():
    quick = harness.select_methods(quick=True, log=lambda *a: None)
    assert {"ppca", "calmrl", "mean-pca"} <= {m.name for m in quick}
    with pytest.raises(ValueError, match="unknown method"):
        harness.select_methods(["nope"])


def test_sweep_widening_stays_inside_blocks_and_cells_merge():
    from benchmarks import sweep

    X = np.arange(12.0).reshape(3, 4)
    mods = {"a": [0, 1], "b": [2, 3]}
    Xw, wide = harness.widen(X, mods, 1, seed=0)
    assert Xw.shape == (3, 8) and wide == {"a": [0, 1, 2, 3], "b": [4, 5, 6, 7]}
    np.testing.assert_array_equal(Xw[:, [0, 1, 4, 5]], X)  # the original columns lead their block
    assert harness.widen(X, mods, 0, seed=0)[0] is X
    A, y, pair = harness.digits_pair()
    assert A.shape == (1797, 1568) and list(pair) == ["a", "b"] and len(pair["b"]) == 784
    rec = dict(dataset="d", widen="0", setting="0.5", seed=0)
    records = [dict(rec, n_train="600", n_used=265, method=m, fold=0, acc=a) for m, a in (("mean", 0.8), ("ppca", 0.85))]
    records += [dict(rec, n_train="all", n_used=265, method=m, fold=0, acc=a) for m, a in (("mean", 0.8), ("ppca", 0.85))]
    text = sweep.summarize(records)
    assert text.count("| d n=all w=0 0.5 |") == 1 and "| ppca | +5.0 | +5.00 | 0 | 1 |" in text
