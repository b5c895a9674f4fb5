"""Every gallery example (``examples/plot_*.py``) runs to the end in its quick mode.

Each example runs in its own process with ``CALMRL_QUICK=1`` (fewer epochs and
settings) and matplotlib's Agg backend, as the documentation build runs them.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("plot_*.py"))

# Examples that take more than ~60 s even in quick mode on 2 CPU cores: run only with --runslow.
SLOW = set()
TIMEOUT_S = 600


def _param(path):
    marks = [pytest.mark.slow] if path.name in SLOW else []
    return pytest.param(path, id=path.stem, marks=marks)


def test_examples_are_found():
    assert {"plot_quickstart.py", "plot_grid_search.py", "plot_missing_rate.py"} <= {p.name for p in EXAMPLES}


@pytest.mark.parametrize("path", [_param(p) for p in EXAMPLES])
def test_example_runs_in_quick_mode(path, tmp_path):
    env = {
        **os.environ,
        "CALMRL_QUICK": "1",
        "MPLBACKEND": "Agg",
        "CALMRL_SAVE_FIGURE": "",  # never overwrite the figures committed under doc/_static
        "PYTHONWARNINGS": os.environ.get("PYTHONWARNINGS", ""),
    }
    # Small torch workloads: one intra-op thread avoids oversubscription when the cores are shared.
    env.setdefault("OMP_NUM_THREADS", "1")
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(path)],
        cwd=tmp_path,  # examples must not depend on the working directory or write next to it
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    elapsed = time.perf_counter() - start
    assert out.returncode == 0, f"{path.name} failed after {elapsed:.0f} s:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    assert "Traceback" not in out.stderr
    print(f"{path.name}: {elapsed:.1f} s")


@pytest.mark.parametrize("path", [_param(p) for p in EXAMPLES])
def test_example_has_a_title_docstring(path):
    import ast

    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert doc, f"{path.name} needs a module docstring (the gallery title)"
    lines = [line.rstrip() for line in doc.splitlines() if line.strip()]
    overline = lines[0] if set(lines[0]) == {"="} else None
    if overline:
        lines = lines[1:]
    assert len(lines) >= 2 and set(lines[1]) == {"="}, f"{path.name}: the docstring must start with a title"
    title, underline = lines[0], lines[1]
    # docutils (and so the docs build with -W) rejects an over/underline shorter than the title
    assert len(underline) >= len(title), f"{path.name}: title underline too short"
    if overline:
        assert len(overline) == len(underline), f"{path.name}: title overline and underline differ in length"


DOC_DIR = EXAMPLES_DIR.parent / "doc"


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path):
    """``sphinx-build -W`` with the examples executed in quick mode (about a minute on 2 cores)."""
    for module in ("sphinx", "numpydoc", "sphinx_gallery", "myst_parser", "matplotlib"):
        pytest.importorskip(module)
    env = {**os.environ, "CALMRL_QUICK": "1", "MPLBACKEND": "Agg", "CALMRL_SAVE_FIGURE": ""}
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-d", str(tmp_path / "doctrees"),
           str(DOC_DIR), str(tmp_path / "html")]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert out.returncode == 0, out.stdout[-3000:] + "\n" + out.stderr[-5000:]
    for page in ("index.html", "user_guide.html", "api.html", "auto_examples/index.html",
                 "generated/sklearn_calmrl.CalMRLTransformer.html"):
        assert (tmp_path / "html" / page).exists(), page
