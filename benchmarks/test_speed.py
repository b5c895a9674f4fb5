"""The timing script (benchmarks/speed.py): its modes run and print their tables; the modes that start processes
or a cluster are slow tests."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import speed
from sklearn_calmrl._latent import posterior


def test_modes_and_their_defaults():
    assert speed.parse_args([]).mode == "transform" and speed.parse_args([]).n == [1_000, 10_000, 100_000]
    assert speed.parse_args(["--large"]).n == [1_000, 10_000, 100_000, 1_000_000]
    quick = speed.parse_args(["--quick"])
    assert (quick.n, quick.epochs, quick.repeats) == ([1_000, 10_000], 2, 3)
    estep = speed.parse_args(["--estep", "--quick"])
    assert (estep.mode, estep.n, estep.repeats) == ("estep", [1_000, 10_000], 1)
    assert speed.parse_args(["--fit-time", "--repo", "a=.", "--repeat", "2"]).repeats == 2
    assert speed.parse_args(["--scaling"]).n is None  # the mode's own default, 1e4 1e5 1e6
    with pytest.raises(SystemExit):
        speed.parse_args(["--busy", "--grid"])
    with pytest.raises(SystemExit, match="--repo"):
        speed.main(["--fit-time"])


def test_per_pattern_estep_matches_per_row():
    Z, observed, params = speed.make_problem(300, k=4, q=5, d=7, seed=1)
    post = posterior(Z, observed, params)
    mean, cov = speed.naive_posterior(Z, observed, params, chunk_size=128, return_cov=True)
    np.testing.assert_allclose(post.mean.numpy(), mean.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(post.cov[post.pattern_index].numpy(), cov.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(speed.naive_posterior_loop(Z, observed, params).numpy(), mean.numpy(), rtol=1e-10, atol=1e-12)
    assert post.cov.shape[0] == torch.unique(observed, dim=0).shape[0] < observed.shape[0]


def _rows(out, first):
    return [line.split(" | ") for line in out.splitlines() if line.startswith(f"| {first}")]


def test_estep_and_transform_tables(one_thread, capsys):
    speed.main(["--estep", "--n", "200", "--k", "3", "--q", "4", "--d", "5", "--repeats", "1", "--loop-max", "100"])
    (row,) = _rows(capsys.readouterr().out, "200 ")
    assert row[1] == "7" and row[4] == "skipped" and float(row[-1].strip(" |")) < 1e-12
    speed.main(["--n", "300", "--epochs", "1", "--baseline-max", "0"])
    out = capsys.readouterr().out
    assert "time ratio, default / no correction" in out and len(_rows(out, "300 ")) == 2
    assert "| IterativeImputer+PCA fit | - | - |" in out


@pytest.mark.slow
def test_modes_in_fresh_processes(one_thread, capsys):
    speed.main(["--scaling", "--n", "500", "--methods", "SimpleImputer+PCA", "--timeout", "120"])
    (row,) = _rows(capsys.readouterr().out, "SimpleImputer+PCA")
    assert row[-1].strip(" |") == "" and float(row[1]) > 0
    speed.main(["--memory", "--memory-rows", "3000", "--memory-outputs", "latent"])
    assert len(_rows(capsys.readouterr().out, "MultiViewPPCA | latent")) == 2
    here = Path(speed.__file__).resolve().parents[1]
    speed.main(["--fit-time", "--repo", f"now={here}", "--repo", f"again={here}", "--repeats", "1",
                "--fit-estimators", "MultiViewPPCA", "--fit-datasets", "image_segmentation"])
    out = capsys.readouterr().out
    first = json.loads(out.splitlines()[0])
    assert first["label"] == "now" and first["estimator"] == "MultiViewPPCA" and first["total"] > 0
    (row,) = _rows(out, "MultiViewPPCA | image_segmentation | again")
    assert row[-2].strip(" |").endswith("x")  # the ratio against the first checkout


@pytest.mark.slow
def test_dask_cluster_against_in_memory(one_thread, capsys):
    pytest.importorskip("distributed")
    speed.main(["--dask", "--dask-rows", "4000", "--chunk", "2000"])
    out = capsys.readouterr().out
    (loglik,) = _rows(out, "final mean log-likelihood")
    assert loglik[1] == loglik[2].strip(" |")
