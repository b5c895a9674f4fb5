"""sklearn-calmrl: calibrated multimodal representation learning with missing modalities."""

from ._estimator import CalMRLTransformer
from ._modalities import stack_modalities

__version__ = "0.1.0"

__all__ = ["CalMRLTransformer", "stack_modalities", "__version__"]
