"""The one bootstrap of the benchmark scripts: this checkout's ``benchmarks`` and ``sklearn_calmrl`` first on the path.

Every script imports it first (``import _checkout``): started as ``python benchmarks/<script>.py`` the script's own
folder is on ``sys.path``, so this module is found and puts the repository root in front, ahead of any installed
``sklearn_calmrl`` (a script measures the package of the checkout it belongs to). Imported as ``benchmarks.<script>``
(tests, ``python -m``), ``benchmarks/__init__.py`` has already registered it under that name.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if sys.path[:1] != [str(ROOT)]:
    sys.path.insert(0, str(ROOT))
