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
    Zhat = impute(post, params)
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
    new = m_step(sufficient_statistics(Z, observed, params), params, noise="isotropic", ridge=0.0)
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


@pytest.mark.parametrize("noise", ["isotropic", "diagonal"])
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


@pytest.mark.parametrize("noise", ["isotropic", "diagonal"])
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
    est, _, _ = fit_em(Z, observed, start, max_iter=500, tol=1e-7, noise="isotropic")
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
    full, h_full, _ = fit_em(Z, observed, start, max_iter=15, tol=0.0, noise="isotropic")
    chunked, h_chunk, _ = fit_em(Z, observed, start, max_iter=15, tol=0.0, noise="isotropic", chunk_size=37)
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


# ----------------------------------------------------------------------------- mixture [design 2.8]
from sklearn_calmrl._latent import MixtureParams, MixturePrior, init_mixture, run_em  # noqa: E402


def _no_prior(params):
    return MixturePrior(0.0, 0.0, 0.0, [torch.zeros_like(m) for m in params.mu], [torch.ones_like(p) for p in params.psi])


def _as_mixture(params):
    """The single model as a one-component mixture without priors."""
    return MixtureParams([params], torch.zeros(1, dtype=torch.float64), _no_prior(params))


def _random_mixture(rng, K=3, noise="isotropic"):
    comps = [random_params(rng, noise=noise) for _ in range(K)]
    for c in comps:  # spread the components apart
        for mu in c.mu:
            mu += torch.tensor(rng.normal(scale=2.0, size=mu.shape[0]))
    w = torch.tensor(rng.dirichlet(np.ones(K)))
    return MixtureParams(comps, torch.log(w), _no_prior(comps[0]))


