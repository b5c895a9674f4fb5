"""Per-modality torch encoders ``f_m`` [design 7.1].

Both encoders start from a closed-form linear map instead of a random projection
(random-init MLPs lost about 5 points of probe accuracy to
PCA-initialised linear encoders). With ``shared_map`` the first rows are the
posterior-mean map ``x^m -> E[b | x^m]`` of the multi-view probabilistic PCA fitted
on the raw blocks, so every modality starts in the same latent coordinates
(aligned across modalities before the first gradient step); the remaining rows
are the block's leading principal axes. The MLP adds a residual branch whose
output layer starts at zero, so at initialisation it computes exactly that linear
map and training only adds non-linear corrections.

References ``[design x.y]`` point into ``doc/design.rst``.
"""

import math

import torch
from torch import nn

__all__ = ["LinearEncoder", "MLPEncoder", "make_encoder", "make_encoders", "ENCODERS"]

ENCODERS = ("linear", "mlp")


def _linear_init_(linear, X, shared_map=None):
    """Initialise ``linear`` from data (rows beyond what the data determine start at 0).

    ``shared_map = (A, c)`` fills the first rows with ``x -> A x + c``; the rows
    after them project on the leading principal axes of ``X``.
    """
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
        start = 0
        if shared_map is not None:
            A, c = shared_map
            start = min(A.shape[0], linear.out_features)
            linear.weight[:start] = A[:start]
            linear.bias[:start] = c[:start]
        if X.shape[0] == 0 or start >= linear.out_features:
            return
        center = X.mean(dim=0)
        _, _, Vh = torch.linalg.svd(X - center, full_matrices=False)
        r = min(Vh.shape[0], linear.out_features - start)
        linear.weight[start : start + r] = Vh[:r]
        linear.bias[start : start + r] = -(Vh[:r] @ center)


class LinearEncoder(nn.Module):
    """``f(x) = A x + c``, initialised to the block's PCA projection."""

    def __init__(self, n_features, embed_dim):
        super().__init__()
        self.linear = nn.Linear(n_features, embed_dim)

    def init_from_data(self, X, shared_map=None):
        """Initialise from the observed, standardized rows ``X`` of the block (see the module docstring)."""
        _linear_init_(self.linear, X, shared_map)

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

    def init_from_data(self, X, shared_map=None):
        """Initialise the linear path from the observed, standardized rows ``X`` (see the module docstring)."""
        _linear_init_(self.linear, X, shared_map)

    def forward(self, x):
        return self.linear(x) + self.residual(x)


def _reset_(module, generator):
    """PyTorch's default ``nn.Linear`` initialisation, drawn from ``generator`` (the global RNG is not touched)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            bound = 1 / math.sqrt(layer.in_features) if layer.in_features > 0 else 0
            nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
    if isinstance(module, MLPEncoder):
        nn.init.zeros_(module.residual[-1].weight)
        nn.init.zeros_(module.residual[-1].bias)


def make_encoder(kind, n_features, embed_dim, hidden_layer_sizes=(128,), *, generator=None, device="cpu"):
    """Build one encoder of the given kind ('linear' or 'mlp') on ``device``.

    The weights are drawn on the CPU from ``generator`` (a CPU ``torch.Generator``),
    never from the global torch RNG, and then moved to ``device``: fitting is
    reproducible, gives the same start on every device, and leaves the caller's
    RNG state alone, also when several fits run in threads.
    """
    if kind == "linear":
        cls, args = LinearEncoder, (n_features, embed_dim)
    elif kind == "mlp":
        cls, args = MLPEncoder, (n_features, embed_dim, tuple(hidden_layer_sizes))
    else:
        raise ValueError(f"encoder must be one of {ENCODERS}, got {kind!r}.")
    with torch.device("meta"):
        encoder = cls(*args)
    encoder = encoder.to_empty(device="cpu")
    with torch.no_grad():
        _reset_(encoder, generator)
    return encoder.to(device)


def make_encoders(kind, X, observed, embed_dim, hidden_layer_sizes=(128,), *, shared_maps=None, generator, device="cpu"):
    """One encoder per modality, drawn from seeded generators, then started from the data.

    Parameters
    ----------
    kind : {'linear', 'mlp'}
    X : list of Tensor (n, d_in_m)
        Standardized blocks (float32), zeros where a modality is missing.
    observed : bool Tensor (n, k)
    embed_dim : int
    hidden_layer_sizes : tuple of int
    shared_maps : list of (Tensor (q, d_in_m), Tensor (q,)) or None
        Posterior-mean maps ``x^m -> E[b | x^m]`` of the closed-form model of
        the blocks [design 7.1]; None starts every output from the block's PCA.
    generator : torch.Generator
        A CPU generator; the encoders draw their initial weights from it in turn.
    device : str

    Returns
    -------
    torch.nn.ModuleList
    """
    encoders = torch.nn.ModuleList(
        make_encoder(kind, x.shape[1], embed_dim, hidden_layer_sizes, generator=generator, device=device)
        for x in X
    )
    for m, enc in enumerate(encoders):
        enc.init_from_data(X[m][observed[:, m]], None if shared_maps is None else shared_maps[m])
    return encoders
