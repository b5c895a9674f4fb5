"""The bi-step loop: calibration, gradient routing, EM refreshes."""

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

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


def test_calibrated_keeps_observed_columns_and_imputes_unit_vectors():
    blocks, observed, encoders = _setup()
    Z = encode_all(encoders, blocks, observed)
    params = init_params(Z, observed, 2, generator=torch.Generator().manual_seed(0))
    Zhat, post = calibrated(Z, observed, params)
    for m in range(3):
        assert torch.equal(Zhat[m][observed[:, m]], Z[m][observed[:, m]])
        miss = ~observed[:, m]
        expected = torch.nn.functional.normalize(post.mean[miss] @ params.W[m].T + params.mu[m], dim=1)
        torch.testing.assert_close(Zhat[m][miss], expected)


def _trainer(encoders, params, **cfg):
    """A trainer around given encoders and latent parameters (what ``Trainer.start`` and the initial EM build)."""
    trainer = Trainer(TrainConfig(latent_dim=2, **cfg), device="cpu", seed=0)
    trainer.encoders, trainer.params = encoders, params
    trainer._new_loss()
    return trainer


def test_detach_flag_changes_gradient_routing():
    blocks, observed, encoders = _setup()
    Z = encode_all(encoders, blocks, observed)
    params = init_params(Z, observed, 2, generator=torch.Generator().manual_seed(0))
    grads = {}
    for detach in (True, False):
        encoders.zero_grad()
        _trainer(encoders, params, detach_imputation=detach)._batch_loss(blocks, observed).backward()
        grads[detach] = encoders[0].linear.weight.grad.clone()
    assert torch.isfinite(grads[True]).all() and torch.isfinite(grads[False]).all()
    assert not torch.allclose(grads[True], grads[False])


def test_unobserved_encoder_gets_no_gradient():
    blocks, observed, encoders = _setup()
    observed[:, 2] = False
    Z = encode_all(encoders, blocks, observed)
    params = init_params(Z, observed, 2, generator=torch.Generator().manual_seed(0))
    _trainer(encoders, params)._batch_loss(blocks, observed).backward()
    assert encoders[2].linear.weight.grad is None or torch.all(encoders[2].linear.weight.grad == 0)


def _fitted_trainer(n, **cfg):
    X, mods, _ = make_latent_modalities(n_samples=n, block_sizes=(6, 5, 4), latent_dim=2, noise=0.2, random_state=0)
    blocks = [X[:, cols] for cols in mods.values()]
    rng = np.random.default_rng(0)
    observed = torch.tensor(rng.random((n, 3)) < 0.7)
    observed[observed.sum(1) == 0, 0] = True
    trainer = Trainer(TrainConfig(latent_dim=2, embed_dim=4, encoder_init="pca", batch_size=50, n_iter_no_change=100, **cfg), device="cpu", seed=0)
    with pytest.warns(ConvergenceWarning, match="max_epochs"):
        return trainer.fit(trainer.start(blocks, observed), observed, rng=np.random.RandomState(0))


@pytest.mark.parametrize("em_every", [1, 0])
def test_train_lowers_the_loss(em_every):
    trainer = _fitted_trainer(200, max_epochs=15, learning_rate=1e-2, em_every=em_every)
    history = trainer.history
    assert history.n_iter == 15 and history.loss_curve[-1] < history.loss_curve[0]
    assert all(np.isfinite(history.loglik_curve)) and history.time_em > 0 and history.time_gradient > 0


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
