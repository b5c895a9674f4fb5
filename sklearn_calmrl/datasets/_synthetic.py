"""A controlled synthetic generator: nonlinear modalities of one class-structured latent, with the
structured missingness of the paper (a few complete rows, the others in groups that only ever observe
fixed pairs of modalities).

numpy only: ``sklearn_calmrl.datasets`` must import without torch.
"""

import itertools

import numpy as np
from sklearn.utils import check_random_state

from ._base import (
    _check_fraction,
    _check_int_sequence,
    _check_noise,
    _check_positive_int,
    _check_real,
    _make_bunch,
    _mask_structured,
    _resolve_pairs,
)

__all__ = ["make_nonlinear_modalities"]

_PAIR_LAYOUTS = ("chain", "star")


def _layout_pairs(pairs, names):
    """The groups named by ``pairs='chain'`` or ``'star'``; any other value is returned as given."""
    if not isinstance(pairs, str):
        return pairs
    if pairs == "chain":
        return [(names[m], names[m + 1]) for m in range(len(names) - 1)]
    if pairs == "star":
        return [(names[0], names[m]) for m in range(1, len(names))]
    raise ValueError(
        f"pairs must be one of {list(_PAIR_LAYOUTS)} or a list of tuples of modality names or "
        f"positions, got {pairs!r}."
    )


_MAX_SPREAD_CLASSES = 256


def _spread_on_sphere(U, n_steps=300, step=0.1):
    """Move unit vectors apart on the sphere (gradient steps on their Coulomb energy), so that every class is
    about equally far from its nearest neighbour and the difficulty barely depends on the seed."""
    n = len(U)
    if n < 2 or n > _MAX_SPREAD_CLASSES:
        return U
    for _ in range(n_steps):
        diff = U[:, None, :] - U[None, :, :]
        dist = np.maximum(np.sqrt(np.square(diff).sum(axis=-1)), 1e-12)  # coincident points push nothing
        force = (diff / dist[..., None] ** 3).sum(axis=1)
        U = U + step * force / max(np.abs(force).max(), 1e-12)
        U /= np.linalg.norm(U, axis=1, keepdims=True)
    return U


def _random_mlp(rng, n_inputs, hidden_layer_sizes, n_outputs, gain):
    """Weights ``[(W, c), ...]`` of a random tanh network; the last layer is linear without bias."""
    layers = []
    for n_units in hidden_layer_sizes:
        W = gain * rng.standard_normal((n_inputs, n_units)) / np.sqrt(n_inputs)
        layers.append((W, 0.5 * rng.standard_normal(n_units)))
        n_inputs = n_units
    layers.append((rng.standard_normal((n_inputs, n_outputs)) / np.sqrt(n_inputs), None))
    return layers


def _apply_mlp(layers, H):
    for W, c in layers[:-1]:
        H = np.tanh(H @ W + c)
    H = H @ layers[-1][0]
    # standardize each output feature, so that `noise` is the noise-to-signal ratio of every feature
    std = H.std(axis=0)
    return (H - H.mean(axis=0)) / np.where(std > 0, std, 1.0)


