"""The summary tables of doc/benchmarks.md (benchmarks/summarize.py), from the committed results."""

from pathlib import Path

from benchmarks import summarize

RESULTS = Path(__file__).resolve().parents[1] / "doc" / "results"


def test_tables_of_the_committed_runs(capsys):
    summarize.main(["--results", str(RESULTS), "--tag", "final", "--extra-tags", "further_methods", "mixture_rerun"])
    out = capsys.readouterr().out
    for title in ("## Accuracy", "## Embedding retrieval", "## Calibrated vs uncalibrated", "## Further methods"):
        assert title in out
    assert "| calmrl - best non-CalMRL | +0.5 (knn-concat) | +1.4 (knn-concat) | +1.6 (cca-mean) |" in out
    assert "| multiple_features | rate 0.5 | calmrl-mixture | 0.969 |" in out


def test_a_table_of_the_two_defaults_alone(capsys):
    summarize.main(["--results", str(RESULTS), "--tag", "shrinkage_rerun"])
    out = capsys.readouterr().out
    assert "| calmrl | **0.965** | 0.973 |" in out and "best non-CalMRL" not in out
