"""Loaders for the shipped multi-modal data sets, missing-modality simulators and a
synthetic generator.

The loaders return the canonical input form of design 1: one matrix
``data`` plus a ``modalities`` dict ``{name: column indices}``. The amputation
helpers mask whole modality blocks with NaN, which is how the estimators of this
package recognise a missing modality.
"""

import functools
import numbers
import warnings
from importlib import resources

import numpy as np
from sklearn.utils import Bunch, check_array, check_random_state

from .._docs import shared_docs
from .._modalities import observed_mask, resolve_modalities

_DATA_MODULE = "sklearn_calmrl.datasets"

_MULTIPLE_FEATURES_BLOCKS = ("fou", "fac", "kar", "pix", "zer", "mor")
_IMAGE_SEGMENTATION_BLOCKS = ("shape", "color")

# what the loaders' docstrings share, put in place of a line ``{name}``
_LOADER_DOCS = {
    "as_frame": """\
Parameters
----------
as_frame : bool, default=False
    If True, ``data`` is a pandas DataFrame with columns ``feature_names``,
    ``target`` a Series named ``"target"`` and ``frame`` a DataFrame with both.

Returns
-------
data : :class:`~sklearn.utils.Bunch`""",
    "bunch_end": """\
modalities : dict of str to list of int
    ``{modality name: column indices}``, ready for the ``modalities``
    parameter of the estimators.
DESCR : str
    Description of the data set, with its citation.""",
}
_loader_docs = functools.partial(shared_docs, docs=_LOADER_DOCS)


# --------------------------------------------------------------------------- #
# Loaders
# --------------------------------------------------------------------------- #


def _load_npz(filename):
    """Read every array of a shipped ``.npz`` file into a dict (works when installed)."""
    resource = resources.files(_DATA_MODULE).joinpath("data", filename)
    with resources.as_file(resource) as path:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}


def _load_descr(filename):
    return resources.files(_DATA_MODULE).joinpath("descr", filename).read_text(encoding="utf-8")


def _make_bunch(blocks, block_names, feature_names, target, target_names, descr, as_frame):
    data = np.concatenate([np.asarray(b, dtype=np.float64) for b in blocks], axis=1)
    stops = np.cumsum([b.shape[1] for b in blocks])
    modalities = {
        name: list(range(int(stop - b.shape[1]), int(stop)))
        for name, b, stop in zip(block_names, blocks, stops)
    }
    feature_names = np.asarray([str(f) for f in feature_names], dtype=object)
    target_names = np.asarray([str(t) for t in target_names], dtype=object)
    target = np.asarray(target).astype(np.int64, copy=False)
    frame = None
    if as_frame:
        import pandas as pd

        data = pd.DataFrame(data, columns=list(feature_names))
        target = pd.Series(target, name="target")
        frame = pd.concat([data, target], axis=1)
    return Bunch(
        data=data,
        target=target,
        frame=frame,
        modalities=modalities,
        feature_names=feature_names,
        target_names=target_names,
        DESCR=descr,
    )


@_loader_docs
def load_multiple_features(*, as_frame=False):
    """Load the UCI Multiple Features (handwritten digits) data set.

    Read more in the :ref:`User Guide <user_guide>`.

    2000 handwritten digits (200 per class) described by six modalities computed
    from the same images: ``fou`` (76 Fourier coefficients), ``fac`` (216 profile
    correlations), ``kar`` (64 Karhunen-Loeve coefficients), ``pix`` (240 pixel
    averages), ``zer`` (47 Zernike moments) and ``mor`` (6 morphological
    features). Rows are ordered by class. Licensed CC BY 4.0; cite van Breukelen
    et al. (1998) and the UCI Machine Learning Repository (see ``DESCR``).

    {as_frame}
        Dictionary-like object with the attributes:

        data : ndarray of shape (2000, 649) or DataFrame
            The six modalities side by side, in the order fou, fac, kar, pix,
            zer, mor (float64).
        target : ndarray of shape (2000,) or Series
            Digit labels 0-9 (int64).
        frame : DataFrame of shape (2000, 650) or None
            ``data`` and ``target`` together; only when ``as_frame=True``.
        feature_names : ndarray of str of shape (649,)
            ``fou_0, ..., fou_75, fac_0, ..., mor_5``.
        target_names : ndarray of str of shape (10,)
            ``'0'`` to ``'9'``.
        {bunch_end}

    Examples
    --------
    >>> from sklearn_calmrl.datasets import load_multiple_features
    >>> mf = load_multiple_features()
    >>> mf.data.shape
    (2000, 649)
    >>> {name: len(cols) for name, cols in mf.modalities.items()}
    {'fou': 76, 'fac': 216, 'kar': 64, 'pix': 240, 'zer': 47, 'mor': 6}
    """
    arrays = _load_npz("multiple_features.npz")
    blocks = [arrays[name] for name in _MULTIPLE_FEATURES_BLOCKS]
    feature_names = [
        f"{name}_{j}" for name, b in zip(_MULTIPLE_FEATURES_BLOCKS, blocks) for j in range(b.shape[1])
    ]
    descr = _load_descr("multiple_features.rst")
    return _make_bunch(blocks, _MULTIPLE_FEATURES_BLOCKS, feature_names, arrays["target"], [str(d) for d in range(10)], descr, as_frame)


