"""Exact checks of the closed-form latent model (design 2) against brute force."""

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from sklearn_calmrl._latent import (
    LatentParams,
    fit_em,
    impute,
    init_params,
    log_likelihood,
    m_step,
    posterior,
    predictive_variance,
    sufficient_statistics,
)

DIMS = (4, 3, 5)
Q = 2


def random_params(rng, dims=DIMS, q=Q, noise="isotropic"):
    W = [torch.tensor(rng.normal(size=(d, q))) for d in dims]
    mu = [torch.tensor(rng.normal(size=d)) for d in dims]
    if noise == "diagonal":
        psi = [torch.tensor(rng.uniform(0.2, 1.5, size=d)) for d in dims]
    else:
        psi = [torch.full((d,), rng.uniform(0.2, 1.5), dtype=torch.float64) for d in dims]
    return LatentParams(W, mu, psi)


def sample(rng, params, n, missing_rate=0.5):
    q = params.W[0].shape[1]
    b = rng.normal(size=(n, q))
    Z = [
        torch.tensor(b @ W.numpy().T + mu.numpy() + rng.normal(size=(n, W.shape[0])) * np.sqrt(psi.numpy()))
        for W, mu, psi in zip(*params)
    ]
    k = len(Z)
    observed = np.ones((n, k), dtype=bool)
    lose = rng.random(n) < missing_rate
    for i in np.flatnonzero(lose):
        keep = rng.integers(1, 2**k - 1)  # non-empty proper subset kept
        observed[i] = [(keep >> m) & 1 for m in range(k)]
    for m in range(k):
        Z[m][~torch.tensor(observed[:, m])] = float("nan")
    return Z, torch.tensor(observed), b


def brute_force(params, z_obs, obs_row):
    """Gaussian conditional p(b | z_O) and log p(z_O) from the marginal covariance W W^T + Psi."""
    idx = [m for m in range(len(params.W)) if obs_row[m]]
    q = params.W[0].shape[1]
    if not idx:
        return np.zeros(q), np.eye(q), 0.0
    W = np.vstack([params.W[m].numpy() for m in idx])
    mu = np.concatenate([params.mu[m].numpy() for m in idx])
    Psi = np.diag(np.concatenate([params.psi[m].numpy() for m in idx]))
    z = np.concatenate([z_obs[m] for m in idx])
    Sigma = W @ W.T + Psi
    gain = np.linalg.solve(Sigma, W).T  # W^T Sigma^-1
    mean = gain @ (z - mu)
    cov = np.eye(q) - gain @ W
    return mean, cov, multivariate_normal(mu, Sigma).logpdf(z)


@pytest.mark.parametrize("noise", ["isotropic", "diagonal"])
def test_posterior_and_loglik_match_brute_force(noise):
    rng = np.random.default_rng(0)
    params = random_params(rng, noise=noise)
    Z, observed, _ = sample(rng, params, 60, missing_rate=0.7)
    observed[0] = False  # a row with no modality: prior
    post = posterior(Z, observed, params)
    ll = log_likelihood(Z, observed, params)
    for i in range(60):
        mean, cov, logp = brute_force(params, [z[i].numpy() for z in Z], observed[i].numpy())
        np.testing.assert_allclose(post.mean[i].numpy(), mean, atol=1e-8)
        np.testing.assert_allclose(post.cov[post.pattern_index[i]].numpy(), cov, atol=1e-8)
        np.testing.assert_allclose(ll[i].item(), logp, atol=1e-8)
    assert post.cov.shape[0] == torch.unique(observed, dim=0).shape[0]  # one factorisation per pattern


def test_imputation_and_predictive_variance():
    rng = np.random.default_rng(1)
    params = random_params(rng)
    Z, observed, _ = sample(rng, params, 30)
    post = posterior(Z, observed, params)
    Zhat = impute(post.mean, params)
    var = predictive_variance(post, params)
    for m, (W, mu, psi) in enumerate(zip(*params)):
        np.testing.assert_allclose(Zhat[m].numpy(), post.mean.numpy() @ W.numpy().T + mu.numpy())
        for i in range(3):
            V = post.cov[post.pattern_index[i]].numpy()
            expected = np.diag(W.numpy() @ V @ W.numpy().T) + psi.numpy()
            np.testing.assert_allclose(var[m][i].numpy(), expected, atol=1e-12)


def test_statistics_are_additive_over_chunks():
    rng = np.random.default_rng(2)
    params = random_params(rng)
    Z, observed, _ = sample(rng, params, 50)
    full = sufficient_statistics(Z, observed, params)
    parts = sufficient_statistics([z[:17] for z in Z], observed[:17], params) + sufficient_statistics(
        [z[17:] for z in Z], observed[17:], params
    )
    for a, b in zip(full.A + full.C + full.S, parts.A + parts.C + parts.S):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-10)
    np.testing.assert_allclose(full.loglik.item(), parts.loglik.item())


