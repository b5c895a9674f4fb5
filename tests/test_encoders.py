"""Encoders start from the block's PCA projection; Linear and MLP build them (design 7.1)."""

import numpy as np
import pytest
import torch

from sklearn_calmrl import MLP, Linear
from sklearn_calmrl._encoders import LinearEncoder, MLPEncoder, resolve_encoder


@pytest.mark.parametrize("kind", [Linear(), MLP()])
def test_pca_initialisation(kind):
    rng = np.random.default_rng(0)
    X = torch.tensor(rng.normal(size=(200, 5)) @ rng.normal(size=(5, 5)), dtype=torch.float32)
    enc = kind.make(5, 8, generator=torch.Generator().manual_seed(0))
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


def test_each_kind_makes_its_encoder_from_its_generator():
    assert isinstance(Linear().make(3, 2), LinearEncoder)
    mlp = MLP(hidden_layer_sizes=(4, 4)).make(3, 2, generator=torch.Generator().manual_seed(0))
    assert isinstance(mlp, MLPEncoder) and [m.out_features for m in mlp.residual if isinstance(m, torch.nn.Linear)] == [4, 4, 2]
    again = MLP(hidden_layer_sizes=(4, 4)).make(3, 2, generator=torch.Generator().manual_seed(0))
    for a, b in zip(mlp.parameters(), again.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the same draws from the same generator
    assert len(MLP().make(3, 2).residual) == 3  # by default one hidden layer (Linear, GELU), then the output layer


def test_resolve_encoder_validates_the_hidden_widths():
    assert isinstance(resolve_encoder("linear"), Linear) and resolve_encoder("mlp").hidden_layer_sizes == (128,)
    given = MLP(hidden_layer_sizes=[8])
    assert resolve_encoder(given) is not given and resolve_encoder(given).get_params() == given.get_params()
    for bad in [(0,), ("a",), (True,)]:
        with pytest.raises(ValueError, match="hidden_layer_sizes must be a tuple of positive integers"):
            resolve_encoder(MLP(hidden_layer_sizes=bad))


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
