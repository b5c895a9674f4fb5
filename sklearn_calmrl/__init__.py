"""sklearn-calmrl: calibrated multimodal representation learning with missing modalities."""

from ._estimator import CalMRLTransformer
from ._modalities import stack_modalities
from ._ppca import MultiViewPPCA

__version__ = "0.1.0"

__all__ = ["CalMRLTransformer", "MultiViewPPCA", "stack_modalities", "__version__"]
