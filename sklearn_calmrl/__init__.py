"""sklearn-calmrl: calibrated multimodal representation learning with missing modalities.

The estimators are imported on first use, so that ``sklearn_calmrl.datasets``
(data loaders and amputation) imports without torch.
"""

import importlib

__version__ = "0.1.0"

__all__ = ["CalMRLTransformer", "MultiViewPPCA", "Linear", "MLP", "PMRL", "GRAM", "EarlyStopping", "stack_modalities", "__version__"]

_WHERE = {
    "CalMRLTransformer": "._estimator",
    "MultiViewPPCA": "._ppca",
    "Linear": "._encoders",
    "MLP": "._encoders",
    "PMRL": "._alignment",
    "GRAM": "._alignment",
    "EarlyStopping": "._callbacks",
    "stack_modalities": "._modalities",
}


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_WHERE))
