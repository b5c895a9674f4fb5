"""The regime sweep (benchmarks/sweep.py): a cell end to end, the margins and the summary of earlier runs."""

import math

import numpy as np

from benchmarks import harness, sweep


def test_a_cell_with_both_probes_and_the_imputation_error(one_thread):
    X, y, mods = harness.load_split("breast_cancer_views", "tune")
    X, mods = harness.widen(X, mods, 1, seed=0)
    rows = sweep.run_cell(X, y, mods, setting="structured", n_train="60", seed=0, folds=2,
                          methods=["mean", "ppca(local_bandwidth=None)", "nan"], probes=["linear", "hgb"],
                          log=lambda *a: None, imputation=True)
    assert [(r["method"], r["probe"]) for r in rows[:5]] == [("mean", "linear"), ("mean", "hgb"),
                                                             ("ppca(local_bandwidth=None)", "linear"),
                                                             ("ppca(local_bandwidth=None)", "hgb"), ("nan", "hgb")]
    assert all(0.5 < r["acc"] <= 1 and r["n_used"] == 60 and r["subsampled"] for r in rows)
    assert all(math.isnan(r["imp_mse"]) == (r["method"] != "ppca(local_bandwidth=None)") for r in rows)
    assert {r["width"] for r in rows if r["method"] == "nan"} == {60}


def test_cells_merge_and_margins(tmp_path, capsys):
    rec = dict(dataset="d", widen="0", setting="0.5", seed=0)
    records = [dict(rec, n_train="600", n_used=265, method=m, fold=0, acc=a) for m, a in (("mean", 0.8), ("ppca", 0.85))]
    records += [dict(rec, n_train="all", n_used=265, method=m, fold=0, acc=a) for m, a in (("mean", 0.8), ("ppca", 0.85))]
    text = sweep.summarize(records)
    assert text.count("| d n=all w=0 0.5 |") == 1 and "| ppca | +5.0 | +5.00 | 0 | 1 |" in text
    records += [dict(rec, dataset="e", n_train="150", n_used=150, setting="structured", method=m, fold=0, acc=a)
                for m, a in (("knn", 0.9), ("ppca", 0.88))]
    text = sweep.summarize(records)
    assert "| ppca | -2.0 | +1.50 | 1 | 2 |" in text  # worst, mean over both cells
    assert "| d (1) | +5.0 / +5.00 |" in text and "| structured (1) | -2.0 / -2.00 |" in text and "| 150 training rows (1) |" in text
    harness.write_csv(records, tmp_path / "sweep_eval.csv", formatted=False)
    assert sweep.main(["--summarize", str(tmp_path / "sweep_eval.csv")]) == 0
    assert capsys.readouterr().out.strip() == text


def test_heldout_blocks_are_observed_ones():
    observed = np.array([[True, True, False], [True, False, False], [True, True, True]])
    rows, hidden = sweep.heldout_blocks(observed, np.random.RandomState(0))
    assert list(rows) == [0, 2] and all(observed[r, m] for r, m in zip(rows, hidden))
