"""MultiViewPPCA: the closed-form model alone, and the model of the blocks inside CalMRLTransformer."""

import numpy as np
import pytest

from sklearn_calmrl import CalMRLTransformer, MultiViewPPCA
from sklearn_calmrl.datasets import ampute_modalities, load_image_segmentation, load_multiple_features, make_latent_modalities


@pytest.fixture(scope="module")
def segment():
    data = load_image_segmentation()
    return ampute_modalities(data.data[::3], data.modalities, rate=0.5, random_state=0), data.modalities


@pytest.mark.parametrize("noise", ["isotropic", "diagonal"])
def test_calmrl_block_model_is_this_estimator(segment, noise):
    """Composition (issue 18): CalMRLTransformer's closed-form model of the blocks is a fitted MultiViewPPCA, the
    same as fitting MultiViewPPCA alone, and its blocks and imputations are the transformer's."""
    X, mods = segment
    kw = dict(latent_dim=4, noise=noise, device="cpu", random_state=0)
    ppca = MultiViewPPCA(mods, add_indicator=False, **kw).fit(X)
    calmrl = CalMRLTransformer(mods, max_epochs=1, add_indicator=False, **kw).fit(X)
    block = calmrl.block_model_
    assert isinstance(block, MultiViewPPCA) and block.get_params() == ppca.get_params()
    np.testing.assert_array_equal(ppca.transform(X), block.transform(X))
    np.testing.assert_array_equal(ppca.score_samples(X), block.score_samples(X))
    for a, b in zip(ppca.components_, block.components_):
        np.testing.assert_array_equal(a, b)
    assert ppca.n_iter_ == block.n_iter_ and ppca.loglik_curve_ == block.loglik_curve_
    np.testing.assert_array_equal(calmrl.impute(X), ppca.impute(X))
    np.testing.assert_array_equal(calmrl.variance_explained_, ppca.variance_explained_)
    blocks_out = calmrl.transform(X)[:, -X.shape[1] :]  # the concat output ends with the calibrated blocks
    np.testing.assert_array_equal(blocks_out, ppca.transform(X))


def test_partial_fit_equals_the_calmrl_block_model():
    X, mods, _ = make_latent_modalities(300, block_sizes=(4, 3, 3), latent_dim=2, random_state=0)
    X = ampute_modalities(X, mods, rate=0.3, random_state=0)
    a = MultiViewPPCA(mods, latent_dim=2, device="cpu", random_state=0)
    c = CalMRLTransformer(mods, latent_dim=2, device="cpu", random_state=0)
    for chunk in np.array_split(X, 3):
        a.partial_fit(chunk)
        c.partial_fit(chunk)
    np.testing.assert_array_equal(a.set_params(add_indicator=False).transform(X), c.block_model_.transform(X))
    np.testing.assert_array_equal(a.impute(X), c.impute(X))  # the transformer's block model learns incrementally too
    assert a.n_samples_seen_ == c.n_samples_seen_ == X.shape[0]


def test_has_no_torch_training_attributes(segment):
    X, mods = segment
    est = MultiViewPPCA(mods, latent_dim=3, random_state=0).fit(X)
    assert not hasattr(est, "encoders_") and not hasattr(est, "loss_curve_")
    assert np.all(np.diff(est.loglik_curve_) >= -1e-8)  # EM is monotone


def test_impute_is_the_standardized_imputation_in_the_callers_units(segment):
    X, mods = segment
    X = X.copy()
    rows = np.flatnonzero(~np.isnan(X[:, mods["shape"]]).all(axis=1))[:3]
    X[rows[0], mods["shape"][2]] = np.nan  # a partial NaN inside an observed block
    est = MultiViewPPCA(mods, latent_dim=3, random_state=0).fit(X)
    filled, std = est.impute(X, return_std=True)
    reps, variances = est._completed_blocks(*est._inference_input(X), est._block_model())  # the standardized completion
    assert not np.isnan(filled).any() and filled.shape == X.shape and filled.dtype == np.float64
    for name, cols in mods.items():
        missing = np.isnan(X[:, cols]).all(axis=1)
        scale, mean = est.feature_scale_[cols], est.feature_mean_[cols]
        m = list(mods).index(name)
        np.testing.assert_allclose(filled[np.ix_(missing, cols)], reps[m][missing] * scale + mean, rtol=1e-12)
        np.testing.assert_allclose(std[np.ix_(missing, cols)], np.sqrt(variances[m][missing]) * scale, rtol=1e-12)
        observed = ~missing[:, None] & ~np.isnan(X[:, cols])
        np.testing.assert_array_equal(filled[:, cols][observed], X[:, cols][observed])  # observed values untouched
        assert np.all(std[:, cols][observed] == 0) and np.all(std[np.ix_(missing, cols)] > 0)
    j = mods["shape"][2]
    assert filled[rows[0], j] == est.feature_mean_[j] and std[rows[0], j] == est.feature_scale_[j]
    assert est.impute(X.astype(np.float32)).dtype == np.float32


