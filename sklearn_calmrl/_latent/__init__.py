"""Closed-form latent models over modality representations (design 2).

Pure tensor functions and parameter objects, no estimator state. Representations
are passed as a list ``Z`` of ``k`` tensors of shape ``(n, d_m)`` plus a boolean
``observed`` of shape ``(n, k)``; entries of unobserved rows are ignored (they may
hold anything, NaN too).

- :mod:`.gaussian`: the linear-Gaussian model (design 2.1-2.6);
- :mod:`.mixture`: a mixture of them (design 2.8);
- :mod:`.protocol`: the latent-model protocol both implement, as functions, and
  what is built on it (design 2.13);
- :mod:`.local`: the local correction, which wraps any model (design 2.9);
- :mod:`.em`: the EM driver with SQUAREM and running statistics (design 2.7, 3.2).

References ``[design x.y]`` point into ``doc/design.rst``.
"""

from .em import RunningStatistics, chunked_statistics, fit_em, run_em, summed_statistics
from .gaussian import (
    NOISE_MODELS,
    LatentParams,
    Posterior,
    SufficientStatistics,
    init_params,
    missingness_patterns,
    single_modality_maps,
)
from .local import CentreCache, Centres, concat_centres, local_corrections, representatives, training_centres
from .mixture import MixtureParams, MixturePosterior, MixturePrior, MixtureStatistics, init_mixture
from .protocol import (
    calibrated,
    imputation_confidence,
    impute,
    impute_calibrated,
    log_likelihood,
    m_step,
    posterior,
    predictive_variance,
    sufficient_statistics,
    variance_explained,
)

__all__ = [
    "LatentParams",
    "Posterior",
    "SufficientStatistics",
    "NOISE_MODELS",
    "posterior",
    "impute",
    "single_modality_maps",
    "predictive_variance",
    "imputation_confidence",
    "variance_explained",
    "log_likelihood",
    "sufficient_statistics",
    "summed_statistics",
    "chunked_statistics",
    "RunningStatistics",
    "MixturePrior",
    "MixtureParams",
    "MixturePosterior",
    "MixtureStatistics",
    "init_mixture",
    "impute_calibrated",
    "calibrated",
    "local_corrections",
    "representatives",
    "training_centres",
    "concat_centres",
    "Centres",
    "CentreCache",
    "m_step",
    "init_params",
    "run_em",
    "fit_em",
    "missingness_patterns",
]