@_loader_docs
def load_image_segmentation(*, as_frame=False):
    """Load the UCI Image Segmentation data set as two modalities.

    Read more in the :ref:`User Guide <user_guide>`.

    2310 3x3-pixel regions of 7 outdoor images (330 per class), with a ``shape``
    modality (8 position and edge features) and a ``color`` modality (10 colour
    features). Licensed CC BY 4.0; cite the UCI Machine Learning Repository (see
    ``DESCR``).

    {as_frame}
        Dictionary-like object with the attributes:

        data : ndarray of shape (2310, 18) or DataFrame
            The ``shape`` then the ``color`` features (float64).
        target : ndarray of shape (2310,) or Series
            Class codes 0-6 (int64).
        frame : DataFrame of shape (2310, 19) or None
            ``data`` and ``target`` together; only when ``as_frame=True``.
        feature_names : ndarray of str of shape (18,)
            The original UCI attribute names (the ``shape`` features, then the
            ``color`` ones).
        target_names : ndarray of str of shape (7,)
            brickface, cement, foliage, grass, path, sky, window.
        {bunch_end}

    Examples
    --------
    >>> from sklearn_calmrl.datasets import load_image_segmentation
    >>> seg = load_image_segmentation(as_frame=True)
    >>> seg.frame.shape
    (2310, 19)
    >>> list(seg.modalities), seg.modalities["color"][:3]
    (['shape', 'color'], [8, 9, 10])
    """
    arrays = _load_npz("image_segmentation.npz")
    blocks = [arrays[name] for name in _IMAGE_SEGMENTATION_BLOCKS]
    feature_names = list(arrays["shape_names"]) + list(arrays["color_names"])
    descr = _load_descr("image_segmentation.rst")
    return _make_bunch(blocks, _IMAGE_SEGMENTATION_BLOCKS, feature_names, arrays["target"], arrays["target_names"], descr, as_frame)


@_loader_docs
def load_digits_halves(*, as_frame=False):
    """Load scikit-learn's 8x8 digits as two modalities: the left and the right half of each image.

    Read more in the :ref:`User Guide <user_guide>`.

    1797 images of handwritten digits 0-9 (:func:`sklearn.datasets.load_digits`,
    the UCI "Optical Recognition of Handwritten Digits" test set, CC BY 4.0),
    split by pixel column: ``left`` holds columns 0-3 of every image row (32
    features) and ``right`` columns 4-7 (32 features). Nothing is downloaded.

    {as_frame}
        ``data`` (1797, 64): left then right half; ``target`` digit labels;
        ``modalities`` ``{'left': [0..31], 'right': [32..63]}``;
        ``feature_names`` ``pixel_<row>_<col>``; ``target_names``; ``DESCR``.

    Examples
    --------
    >>> from sklearn_calmrl.datasets import load_digits_halves
    >>> digits = load_digits_halves()
    >>> digits.data.shape, list(digits.modalities)
    ((1797, 64), ['left', 'right'])
    """
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = raw.images.reshape(len(raw.images), 8, 8)
    blocks = [images[:, :, :4].reshape(-1, 32), images[:, :, 4:].reshape(-1, 32)]
    names = [f"pixel_{r}_{c}" for half in (range(4), range(4, 8)) for r in range(8) for c in half]
    descr = (
        "Digits halves\n=============\n\nscikit-learn's load_digits (1797 8x8 images of handwritten digits, the UCI "
        "Optical Recognition of Handwritten Digits test set, CC BY 4.0; Alpaydin & Kaynak 1998) split into the "
        "left half (pixel columns 0-3) and the right half (columns 4-7) of every image.\n"
    )
    return _make_bunch(blocks, ("left", "right"), names, raw.target, [str(d) for d in range(10)], descr, as_frame)


