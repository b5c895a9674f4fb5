"""The bi-step loop: calibration, gradient routing, EM refreshes."""

import numpy as np
import pytest
import torch

from sklearn_calmrl._encoders import LinearEncoder
from sklearn_calmrl._latent import init_params
from sklearn_calmrl._training import TrainConfig, Trainer, calibrated, encode, encode_all
from sklearn_calmrl.datasets import make_latent_modalities


def _setup(n=120, seed=0):
    X, mods, _ = make_latent_modalities(n_samples=n, block_sizes=(6, 5, 4), latent_dim=2, noise=0.2, random_state=seed)
    blocks = [torch.tensor(X[:, cols], dtype=torch.float32) for cols in mods.values()]
    rng = np.random.default_rng(seed)
    observed = torch.tensor(rng.random((n, 3)) < 0.7)
    observed[observed.sum(1) == 0, 0] = True
    torch.manual_seed(seed)
    encoders = torch.nn.ModuleList(LinearEncoder(b.shape[1], 4) for b in blocks)
    for enc, b, m in zip(encoders, blocks, range(3)):
        enc.init_from_data(b[observed[:, m]])
    return blocks, observed, encoders


def test_encode_is_unit_norm_and_zero_when_missing():
    blocks, observed, encoders = _setup()
    Z = encode(encoders, blocks, observed)
    for m, z in enumerate(Z):
        norms = z.norm(dim=1)
        torch.testing.assert_close(norms[observed[:, m]], torch.ones(int(observed[:, m].sum())))
        assert torch.all(norms[~observed[:, m]] == 0)


def test_calibrated_keeps_observed_columns_and_imputes_shrunk_vectors():
    blocks, observed, encoders = _setup()
    Z = encode_all(encoders, blocks, observed)
    params = init_params(Z, observed, 2, generator=torch.Generator().manual_seed(0))
    Zhat, post = calibrated(Z, observed, params, max_norm=1.0)
    for m in range(3):
        assert torch.equal(Zhat[m][observed[:, m]], Z[m][observed[:, m]])
        miss = ~observed[:, m]
        raw = post.mean[miss] @ params.W[m].T + params.mu[m]
        norms = raw.norm(dim=1, keepdim=True)
        torch.testing.assert_close(Zhat[m][miss], raw / norms.clamp_min(1.0))  # direction kept, norm capped at 1
        assert torch.all(Zhat[m][miss].norm(dim=1) <= 1 + 1e-12)
    unlimited, _ = calibrated(Z, observed, params)  # the closed-form model of the blocks: no cap
    miss = ~observed[:, 0]
    torch.testing.assert_close(unlimited[0][miss], post.mean[miss] @ params.W[0].T + params.mu[0])


def _trainer(encoders, params, **cfg):
    """A trainer around given encoders and latent parameters (what ``Trainer.start`` and the initial EM build)."""
    trainer = Trainer(TrainConfig(latent_dim=2, **cfg), device="cpu", seed=0)
    trainer.encoders, trainer.params = encoders, params
    trainer._new_loss()
    return trainer


def test_imputed_columns_are_detached_targets():
    """No gradient flows through the imputation: only rows observing a modality move its encoder [design 3.1]."""
    blocks, observed, encoders = _setup()
    Z = encode_all(encoders, blocks, observed)
    params = init_params(Z, observed, 2, generator=torch.Generator().manual_seed(0))
    trainer = _trainer(encoders, params)
    only_missing = ~observed[:, 0]
    sum(trainer._batch_terms([b[only_missing] for b in blocks], observed[only_missing]).values()).backward()
    assert encoders[0].linear.weight.grad is None or torch.all(encoders[0].linear.weight.grad == 0)
    assert torch.any(encoders[1].linear.weight.grad != 0)


def test_unobserved_encoder_gets_no_gradient():
    blocks, observed, encoders = _setup()
    observed[:, 2] = False
    Z = encode_all(encoders, blocks, observed)
    params = init_params(Z, observed, 2, generator=torch.Generator().manual_seed(0))
    sum(_trainer(encoders, params)._batch_terms(blocks, observed).values()).backward()
    assert encoders[2].linear.weight.grad is None or torch.all(encoders[2].linear.weight.grad == 0)


def _fitted_trainer(n, **cfg):
    X, mods, _ = make_latent_modalities(n_samples=n, block_sizes=(6, 5, 4), latent_dim=2, noise=0.2, random_state=0)
    blocks = [X[:, cols] for cols in mods.values()]
    rng = np.random.default_rng(0)
    observed = torch.tensor(rng.random((n, 3)) < 0.7)
    observed[observed.sum(1) == 0, 0] = True
    blocks = [np.where(observed[:, [m]].numpy(), b, 0.0) for m, b in enumerate(blocks)]
    trainer = Trainer(TrainConfig(latent_dim=2, embed_dim=4, batch_size=50, **cfg), device="cpu", seed=0)
    return trainer.fit(blocks, observed)


@pytest.mark.parametrize("em_every", [1, 0])
def test_train_lowers_the_loss_and_records_both_pmrl_terms(em_every):
    trainer = _fitted_trainer(200, max_epochs=15, learning_rate=1e-2, em_every=em_every)
    history = trainer.history
    assert history.n_iter == 15 and history.loss_curve[-1] < history.loss_curve[0]
    assert set(history.loss_terms) == {"intra", "inter"}
    np.testing.assert_allclose(np.add(history.loss_terms["intra"], history.loss_terms["inter"]), history.loss_curve, rtol=1e-6)
    assert all(np.isfinite(history.loglik_curve)) and history.time_em > 0 and history.time_gradient > 0


