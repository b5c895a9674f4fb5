"""The tiny three-block data the callback and robustness tests fit on, and their warning filter.

Imported by those test modules (pytest puts ``tests/`` on ``sys.path``); importing ``quiet_convergence`` registers
it as an autouse fixture of the importing module.
"""

import warnings

import pytest
from sklearn.exceptions import ConvergenceWarning

from sklearn_calmrl.datasets import ampute_modalities, make_latent_modalities

SIZES = [3, 2, 2]


@pytest.fixture(autouse=True)
def quiet_convergence():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def tiny_data(n=48, random_state=0):
    """``n`` rows of three blocks (3, 2, 2 features) of a 2-factor latent model, 40% of the rows missing blocks."""
    X, _, _ = make_latent_modalities(n_samples=n, block_sizes=SIZES, latent_dim=2, random_state=random_state)
    return ampute_modalities(X, SIZES, rate=0.4, random_state=random_state)
