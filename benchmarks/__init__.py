"""The benchmarks of sklearn_calmrl (not part of the installed package): ``benchmarks/README.md`` indexes the scripts."""

import sys

from benchmarks import _checkout

sys.modules.setdefault("_checkout", _checkout)  # the scripts' first import, when they are imported as benchmarks.<name>
