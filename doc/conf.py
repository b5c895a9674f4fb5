"""Sphinx configuration of the sklearn-calmrl documentation.

Build (from the repository root)::

    pip install -e ".[docs]"
    CALMRL_QUICK=1 sphinx-build -W -b html doc doc/_build/html

``CALMRL_QUICK=1`` runs the gallery examples in their quick mode. Add
``-D plot_gallery=0`` to skip running them altogether.
"""

import os
import sys
import warnings
from pathlib import Path

import sklearn_calmrl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE / "_ext"))

project = "sklearn-calmrl"
author = "sklearn-calmrl developers"
copyright = "sklearn-calmrl developers, BSD-3-Clause"
release = sklearn_calmrl.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "README.md",
    "results",  # raw benchmark tables that benchmarks.md cites
    "_ext",
    "Thumbs.db",
    ".DS_Store",
    "auto_examples/*.ipynb",
    "auto_examples/*.py",
    "auto_examples/*.zip",
    "auto_examples/*.md5",
    "auto_examples/*.codeobj.json",
]
rst_prolog = ""
suppress_warnings = ["myst.header"]  # benchmark pages may start below level-1 headings

# -- autodoc / autosummary / numpydoc ---------------------------------------
autosummary_generate = True

autodoc_typehints = "none"
numpydoc_show_class_members = False  # the class template lists the methods
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# -- myst (Markdown pages such as benchmarks.md) ----------------------------
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# -- sphinx-gallery -----------------------------------------------------------
os.environ.setdefault("MPLBACKEND", "Agg")
warnings.filterwarnings("ignore", message="Matplotlib is currently using agg", category=UserWarning)

sphinx_gallery_conf = {
    "examples_dirs": str(HERE.parent / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py",
    "abort_on_example_error": True,
    "within_subsection_order": "gallery_order.ExampleOrder",
    "download_all_examples": False,
    "remove_config_comments": True,
    "min_reported_time": 1,
    "show_memory": False,
    "reference_url": {"sklearn_calmrl": None},
    "doc_module": ("sklearn_calmrl",),
    "backreferences_dir": None,
}

# -- HTML ----------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"  # scikit-learn's theme: a wide content column, no sideways scrolling of code
html_static_path = ["_static"]
html_css_files = ["calmrl.css"]
html_title = f"sklearn-calmrl {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 4,
    "secondary_sidebar_items": ["page-toc"],
}
html_sidebars = {"index": [], "benchmarks": [], "scaling": []}

