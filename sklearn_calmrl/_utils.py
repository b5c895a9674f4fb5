"""Helpers without torch: warnings that point at the caller's line, the threads a fit may use, and the parameters
that take a name or a parameter object."""

import os
import sys
import warnings

import joblib
import sklearn
from sklearn.base import clone

__all__ = ["free_threads", "resolved", "warn"]

# Frames in these folders are library plumbing (ours, scikit-learn's wrappers and meta-estimators, joblib's
# workers): a warning points at the first frame outside them, the user's line.
_LIBRARY_DIRS = tuple(
    os.path.dirname(os.path.abspath(path)) + os.sep
    for path in (__file__, sklearn.__file__, joblib.__file__)
)


def warn(message, category=UserWarning):
    """``warnings.warn`` with the ``stacklevel`` of the first caller outside the library."""
    frame, level = sys._getframe(1), 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_LIBRARY_DIRS):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level - 1 if frame is None else level)


def free_threads(n_jobs):
    """``joblib.effective_n_jobs(n_jobs)`` threads, capped at the cores that other work leaves free.

    The free cores are the cores this process may run on minus the integer part
    of the 1-minute load average (where the system reports one). Torch's
    threads spin-wait for each other, so a thread more than the free cores
    stalls the whole pool: on a 2-core machine beside one busy process,
    ``n_jobs=2`` made a fit 3 to 20 times slower than one thread (doc/scaling.md,
    "Busy neighbour"). Never fewer than one thread.
    """
    n = joblib.effective_n_jobs(n_jobs)
    if n <= 1:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        busy = int(os.getloadavg()[0])
    except (AttributeError, OSError):  # no load average on this system: trust n_jobs
        busy = 0
    return max(1, min(n, cores - busy))


def resolved(value, options):
    """The value of a parameter that takes a name or a parameter object (``alignment``, ``encoder``,
    ``early_stopping``): ``options[value]()`` for a name (or ``True``), a validated copy of an object."""
    config = clone(value) if hasattr(value, "get_params") else options[value]()
    config._validate_params()
    return config
