"""scikit-learn's official estimator checks on cheap instances.

Every check runs and passes; none is marked as an expected failure. The only skips are
scikit-learn's own: ``check_array_api_input`` skips itself ("SCIPY_ARRAY_API is not set:
not checking array_api input"), once per estimator, because array-API dispatch is not
enabled in the test environment (the estimators convert input with numpy anyway).
"""

import warnings

from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_calmrl import MLP, CalMRLTransformer, MultiViewPPCA

# Every check expected to fail, with the reason (empty: all checks pass).
EXPECTED_FAILED_CHECKS = {}


def _cheap(**kw):
    return CalMRLTransformer(latent_dim=2, embed_dim=4, max_epochs=2, batch_size=16, device="cpu", **kw)


ESTIMATORS = [
    _cheap(encoder="linear"),
    _cheap(encoder=MLP(hidden_layer_sizes=(8,))),
    MultiViewPPCA(latent_dim=2, max_iter=20, device="cpu"),
]


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_compatible_estimator(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)
