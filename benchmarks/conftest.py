import os

import pytest


@pytest.fixture
def script_threads(monkeypatch, one_thread):
    """A script's ``main`` sets the thread variables and torch's threads (``harness.use_threads``): both restored."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, os.environ.get(var, "1"))
