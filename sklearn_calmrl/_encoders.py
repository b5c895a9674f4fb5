"""Per-modality torch encoders ``f_m`` [design 7.1], and their kinds as parameters of
:class:`~sklearn_calmrl.CalMRLTransformer` (:class:`Linear`, :class:`MLP`).

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
import numbers

import torch
from sklearn.base import BaseEstimator
from torch import nn

from ._utils import resolved

__all__ = ["ENCODERS", "MLP", "Linear", "LinearEncoder", "MLPEncoder", "make_encoders", "resolve_encoder"]


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

    def __init__(self, n_features, embed_dim, hidden_layer_sizes):
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


class _Encoder(BaseEstimator):
    """What both kinds of encoder share: building one modality's torch module from a seeded generator."""

    def make(self, n_features, embed_dim, *, generator=None, device="cpu"):
        """One encoder of this kind on ``device``.

        The weights are drawn on the CPU from ``generator`` (a CPU ``torch.Generator``),
        never from the global torch RNG, and then moved to ``device``: fitting is
        reproducible, gives the same start on every device, and leaves the caller's
        RNG state alone, also when several fits run in threads.
        """
        with torch.device("meta"):
            encoder = self._module(n_features, embed_dim)
        encoder = encoder.to_empty(device="cpu")
        with torch.no_grad():
            _reset_(encoder, generator)
        return encoder.to(device)


class Linear(_Encoder):
    """The linear encoder ``f_m(x) = A x + c`` [design 7.1], as a value of ``CalMRLTransformer(encoder=...)``.

    Read more in the :ref:`User Guide <user_guide>`.

    ``encoder='linear'`` is ``Linear()``. Encoder m starts as the posterior-mean
    map ``x^m -> E[b | x^m]`` of the closed-form model of the blocks (outputs
    beyond ``latent_dim`` on the block's principal axes). It has no parameters.

    See Also
    --------
    MLP : The same start plus a non-linear residual branch.
    """

    _parameter_constraints: dict = {}

    def _module(self, n_features, embed_dim):
        return LinearEncoder(n_features, embed_dim)


class MLP(_Encoder):
    """The MLP encoder ``f_m(x) = A x + c + g(x)`` [design 7.1], as a value of ``CalMRLTransformer(encoder=...)``.

    Read more in the :ref:`User Guide <user_guide>`.

    ``encoder='mlp'`` is ``MLP()``. The linear path starts as :class:`Linear`
    does; ``g`` is a GELU MLP whose output layer starts at zero, so the encoder
    starts as the linear map and training adds non-linear corrections. Its
    parameters are reachable through the estimator's ``set_params``
    (``encoder__hidden_layer_sizes=(64,)``) and a grid search once ``encoder``
    holds an instance.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(128,)
        Hidden widths of the residual branch ``g`` (``()``: one linear layer).

    See Also
    --------
    Linear : The linear encoder alone.
    """

    _parameter_constraints: dict = {"hidden_layer_sizes": [tuple, list]}

    def __init__(self, hidden_layer_sizes=(128,)):
        self.hidden_layer_sizes = hidden_layer_sizes

    def _validate_params(self):
        super()._validate_params()
        if not all(isinstance(h, numbers.Integral) and not isinstance(h, bool) and h >= 1 for h in self.hidden_layer_sizes):
            raise ValueError(f"hidden_layer_sizes must be a tuple of positive integers (layer widths), got {self.hidden_layer_sizes!r}.")

    def _module(self, n_features, embed_dim):
        return MLPEncoder(n_features, embed_dim, tuple(self.hidden_layer_sizes))


ENCODERS = {"linear": Linear, "mlp": MLP}


def resolve_encoder(encoder):
    """``'linear'`` / ``'mlp'`` as the default instance, an instance as a validated copy [design 7.1]."""
    return resolved(encoder, ENCODERS)


def make_encoders(kind, X, observed, embed_dim, *, shared_maps=None, generator, device="cpu"):
    """One encoder per modality, drawn from seeded generators, then started from the data.

    Parameters
    ----------
    kind : Linear or MLP
    X : list of Tensor (n, d_in_m)
        Standardized blocks (float32), zeros where a modality is missing.
    observed : bool Tensor (n, k)
    embed_dim : int
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
    encoders = torch.nn.ModuleList(kind.make(x.shape[1], embed_dim, generator=generator, device=device) for x in X)
    for m, enc in enumerate(encoders):
        enc.init_from_data(X[m][observed[:, m]], None if shared_maps is None else shared_maps[m])
    return encoders
