"""Every gallery example (``examples/plot_*.py``) runs to the end in its quick mode, and the demo runs; neither
makes the library warn. Each runs in its own process, so these tests are slow (``--runslow``).

Each example runs in its own process with ``CALMRL_QUICK=1`` (fewer epochs and
settings) and matplotlib's Agg backend, as the documentation build runs them,
and with ``-W error:::__main__``: the library's warnings point at the caller's
line (the first frame outside the package), so in an example script they are
attributed to the module ``__main__`` and become errors there, while a
third-party warning raised inside its own module (scikit-learn's
``IterativeImputer`` stopping at ``max_iter``, say) stays a warning.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("plot_*.py"))

TIMEOUT_S = 600


# Warnings attributed to the script itself (the library's, and the script's own) are errors.
WARNINGS_OF_THE_SCRIPT_ARE_ERRORS = ["-W", "error:::__main__"]


def _env(**extra):
    env = {
        **os.environ,
        "MPLBACKEND": "Agg",
        "PYTHONWARNINGS": os.environ.get("PYTHONWARNINGS", ""),
        **extra,
    }
    # Small torch workloads: one intra-op thread avoids oversubscription when the cores are shared.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _param(path):
    return pytest.param(path, id=path.stem)


def test_examples_are_found():
    assert {"plot_quickstart.py", "plot_grid_search.py", "plot_missing_rate.py", "plot_imputation.py"} <= {
        p.name for p in EXAMPLES
    }


@pytest.mark.slow  # a process
def test_a_library_warning_fails_an_example(tmp_path):
    """The mechanism the example runs rely on: a warning of the library, raised from a script's call (through
    a scikit-learn Pipeline), is attributed to ``__main__`` and so becomes an error under ``-W error:::__main__``."""
    script = tmp_path / "plot_warns.py"
    script.write_text(
        "import numpy as np\n"
        "from sklearn.pipeline import make_pipeline\n"
        "from sklearn_calmrl import MultiViewPPCA\n"
        "from sklearn_calmrl.datasets import load_image_segmentation\n"
        "data = load_image_segmentation()\n"
        "X = data.data[:300].copy()\n"
        "X[0] = np.nan  # a row that observes no modality: fit warns and ignores it\n"
        "make_pipeline(MultiViewPPCA(data.modalities, random_state=0)).fit(X)\n",
        encoding="utf-8",
    )
    out = subprocess.run(
        [sys.executable, *WARNINGS_OF_THE_SCRIPT_ARE_ERRORS, str(script)],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S,
    )
    assert out.returncode != 0, out.stdout + out.stderr
    assert "UserWarning: 1 of 300 rows observe no modality" in out.stderr, out.stderr[-3000:]


@pytest.mark.slow  # a process per example
@pytest.mark.parametrize("path", [_param(p) for p in EXAMPLES])
def test_example_runs_in_quick_mode(path, tmp_path):
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, *WARNINGS_OF_THE_SCRIPT_ARE_ERRORS, str(path)],
        cwd=tmp_path,  # examples must not depend on the working directory or write next to it
        env=_env(CALMRL_QUICK="1"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    elapsed = time.perf_counter() - start
    assert out.returncode == 0, f"{path.name} failed after {elapsed:.0f} s:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    assert "Traceback" not in out.stderr
    # and no warning attributed to the library's own code either (one whose every frame is inside the package)
    library = [line for line in out.stderr.splitlines() if "Warning: " in line and f"{os.sep}sklearn_calmrl{os.sep}" in line]
    assert not library, "\n".join(library)
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


@pytest.mark.slow  # a process
def test_demo_runs_without_warnings(tmp_path):
    """``python -m sklearn_calmrl.demo`` (the README's first command) fits with default parameters and prints no
    warning: UserWarning (scikit-learn's ConvergenceWarning is one) and RuntimeWarning are errors, and nothing
    else may warn either. About 15 s on 2 cores."""
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-W", "error::RuntimeWarning", "-m", "sklearn_calmrl.demo"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S,
    )
    elapsed = time.perf_counter() - start
    assert out.returncode == 0, f"the demo failed after {elapsed:.0f} s:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    assert "Warning" not in out.stderr, out.stderr[-5000:]
    assert "StandardScaler + LogisticRegression" in out.stdout  # what "accuracy" means
    for method in ("mean imputation + PCA", "MultiViewPPCA", "CalMRLTransformer"):
        assert method in out.stdout, out.stdout
    print(f"demo: {elapsed:.1f} s")


DOC_DIR = EXAMPLES_DIR.parent / "doc"


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path):
    """``sphinx-build -W`` with the examples executed in quick mode (about a minute on 2 cores)."""
    for module in ("sphinx", "numpydoc", "sphinx_gallery", "myst_parser", "matplotlib"):
        pytest.importorskip(module)
    env = {**os.environ, "CALMRL_QUICK": "1", "MPLBACKEND": "Agg"}
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-d", str(tmp_path / "doctrees"),
           str(DOC_DIR), str(tmp_path / "html")]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert out.returncode == 0, out.stdout[-3000:] + "\n" + out.stderr[-5000:]
    for page in ("index.html", "user_guide.html", "api.html", "auto_examples/index.html",
                 "generated/sklearn_calmrl.CalMRLTransformer.html"):
        assert (tmp_path / "html" / page).exists(), page


PUBLIC_MODULES = ["sklearn_calmrl", "sklearn_calmrl.distributed", "sklearn_calmrl.datasets", "sklearn_calmrl.diagnostics", "sklearn_calmrl.plotting"]


def _public():
    import importlib

    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for attr in module.__all__:
            if not attr.startswith("__"):
                yield attr, getattr(module, attr)


def test_every_public_name_is_on_the_api_page_and_points_to_the_user_guide():
    """Issue 21: every public class and function is listed on doc/api.rst and its docstring links the user guide."""
    api = (Path(__file__).resolve().parents[1] / "doc" / "api.rst").read_text()
    listed = {line.strip() for line in api.splitlines() if line.startswith("   ") and not line.strip().startswith(":")}
    public = dict(_public())
    assert public, "no public names found"
    missing = sorted(set(public) - listed)
    assert not missing, f"not on the API page: {missing}"
    unlinked = sorted(name for name, obj in public.items() if "Read more in the :ref:`User Guide <user_guide>`" not in (obj.__doc__ or ""))
    assert not unlinked, f"docstrings without the user-guide link: {unlinked}"
