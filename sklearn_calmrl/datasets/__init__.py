"""Data sets, missing-modality simulators and synthetic generators.

- :func:`load_multiple_features` and :func:`load_image_segmentation` load the two
  real multi-modal data sets shipped with the package (UCI, CC BY 4.0);
  :func:`load_digits_halves` and :func:`load_breast_cancer_views` split two of
  scikit-learn's bundled data sets into natural modalities.
- :func:`ampute_modalities` and :func:`ampute_modalities_structured` mask whole
  modality blocks with NaN to simulate samples that miss modalities.
- :func:`make_latent_modalities` draws data from the shared linear-Gaussian
  latent model.
- :func:`make_nonlinear_modalities` is a controlled generator: several nonlinear
  modalities (random tanh networks) of one class-structured latent, with the
  paper's structured missingness (a few complete rows, the others in groups
  that only ever observe fixed pairs, so that some pairs co-occur only in the
  complete rows).
"""

from ._base import (
    ampute_modalities,
    ampute_modalities_structured,
    load_breast_cancer_views,
    load_digits_halves,
    load_image_segmentation,
    load_multiple_features,
    make_latent_modalities,
)
from ._synthetic import make_nonlinear_modalities

__all__ = [
    "load_multiple_features",
    "load_image_segmentation",
    "load_digits_halves",
    "load_breast_cancer_views",
    "ampute_modalities",
    "ampute_modalities_structured",
    "make_latent_modalities",
    "make_nonlinear_modalities",
]
