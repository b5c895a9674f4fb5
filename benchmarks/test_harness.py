"""The benchmark harness (benchmarks/harness.py): methods, metrics, protocol, parsers, readers and writers; tiny
settings, the full benchmark is not a test."""

import math

import numpy as np
import pytest

from benchmarks import harness


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


def test_parse_kwargs_is_the_one_parser_of_name_value_options():
    assert harness.parse_kwargs("latent_dim=8, output='latent'") == {"latent_dim": 8, "output": "latent"}
    assert harness.parse_kwargs("") == {} and harness.parse_kwargs() == {}
    # run.py --set items: one per argument, a value that is not Python kept as its text
    assert harness.parse_kwargs("latent_dim=16", "output=latent", "device=cuda:0", "noise=None", "sizes=1,2") == {
        "latent_dim": 16, "output": "latent", "device": "cuda:0", "noise": None, "sizes": (1, 2)}
    assert harness.parse_kwargs("alignment=('pmrl', {'matching_weight': 0.1})") == {
        "alignment": ("pmrl", {"matching_weight": 0.1})}
    for bad in ("latent_dim", "8", "1=2", "=2"):
        with pytest.raises(ValueError):
            harness.parse_kwargs(bad)


def test_methods_named_on_a_command_line():
    assert harness.method_from_text("knn-concat") is harness.METHODS_BY_NAME["knn-concat"]
    ctx = harness.Context({"a": [0, 1], "b": [2]}, 3, 50, seed=4)
    ppca = harness.method_from_text("ppca(local_bandwidth=None, latent_dim=2)")
    est = ppca.make(ctx)
    assert ppca.name == "ppca(local_bandwidth=None, latent_dim=2)" and ppca.family == "calmrl"
    assert type(est).__name__ == "MultiViewPPCA" and est.local_bandwidth is None and est.random_state == 4
    assert harness.method_from_text("calmrl(encoder='mlp')").make(ctx).encoder == "mlp"
    for bad in ("nope", "pca(n=2)", "ppca(latent_dim=2"):
        with pytest.raises(ValueError):
            harness.method_from_text(bad)


def test_results_written_and_read_back(tmp_path):
    import gzip
    import shutil

    rows = [dict(method="a", acc=0.123456789, imp_mse=math.nan, fold=0), dict(method="b", acc=1.0, fold=1, extra="x")]
    harness.write_csv(rows, tmp_path / "formatted.csv")
    harness.write_csv(rows, tmp_path / "raw.csv", formatted=False)
    with open(tmp_path / "raw.csv", "rb") as src, gzip.open(tmp_path / "raw.csv.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    formatted = harness.read_records([tmp_path / "formatted.csv"])
    assert list(formatted[0]) == ["method", "acc", "imp_mse", "fold", "extra"]
    assert formatted[0]["acc"] == "0.123457" and formatted[0]["imp_mse"] == "" and formatted[1]["extra"] == "x"
    raw = harness.read_records([tmp_path / "raw.csv", tmp_path / "raw.csv.gz"])
    assert len(raw) == 4 and raw[0]["acc"] == "0.123456789" and raw[0]["imp_mse"] == "nan" and raw[2] == raw[0]
    (tmp_path / "raw.csv.gz").rename(tmp_path / "d_random_t.csv.gz")
    frame = harness.read_run(tmp_path, "d", "random", "t")
    assert list(frame["method"]) == ["a", "b"] and harness.read_run(tmp_path, "d", "structured", "t") is None
    assert harness.markdown_table(["x", "y"], [["1", "2"]]) == "| x | y |\n|---|---|\n| 1 | 2 |"
