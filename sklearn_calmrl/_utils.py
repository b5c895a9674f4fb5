"""Runtime helpers: warnings that point at the caller's line, and the torch thread policy."""

import contextlib
import os
import sys
import threading
import warnings

import joblib
import sklearn
import torch

__all__ = ["warn", "torch_threads", "free_threads"]

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


_THREADS_LOCK = threading.Lock()
_THREADS_STATE = {"active": 0, "outer": None}  # scopes open in any thread, and the caller's setting to restore
_THREADS_LOCAL = threading.local()  # this thread's stack of scoped counts


@contextlib.contextmanager
def torch_threads(n):
    """Run the block with ``n`` torch intra-op threads, then give the caller back its own setting.

    ``torch.set_num_threads`` acts on the calling thread and on the process-wide
    default that new threads start from. Scopes nest within a thread (each
    restores the one around it) and may run in several threads at once: the
    caller's setting is recorded when the first scope opens and restored when
    the last one closes, so concurrent fits never leave a changed default.
    """
    stack = getattr(_THREADS_LOCAL, "stack", None)
    if stack is None:
        stack = _THREADS_LOCAL.stack = []
    with _THREADS_LOCK:
        if _THREADS_STATE["active"] == 0:
            _THREADS_STATE["outer"] = torch.get_num_threads()
        _THREADS_STATE["active"] += 1
        previous = stack[-1] if stack else _THREADS_STATE["outer"]
    stack.append(n)
    torch.set_num_threads(n)
    try:
        yield
    finally:
        stack.pop()
        torch.set_num_threads(previous)
        with _THREADS_LOCK:
            _THREADS_STATE["active"] -= 1
            if _THREADS_STATE["active"] == 0:
                torch.set_num_threads(_THREADS_STATE["outer"])
