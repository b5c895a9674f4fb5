"""The one-call GPU check (benchmarks/gpu_check.py, run by gpu_check.sh): the report of whatever finished; the
parts themselves, and the whole script rehearsed on the CPU, are slow tests."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from benchmarks import gpu_check

HERE = Path(__file__).resolve().parent


def test_report_says_what_did_not_run(tmp_path, capsys):
    results = tmp_path / "r.jsonl"
    lines = [dict(kind="env", torch="2", torch_cuda=None, cuda=False, gpu=None, sklearn="1", numpy="2", python="3",
                  cpu_count=2, torch_threads=1),
             dict(kind="part", name="timing-cuda-100", rc=124, seconds=45.0),
             dict(kind="agreement", model="m", comparison="c", max_abs=1e-12, max_abs_output=3.0, score_diff=0.0),
             dict(kind="timing", device="cuda", rows=100, model="MultiViewPPCA (defaults)", fit_seconds=1.0,
                  transform_seconds=0.5, fit_time_em=None, n_iter=3),
             dict(kind="timing", device="cpu", rows=100, model="MultiViewPPCA (defaults)", fit_seconds=4.0,
                  transform_seconds=1.0, fit_time_em=None, n_iter=3)]
    results.write_text("".join(json.dumps(line) + "\n" for line in lines))
    gpu_check.main(["report", "--results", str(results), "--rows-list", "100", "1000", "--markdown", str(tmp_path / "r.md")])
    text = (tmp_path / "r.md").read_text()
    assert text == capsys.readouterr().out.rstrip("\n") + "\n"
    assert "| timing-cuda-100 | 124 | 45.0 | timed out |" in text
    assert "| 100 | MultiViewPPCA (defaults) | 1 | 4 | 4.0x | 0.5 | 1 | 2.0x |" in text
    assert "| 1000 | MultiViewPPCA (defaults) | not run | not run | - | not run | not run | - |" in text


@pytest.mark.slow
def test_the_check_rehearsed_on_the_cpu(tmp_path):
    env = {**os.environ, "GPU_CHECK_SMALL": "1", "GPU_CHECK_PARTS": "env agreement timing-small", "OUT": str(tmp_path)}
    done = subprocess.run(["bash", str(HERE / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = (tmp_path / "gpu_check.md").read_text()
    assert "| agreement | 0 |" in report and "| timing-cpu-2000 | 0 |" in report and "cuda-tests: skipped" in done.stdout