def make_nonlinear_modalities(
    n_samples=20000,
    *,
    n_modalities=4,
    block_sizes=32,
    latent_dim=8,
    n_classes=10,
    class_sep=3.0,
    hidden_layer_sizes=(64, 64),
    gain=2.0,
    noise=0.5,
    complete_fraction=0.05,
    pairs="chain",
    random_state=None,
):
    """Generate nonlinear modalities of a shared class-structured latent, with structured missingness.

    Read more in the :ref:`User Guide <user_guide>`.

    A controlled setting for the question "does calibrated training help when
    some pairs of modalities rarely co-occur?":

    * **Latent with classes.** Each sample has a class ``y`` (the classes are
      balanced) and a shared latent ``b = class_sep * u_y + e`` with
      ``e ~ N(0, I_q)``, where the class directions ``u_y`` are random unit
      vectors of dimension ``q = latent_dim``, then spread apart on the sphere
      (a few hundred repulsion steps; up to 256 classes), so that every class
      is about equally far from its nearest neighbour and the difficulty
      barely depends on the seed.
    * **Nonlinear modalities.** Modality ``m`` is ``x^m = f_m(b) + noise_m * e_m``
      with ``e_m ~ N(0, I)``, where ``f_m`` is a random tanh network
      (``hidden_layer_sizes``; weights of standard deviation
      ``gain / sqrt(fan_in)``, biases of standard deviation 0.5, a linear
      output layer) whose outputs are standardized over the samples. Each
      feature therefore has signal variance 1 and noise variance
      ``noise_m**2``, and a linear map from ``b`` explains clearly less of it
      than ``f_m`` does (the larger ``gain``, the more saturated the tanh units
      and the less linear the map; ``hidden_layer_sizes=()`` gives a linear map,
      a control).
    * **Structured missingness** (the paper's setting, as in
      :func:`ampute_modalities_structured`). ``round(complete_fraction *
      n_samples)`` random rows observe every modality; the other rows are
      split at random into one group per entry of ``pairs``, of (nearly) equal
      size, and group ``g`` only ever observes the modalities of ``pairs[g]``.
      With the default ``pairs='chain'``, ``(m0, m1), (m1, m2), ...``, a pair
      such as ``(m0, m2)`` co-occurs only in the complete rows (a *rare* pair,
      listed in ``rare_pairs``).

    The class directions and the networks are drawn from ``random_state``
    before the samples, so they do not depend on ``n_samples``. The caller's
    global numpy random state is not used.

    Parameters
    ----------
    n_samples : int, default=20000
        Number of samples.
    n_modalities : int, default=4
        Number of modalities ``k`` (at least 2), named ``'m0', 'm1', ...``.
    block_sizes : int or sequence of int, default=32
        Number of features of each modality: one for all, or one per modality.
    latent_dim : int, default=8
        Dimension ``q`` of the shared latent.
    n_classes : int, default=10
        Number of classes.
    class_sep : float, default=3.0
        Distance of each class mean from the origin of the latent, in units of
        the within-class standard deviation. 0 gives one Gaussian, whatever the
        labels. With the other defaults, 3.0 gives a logistic regression on
        ``data_full`` about 89% accuracy (2.5: about 80%).
    hidden_layer_sizes : sequence of int, default=(64, 64)
        Hidden units of each tanh layer of the random networks; ``()`` makes
        every modality a linear map of the latent.
    gain : float, default=2.0
        Scale of the hidden-layer weights (positive): how far the tanh units
        saturate, hence how nonlinear the maps are.
    noise : float or sequence of float, default=0.5
        Noise standard deviation of each feature relative to its signal's, one
        for all modalities or one per modality.
    complete_fraction : float, default=0.05
        Fraction of rows that observe every modality, in [0, 1].
    pairs : {'chain', 'star'} or list of tuple, default='chain'
        The modalities each group of non-complete rows observes. ``'chain'``:
        ``[('m0', 'm1'), ('m1', 'm2'), ..., ('m{k-2}', 'm{k-1}')]``;
        ``'star'``: ``[('m0', 'm1'), ('m0', 'm2'), ..., ('m0', 'm{k-1}')]``
        (one hub modality, like text in the paper's "V-T" and "A-T" data
        sets). A list gives one tuple of modality names or positions per
        group; usually pairs, but any non-empty group works.
    random_state : int, RandomState instance or None, default=None
        Controls the class directions, the networks, the samples, the noise
        and the missingness.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the attributes:

        data : ndarray of shape (n_samples, sum of block sizes)
            The modalities side by side (float64), with the blocks a row does
            not observe set to NaN: the input the estimators expect.
        data_full : ndarray of shape (n_samples, sum of block sizes)
            The same data with nothing missing.
        target : ndarray of shape (n_samples,)
            Class labels ``0, ..., n_classes - 1`` (int64).
        modalities : dict of str to list of int
            ``{'m0': [...], 'm1': [...], ...}`` column indices of each
            modality, ready for the ``modalities`` parameter of the estimators.
        latent : ndarray of shape (n_samples, latent_dim)
            The shared latent ``b``.
        pairs : list of tuple of str
            The modalities each group observes, by name (``pairs`` resolved).
        groups : ndarray of shape (n_samples,)
            Group of each row: ``g`` for a row that observes ``pairs[g]``, -1
            for a complete row (int64; usable as ``groups`` in
            :class:`~sklearn.model_selection.GroupKFold`).
        complete : ndarray of shape (n_samples,)
            True for the rows that observe every modality.
        observed : ndarray of shape (n_samples, n_modalities)
            True where a row observes a modality.
        frequent_pairs : list of tuple of str
            Pairs of modalities that some group observes together.
        rare_pairs : list of tuple of str
            Pairs of modalities that co-occur only in the complete rows.
        feature_names : ndarray of str of shape (sum of block sizes,)
            ``m0_0, m0_1, ..., m1_0, ...``.
        target_names : ndarray of str of shape (n_classes,)
            ``'0'``, ``'1'``, ...
        frame : None
            Kept for symmetry with the loaders.
        DESCR : str
            Description of the generator and of the parameters used.

    Raises
    ------
    ValueError
        If a parameter is out of range (the message names it), if ``pairs``
        names an unknown modality, or if a modality would never be observed
        (no complete row and no group with that modality).

    See Also
    --------
    make_latent_modalities : Linear-Gaussian modalities without classes or missingness.
    ampute_modalities_structured : The same structured missingness, on any data.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_calmrl.datasets import make_nonlinear_modalities
    >>> d = make_nonlinear_modalities(n_samples=1000, random_state=0)
    >>> d.data.shape, d.target.shape, d.latent.shape
    ((1000, 128), (1000,), (1000, 8))
    >>> d.pairs
    [('m0', 'm1'), ('m1', 'm2'), ('m2', 'm3')]
    >>> d.rare_pairs
    [('m0', 'm2'), ('m0', 'm3'), ('m1', 'm3')]
    >>> int(d.complete.sum()), int(np.isnan(d.data).any(axis=1).sum())
    (50, 950)
    """
    n_samples = _check_positive_int(n_samples, "n_samples")
    k = _check_positive_int(n_modalities, "n_modalities", minimum=2)
    block_sizes = _check_int_sequence(block_sizes, "block_sizes", repeat=k)
    if len(block_sizes) != k:
        raise ValueError(
            f"block_sizes must hold one size per modality (n_modalities={k}), got {len(block_sizes)}."
        )
    latent_dim = _check_positive_int(latent_dim, "latent_dim")
    n_classes = _check_positive_int(n_classes, "n_classes")
    class_sep = _check_real(class_sep, "class_sep")
    gain = _check_real(gain, "gain", low_open=True)
    hidden_layer_sizes = tuple(_check_int_sequence(hidden_layer_sizes, "hidden_layer_sizes"))
    noise_std = _check_noise(noise, k)
    complete_fraction = _check_fraction(complete_fraction, "complete_fraction")
    names = [f"m{m}" for m in range(k)]
    blocks_by_name = [(name, None) for name in names]
    groups = _resolve_pairs(_layout_pairs(pairs, names), blocks_by_name)

    rng = check_random_state(random_state)
    # the model first, then the samples: the model does not depend on n_samples
    directions = rng.standard_normal((n_classes, latent_dim))
    directions = _spread_on_sphere(directions / np.linalg.norm(directions, axis=1, keepdims=True))
    networks = [_random_mlp(rng, latent_dim, hidden_layer_sizes, d, gain) for d in block_sizes]
    target = rng.permutation(np.arange(n_samples) % n_classes)
    latent = class_sep * directions[target] + rng.standard_normal((n_samples, latent_dim))
    parts = [
        _apply_mlp(layers, latent) + s * rng.standard_normal((n_samples, d))
        for layers, s, d in zip(networks, noise_std, block_sizes)
    ]

    feature_names = [f"{name}_{j}" for name, d in zip(names, block_sizes) for j in range(d)]
    descr = (
        "Nonlinear modalities with structured missingness\n"
        "================================================\n\n"
        f"{n_samples} samples of {n_classes} balanced classes; a shared latent of dimension {latent_dim} "
        f"(class means at distance {class_sep:g} from the origin, unit within-class spread); {k} modalities "
        f"{names} of {block_sizes} features, each a random tanh network (hidden layers "
        f"{list(hidden_layer_sizes)}, gain {gain:g}) of the latent, standardized, plus Gaussian noise of "
        f"standard deviation {noise_std.tolist()}. Structured missingness: a fraction {complete_fraction:g} "
        f"of the rows is complete, the others observe only the modalities of one group of {_group_names(groups, names)}.\n"
    )
    bunch = _make_bunch(parts, names, feature_names, target, [str(c) for c in range(n_classes)], descr, False)
    blocks = [(name, bunch.modalities[name]) for name in names]

    data = bunch.data.copy()
    row_group, observed = _mask_structured(data, blocks, groups, complete_fraction, rng)
    never = [names[m] for m in np.flatnonzero(~observed.any(axis=0))]
    if never:
        raise ValueError(
            f"modalities {never} would never be observed: there is no complete row (complete_fraction="
            f"{complete_fraction:g}, n_samples={n_samples}) and no row in a group of pairs that holds them."
        )
    frequent = {pair for members in groups for pair in itertools.combinations(members, 2)}
    bunch.update(
        data=data,
        data_full=bunch.data,
        latent=latent,
        pairs=_group_names(groups, names),
        groups=row_group,
        complete=row_group == -1,
        observed=observed,
        frequent_pairs=[(names[i], names[j]) for i, j in sorted(frequent)],
        rare_pairs=[(names[i], names[j]) for i, j in itertools.combinations(range(k), 2) if (i, j) not in frequent],
    )
    return bunch


def _group_names(groups, names):
    """Groups of modality positions as tuples of names."""
    return [tuple(names[m] for m in members) for members in groups]
