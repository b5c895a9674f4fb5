"""Settings compared on the tuning rows (benchmarks/tune.py)."""

from benchmarks import tune


def test_configs_on_the_tuning_rows(script_threads, capsys):
    tune.main(["--dataset", "breast_cancer_views", "--config", "estimator='MultiViewPPCA', latent_dim=2"])
    out = capsys.readouterr().out
    assert "breast_cancer_views, setting 0.5, 170 tuning rows, 1 seed(s) x 3 folds" in out
    row = next(line for line in out.splitlines() if line.startswith("| estimator="))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert 0.8 < float(cells[1]) <= 1 and cells[2].startswith("lat ") and "emb" not in cells[2]
