"""Property-based tests (hypothesis) of the closed-form core and the modality helpers (issue 6).

For random dimensions, missingness patterns and parameters:

- the E-step (``_latent.posterior``) equals the brute-force Gaussian conditional of the shared latent given the
  observed blocks, computed from the marginal covariance ``W W^T + Psi`` (and ``log_likelihood`` equals the
  brute-force Gaussian log-density of the observed blocks);
- imputation (``_training.calibrated``) leaves observed columns unchanged;
- the mask built from NaN blocks round-trips through ``observed_mask``, partial NaNs included;
- ``stack_modalities`` and ``resolve_modalities`` agree on the column blocks;
- the log-likelihood and the posterior do not depend on the order of the modalities.
"""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import multivariate_normal

from sklearn_calmrl._latent import LatentParams, log_likelihood, posterior
from sklearn_calmrl._modalities import observed_mask, resolve_modalities, stack_modalities
from sklearn_calmrl._training import calibrated

SETTINGS = settings(max_examples=25, deadline=None)

dims_st = st.lists(st.integers(1, 4), min_size=1, max_size=4)


@st.composite
def models(draw):
    """Random latent model, representations and missingness pattern (float64 tensors)."""
    dims = draw(dims_st)
    q = draw(st.integers(1, 3))
    n = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**32 - 1))
    diagonal = draw(st.booleans())
    rng = np.random.default_rng(seed)
    W = [torch.tensor(rng.normal(size=(d, q))) for d in dims]
    mu = [torch.tensor(rng.normal(size=d)) for d in dims]
    psi = [
        torch.tensor(rng.uniform(0.05, 2.0, size=d) if diagonal else np.full(d, rng.uniform(0.05, 2.0)))
        for d in dims
    ]
    observed = torch.tensor(rng.random((n, len(dims))) < 0.6)
    Z = [torch.tensor(rng.normal(size=(n, d)) * 2) for d in dims]
    return LatentParams(W, mu, psi), Z, observed


def _brute_force(params, Z, observed, i):
    """Posterior mean/cov of b and log p(z_i^O) from the joint Gaussian of (b, z^O)."""
    q = params.W[0].shape[1]
    O = np.flatnonzero(observed[i].numpy())
    if O.size == 0:
        return np.zeros(q), np.eye(q), 0.0
    W = np.vstack([params.W[m].numpy() for m in O])
    mu = np.concatenate([params.mu[m].numpy() for m in O])
    psi = np.concatenate([params.psi[m].numpy() for m in O])
    z = np.concatenate([Z[m][i].numpy() for m in O])
    C = W @ W.T + np.diag(psi)  # marginal covariance of z^O
    K = np.linalg.solve(C, W).T  # W^T C^-1
    return K @ (z - mu), np.eye(q) - K @ W, multivariate_normal(mu, C).logpdf(z)


@SETTINGS
@given(models())
def test_posterior_and_loglik_match_brute_force_conditional(model):
    params, Z, observed = model
    post = posterior(Z, observed, params)
    ll = log_likelihood(Z, observed, params, post)
    for i in range(observed.shape[0]):
        mean, cov, logpdf = _brute_force(params, Z, observed, i)
        np.testing.assert_allclose(post.mean[i].numpy(), mean, rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(post.cov[post.pattern_index[i]].numpy(), cov, rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(float(ll[i]), logpdf, rtol=1e-8, atol=1e-8)


@SETTINGS
@given(models(), st.booleans())
def test_imputation_leaves_observed_columns_unchanged(model, capped):
    params, Z, observed = model
    Zhat, post = calibrated(Z, observed, params, max_norm=1.0 if capped else None)
    for m, (z, zhat) in enumerate(zip(Z, Zhat)):
        rows = observed[:, m]
        assert torch.equal(zhat[rows], z[rows])
        imputed = post.mean[~rows] @ params.W[m].T + params.mu[m]
        if capped:
            imputed = imputed / imputed.norm(dim=1, keepdim=True).clamp_min(1.0)
        torch.testing.assert_close(zhat[~rows], imputed, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(models(), st.data())
def test_loglik_and_posterior_invariant_to_modality_order(model, data):
    params, Z, observed = model
    perm = data.draw(st.permutations(range(len(Z))))
    permuted = LatentParams(*([group[p] for p in perm] for group in params))
    Zp = [Z[p] for p in perm]
    op = observed[:, torch.as_tensor(perm)]
    torch.testing.assert_close(log_likelihood(Zp, op, permuted), log_likelihood(Z, observed, params), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(posterior(Zp, op, permuted).mean, posterior(Z, observed, params).mean, rtol=1e-10, atol=1e-10)


@SETTINGS
@given(dims_st, st.integers(1, 10), st.integers(0, 2**32 - 1), st.booleans())
def test_mask_from_nan_blocks_round_trips(dims, n, seed, shuffled_columns):
    rng = np.random.default_rng(seed)
    mask = rng.random((n, len(dims))) < 0.5
    total = sum(dims)
    columns = rng.permutation(total) if shuffled_columns else np.arange(total)
    spec, start = [], 0
    for d in dims:
        spec.append(sorted(columns[start : start + d].tolist()))
        start += d
    blocks = resolve_modalities(spec, total)
    X = rng.normal(size=(n, total))
    for m, (_, idx) in enumerate(blocks):
        X[np.ix_(~mask[:, m], idx)] = np.nan
        if len(idx) > 1:  # partial NaN in observed rows: still observed
            partial = mask[:, m] & (rng.random(n) < 0.5)
            X[partial, idx[rng.integers(len(idx))]] = np.nan
    np.testing.assert_array_equal(observed_mask(X, blocks), mask)


@SETTINGS
@given(dims_st, st.integers(1, 6), st.integers(0, 2**32 - 1), st.booleans())
def test_stack_modalities_agrees_with_resolve_modalities(dims, n, seed, named):
    rng = np.random.default_rng(seed)
    arrays = []
    for d in dims:
        a = rng.normal(size=(n, d))
        a[rng.random(n) < 0.3] = np.nan  # missing rows travel unchanged
        arrays.append(a)
    names = [f"view{m}" for m in range(len(dims))][::-1] if named else None
    X, spec = stack_modalities(arrays, names=names)
    assert list(spec) == (names if named else [f"m{m}" for m in range(len(dims))])
    from_spec = resolve_modalities(spec, X.shape[1])
    from_sizes = resolve_modalities(list(dims), X.shape[1])
    assert [name for name, _ in from_spec] == list(spec)
    for (_, idx), (_, idx_sizes), a in zip(from_spec, from_sizes, arrays):
        np.testing.assert_array_equal(idx, idx_sizes)
        np.testing.assert_array_equal(X[:, idx], a)
    np.testing.assert_array_equal(observed_mask(X, from_spec), np.column_stack([~np.isnan(a).all(axis=1) for a in arrays]))