def test_m_step_matches_design_formula():
    """W~ = C A^-1 and the s_m^2 update written row by row as in design 2.4."""
    rng = np.random.default_rng(3)
    params = random_params(rng)
    Z, observed, _ = sample(rng, params, 80)
    post = posterior(Z, observed, params)
    new = m_step(sufficient_statistics(Z, observed, params), params, ridge=0.0)
    for m in range(len(DIMS)):
        rows = np.flatnonzero(observed[:, m].numpy())
        A = np.zeros((Q + 1, Q + 1))
        C = np.zeros((DIMS[m], Q + 1))
        for i in rows:
            mi = post.mean[i].numpy()
            Vi = post.cov[post.pattern_index[i]].numpy()
            A += np.block([[Vi + np.outer(mi, mi), mi[:, None]], [mi[None, :], np.ones((1, 1))]])
            C += np.outer(Z[m][i].numpy(), np.append(mi, 1.0))
        Wt = C @ np.linalg.inv(A)
        np.testing.assert_allclose(new.W[m].numpy(), Wt[:, :Q], atol=1e-9)
        np.testing.assert_allclose(new.mu[m].numpy(), Wt[:, Q], atol=1e-9)
        W, mu = Wt[:, :Q], Wt[:, Q]
        s2 = 0.0
        for i in rows:
            r = Z[m][i].numpy() - mu
            mi = post.mean[i].numpy()
            Vi = post.cov[post.pattern_index[i]].numpy()
            s2 += r @ r - 2 * r @ W @ mi + np.trace(W.T @ W @ (Vi + np.outer(mi, mi)))
        np.testing.assert_allclose(new.psi[m].numpy(), s2 / (len(rows) * DIMS[m]), rtol=1e-9)


@pytest.mark.parametrize("noise", ["isotropic", "diagonal", "shared"])
@pytest.mark.parametrize("accelerate", [False, True])
def test_em_never_decreases_loglik(noise, accelerate):
    rng = np.random.default_rng(4)
    truth = random_params(rng, noise="diagonal")
    Z, observed, _ = sample(rng, truth, 300)
    start = init_params(Z, observed, Q, generator=torch.Generator().manual_seed(0))
    _, history, n_iter = fit_em(Z, observed, start, max_iter=40, tol=0.0, noise=noise, accelerate=accelerate)
    assert np.all(np.diff(history) >= -1e-9), np.diff(history).min()
    assert history[-1] > history[0] and n_iter == 40
    if not accelerate:
        assert len(history) == n_iter  # one E-step per iteration


@pytest.mark.parametrize("noise", ["isotropic", "diagonal", "shared"])
def test_squarem_reaches_the_em_fixed_point_in_fewer_steps(noise):
    """SQUAREM extrapolation [design 2.7]: the same fixed point as plain EM, several times fewer E-steps."""
    rng = np.random.default_rng(6)
    truth = random_params(rng, dims=(6, 5, 7), q=2, noise="diagonal")
    Z, observed, _ = sample(rng, truth, 800, missing_rate=0.5)
    start = init_params(Z, observed, 3, generator=torch.Generator().manual_seed(0))  # q=3 > truth: slow EM
    plain, h_plain, n_plain = fit_em(Z, observed, start, max_iter=20000, tol=1e-10, noise=noise, accelerate=False)
    fast, h_fast, n_fast = fit_em(Z, observed, start, max_iter=20000, tol=1e-10, noise=noise, accelerate=True)
    assert abs(h_fast[-1] - h_plain[-1]) <= 1e-6 * abs(h_plain[-1])
    assert n_fast * 3 < n_plain, (n_fast, n_plain)
    np.testing.assert_allclose(log_likelihood(Z, observed, fast).mean().item(), log_likelihood(Z, observed, plain).mean().item(), rtol=1e-6)
    # the same implied covariance (W W^T + Psi is identifiable, W alone only up to rotation)
    cov = lambda p: torch.cat(p.W) @ torch.cat(p.W).T + torch.diag(torch.cat(p.psi))  # noqa: E731
    np.testing.assert_allclose(cov(fast).numpy(), cov(plain).numpy(), atol=2e-3)


def test_em_recovers_noise_and_subspace():
    rng = np.random.default_rng(5)
    truth = random_params(rng, dims=(6, 5, 7), q=2)
    Z, observed, _ = sample(rng, truth, 6000, missing_rate=0.5)
    start = init_params(Z, observed, 2, generator=torch.Generator().manual_seed(0))
    est, _, _ = fit_em(Z, observed, start, max_iter=500, tol=1e-7)
    for m in range(3):
        np.testing.assert_allclose(est.psi[m][0].item(), truth.psi[m][0].item(), rtol=0.1)
        np.testing.assert_allclose(est.mu[m].numpy(), truth.mu[m].numpy(), atol=0.1)
    W_true = torch.cat(truth.W).numpy()
    W_est = torch.cat(est.W).numpy()
    # W is identified up to a rotation of the latent: compare W W^T
    err = np.linalg.norm(W_est @ W_est.T - W_true @ W_true.T) / np.linalg.norm(W_true @ W_true.T)
    assert err < 0.1, err


def test_chunked_em_equals_full_em():
    rng = np.random.default_rng(6)
    truth = random_params(rng)
    Z, observed, _ = sample(rng, truth, 200)
    start = init_params(Z, observed, Q, generator=torch.Generator().manual_seed(0))
    full, h_full, _ = fit_em(Z, observed, start, max_iter=15, tol=0.0)
    chunked, h_chunk, _ = fit_em(Z, observed, start, max_iter=15, tol=0.0, chunk_size=37)
    np.testing.assert_allclose(h_full, h_chunk, rtol=1e-10)
    for a, b in zip(full.W + full.psi, chunked.W + chunked.psi):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-9)


def test_single_modality_maps_equal_posterior_from_that_modality_alone():
    from sklearn_calmrl._latent import single_modality_maps

    rng = np.random.default_rng(7)
    params = random_params(rng, noise="diagonal")
    Z, _, _ = sample(rng, params, 20, missing_rate=0.0)
    for m, (A, c) in enumerate(single_modality_maps(params)):
        only_m = torch.zeros(20, len(DIMS), dtype=torch.bool)
        only_m[:, m] = True
        expected = posterior(Z, only_m, params).mean
        np.testing.assert_allclose((Z[m] @ A.T + c).numpy(), expected.numpy(), atol=1e-10)
