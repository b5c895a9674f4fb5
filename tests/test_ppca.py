"""MultiViewPPCA: the closed-form model alone, and the model of the blocks inside CalMRLTransformer."""

import numpy as np
import pytest

from sklearn_calmrl import CalMRLTransformer, MultiViewPPCA
from sklearn_calmrl.datasets import ampute_modalities, load_image_segmentation, make_latent_modalities


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


@pytest.mark.parametrize("output", ["concat", "latent"])
def test_deprecated_identity_encoder_is_multiviewppca(segment, output):
    X, mods = segment
    kw = dict(latent_dim=4, output=output, device="cpu", random_state=0)
    ppca = MultiViewPPCA(mods, **kw).fit(X)
    with pytest.warns(FutureWarning, match="encoder='identity' is deprecated"):
        calmrl = CalMRLTransformer(mods, encoder="identity", **kw).fit(X)
    np.testing.assert_array_equal(ppca.transform(X), calmrl.transform(X))
    np.testing.assert_array_equal(ppca.score_samples(X), calmrl.score_samples(X))
    assert ppca.n_iter_ == calmrl.n_iter_ and ppca.loglik_curve_ == calmrl.loglik_curve_
    assert list(ppca.get_feature_names_out()) == list(calmrl.get_feature_names_out())
    assert calmrl.encoders_ is None and calmrl.loss_curve_ == []


@pytest.mark.filterwarnings("ignore:encoder='identity' is deprecated:FutureWarning")
def test_partial_fit_equals_calmrl_identity():
    X, mods, _ = make_latent_modalities(300, block_sizes=(4, 3, 3), latent_dim=2, random_state=0)
    X = ampute_modalities(X, mods, rate=0.3, random_state=0)
    a = MultiViewPPCA(mods, latent_dim=2, device="cpu", random_state=0)
    b = CalMRLTransformer(mods, encoder="identity", latent_dim=2, device="cpu", random_state=0)
    c = CalMRLTransformer(mods, latent_dim=2, device="cpu", random_state=0)
    for chunk in np.array_split(X, 3):
        a.partial_fit(chunk)
        b.partial_fit(chunk)
        c.partial_fit(chunk)
    np.testing.assert_array_equal(a.transform(X), b.transform(X))
    np.testing.assert_array_equal(a.impute(X), c.impute(X))  # the transformer's block model learns incrementally too
    assert a.n_samples_seen_ == b.n_samples_seen_ == c.n_samples_seen_ == X.shape[0]


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
    reps, variances = est._completed_blocks(*est._inference_input(X), est._model_)  # the standardized completion
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
    assert mixed.local_bandwidth == 0.3 and mixed._model_.centres is not None
    filled, bare = mixed.impute(X), plain.impute(X)
    observed = ~np.isnan(X)
    np.testing.assert_array_equal(filled[observed], X[observed])
    assert np.isfinite(filled).all() and not np.allclose(filled[~observed], bare[~observed])
