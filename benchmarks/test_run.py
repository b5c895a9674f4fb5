"""The benchmark's entry point (benchmarks/run.py): its tables, CSV columns and options."""

import csv

import pytest

from benchmarks import run


def test_a_tiny_run_writes_its_tables(tmp_path, script_threads, capsys):
    assert run.main(["--dataset", "breast_cancer_views", "--rates", "0.5", "--seeds", "1", "--folds", "2",
                     "--max-rows", "120", "--methods", "mean-pca", "ppca", "--set", "latent_dim=4",
                     "--out", str(tmp_path), "--tag", "t"]) == 0
    with open(tmp_path / "breast_cancer_views_random_t.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["method"], r["fold"]) for r in rows] == [("mean-pca", "0"), ("ppca", "0"), ("mean-pca", "1"), ("ppca", "1")]
    assert {"acc", "r1_lat_mean-worst", "imp_mse", "fit_s", "acc_obs3"} <= set(rows[0])
    md = (tmp_path / "breast_cancer_views_random_t.md").read_text()
    assert "CalMRL overrides: {'latent_dim': 4}" in md and "| ppca |" in md and md in capsys.readouterr().out


def test_options(script_threads, capsys):
    assert run.main(["--list-methods"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names[:2] == ["calmrl", "calmrl-nocal"] and "imml" not in names
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        run.main(["--set", "latent_dim", "--dataset", "breast_cancer_views"])
    with pytest.raises(SystemExit, match="single --dataset"):
        run.main(["--dataset", "all", "--pairs", "a,b"])