@_loader_docs
def load_breast_cancer_views(*, as_frame=False):
    """Load scikit-learn's breast cancer data as three modalities: means, standard errors and worst values.

    Read more in the :ref:`User Guide <user_guide>`.

    569 tumours (:func:`sklearn.datasets.load_breast_cancer`, the UCI Breast
    Cancer Wisconsin (Diagnostic) data, CC BY 4.0) described by ten
    measurements of the cell nuclei, each summarised three ways: ``mean`` (the
    10 "mean ..." features), ``error`` (the 10 "... error" standard errors) and
    ``worst`` (the 10 "worst ..." values). Nothing is downloaded.

    {as_frame}
        ``data`` (569, 30); ``target`` 0 malignant, 1 benign; ``modalities``
        ``{'mean': [0..9], 'error': [10..19], 'worst': [20..29]}``;
        ``feature_names``; ``target_names``; ``DESCR``.

    Examples
    --------
    >>> from sklearn_calmrl.datasets import load_breast_cancer_views
    >>> cancer = load_breast_cancer_views()
    >>> cancer.data.shape, list(cancer.modalities)
    ((569, 30), ['mean', 'error', 'worst'])
    """
    from sklearn.datasets import load_breast_cancer

    raw = load_breast_cancer()
    names = list(raw.feature_names)
    views = {
        "mean": [j for j, f in enumerate(names) if f.startswith("mean ")],
        "error": [j for j, f in enumerate(names) if f.endswith(" error")],
        "worst": [j for j, f in enumerate(names) if f.startswith("worst ")],
    }
    blocks = [raw.data[:, cols] for cols in views.values()]
    descr = (
        "Breast cancer views\n===================\n\nscikit-learn's load_breast_cancer (569 tumours, the UCI Breast "
        "Cancer Wisconsin (Diagnostic) data, CC BY 4.0; Street, Wolberg & Mangasarian 1993) split into three views of "
        "the same ten nuclear measurements: their means, standard errors and worst values.\n"
    )
    feature_names = [names[j] for cols in views.values() for j in cols]
    return _make_bunch(blocks, tuple(views), feature_names, raw.target, raw.target_names, descr, as_frame)


# --------------------------------------------------------------------------- #
# Amputation
# --------------------------------------------------------------------------- #


def _is_dataframe(X):
    return hasattr(X, "columns") and hasattr(X, "iloc") and hasattr(X, "index")


def _prepare(X, modalities):
    """Validated float copy of X, the resolved blocks and a function that wraps the result."""
    is_df = _is_dataframe(X)
    feature_names = np.asarray(X.columns) if is_df else None
    Xt = check_array(
        X, dtype=(np.float64, np.float32), ensure_all_finite="allow-nan", input_name="X"
    )
    # Always work on a fresh, writeable copy: the caller's data is never modified.
    Xt = np.array(Xt, dtype=Xt.dtype, order="C", copy=True)
    blocks = resolve_modalities(modalities, Xt.shape[1], feature_names=feature_names)

    def wrap(result):
        if is_df:
            import pandas as pd

            return pd.DataFrame(result, columns=X.columns, index=X.index)
        return result

    return Xt, blocks, wrap