def test_impute_of_a_complete_row_is_the_row_and_torch_encoders_impute_with_their_start(segment):
    X, mods = segment
    complete = ~np.isnan(X).any(axis=1)
    est = MultiViewPPCA(mods, latent_dim=3, random_state=0).fit(X)
    np.testing.assert_array_equal(est.impute(X[complete]), X[complete])
    # torch encoders start from the same closed-form model of the blocks: impute() uses it
    deep = CalMRLTransformer(mods, latent_dim=3, max_epochs=1, device="cpu", random_state=0).fit(X)
    np.testing.assert_allclose(deep.impute(X), est.impute(X), rtol=1e-10, atol=1e-10)


def test_mixture_composes_with_the_default_local_correction():
    """``n_components`` with the default ``local_bandwidth`` (issue 18): the correction wraps the mixture."""
    import warnings

    data = load_image_segmentation()
    X = ampute_modalities(data.data[:400], data.modalities, rate=0.5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mixed = MultiViewPPCA(data.modalities, n_components="auto", random_state=0).fit(X)
    plain = MultiViewPPCA(data.modalities, n_components=mixed.n_components_, local_bandwidth=None, random_state=0).fit(X)
    assert mixed.local_bandwidth == 0.3 and mixed._block_model().centres is not None
    filled, bare = mixed.impute(X), plain.impute(X)
    observed = ~np.isnan(X)
    np.testing.assert_array_equal(filled[observed], X[observed])
    assert np.isfinite(filled).all() and not np.allclose(filled[~observed], bare[~observed])


def test_imputes_missing_blocks_from_the_observed_ones():
    """The imputed standardized block, from the other modalities, is far better than the block's mean (0)."""
    data = load_multiple_features()
    mods = data.modalities
    X = ampute_modalities(data.data, mods, rate=0.5, random_state=0)
    est = MultiViewPPCA(mods, latent_dim=16, random_state=0).fit(X)
    cols = mods["kar"]
    missing = np.isnan(X[:, cols]).all(axis=1)
    scale, mean = est.feature_scale_[cols], est.feature_mean_[cols]
    imputed = (est.impute(X)[:, cols] - mean) / scale
    truth = (data.data[:, cols] - mean) / scale
    err_impute = np.mean((imputed[missing] - truth[missing]) ** 2)
    err_mean = np.mean(truth[missing] ** 2)
    assert err_impute < 0.7 * err_mean


def test_score_is_mean_loglik_and_em_improves(segment):
    X, mods = segment
    est = MultiViewPPCA(mods, latent_dim=4, random_state=0).fit(X)
    assert np.isclose(est.score(X), est.score_samples(X).mean())
    assert np.all(np.diff(est.loglik_curve_) >= -1e-9)


def test_mixture_size_chosen_by_held_out_likelihood(segment):
    X, mods = segment
    est = MultiViewPPCA(mods, n_components="auto", latent_dim=3, local_bandwidth=None, random_state=0).fit(X)
    assert est.n_components_ in (1, 2, 4, 8, 16) and est.weights_.shape == (est.n_components_,)


def test_partial_fit_single_chunk_is_one_em_step_after_init(latent_data):
    """First call = init + EM on the chunk, then one incremental M-step: finite, every attribute set."""
    X, mods = latent_data
    est = MultiViewPPCA(mods, latent_dim=3, device="cpu", random_state=0).partial_fit(X)
    assert est.n_iter_ == 1 and est.n_samples_seen_ == X.shape[0]
    assert np.isfinite(est.transform(X)).all() and np.isfinite(est.score(X))
    np.testing.assert_allclose(est.feature_mean_, np.nanmean(X, axis=0))  # standardization from the first chunk


def test_partial_fit_first_chunk_must_observe_every_modality(latent_data):
    X, mods = latent_data
    X = X.copy()
    X[:, mods["m2"]] = np.nan  # the rows that observed only m2 now observe nothing: partial_fit warns, then raises
    with pytest.raises(ValueError, match="first chunk"), pytest.warns(UserWarning, match="observe no modality"):
        MultiViewPPCA(mods, latent_dim=2, device="cpu").partial_fit(X)
