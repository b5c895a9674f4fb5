"""Encoders start from the block's PCA projection."""

import numpy as np
import pytest
import torch

from sklearn_calmrl._encoders import LinearEncoder, MLPEncoder, make_encoder


@pytest.mark.parametrize("cls", [LinearEncoder, MLPEncoder])
def test_pca_initialisation(cls):
    rng = np.random.default_rng(0)
    X = torch.tensor(rng.normal(size=(200, 5)) @ rng.normal(size=(5, 5)), dtype=torch.float32)
    enc = cls(5, 8)
    enc.init_from_data(X)
    out = enc(X).detach().numpy()
    Xc = X.numpy() - X.numpy().mean(0)
    _, _, Vt = np.linalg.svd(Xc, full_matrices=False)
    scores = Xc @ Vt.T
    np.testing.assert_allclose(np.abs(out[:, :5]), np.abs(scores), atol=1e-3)  # PCA scores up to sign
    np.testing.assert_allclose(out[:, 5:], 0.0, atol=1e-6)  # beyond the block's rank: zero at start
    assert np.all(np.abs(out[:, :5]).std(0)[:-1] >= np.abs(out[:, :5]).std(0)[1:] - 1e-4)


def test_mlp_residual_starts_at_zero_and_trains():
    enc = MLPEncoder(4, 3, (6,))
    x = torch.randn(10, 4)
    np.testing.assert_allclose(enc.residual(x).detach().numpy(), 0.0)
    enc(x).pow(2).sum().backward()
    assert enc.residual[-1].weight.grad.abs().sum() > 0


def test_make_encoder():
    assert isinstance(make_encoder("linear", 3, 2), LinearEncoder)
    assert isinstance(make_encoder("mlp", 3, 2, (4, 4)), MLPEncoder)
    with pytest.raises(ValueError, match="'cnn'"):
        make_encoder("cnn", 3, 2)


def test_shared_map_fills_first_rows_then_pca():
    rng = np.random.default_rng(1)
    X = torch.tensor(rng.normal(size=(50, 4)), dtype=torch.float32)
    A, c = torch.tensor(rng.normal(size=(2, 4)), dtype=torch.float32), torch.tensor([0.5, -1.0])
    enc = LinearEncoder(4, 5)
    enc.init_from_data(X, (A, c))
    out = enc(X).detach()
    torch.testing.assert_close(out[:, :2], X @ A.T + c)
    Xc = X - X.mean(0)
    _, _, Vh = torch.linalg.svd(Xc, full_matrices=False)
    torch.testing.assert_close(out[:, 2:].abs(), (Xc @ Vh[:3].T).abs(), atol=1e-4, rtol=1e-4)
