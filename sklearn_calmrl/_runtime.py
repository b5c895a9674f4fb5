"""Where and on how many threads torch computes: the device an estimator resolves, and the scope of its torch
threads (``n_jobs``), which gives the caller back its own setting."""

import contextlib
import functools
import threading

import torch

from ._utils import free_threads

__all__ = ["resolve_device", "threaded", "torch_threads"]


def resolve_device(device):
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; 'cuda' without one is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but torch finds no CUDA device; use device='auto' or 'cpu'.")
    return device


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


def threaded(method):
    """Run an estimator method under the thread policy: ``free_threads(n_jobs)`` torch threads (1 by default)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with torch_threads(free_threads(self.n_jobs)):
            return method(self, *args, **kwargs)

    return wrapper
