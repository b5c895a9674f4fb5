"""The refactor check (benchmarks/fingerprint.py): saved arrays compared to the bit; the real fits are slow."""

import numpy as np
import pytest

from benchmarks import fingerprint


def test_compare_reports_every_difference(tmp_path, monkeypatch, capsys):
    arrays = {"is/ppca/transform": np.arange(6.0).reshape(3, 2), "is/ppca/impute": np.ones(3)}
    monkeypatch.setattr(fingerprint, "outputs", lambda: dict(arrays))
    assert fingerprint.main(["--save", str(tmp_path / "before.npz")]) == 0
    assert fingerprint.main(["--compare", str(tmp_path / "before.npz")]) == 0
    assert "2 arrays, 0 differ: every output is equal to the bit" in capsys.readouterr().out
    arrays["is/ppca/impute"] = np.ones(3) + 1e-15
    arrays["is/mlp/transform"] = np.zeros(1)
    del arrays["is/ppca/transform"]
    assert fingerprint.main(["--compare", str(tmp_path / "before.npz")]) == 1
    out = capsys.readouterr().out
    assert "is/ppca/impute: differs" in out and "is/mlp/transform: only after" in out
    assert "is/ppca/transform: only before" in out and "2 arrays, 3 differ" in out


@pytest.mark.slow
def test_outputs_of_the_fixed_fits(one_thread):
    got = fingerprint.outputs()
    assert len(got) == 48 and all(np.isfinite(v).all() for k, v in got.items() if not k.endswith("score_samples"))