def test_one_component_mixture_is_the_single_model_exactly():
    rng = np.random.default_rng(11)
    params = random_params(rng, noise="diagonal")
    Z, observed, _ = sample(rng, params, 80)
    mix = _as_mixture(params)
    post, mpost = posterior(Z, observed, params), posterior(Z, observed, mix)
    assert torch.equal(mpost.resp, torch.ones(80, 1, dtype=torch.float64))
    assert torch.equal(mpost.mean, post.mean) and torch.equal(mpost.loglik, log_likelihood(Z, observed, params))
    for a, b in zip(impute(mpost, mix), impute(post, params)):
        assert torch.equal(a, b)
    for a, b in zip(predictive_variance(mpost, mix), predictive_variance(post, params)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    single, _, n1 = run_em(lambda p: sufficient_statistics(Z, observed, p), params, max_iter=12, tol=-1, noise="diagonal", accelerate=False)
    mixed, _, n2 = run_em(lambda p: sufficient_statistics(Z, observed, p), mix, max_iter=12, tol=-1, noise="diagonal", accelerate=False)
    for group_a, group_b in zip(single, mixed.components[0]):
        for a, b in zip(group_a, group_b):
            assert torch.equal(a, b)
    assert n1 == n2 == 12


def _mixture_brute_force(params, z_row, obs_row):
    """Dense Gaussian-mixture conditional of one row: responsibilities, log p(z_O), imputed blocks and their variance."""
    idx = [m for m in range(len(z_row)) if obs_row[m]]
    dims = [w.shape[0] for w in params.components[0].W]
    logs, means, variances = [], [], []
    for comp, log_w in zip(params.components, params.log_weights.numpy()):
        W = np.vstack([w.numpy() for w in comp.W])
        mu = np.concatenate([u.numpy() for u in comp.mu])
        Sigma = W @ W.T + np.diag(np.concatenate([p.numpy() for p in comp.psi]))
        cols = np.concatenate([np.arange(sum(dims[:m]), sum(dims[: m + 1])) for m in idx])
        z = np.concatenate([z_row[m] for m in idx])
        S_oo = Sigma[np.ix_(cols, cols)]
        gain = np.linalg.solve(S_oo, Sigma[cols]).T  # Sigma_{. O} Sigma_OO^-1
        means.append(mu + gain @ (z - mu[cols]))
        variances.append(np.diag(Sigma - gain @ Sigma[cols]))
        logs.append(log_w + multivariate_normal(mu[cols], S_oo).logpdf(z))
    logs = np.array(logs)
    loglik = np.logaddexp.reduce(logs)
    r = np.exp(logs - loglik)
    mean = sum(rc * mc for rc, mc in zip(r, means))
    var = sum(rc * (vc + mc**2) for rc, mc, vc in zip(r, means, variances)) - mean**2
    return r, loglik, mean, var


@pytest.mark.parametrize("noise", ["isotropic", "diagonal"])
def test_mixture_e_step_matches_a_dense_gaussian_mixture_conditional(noise):
    rng = np.random.default_rng(12)
    mix = _random_mixture(rng, K=3, noise=noise)
    Z, observed, _ = sample(rng, mix.components[1], 40, missing_rate=0.7)
    post = posterior(Z, observed, mix)
    imputed, variance = impute(post, mix), predictive_variance(post, mix)
    dims = [z.shape[1] for z in Z]
    for i in range(40):
        r, loglik, mean, var = _mixture_brute_force(mix, [z[i].numpy() for z in Z], observed[i].numpy())
        np.testing.assert_allclose(post.resp[i].numpy(), r, atol=1e-10)
        np.testing.assert_allclose(post.loglik[i].item(), loglik, atol=1e-9)
        for m in range(len(Z)):
            if not observed[i, m]:
                cols = slice(sum(dims[:m]), sum(dims[: m + 1]))
                np.testing.assert_allclose(imputed[m][i].numpy(), mean[cols], atol=1e-9)
                np.testing.assert_allclose(variance[m][i].numpy(), var[cols], atol=1e-9)


def test_mixture_em_never_decreases_loglik_and_init_from_one_model():
    rng = np.random.default_rng(13)
    truth = _random_mixture(rng, K=3)
    parts = [sample(rng, c, 150, missing_rate=0.4) for c in truth.components]
    Z = [torch.cat([p[0][m] for p in parts]) for m in range(3)]
    observed = torch.cat([p[1] for p in parts])
    base, _, _ = fit_em(Z, observed, init_params(Z, observed, Q, generator=torch.Generator().manual_seed(0)), max_iter=50, tol=1e-4, noise="isotropic")
    start = init_mixture(Z, observed, base, 3, generator=torch.Generator().manual_seed(0), prior_strength=(0.0, 0.0, 0.0))
    _, history, _ = run_em(lambda p: sufficient_statistics(Z, observed, p), start, max_iter=40, tol=0.0, noise="isotropic", accelerate=False)
    assert np.all(np.diff(history) >= -1e-9) and history[-1] > history[0]
    _, fast, _ = run_em(lambda p: sufficient_statistics(Z, observed, p), start, max_iter=40, tol=0.0, noise="isotropic", accelerate=True)
    assert np.all(np.diff(fast) >= -1e-9) and fast[-1] >= history[-1] - 1e-6
    # three well separated clusters: the mixture explains the rows better than one Gaussian
    assert history[-1] > log_likelihood(Z, observed, base).mean().item() + 0.5


def test_mixture_prior_keeps_unseen_blocks_at_the_population():
    """A component that never sees a modality gets the modality's mean and variance, not arbitrary values."""
    rng = np.random.default_rng(14)
    params = random_params(rng)
    Z, observed, _ = sample(rng, params, 200)
    base = params
    mix = init_mixture(Z, observed, base, 2, generator=torch.Generator().manual_seed(0))
    post = posterior(Z, observed, mix)
    stats = sufficient_statistics(Z, observed, mix, post)
    stats.components[0].count[2] = 0.0  # component 0 sees no row of modality 2
    for t in stats.components[0].A[2], stats.components[0].C[2], stats.components[0].S[2]:
        t.zero_()
    new = m_step(stats, mix, noise="isotropic")
    torch.testing.assert_close(new.components[0].mu[2], mix.prior.mu_target[2])
    torch.testing.assert_close(new.components[0].psi[2], mix.prior.noise_target[2].mean().expand(5))
    assert torch.all(new.components[0].W[2] == 0)


# ----------------------------------------------------------------------------- local correction [design 2.9]
from sklearn_calmrl._latent import CentreCache, impute_calibrated, local_corrections, training_centres  # noqa: E402


def _assert_kernel_average(correction, variance, d2, resid, seen_m, h, atol):
    """A query's correction and spread are the dense kernel average of the residuals of the stored rows observing m."""
    w = np.zeros_like(d2)
    w[seen_m] = np.exp(-(d2[seen_m] - d2[seen_m].min()) / (2 * h))
    w /= w.sum()
    np.testing.assert_allclose(correction.numpy(), w @ resid, atol=atol)
    np.testing.assert_allclose(variance.numpy(), w @ resid**2 - (w @ resid) ** 2, atol=atol)


@pytest.mark.parametrize("h", [0.3, 1e-7])  # 1e-7: the nearest stored row often misses the block to impute
def test_local_correction_matches_a_dense_kernel(h):
    rng = np.random.default_rng(15)
    params = random_params(rng, noise="diagonal")
    Zc, oc, _ = sample(rng, params, 60, missing_rate=0.5)
    Zq, oq, _ = sample(rng, params, 25, missing_rate=0.8)
    corr, var = local_corrections(Zq, oq, params, training_centres(Zc, oc, params), h, chunk_size=7)
    filled = [f.numpy() for f in impute_calibrated(Zc, oc, params)]
    dims = [z.shape[1] for z in Zq]
    for i in range(25):
        seen = [m for m in range(3) if oq[i, m]]
        if not seen or len(seen) == 3:
            assert all(torch.all(c[i] == 0) for c in corr)
            continue
        W = np.vstack([params.W[m].numpy() for m in seen])
        psi_o = np.concatenate([params.psi[m].numpy() for m in seen])
        C_oo = W @ W.T + np.diag(psi_o)
        zq = np.concatenate([Zq[m][i].numpy() for m in seen])
        xc = np.hstack([filled[m] for m in seen])
        diff = xc - zq
        d2 = (diff**2 / psi_o).sum(axis=1) / sum(dims[m] for m in seen)  # the distance in units of the noise [design 2.9]
        for m in [m for m in range(3) if not oq[i, m]]:
            # the residual of centre j: its block m minus the model's conditional mean from its blocks O
            gain = (params.W[m].numpy() @ W.T) @ np.linalg.inv(C_oo)
            resid = filled[m] - (params.mu[m].numpy() + (xc - np.concatenate([params.mu[k].numpy() for k in seen])) @ gain.T)
            _assert_kernel_average(corr[m][i], var[m][i], d2, resid, oc[:, m].numpy(), h, atol=1e-9)


def test_local_correction_of_a_mixture_matches_a_dense_kernel():
    """The correction wraps any latent model (design 2.9, 2.13): for a mixture, the kernel's distance is in units of
    the mixture's mean noise variances and the residuals are against the dense mixture conditional of each stored
    row."""
    rng = np.random.default_rng(19)
    mix = _random_mixture(rng, K=3, noise="diagonal")
    Zc, oc, _ = sample(rng, mix.components[0], 50, missing_rate=0.5)
    Zq, oq, _ = sample(rng, mix.components[2], 20, missing_rate=0.8)
    h = 0.4
    corr, var = local_corrections(Zq, oq, mix, training_centres(Zc, oc, mix), h, chunk_size=6)
    dims = [z.shape[1] for z in Zq]
    offsets = np.cumsum([0] + dims)
    pi = np.exp(mix.log_weights.numpy())
    psi = sum(p * np.concatenate([q.numpy() for q in c.psi]) for p, c in zip(pi, mix.components))  # sum_c pi_c Psi_c
    filled = np.stack([np.concatenate(row) for row in zip(*[f.numpy() for f in impute_calibrated(Zc, oc, mix)])])
    for i in range(20):
        seen = [m for m in range(3) if oq[i, m]]
        if not seen or len(seen) == 3:
            assert all(torch.all(c[i] == 0) for c in corr)
            continue
        cols = np.concatenate([np.arange(offsets[m], offsets[m + 1]) for m in seen])
        zq = np.concatenate([Zq[m][i].numpy() for m in seen])
        diff = filled[:, cols] - zq
        d2 = (diff**2 / psi[cols]).sum(axis=1) / len(cols)
        alone = np.stack([_mixture_brute_force(mix, [row[offsets[m] : offsets[m + 1]] for m in range(3)], oq[i].numpy())[2] for row in filled])
        for m in [m for m in range(3) if not oq[i, m]]:
            block = slice(offsets[m], offsets[m + 1])
            resid = filled[:, block] - alone[:, block]
            _assert_kernel_average(corr[m][i], var[m][i], d2, resid, oc[:, m].numpy(), h, atol=1e-8)


def test_local_correction_cache_changes_nothing():
    """The stored rows' terms kept across calls (the chunks of one transform) give the same corrections."""
    rng = np.random.default_rng(17)
    params = random_params(rng)
    Zc, oc, _ = sample(rng, params, 40, missing_rate=0.5)
    fresh = [local_corrections(*sample(np.random.default_rng(i), params, 30, missing_rate=0.7)[:2], params, training_centres(Zc, oc, params), 0.2) for i in range(2)]
    for max_bytes, kept in ((1 << 20, True), (0, False)):
        cache = CentreCache(max_bytes)
        for i in range(2):
            again = local_corrections(*sample(np.random.default_rng(i), params, 30, missing_rate=0.7)[:2], params, training_centres(Zc, oc, params), 0.2, cache=cache)
            for a, b in zip(again[0] + again[1], fresh[i][0] + fresh[i][1]):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert bool(cache.patterns) == kept


def test_local_correction_without_the_spread_corrects_alike():
    """``return_variance=False`` (what transform uses) leaves out the r^2 columns, not the correction."""
    rng = np.random.default_rng(18)
    params = random_params(rng, noise="diagonal")
    Zc, oc, _ = sample(rng, params, 50, missing_rate=0.5)
    Zq, oq, _ = sample(rng, params, 40, missing_rate=0.8)
    for h in (0.3, 1e-7):
        with_spread, _ = local_corrections(Zq, oq, params, training_centres(Zc, oc, params), h, chunk_size=9)
        alone, variances = local_corrections(Zq, oq, params, training_centres(Zc, oc, params), h, chunk_size=9, return_variance=False)
        assert variances is None
        for a, b in zip(alone, with_spread):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_local_correction_recovers_a_stored_row_at_small_bandwidth():
    rng = np.random.default_rng(16)
    params = random_params(rng)
    Zc, _, _ = sample(rng, params, 50, missing_rate=0.0)
    oc = torch.ones(50, 3, dtype=torch.bool)
    query = [z[:5].clone() for z in Zc]
    oq = oc[:5].clone()
    oq[:, 1] = False  # hide modality 1 of five stored rows
    corr, _ = local_corrections(query, oq, params, training_centres(Zc, oc, params), 1e-6)
    imputed = impute(posterior(query, oq, params), params)[1] + corr[1]
    torch.testing.assert_close(imputed, Zc[1][:5], atol=1e-8, rtol=0)  # the nearest stored row is the row itself
    wide, _ = local_corrections(query, oq, params, training_centres(Zc, oc, params), 1e12)  # h -> inf: every centre weighs the same
    filled = impute_calibrated(Zc, oc, params)
    m_o = posterior([filled[0], torch.zeros_like(filled[1]), filled[2]], oq[:1].expand(50, 3), params)
    uniform = (filled[1] - impute(m_o, params)[1]).mean(dim=0)
    torch.testing.assert_close(wide[1], uniform.expand(5, -1), atol=1e-9, rtol=0)


def test_variance_explained_matches_a_brute_force_reconstruction():
    """R^2 per modality and latent dimension from W_m[:, j] m_ij, computed by hand (design 2.12, issue 21)."""
    import numpy as np

    from sklearn_calmrl import MultiViewPPCA
    from sklearn_calmrl.datasets import make_latent_modalities

    X, mods, _ = make_latent_modalities(n_samples=400, block_sizes=(6, 5, 4), latent_dim=2, noise=0.3, random_state=0)
    rng = np.random.default_rng(0)
    X = np.hstack([X, rng.standard_normal((400, 5))])  # a fourth block of pure noise
    mods = dict(mods, noise=list(range(15, 20)))
    est = MultiViewPPCA(mods, latent_dim=2, local_bandwidth=None, add_indicator=False, random_state=0).fit(X)
    S = (X - est.feature_mean_) / est.feature_scale_
    M = est.set_params(output="latent").transform(X)
    for m, cols in enumerate(mods.values()):
        y = S[:, cols] - est.means_[m]
        for j in range(2):
            want = 1 - ((y - np.outer(M[:, j], est.components_[m][:, j])) ** 2).sum() / (y**2).sum()
            np.testing.assert_allclose(est.variance_explained_[m, j], want, rtol=1e-8, atol=1e-10)
        want = 1 - ((y - M @ est.components_[m].T) ** 2).sum() / (y**2).sum()
        np.testing.assert_allclose(est.variance_explained_total_[m], want, rtol=1e-8, atol=1e-10)
    assert est.variance_explained_total_[:3].min() > 0.5 and est.variance_explained_total_[3] < 0.1


# ----------------------------------------------------------------------------- imputation confidence [design 2.14]
from itertools import combinations  # noqa: E402

from sklearn_calmrl._latent import imputation_confidence  # noqa: E402


def _dense_confidence(params, obs_row, m):
    """tr(Sigma_mO Sigma_OO^-1 Sigma_Om) / tr(W_m W_m^T): the signal variance of block m the dense conditional removes."""
    seen = [k for k in range(len(params.W)) if obs_row[k]]
    W_m = params.W[m].numpy()
    if not seen:
        return 0.0
    W_o = np.vstack([params.W[k].numpy() for k in seen])
    Sigma_oo = W_o @ W_o.T + np.diag(np.concatenate([params.psi[k].numpy() for k in seen]))
    Sigma_mo = W_m @ W_o.T
    return np.trace(Sigma_mo @ np.linalg.solve(Sigma_oo, Sigma_mo.T)) / np.trace(W_m @ W_m.T)


@pytest.mark.parametrize("noise", ["isotropic", "diagonal"])
def test_imputation_confidence_matches_a_dense_gaussian_conditional(noise):
    rng = np.random.default_rng(20)
    params = random_params(rng, noise=noise)
    Z, observed, _ = sample(rng, params, 40, missing_rate=0.8)
    observed[0] = False  # nothing observed: every imputation is the mean
    w = imputation_confidence(posterior(Z, observed, params), params, observed)
    assert w.shape == (40, 3)
    assert torch.all(w[observed] == 1)
    for i in range(40):
        for m in np.flatnonzero(~observed[i].numpy()):
            np.testing.assert_allclose(w[i, m].item(), _dense_confidence(params, observed[i].numpy(), m), atol=1e-12)
    some = observed.any(1, keepdim=True) & ~observed
    assert torch.all(w[some] > 0) and torch.all(w[some] < 1) and torch.all(w[0] < 1e-12)  # 0 up to rounding


def test_imputation_confidence_grows_with_the_observed_blocks():
    rng = np.random.default_rng(21)
    params = random_params(rng, dims=(4, 3, 5, 2), q=3, noise="diagonal")
    subsets = [s for r in range(4) for s in combinations(range(3), r)]  # every subset of blocks 0..2; block 3 missing
    observed = torch.tensor([[k in s for k in range(4)] for s in subsets])
    Z = [torch.zeros(len(subsets), d, dtype=torch.float64) for d in (4, 3, 5, 2)]
    w = imputation_confidence(posterior(Z, observed, params), params, observed)[:, 3]
    for a, small in enumerate(subsets):
        for b, large in enumerate(subsets):
            if set(small) < set(large):
                assert w[b] > w[a], (small, large)


def test_imputation_confidence_of_a_mixture_and_of_a_block_without_signal():
    rng = np.random.default_rng(22)
    params = random_params(rng, noise="diagonal")
    Z, observed, _ = sample(rng, params, 30, missing_rate=0.8)
    single = imputation_confidence(posterior(Z, observed, params), params, observed)
    mix = _as_mixture(params)
    torch.testing.assert_close(imputation_confidence(posterior(Z, observed, mix), mix, observed), single, atol=1e-12, rtol=0)
    mix = _random_mixture(rng, K=3, noise="diagonal")
    w = imputation_confidence(posterior(Z, observed, mix), mix, observed)
    assert torch.all(w[observed] == 1) and torch.all((w >= 0) & (w <= 1))
    silent = params._replace(W=[params.W[0], params.W[1], torch.zeros_like(params.W[2])])
    w = imputation_confidence(posterior(Z, observed, silent), silent, observed)
    assert torch.all(w[~observed[:, 2], 2] == 0)  # an imputation that can only be the mean


def test_weighted_stored_rows_equal_repeated_ones():
    """A stored row of weight w counts as w copies of it (design 2.9): the correction with integer weights equals the
    correction with every row repeated that many times."""
    rng = np.random.default_rng(21)
    params = random_params(rng, noise="diagonal")
    Zc, oc, _ = sample(rng, params, 30, missing_rate=0.5)
    Zq, oq, _ = sample(rng, params, 40, missing_rate=0.8)
    counts = torch.as_tensor(rng.integers(1, 4, size=30))
    weighted = local_corrections(Zq, oq, params, training_centres(Zc, oc, params, counts.double()), 0.3)
    repeated = training_centres([z.repeat_interleave(counts, dim=0) for z in Zc], oc.repeat_interleave(counts, dim=0), params)
    repeated = local_corrections(Zq, oq, params, repeated, 0.3)
    for a, b in zip(weighted[0] + weighted[1], repeated[0] + repeated[1]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_representatives_of_repeated_rows_are_the_distinct_rows():
    """D^2 sampling never draws a row at distance 0 from a drawn one, so representatives of rows repeated 3 times are
    the distinct rows, each of weight 3, and the correction they give is the one of every row (design 2.9)."""
    from sklearn_calmrl._latent import representatives

    rng = np.random.default_rng(22)
    params = random_params(rng)
    Zc, oc, _ = sample(rng, params, 20, missing_rate=0.4)
    every = training_centres([z.repeat(3, 1) for z in Zc], oc.repeat(3, 1), params)
    kept = representatives(every, params, 20, torch.Generator().manual_seed(0))
    assert torch.all(kept.weights == 3) and torch.equal(kept.counts, 3 * oc.double()[_order(kept.rows[0], Zc, oc, params)])
    Zq, oq, _ = sample(rng, params, 15, missing_rate=0.8)
    full, few = local_corrections(Zq, oq, params, every, 0.3), local_corrections(Zq, oq, params, kept, 0.3)
    for a, b in zip(full[0] + full[1], few[0] + few[1]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    small = training_centres(Zc, oc, params)
    assert representatives(small, params, 50, None) is small  # no more rows than asked: every row stands for itself
    a = representatives(every, params, 7, torch.Generator().manual_seed(1))
    b = representatives(every, params, 7, torch.Generator().manual_seed(1))
    assert torch.equal(a.weights, b.weights) and float(a.weights.sum()) == 60.0 and torch.equal(a.counts.sum(0), 3 * oc.double().sum(0))


def test_a_group_contributes_the_mean_residual_of_its_rows():
    """A centre that stands for a group sits at the group's mean row and contributes to a block the residual of the
    mean of that block over the group's rows that observe it (design 2.9): with one group the correction of a query
    is exactly that residual, for one linear model."""
    from sklearn_calmrl._latent import representatives

    rng = np.random.default_rng(23)
    params = random_params(rng)
    Zc, oc, _ = sample(rng, params, 12, missing_rate=0.5)
    one = representatives(training_centres(Zc, oc, params), params, 1, torch.Generator().manual_seed(0))
    filled = impute_calibrated(Zc, oc, params)
    for m in range(3):
        seen = oc[:, m]
        torch.testing.assert_close(one.rows[m][0], filled[m].mean(dim=0))
        torch.testing.assert_close(one.given[m][0], filled[m][seen].mean(dim=0))
    Zq, oq, _ = sample(rng, params, 10, missing_rate=0.8)
    corr, _ = local_corrections(Zq, oq, params, one, 0.3)
    for i in range(10):
        pattern = oq[i : i + 1]
        if pattern.all() or not pattern.any():
            continue
        alone = params.impute(params.posterior(one.rows, pattern))
        for m in range(3):
            if not pattern[0, m]:
                torch.testing.assert_close(corr[m][i], one.given[m][0] - alone[m][0])


def _order(rows, Z, observed, params):
    """The index, in ``Z``, of each of ``rows`` (completed rows equal to rows of ``Z`` completed)."""
    filled = impute_calibrated(Z, observed, params)[0]
    return torch.cdist(rows, filled).argmin(dim=1)
