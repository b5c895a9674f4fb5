"""Smoke tests of the calibration study (benchmarks/calibration_study.py, issue 20): tiny sizes, a few seconds."""

import csv
import math

import pytest

from benchmarks import calibration_study as study


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_synthetic_quick_path(tmp_path, script_threads, capsys):
    methods = ["ppca", "start", "lin-cal", "lin-uncal"]
    assert study.main(["--quick", "--seeds", "1", "--n-train", "300", "--n-test", "120", "--n-retrieval", "100",
                       "--epochs", "2", "--methods", *methods, "--out", str(tmp_path)]) == 0
    rows = _rows(tmp_path / "synthetic_quick.csv")
    assert len(rows) == len(methods)  # 1 seed x 1 complete fraction
    assert all(r["error"] == "" for r in rows)
    by = {(r["method"], r["seed"]): r for r in rows}
    for r in rows:
        for key in ("r1_rare", "r1_freq", "acc", "acc_rep"):
            assert 0.0 <= float(r[key]) <= 1.0
    # The encoders start as the closed-form posterior-mean maps: their retrieval is the closed-form latent's.
    assert float(by[("start", "0")]["r1_rare"]) == pytest.approx(float(by[("ppca", "0")]["r1_rare"]))
    assert by[("ppca", "0")]["anchor_cal1"] == "" and float(by[("lin-cal", "0")]["anchor_cal1"]) >= 0
    out = capsys.readouterr().out
    assert "| lin-cal − lin-uncal |" in out and "epoch budget 2048 rows" in out
    md = (tmp_path / "synthetic_quick.md").read_text()
    assert "Paired differences" in md and "| start |" in md


def test_epoch_rows_control_and_mfeat(tmp_path, script_threads, monkeypatch):
    from sklearn_calmrl import _training

    monkeypatch.setattr(_training, "EPOCH_ROWS", _training.EPOCH_ROWS)  # restored after the test
    assert study.main(["--quick", "--study", "mfeat", "--seeds", "1", "--mf-max-rows", "200", "--epochs", "1",
                       "--methods", "lin-uncal", "--epoch-rows", "0", "--out", str(tmp_path)]) == 0
    rows = _rows(tmp_path / "mfeat_quick.csv")
    assert len(rows) == 2 and {r["epoch_rows"] for r in rows} == {"all"} and {r["fold"] for r in rows} == {"0", "1"}
    assert all(r["error"] == "" for r in rows)
    # Multiple Features' structured groups pair pix with every other modality: 5 frequent, 10 rare pairs.
    assert "r1_fou-kar" in rows[0] and "r1_fou-pix" in rows[0]


def test_t_interval_and_summary():
    mean, half, n = study.t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and n == 3 and half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    base = dict(study="synthetic", epoch_rows="2048", complete_fraction="0.05", fold="", error="")
    rows = [dict(base, seed=str(s), method=m, r1_rare=str(v)) for s in range(3)
            for m, v in (("lin-cal", 0.1 + 0.01 * s), ("lin-uncal", 0.09 + 0.01 * s))]
    text = study.summarize(rows)
    assert "| lin-cal − lin-uncal | +1.0 ± 0.0* |" in text
    with pytest.raises(SystemExit, match="unknown method"):
        study.main(["--methods", "nope"])
