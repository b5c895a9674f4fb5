"""The baselines no maintained package provides (benchmarks/baselines.py)."""

import numpy as np
import pytest

from benchmarks.baselines import GeneralizedCCA, MOFATransformer, block_standardize


def test_generalized_cca_recovers_shared_signal():
    rng = np.random.RandomState(0)
    n = 400
    z = rng.randn(n, 2)
    X1 = z @ rng.randn(2, 5) + 0.1 * rng.randn(n, 5)
    X2 = z @ rng.randn(2, 6) + 0.1 * rng.randn(n, 6)
    X = np.hstack([X1, X2])
    cca = GeneralizedCCA([5, 6], n_components=2, reg=1e-3).fit(X)
    assert cca.singular_values_[0] > 1.35  # sqrt(2) when the two views agree perfectly
    only1, only2 = X.copy(), X.copy()
    only1[:, 5:] = np.nan
    only2[:, :5] = np.nan
    G1, G2 = cca.transform(only1), cca.transform(only2)
    for c in range(2):
        assert abs(np.corrcoef(G1[:, c], G2[:, c])[0, 1]) > 0.95
    # On the training rows the projection reproduces the left singular vectors (orthonormal columns).
    G = cca.transform(X)
    np.testing.assert_allclose(G.T @ G, np.eye(2), atol=1e-8)



def test_block_standardize_ignores_missing_entries():
    X = np.array([[1.0, np.nan], [3.0, 2.0], [np.nan, 4.0]])
    Xs, mean, scale = block_standardize(X, None)
    np.testing.assert_allclose(mean, [2.0, 3.0])
    np.testing.assert_allclose(scale, [1.0, 1.0])
    assert np.isnan(Xs[0, 1]) and Xs[1, 0] == 1.0


def test_mofa_transformer_posterior_of_new_rows():
    pytest.importorskip("mofapy2")
    rng = np.random.RandomState(0)
    z = rng.randn(200, 2)
    X = np.hstack([z @ rng.randn(2, 5), z @ rng.randn(2, 4)]) + 0.1 * rng.randn(200, 9)
    X[:50, 5:] = np.nan
    mofa = MOFATransformer([5, 4], n_factors=2, max_iter=50).fit(X)
    assert mofa.transform(X).shape == (200, 2) and np.isfinite(mofa.impute(X)).all()
