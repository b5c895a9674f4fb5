"""A fitted model as plain data [design 7.3]: tensors as numpy arrays and records as tagged dicts, so that pickle,
joblib and ``skops.io`` store numpy arrays, numbers, strings, lists and dicts only."""

import dataclasses

import numpy as np
import torch

from ._latent import (
    Centres,
    LatentParams,
    MixtureParams,
    MixturePrior,
    MixtureStatistics,
    RunningStatistics,
    SufficientStatistics,
)

__all__ = ["plain", "register_record", "unplain"]

# the records and parameter objects a saved model holds, by name [design 7.3]
_RECORDS = {cls.__name__: cls for cls in (LatentParams, MixtureParams, MixturePrior, SufficientStatistics, MixtureStatistics, Centres)}


def register_record(cls):
    """Let :func:`plain` / :func:`unplain` carry instances of the dataclass or named tuple ``cls`` [design 7.3]."""
    _RECORDS[cls.__name__] = cls
    return cls


def plain(obj):
    """``obj`` as plain data: tensors as CPU numpy arrays (tagged), records and tuples as tagged dicts [design 7.3]."""
    if torch.is_tensor(obj):
        return {"__tensor__": obj.detach().cpu().numpy().copy()}
    if isinstance(obj, RunningStatistics):
        return {"__record__": "RunningStatistics", "fields": {"total": plain(obj.total), "parts": plain(obj.parts)}}
    if type(obj).__name__ in _RECORDS and type(obj) is _RECORDS[type(obj).__name__]:
        names = obj._fields if isinstance(obj, tuple) else [f.name for f in dataclasses.fields(obj)]
        return {"__record__": type(obj).__name__, "fields": {k: plain(getattr(obj, k)) for k in names}}
    if isinstance(obj, tuple):
        return {"__tuple__": [plain(v) for v in obj]}
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    return obj


def unplain(obj):
    """Inverse of :func:`plain`."""
    if isinstance(obj, list):
        return [unplain(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return torch.from_numpy(np.array(obj["__tensor__"]))
    if "__tuple__" in obj:
        return tuple(unplain(v) for v in obj["__tuple__"])
    if "__record__" in obj:
        fields = {k: unplain(v) for k, v in obj["fields"].items()}
        if obj["__record__"] == "RunningStatistics":
            running = RunningStatistics()
            running.total, running.parts = fields["total"], fields["parts"]
            return running
        return _RECORDS[obj["__record__"]](**fields)
    return {k: unplain(v) for k, v in obj.items()}