def test_pair_term_is_recorded_when_weighted():
    history = _fitted_trainer(120, max_epochs=2, pair_weight=0.5).history
    assert set(history.loss_terms) == {"intra", "inter", "pair"} and all(v > 0 for v in history.loss_terms["pair"])


def test_streamed_em_refresh_equals_cached(monkeypatch):
    """Above STREAM_BYTES the refresh re-encodes chunk by chunk instead of caching: same model."""
    import sklearn_calmrl._training as training

    results = []
    for stream_bytes in (training.STREAM_BYTES, 0):
        monkeypatch.setattr(training, "STREAM_BYTES", stream_bytes)
        monkeypatch.setattr(training, "CHUNK", 64)
        results.append(_fitted_trainer(200, max_epochs=3))
    cached, streamed = results
    np.testing.assert_allclose(cached.history.loglik_curve, streamed.history.loglik_curve, rtol=1e-6)
    for a, b in zip(cached.params.W, streamed.params.W):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


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


@pytest.mark.parametrize("local_bandwidth", [None, 0.05])
def test_imputation_weights_keep_predictable_features_and_drop_noise(local_bandwidth):
    from sklearn_calmrl import MultiViewPPCA

    X, mods = _with_noise_columns()
    est = MultiViewPPCA(mods, latent_dim=2, local_bandwidth=local_bandwidth, random_state=0).fit(X)
    weights = [a.numpy() for a in est._trainer_.imputation_weights]
    assert [w.shape[0] for w in weights] == [len(c) for c in mods.values()]
    assert all(((w >= 0) & (w <= 1)).all() for w in weights)
    assert min(w.min() for w in weights[:2]) > 0.8  # features the other blocks predict keep their imputation
    assert weights[2][:4].min() > 0.6  # (.69 to .82 over random_state 0-5: the block shares its loadings with noise)
    assert np.median(weights[2][4:]) < 0.3  # noise columns are imputed by (nearly) their mean
    again = MultiViewPPCA(mods, latent_dim=2, local_bandwidth=local_bandwidth, random_state=0).fit(X)
    for a, b in zip(weights, again._trainer_.imputation_weights):
        np.testing.assert_array_equal(a, b.numpy())


def test_weights_scale_only_the_imputed_entries():
    """Output with the weights = observed blocks as they are, imputed entries times a_j [design 2.11]."""
    from sklearn_calmrl import MultiViewPPCA

    X, mods = _with_noise_columns(seed=1)
    est = MultiViewPPCA(mods, latent_dim=2, add_indicator=False, random_state=0).fit(X)
    shrunk, (filled, std) = est.transform(X), est.impute(X, return_std=True)
    weights, scales = est._trainer_.imputation_weights, est._trainer_.variance_scales
    est._trainer_.imputation_weights = est._trainer_.variance_scales = None
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
    from sklearn_calmrl import MultiViewPPCA

    X, mods = _with_noise_columns(n=800, seed=2)
    train, test = X[:400], X[400:]
    est = MultiViewPPCA(mods, latent_dim=2, random_state=0).fit(train)
    full = test[~np.isnan(test).any(axis=1)]
    hidden = full.copy()
    last = mods[list(mods)[-1]]
    hidden[:, last] = np.nan
    err = np.mean((est.impute(hidden)[:, last] - full[:, last]) ** 2)
    est._trainer_.imputation_weights = None
    err_plain = np.mean((est.impute(hidden)[:, last] - full[:, last]) ** 2)
    assert err < err_plain


@pytest.mark.parametrize("loader", ["load_multiple_features", "load_image_segmentation"])
def test_predictive_std_covers_95_percent_of_held_out_errors(loader):
    """1.96 predictive std cover 95% +- 3 points of the errors of imputed held-out blocks (issue 21, design 2.11)."""
    from sklearn.model_selection import train_test_split

    from sklearn_calmrl import MultiViewPPCA, datasets
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

    from sklearn_calmrl import MultiViewPPCA

    X, mods = _with_noise_columns()
    with pytest.warns(ConvergenceWarning, match=r"stopped at its cap of 2 steps.*max_iter for MultiViewPPCA"):
        MultiViewPPCA(mods, latent_dim=2, max_iter=2, random_state=0).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MultiViewPPCA(mods, latent_dim=2, random_state=0).fit(X)


def test_random_streams_are_distinct_and_reproducible():
    """Every named stream of a seed draws its own numbers, the same on every call (design 3.5, issue 18)."""
    from sklearn_calmrl._training import STREAMS, random_stream

    draws = {(name, key): torch.rand(8, generator=random_stream(7, name, *key)) for name in STREAMS for key in ((), (1,), (2,))}
    flat = torch.stack(list(draws.values()))
    assert torch.unique(flat, dim=0).shape[0] == len(draws)  # no two streams (or keys) coincide
    torch.testing.assert_close(torch.rand(8, generator=random_stream(7, "encoders")), draws["encoders", ()], rtol=0, atol=0)
    assert not torch.equal(torch.rand(8, generator=random_stream(8, "encoders")), draws["encoders", ()])
    with pytest.raises(ValueError):
        random_stream(7, "no such stream")
