"""Per-modality torch encoders ``f_m`` (DESIGN.md section 2).

Both encoders start from the block's principal components, so the deep model
starts from the closed-form solution instead of a random projection (DESIGN 7:
random-init MLPs lost about 5 points of probe accuracy to PCA-initialised linear
encoders). The MLP adds a residual branch whose output layer starts at zero, so
at initialisation it computes exactly the PCA projection and training only adds
non-linear corrections.
"""

import torch
from torch import nn

__all__ = ["LinearEncoder", "MLPEncoder", "make_encoder", "ENCODERS"]

ENCODERS = ("linear", "mlp")


def _pca_init_(linear, X):
    """Set ``linear`` to the projection on the leading principal axes of ``X`` (rows beyond rank start at 0)."""
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
        if X.shape[0] == 0:
            return
        center = X.mean(dim=0)
        _, _, Vh = torch.linalg.svd(X - center, full_matrices=False)
        r = min(Vh.shape[0], linear.out_features)
        linear.weight[:r] = Vh[:r]
        linear.bias[:r] = -(Vh[:r] @ center)


class LinearEncoder(nn.Module):
    """``f(x) = A x + c``, initialised to the block's PCA projection."""

    def __init__(self, n_features, embed_dim):
        super().__init__()
        self.linear = nn.Linear(n_features, embed_dim)

    def init_from_data(self, X):
        """PCA initialisation from the observed, standardized rows ``X`` of the block."""
        _pca_init_(self.linear, X)

    def forward(self, x):
        return self.linear(x)


class MLPEncoder(nn.Module):
    """``f(x) = A x + c + g(x)``: the PCA projection plus a zero-initialised MLP residual."""

    def __init__(self, n_features, embed_dim, hidden_layer_sizes=(128,)):
        super().__init__()
        self.linear = nn.Linear(n_features, embed_dim)
        layers, width = [], n_features
        for h in hidden_layer_sizes:
            layers += [nn.Linear(width, h), nn.GELU()]
            width = h
        out = nn.Linear(width, embed_dim)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.residual = nn.Sequential(*layers, out)

    def init_from_data(self, X):
        """PCA initialisation of the linear path from the observed, standardized rows ``X``."""
        _pca_init_(self.linear, X)

    def forward(self, x):
        return self.linear(x) + self.residual(x)


def make_encoder(kind, n_features, embed_dim, hidden_layer_sizes=(128,)):
    """Build one encoder of the given kind ('linear' or 'mlp')."""
    if kind == "linear":
        return LinearEncoder(n_features, embed_dim)
    if kind == "mlp":
        return MLPEncoder(n_features, embed_dim, tuple(hidden_layer_sizes))
    raise ValueError(f"encoder must be one of {ENCODERS}, got {kind!r}.")
