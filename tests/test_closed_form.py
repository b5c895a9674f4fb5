"""The closed-form model of the blocks: cross-fitted weights and variance factors, EM warnings, the output's width,
incremental EM."""

import numpy as np
import pytest
import torch

from sklearn_calmrl import MultiViewPPCA
from sklearn_calmrl.datasets import ampute_modalities, make_latent_modalities


def _with_noise_columns(n=400, seed=0):
    """Three latent-model blocks; the last gains 6 columns of pure noise, then a random half of the rows lose one block."""
    X, mods, _ = make_latent_modalities(n_samples=n, block_sizes=(6, 5, 4), latent_dim=2, noise=0.2, random_state=seed)
    rng = np.random.default_rng(seed)
    X = np.hstack([X, rng.standard_normal((n, 6))])
    mods = {name: list(cols) for name, cols in mods.items()}
    last = list(mods)[-1]
    mods[last] = mods[last] + list(range(X.shape[1] - 6, X.shape[1]))
    X = X.copy()
    for i in rng.choice(n, n // 2, replace=False):
        X[i, mods[list(mods)[rng.integers(3)]]] = np.nan
    return X, mods


@pytest.mark.parametrize("local_bandwidth", [None, 0.3])
def test_imputation_weights_keep_predictable_features_and_drop_noise(local_bandwidth):
    X, mods = _with_noise_columns()
    est = MultiViewPPCA(mods, latent_dim=2, local_bandwidth=local_bandwidth, random_state=0).fit(X)
    weights = [a.numpy() for a in est._block_model().imputation_weights]
    assert [w.shape[0] for w in weights] == [len(c) for c in mods.values()]
    assert all(((w >= 0) & (w <= 1)).all() for w in weights)
    assert min(w.min() for w in weights[:2]) > 0.8  # features the other blocks predict keep their imputation
    assert weights[2][:4].min() > 0.6  # (.67 to 1 over random_state 0-3: the block shares its loadings with noise)
    assert np.median(weights[2][4:]) < 0.3  # noise columns are imputed by (nearly) their mean
    again = MultiViewPPCA(mods, latent_dim=2, local_bandwidth=local_bandwidth, random_state=0).fit(X)
    for a, b in zip(weights, again._block_model().imputation_weights):
        np.testing.assert_array_equal(a, b.numpy())


def test_weights_scale_only_the_imputed_entries():
    """Output with the weights = observed blocks as they are, imputed entries times a_j [design 2.11]."""
    X, mods = _with_noise_columns(seed=1)
    est = MultiViewPPCA(mods, latent_dim=2, add_indicator=False, random_state=0).fit(X)
    shrunk, (filled, std) = est.transform(X), est.impute(X, return_std=True)
    weights, scales = est._block_model().imputation_weights, est._block_model().variance_scales
    est._block_model().imputation_weights = est._block_model().variance_scales = None
    plain, (plain_filled, plain_std) = est.transform(X), est.impute(X, return_std=True)
    np.testing.assert_allclose(std, plain_std * np.sqrt(torch.cat(scales).numpy()), rtol=1e-10)  # std scaled by sqrt(c_j)
    a = torch.cat(weights).numpy()
    missing = np.isnan(X)
    np.testing.assert_allclose(shrunk[~missing], plain[~missing])
    np.testing.assert_allclose(shrunk[missing], (plain * a)[missing], rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(filled[~missing], X[~missing])
    mean, scale = est.feature_mean_, est.feature_scale_
    np.testing.assert_allclose(filled[missing], (((plain_filled - mean) / scale * a) * scale + mean)[missing], rtol=1e-10, atol=1e-12)


def test_imputation_weights_reduce_held_out_imputation_error():
    """On rows never seen in fit, the weighted imputation errs less than the plain one on the noisy block."""
    X, mods = _with_noise_columns(n=800, seed=2)
    train, test = X[:400], X[400:]
    est = MultiViewPPCA(mods, latent_dim=2, random_state=0).fit(train)
    full = test[~np.isnan(test).any(axis=1)]
    hidden = full.copy()
    last = mods[list(mods)[-1]]
    hidden[:, last] = np.nan
    err = np.mean((est.impute(hidden)[:, last] - full[:, last]) ** 2)
    est._block_model().imputation_weights = None
    err_plain = np.mean((est.impute(hidden)[:, last] - full[:, last]) ** 2)
    assert err < err_plain


@pytest.mark.parametrize("loader", ["load_multiple_features", "load_image_segmentation"])
def test_predictive_std_covers_95_percent_of_held_out_errors(loader):
    """1.96 predictive std cover 95% +- 3 points of the errors of imputed held-out blocks (issue 21, design 2.11)."""
    from sklearn.model_selection import train_test_split

    from sklearn_calmrl import datasets
    from sklearn_calmrl.datasets import ampute_modalities

    data = getattr(datasets, loader)()
    train, test = train_test_split(np.arange(len(data.target)), test_size=0.3, random_state=0, stratify=data.target)
    X = ampute_modalities(data.data, data.modalities, rate=0.5, random_state=0)
    est = MultiViewPPCA(data.modalities, random_state=0).fit(X[train])
    rng = np.random.RandomState(0)
    held, hidden = X[test].copy(), np.zeros(X[test].shape, dtype=bool)
    for i in range(len(test)):
        seen = [cols for cols in data.modalities.values() if not np.isnan(held[i, cols]).all()]
        if len(seen) >= 2:
            cols = seen[rng.randint(len(seen))]
            held[i, cols], hidden[i, cols] = np.nan, True
    filled, std = est.impute(held, return_std=True)
    z = np.abs(filled - data.data[test])[hidden] / std[hidden]
    assert 0.92 <= np.mean(z <= 1.96) <= 0.98


def test_user_visible_em_warns_when_it_stops_at_its_cap():
    """MultiViewPPCA's EM capped below convergence warns (ConvergenceWarning); the default fit does not (issue 18)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    X, mods = _with_noise_columns()
    with pytest.warns(ConvergenceWarning, match=r"stopped at its cap of 2 steps.*raise max_iter"):
        MultiViewPPCA(mods, latent_dim=2, max_iter=2, random_state=0).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MultiViewPPCA(mods, latent_dim=2, random_state=0).fit(X)


# ----------------------------------------------------------------------------- the output's width [design 5.1]
@pytest.mark.parametrize("exact_below", [10_000, 8])  # an exact SVD, and the randomized one
def test_principal_axes_are_the_leading_right_singular_vectors(exact_below):
    from sklearn_calmrl._closed_form import principal_axes

    rng = np.random.default_rng(0)
    # a block of rank-6 signal with decaying scales, plus a little noise
    B = (rng.normal(size=(300, 6)) * [20, 15, 10, 8, 6, 5]) @ rng.normal(size=(6, 120)) + 0.1 * rng.normal(size=(300, 120))
    A = principal_axes(torch.as_tensor(B), 4, torch.Generator().manual_seed(0), exact_below=exact_below).numpy()
    assert A.shape == (120, 4)
    np.testing.assert_allclose(A.T @ A, np.eye(4), atol=1e-10)
    Vt = np.linalg.svd(B - B.mean(axis=0), full_matrices=False)[2][:4]
    np.testing.assert_allclose(np.abs(np.sum(A * Vt.T, axis=0)), 1.0, atol=1e-8)  # the same axes, up to sign
    assert np.all(A[np.abs(A).argmax(axis=0), range(4)] > 0)  # the sign convention: the largest loading is positive
    assert principal_axes(torch.as_tensor(B), 120, None) is None and principal_axes(torch.as_tensor(B), None, None) is None
    few = principal_axes(torch.as_tensor(B[:3]), 5, None).numpy()  # fewer rows than axes: the rest are zero
    assert few.shape == (120, 5) and np.all(few[:, 2:] == 0)


def test_wide_blocks_enter_the_output_as_their_principal_scores():
    """``max_block_width`` bounds the output [design 5.1]: a block of 2,000 features gives 256 columns (its scores on
    its leading axes from the training rows that observe it), a narrow one all of its own; ``impute`` keeps every
    column, and the scores are the completed standardized block times the axes."""
    from sklearn_calmrl import CalMRLTransformer, MultiViewPPCA
    from sklearn_calmrl.datasets import ampute_modalities, make_latent_modalities

    X, mods, _ = make_latent_modalities(300, block_sizes=(2000, 40, 150), latent_dim=4, random_state=0)
    X = ampute_modalities(X, mods, rate=0.4, random_state=0)
    ppca = MultiViewPPCA(mods, random_state=0).fit(X)
    Z = ppca.transform(X)
    assert Z.shape == (300, 256 + 40 + 150 + 3)  # the input has 2,190 columns
    names = ppca.get_feature_names_out()
    assert names[0] == "m0_pc0" and names[256] == "x2000" and names[296] == "x2040" and names[-1] == "observed_m2"
    assert ppca.impute(X).shape == X.shape
    standardized = (ppca.impute(X) - ppca.feature_mean_) / ppca.feature_scale_
    axes = ppca._block_model().axes
    assert axes[1] is None and axes[2] is None and axes[0].shape == (2000, 256)
    np.testing.assert_allclose(Z[:, :256], standardized[:, :2000] @ axes[0].numpy(), atol=1e-8)
    np.testing.assert_allclose(Z[:, 256:446], standardized[:, 2000:], atol=1e-10)
    narrow = MultiViewPPCA(mods, max_block_width=64, random_state=0).fit(X)
    assert narrow.transform(X).shape == (300, 64 + 40 + 64 + 3)
    whole = MultiViewPPCA(mods, max_block_width=None, random_state=0).fit(X)
    assert whole.transform(X).shape == (300, 2190 + 3)
    calmrl = CalMRLTransformer(mods, max_epochs=1, random_state=0).fit(X)
    q = calmrl.latent_dim_
    assert calmrl.transform(X).shape == (300, 3 * q + 256 + 40 + 150 + 3)
    np.testing.assert_allclose(calmrl.transform(X)[:, 3 * q :], Z, atol=1e-8)  # the same blocks as MultiViewPPCA's


# ----------------------------------------------------------------------------- incremental EM [design 3.2]
def _model_summary(est):
    W = np.concatenate(est.components_)
    return {"WWt": W @ W.T, "mu": np.concatenate(est.means_), "noise": est.noise_variance_}


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_partial_fit_of_the_closed_form_model_reaches_full_batch_em():
    """Incremental EM over 5 chunks, 20 passes, reaches the full-batch EM fixed point to 1e-3 relative.

    The data are noisy (noise sd 2 on N(0, 1) loadings) so that EM itself converges fast: with small
    noise, EM's mean/latent-shift direction contracts by about 1 - s^2 / (s^2 + ||W||^2) per iteration
    for full-batch and incremental EM alike, and reaching 1e-3 takes thousands of iterations.
    """
    X, mods, _ = make_latent_modalities(1500, block_sizes=(6, 5, 4, 5), latent_dim=2, noise=2.0, random_state=0)
    X = ampute_modalities(X, mods, rate=0.3, random_state=0)
    kw = dict(latent_dim=2, standardize=False, device="cpu", random_state=0)
    full = _model_summary(MultiViewPPCA(mods, tol=1e-10, **kw).fit(X))
    inc = MultiViewPPCA(mods, **kw)
    chunks = np.array_split(X, 5)
    for _ in range(20):
        for chunk in chunks:
            inc.partial_fit(chunk)
    got = _model_summary(inc)
    for name in full:
        assert _rel(got[name], full[name]) < 1e-3, name
    # revisited chunks replace their contribution: the totals count every row once
    assert inc._block_model().statistics.total.n_rows == X.shape[0]
    assert inc.n_iter_ == 100 and inc.n_samples_seen_ == 100 * 300 and len(inc.loglik_curve_) == 100