def _check_real(value, name, low=0.0, high=np.inf, *, low_open=False):
    """``value`` as a float if it is a finite real number in [low, high] ((low, high] if ``low_open``)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not np.isfinite(value)
        or not (low < value if low_open else low <= value)
        or not value <= high
    ):
        upper = f"{high:g}]" if np.isfinite(high) else "inf)"
        raise ValueError(f"{name} must be a real number in {'(' if low_open else '['}{low:g}, {upper}, got {value!r}.")
    return float(value)


def _check_fraction(value, name):
    return _check_real(value, name, 0.0, 1.0)


def _warn_empty_rows(Xt, blocks):
    n_empty = int((~observed_mask(Xt, blocks).any(axis=1)).sum())
    if n_empty:
        warnings.warn(
            f"{n_empty} row(s) have no observed modality after amputation (X already missed "
            "some modalities before it).",
            UserWarning,
            stacklevel=3,
        )


def ampute_modalities(X, modalities=None, *, rate=0.5, random_state=None):
    """Simulate missing modalities: NaN-mask whole modality blocks of random rows.

    Read more in the :ref:`User Guide <user_guide>`.

    Exactly ``round(rate * n_samples)`` rows, chosen at random, each lose a
    random non-empty proper subset of the modalities, drawn uniformly over the
    ``2**k - 2`` such subsets, so every row keeps at least one modality
    (the missingness of the benchmark protocol, design 6). The other
    rows are left as they are.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) or DataFrame
        Data to ampute. It is not modified.
    modalities : None, list or dict, default=None
        Modality specification, in any form the estimators accept (block sizes,
        column-index lists, slices, column-name lists for DataFrames, or a dict
        ``{name: columns}``). ``None`` means a single modality, which can only be
        used with ``rate=0``.
    rate : float, default=0.5
        Fraction of rows that lose at least one modality, in [0, 1].
    random_state : int, RandomState instance or None, default=None
        Controls which rows are amputed and which modalities they lose.

    Returns
    -------
    X_amputed : ndarray or DataFrame of shape (n_samples, n_features)
        A float copy of ``X`` (float32 stays float32, anything else becomes
        float64) in which the lost blocks are NaN. A DataFrame input gives a
        DataFrame with the same columns and index.

    Raises
    ------
    ValueError
        If ``rate`` is not in [0, 1], or if there is only one modality and
        ``rate > 0``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_calmrl.datasets import ampute_modalities
    >>> X = np.arange(12.0).reshape(4, 3)
    >>> Xm = ampute_modalities(X, [2, 1], rate=0.5, random_state=0)
    >>> int(np.isnan(Xm).any(axis=1).sum())
    2
    """
    rate = _check_fraction(rate, "rate")
    Xt, blocks, wrap = _prepare(X, modalities)
    n_samples, k = Xt.shape[0], len(blocks)
    n_amputed = int(round(rate * n_samples))
    if rate > 0 and k < 2:
        raise ValueError(
            f"ampute_modalities needs at least 2 modalities when rate > 0 (got {k}): a row "
            "with one modality has no non-empty proper subset to lose. Pass modalities=..."
        )
    if n_amputed == 0:
        return wrap(Xt)

    rng = check_random_state(random_state)
    rows = rng.choice(n_samples, size=n_amputed, replace=False)
    # Uniform over the 2**k - 2 non-empty proper subsets: draw each subset uniformly
    # over all 2**k and redraw the empty and the full ones (rejection sampling).
    lose = rng.randint(0, 2, size=(n_amputed, k)).astype(bool)
    while True:
        redo = np.flatnonzero(lose.all(axis=1) | ~lose.any(axis=1))
        if redo.size == 0:
            break
        lose[redo] = rng.randint(0, 2, size=(redo.size, k)).astype(bool)
    for m, (_, cols) in enumerate(blocks):
        hit = rows[lose[:, m]]
        Xt[np.ix_(hit, cols)] = np.nan
    _warn_empty_rows(Xt, blocks)
    return wrap(Xt)


def _resolve_pairs(pairs, blocks):
    names = [name for name, _ in blocks]
    k = len(names)
    if isinstance(pairs, (str, bytes)) or not hasattr(pairs, "__iter__"):
        raise ValueError(f"pairs must be a list of tuples of modality names or positions, got {pairs!r}.")
    pairs = list(pairs)
    if len(pairs) == 0:
        raise ValueError("pairs is empty: give at least one group of modalities to keep.")
    resolved = []
    for g, pair in enumerate(pairs):
        if isinstance(pair, (str, numbers.Integral)):
            pair = (pair,)
        members = list(pair)
        if len(members) == 0:
            raise ValueError(f"pairs[{g}] is empty: every group must keep at least one modality.")
        positions = []
        for member in members:
            if isinstance(member, str):
                if member not in names:
                    raise ValueError(
                        f"pairs[{g}] names the unknown modality {member!r}; the modalities are {names}."
                    )
                positions.append(names.index(member))
            elif isinstance(member, (numbers.Integral, np.integer)) and not isinstance(member, bool):
                if not -k <= member < k:
                    raise ValueError(
                        f"pairs[{g}] refers to the unknown modality position {member!r}; there are "
                        f"{k} modalities {names}."
                    )
                positions.append(int(member) % k)
            else:
                raise ValueError(
                    f"pairs[{g}] must hold modality names (str) or positions (int), got {member!r}."
                )
        if len(set(positions)) != len(positions):
            raise ValueError(f"pairs[{g}] lists the same modality more than once: {pair!r}.")
        resolved.append(sorted(positions))
    return resolved


def ampute_modalities_structured(
    X, modalities=None, *, pairs, complete_fraction=0.1, random_state=None
):
    """Simulate structured missingness: groups of rows that only ever have given modalities.

    Read more in the :ref:`User Guide <user_guide>`.

    This is the paper's setting (e.g. a "V-T only" and an "A-T only" data set):
    ``round(complete_fraction * n_samples)`` random rows keep every modality;
    the other rows are split at random into ``len(pairs)`` groups of (nearly)
    equal size, and the rows of group ``g`` keep only the modalities listed in
    ``pairs[g]``; every other block of those rows becomes NaN.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) or DataFrame
        Data to ampute. It is not modified.
    modalities : None, list or dict, default=None
        Modality specification, in any form the estimators accept.
    pairs : list of tuple
        One entry per group: the modalities its rows keep, as modality names
        (the keys of a ``modalities`` dict, or ``'m0', 'm1', ...`` for list
        specifications) or positions in ``modalities``. Usually pairs, e.g.
        ``[("vision", "text"), ("audio", "text")]``, but any non-empty group works.
    complete_fraction : float, default=0.1
        Fraction of rows that keep all modalities, in [0, 1].
    random_state : int, RandomState instance or None, default=None
        Controls which rows are complete and which group each other row joins.

    Returns
    -------
    X_amputed : ndarray or DataFrame of shape (n_samples, n_features)
        A float copy of ``X`` with the dropped blocks NaN. A DataFrame input
        gives a DataFrame with the same columns and index.

    Raises
    ------
    ValueError
        If ``complete_fraction`` is not in [0, 1], or if ``pairs`` is empty or
        names an unknown modality.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_calmrl.datasets import ampute_modalities_structured
    >>> X = np.ones((10, 3))
    >>> mods = {"v": [0], "a": [1], "t": [2]}
    >>> Xm = ampute_modalities_structured(
    ...     X, mods, pairs=[("v", "t"), ("a", "t")], complete_fraction=0.2, random_state=0)
    >>> np.isnan(Xm).sum(axis=0).tolist()
    [4, 4, 0]
    """
    complete_fraction = _check_fraction(complete_fraction, "complete_fraction")
    Xt, blocks, wrap = _prepare(X, modalities)
    groups = _resolve_pairs(pairs, blocks)
    _mask_structured(Xt, blocks, groups, complete_fraction, check_random_state(random_state))
    _warn_empty_rows(Xt, blocks)
    return wrap(Xt)


def _mask_structured(Xt, blocks, groups, complete_fraction, rng):
    """NaN-mask ``Xt`` in place under structured missingness; return the group of each row and what it observes.

    ``round(complete_fraction * n_samples)`` random rows are complete (group -1);
    the others are split at random into ``len(groups)`` groups of (nearly) equal
    size, and group ``g`` keeps only the modality positions ``groups[g]``.
    Returns ``row_group`` (int array of shape (n_samples,)) and ``keeps``
    (bool array of shape (n_samples, n_modalities)): the modalities each row
    keeps.
    """
    n_samples = Xt.shape[0]
    n_complete = int(round(complete_fraction * n_samples))
    order = rng.permutation(n_samples)
    row_group = np.full(n_samples, -1, dtype=np.int64)
    for g, rows in enumerate(np.array_split(order[n_complete:], len(groups))):
        row_group[rows] = g
    # one row of kept modalities per group, and a last all-True row that index -1 (complete) picks
    group_keeps = np.zeros((len(groups) + 1, len(blocks)), dtype=bool)
    for g, members in enumerate(groups):
        group_keeps[g, members] = True
    group_keeps[-1] = True
    keeps = group_keeps[row_group]
    for m, (_, cols) in enumerate(blocks):
        Xt[np.ix_(np.flatnonzero(~keeps[:, m]), cols)] = np.nan
    return row_group, keeps


# --------------------------------------------------------------------------- #
# Synthetic data
# --------------------------------------------------------------------------- #


def _check_positive_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}.")
    return int(value)


def _check_int_sequence(value, name, repeat=1):
    """Positive ints as a list: a sequence of them, or one int repeated ``repeat`` times."""
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool):
        value = [value] * repeat
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name} must be an int or a sequence of ints, got {value!r}.")
    return [_check_positive_int(v, f"{name} entries") for v in value]


def _check_noise(noise, k):
    """Noise standard deviations, one per modality, from one float or a sequence of ``k``."""
    try:
        noise_std = np.asarray(noise, dtype=np.float64)
    except (TypeError, ValueError):
        noise_std = np.asarray(np.nan)
    if noise_std.ndim == 0:
        noise_std = np.full(k, float(noise_std))
    if noise_std.shape != (k,) or not np.all(np.isfinite(noise_std)) or np.any(noise_std < 0):
        raise ValueError(
            f"noise must be a non-negative float or one per modality ({k}), got {noise!r}."
        )
    return noise_std


def make_latent_modalities(
    n_samples=500, block_sizes=(8, 6, 4), latent_dim=3, noise=0.1, random_state=None
):
    """Generate multi-modal data from the shared linear-Gaussian latent model.

    Read more in the :ref:`User Guide <user_guide>`.

    Each modality ``m`` is drawn from the model of design 2.1 applied
    to raw features: ``x^m = W_m b + mu_m + e_m`` with a shared latent
    ``b ~ N(0, I_q)`` and independent noise ``e_m ~ N(0, noise_m**2 I)``. The
    loadings ``W_m`` and means ``mu_m`` have standard normal entries. Block ``m``
    therefore has covariance ``W_m W_m^T + noise_m**2 I``.

    Parameters
    ----------
    n_samples : int, default=500
        Number of samples.
    block_sizes : sequence of int, default=(8, 6, 4)
        Number of features of each modality.
    latent_dim : int, default=3
        Dimension ``q`` of the shared latent.
    noise : float or sequence of float, default=0.1
        Noise standard deviation, one for all modalities or one per modality.
    random_state : int, RandomState instance or None, default=None
        Controls the parameters, the latent and the noise.

    Returns
    -------
    X : ndarray of shape (n_samples, sum(block_sizes))
        The modalities side by side (complete: nothing is missing).
    modalities : dict of str to list of int
        ``{'m0': [...], 'm1': [...], ...}`` column indices of each modality.
    params : dict
        The true parameters: ``W`` (list of arrays of shape (d_m, latent_dim)),
        ``mu`` (list of arrays of shape (d_m,)), ``noise_variance`` (ndarray of
        shape (n_modalities,)) and ``latent`` (ndarray of shape
        (n_samples, latent_dim)).

    Examples
    --------
    >>> from sklearn_calmrl.datasets import make_latent_modalities
    >>> X, mods, params = make_latent_modalities(n_samples=100, random_state=0)
    >>> X.shape, [len(c) for c in mods.values()], params["latent"].shape
    ((100, 18), [8, 6, 4], (100, 3))
    """
    n_samples = _check_positive_int(n_samples, "n_samples")
    latent_dim = _check_positive_int(latent_dim, "latent_dim")
    block_sizes = _check_int_sequence(block_sizes, "block_sizes")
    if len(block_sizes) == 0:
        raise ValueError("block_sizes must hold at least one block size.")
    k = len(block_sizes)
    noise_std = _check_noise(noise, k)

    rng = check_random_state(random_state)
    W = [rng.standard_normal((d, latent_dim)) for d in block_sizes]
    mu = [rng.standard_normal(d) for d in block_sizes]
    latent = rng.standard_normal((n_samples, latent_dim))
    parts = [
        latent @ W_m.T + mu_m + s * rng.standard_normal((n_samples, d))
        for W_m, mu_m, s, d in zip(W, mu, noise_std, block_sizes)
    ]
    X = np.concatenate(parts, axis=1)
    stops = np.cumsum(block_sizes)
    modalities = {
        f"m{m}": list(range(int(stop - d), int(stop))) for m, (d, stop) in enumerate(zip(block_sizes, stops))
    }
    params = {"W": W, "mu": mu, "noise_variance": noise_std**2, "latent": latent}
    return X, modalities, params
