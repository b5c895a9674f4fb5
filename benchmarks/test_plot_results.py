"""The accuracy figure (benchmarks/plot_results.py), drawn from the committed results."""

from pathlib import Path

from benchmarks import plot_results

RESULTS = Path(__file__).resolve().parents[1] / "doc" / "results"


def test_the_figure_of_the_committed_runs(tmp_path):
    out = tmp_path / "accuracy.png"
    plot_results.main(["--results", str(RESULTS), "--tag", "final", "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 50_000
