"""Modalities: the column blocks of ``X``, their masks, checks and standardization [design 1].

A *modality* is a block of columns of the canonical input ``X``. Sample ``i``
misses modality ``m`` when every entry of block ``m`` in row ``i`` is NaN.
Each feature is standardized on the training rows that observe its block.

References ``[design x.y]`` point into ``doc/design.rst``.
"""

import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ._utils import warn

__all__ = [
    "resolve_modalities",
    "observed_mask",
    "drop_modalities",
    "stack_modalities",
    "is_list_of_blocks",
    "check_fit_input",
    "check_rows_observe",
    "linking_rows",
    "non_numeric_column",
    "warn_disconnected",
    "warn_few_rows",
    "FeatureMoments",
    "feature_moments",
    "statistics_from_moments",
    "feature_statistics",
    "standardized_blocks",
]

MAX_ABS = 1e15  # largest |value| fed to the model after standardization: beyond it float32 encoders overflow


def _default_name(position):
    return f"m{position}"


def _columns_to_indices(name, columns, n_features, feature_names):
    """Turn one modality's column spec into a sorted array of column indices."""
    if isinstance(columns, slice):
        idx = np.arange(n_features)[columns]
    elif isinstance(columns, (str, numbers.Integral)):
        raise ValueError(
            f"Modality {name!r}: columns must be a list of column indices, column names or a "
            f"slice, got the scalar {columns!r}."
        )
    else:
        cols = list(columns)
        if len(cols) == 0:
            raise ValueError(f"Modality {name!r} is empty: give it at least one column.")
        if all(isinstance(c, str) for c in cols):
            if feature_names is None:
                raise ValueError(
                    f"Modality {name!r} is given by column names, but X has no column names "
                    "(pass a pandas DataFrame, or give column indices)."
                )
            lookup = {str(f): j for j, f in enumerate(feature_names)}
            unknown = [c for c in cols if c not in lookup]
            if unknown:
                raise ValueError(
                    f"Modality {name!r} names columns that X does not have: {unknown[:10]}."
                )
            idx = np.array([lookup[c] for c in cols], dtype=np.intp)
        elif all(isinstance(c, (numbers.Integral, np.integer)) and not isinstance(c, bool) for c in cols):
            idx = np.asarray(cols, dtype=np.intp)
            bad = idx[(idx < -n_features) | (idx >= n_features)]
            if bad.size:
                raise ValueError(
                    f"Modality {name!r} has column indices out of range for X with "
                    f"{n_features} columns: {bad[:10].tolist()}."
                )
            idx = np.where(idx < 0, idx + n_features, idx)
        else:
            raise ValueError(
                f"Modality {name!r}: columns must be all integers or all strings, got {cols[:5]!r}."
            )
    if idx.size == 0:
        raise ValueError(f"Modality {name!r} is empty: give it at least one column.")
    if np.unique(idx).size != idx.size:
        raise ValueError(f"Modality {name!r} lists the same column more than once.")
    return idx


def resolve_modalities(modalities, n_features, feature_names=None):
    """Resolve a ``modalities`` specification into named column blocks.

    Parameters
    ----------
    modalities : None, list, 1-D ndarray or dict
        ``None`` (one block of all columns); a list (or 1-D array) of block sizes (``[76, 216]``);
        a list of column-index lists, slices or (for DataFrames) column-name lists;
        or a dict ``{name: columns}`` with any of those column forms.
    n_features : int
        Number of columns of ``X``.
    feature_names : array-like of str, default=None
        Column names of ``X`` when it is a DataFrame.

    Returns
    -------
    blocks : list of (str, ndarray of int)
        Modality names and their column indices, in specification order.

    Raises
    ------
    ValueError
        If a modality is empty, blocks overlap, leave columns out or name columns
        that do not exist.
    """
    if isinstance(modalities, np.ndarray):  # a 1-D array of block sizes or names, as a list
        if modalities.ndim != 1:
            raise ValueError(f"modalities given as an array must be 1-D (block sizes), got shape {modalities.shape}.")
        modalities = modalities.tolist()
    if modalities is None:
        blocks = [(_default_name(0), np.arange(n_features))]
    elif isinstance(modalities, Mapping):
        if len(modalities) == 0:
            raise ValueError("modalities is an empty dict: give at least one modality.")
        blocks = [
            (str(name), _columns_to_indices(str(name), cols, n_features, feature_names))
            for name, cols in modalities.items()
        ]
    elif isinstance(modalities, (list, tuple)):
        if len(modalities) == 0:
            raise ValueError("modalities is an empty list: give at least one modality.")
        if all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in modalities):
            sizes = [int(s) for s in modalities]
            if any(s <= 0 for s in sizes):
                raise ValueError(f"modalities given as block sizes must be positive, got {sizes}.")
            if sum(sizes) != n_features:
                raise ValueError(
                    f"modalities block sizes {sizes} sum to {sum(sizes)}, but X has "
                    f"{n_features} columns."
                )
            stops = np.cumsum(sizes)
            blocks = [
                (_default_name(m), np.arange(stop - size, stop))
                for m, (size, stop) in enumerate(zip(sizes, stops))
            ]
        else:
            blocks = [
                (_default_name(m), _columns_to_indices(_default_name(m), cols, n_features, feature_names))
                for m, cols in enumerate(modalities)
            ]
    else:
        raise ValueError(
            "modalities must be None, a list of block sizes or column lists, or a dict "
            f"{{name: columns}}; got {type(modalities).__name__}."
        )

    owner = np.full(n_features, -1)
    for m, (name, idx) in enumerate(blocks):
        clash = idx[owner[idx] >= 0]
        if clash.size:
            other = blocks[owner[clash[0]]][0]
            raise ValueError(
                f"Modalities {other!r} and {name!r} overlap: column(s) {clash[:10].tolist()} "
                "belong to both. Every column must belong to exactly one modality."
            )
        owner[idx] = m
    left_out = np.flatnonzero(owner < 0)
    if left_out.size:
        raise ValueError(
            f"modalities leave {left_out.size} column(s) out (indices {left_out[:10].tolist()}): "
            "every column must belong to exactly one modality (drop unused columns first, "
            "e.g. with a ColumnTransformer)."
        )
    return blocks


def observed_mask(X, blocks):
    """Boolean ``(n_samples, n_modalities)`` mask: True where a modality is observed.

    A modality is missing in a row when every entry of its block is NaN.
    """
    nan = np.isnan(X)
    return np.stack([~nan[:, idx].all(axis=1) for _, idx in blocks], axis=1)


def drop_modalities(observed, rate, generator):
    """Hide observed modalities at random, never all of a row's [design 3.6].

    In every row that observes at least two modalities, each observed modality
    is hidden independently with probability ``rate``; where that would hide
    all of them, one observed modality chosen uniformly at random is kept. A
    modality of such a row observing ``c`` modalities therefore ends hidden with
    probability ``rate - rate^c / c``. Rows observing one modality or none are
    unchanged, and no unobserved modality becomes observed.

    Parameters
    ----------
    observed : torch.Tensor or ndarray of shape (n, k), dtype bool
        Observation mask (on any device); not modified.
    rate : float in [0, 1)
        Probability of hiding each observed modality.
    generator : torch.Generator
        CPU generator of the draws (made on the CPU and moved: the same mask on
        every device; the global RNG is not touched).

    Returns
    -------
    torch.Tensor or ndarray of shape (n, k), dtype bool
        A new mask of the input's type (and device).

    Raises
    ------
    ValueError
        If ``rate`` is not a number in ``[0, 1)`` or ``observed`` is not a 2-D boolean mask.
    """
    import torch  # here, not at the top: sklearn_calmrl.datasets imports this module without torch

    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= rate < 1:
        raise ValueError(f"rate must be a number in [0, 1); got {rate!r}.")
    mask = observed if isinstance(observed, torch.Tensor) else torch.as_tensor(np.asarray(observed))
    if mask.dtype != torch.bool or mask.ndim != 2:
        raise ValueError(f"observed must be a 2-D boolean mask; got dtype {mask.dtype} and shape {tuple(mask.shape)}.")
    u = torch.rand(2, *mask.shape, dtype=torch.float64, generator=generator).to(mask.device)
    several = mask.sum(dim=1, keepdim=True) > 1
    kept = mask & ~(several & (u[0] < rate))  # [design 3.6] each observed modality of a row with >= 2 hidden w.p. rate
    pick = torch.where(mask, u[1], -1.0).argmax(dim=1, keepdim=True)  # a uniformly random observed modality per row
    emptied = several & ~kept.any(dim=1, keepdim=True)
    out = kept | (emptied & (torch.arange(mask.shape[1], device=mask.device) == pick))  # [design 3.6] never hide them all
    return out if isinstance(observed, torch.Tensor) else out.cpu().numpy()


def is_list_of_blocks(X):
    """True when ``X`` is a list or tuple of 2-D per-modality arrays (the convenience form)."""
    return (
        isinstance(X, (list, tuple))
        and len(X) > 0
        and all(hasattr(b, "shape") and len(b.shape) == 2 for b in X)
    )


def stack_modalities(blocks, names=None):
    """Build the canonical ``(X, modalities)`` pair from a list of per-modality arrays.

    Read more in the :ref:`User Guide <user_guide>`.

    Parameters
    ----------
    blocks : list of array-like of shape (n_samples, d_m)
        One array per modality, rows aligned; a row of a block that is all NaN
        marks that modality missing for the sample.
    names : list of str, default=None
        Modality names; ``m0, m1, ...`` when omitted.

    Returns
    -------
    X : ndarray of shape (n_samples, sum(d_m))
        The blocks side by side (a new array; the inputs are not modified).
    modalities : dict
        ``{name: list of column indices}``, ready for ``CalMRLTransformer(modalities=...)``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_calmrl import stack_modalities
    >>> X, mods = stack_modalities([np.zeros((3, 2)), np.ones((3, 1))], names=["a", "b"])
    >>> X.shape, mods
    ((3, 3), {'a': [0, 1], 'b': [2]})
    """
    arrays = [np.asarray(b) for b in blocks]
    if len(arrays) == 0:
        raise ValueError("stack_modalities needs at least one block.")
    for m, a in enumerate(arrays):
        if a.ndim != 2:
            raise ValueError(f"Block {m} must be 2-D (n_samples, n_features), got shape {a.shape}.")
    n_rows = [a.shape[0] for a in arrays]
    if len(set(n_rows)) != 1:
        raise ValueError(
            f"All modality blocks must have the same number of rows (samples); got row counts {n_rows}."
        )
    if names is None:
        names = [_default_name(m) for m in range(len(arrays))]
    names = [str(n) for n in names]
    if len(names) != len(arrays) or len(set(names)) != len(names):
        raise ValueError(f"names must be {len(arrays)} distinct strings, got {names}.")
    stops = np.cumsum([a.shape[1] for a in arrays])
    modalities = {
        name: list(range(stop - a.shape[1], stop)) for name, a, stop in zip(names, arrays, stops)
    }
    return np.concatenate(arrays, axis=1), modalities


def check_fit_input(blocks, observed, n_rows, feature_count, where, feature_names=None):
    """Raise on data that cannot be fitted, warn on features that carry nothing [design 1.2].

    Parameters
    ----------
    blocks : list of (str, ndarray of int)
    observed : bool ndarray (P, k)
        Masks of the rows that observe at least one modality (the rows, or their
        distinct patterns).
    n_rows : int
        Number of such rows.
    feature_count : ndarray (n_features,)
        Non-NaN entries of each feature in the rows observing its modality
        (:attr:`FeatureMoments.count`).
    where : str
        Completes "Modality 'x' is never observed in ..."; ``{n}`` is ``n_rows``.
    feature_names : array-like of str, optional

    Errors: fewer than 2 rows; a modality with no observed row (its encoder and
    loadings cannot be learned). Warning: features that are NaN in every row
    observing their modality (they are filled with 0 after standardization and
    carry no information).
    """
    if n_rows < 2:
        raise ValueError(
            f"fit needs at least 2 rows that observe a modality; got {n_rows} sample. "
            "The latent model's loadings and noise cannot be estimated from one row."
        )
    never = [name for (name, _), seen in zip(blocks, observed.any(axis=0)) if not seen]
    if never:
        raise ValueError(
            f"Modality {never[0]!r} is never observed in {where.format(n=n_rows)}: its encoder and loadings cannot be learned."
        )
    for name, idx in blocks:
        empty = idx[feature_count[idx] == 0]
        if empty.size:
            columns = [str(feature_names[j]) for j in empty] if feature_names is not None else empty.tolist()
            warn(
                f"Feature(s) {columns[:10]} of modality {name!r} are NaN in every row that observes the modality: "
                "they carry no information (they are filled with the modality's mean, 0 after standardization). "
                "Drop them from X and from modalities."
            )


def check_rows_observe(n_empty, n_rows, caller, *, first=True):
    """Rows that observe no modality [design 1.2]: an error when every row of a first fit is one, else a warning that
    ``caller`` ignores them."""
    if first and n_empty == n_rows:
        raise ValueError(f"None of the {n_rows} rows observes any modality (every block is all NaN).")
    if n_empty:
        warn(f"{n_empty} of {n_rows} rows observe no modality (every block is NaN); {caller} ignores them.")


def linking_rows(observed, counts=None):
    """Rows that observe at least two modalities, or every observing row of a single-modality model [design 2.10].

    ``observed`` is a boolean mask (n, k), numpy or torch; with ``counts`` its rows
    are distinct patterns and ``counts`` their numbers of rows.
    """
    linking = observed.any(1) if observed.shape[1] == 1 else observed.sum(1) >= 2
    return int(linking.sum()) if counts is None else int(counts[linking].sum())


def non_numeric_column(X):
    """``(index, name, value)`` of the first column of ``X`` holding a value that is not a number, else None."""
    columns = list(getattr(X, "columns", []))
    values = X.to_numpy(dtype=object) if columns else np.asarray(X, dtype=object)
    if values.ndim != 2:
        return None
    for j in range(values.shape[1]):
        for v in values[:, j]:
            try:
                float(v)
            except (TypeError, ValueError):
                return j, (columns[j] if columns else None), v
    return None


def warn_disconnected(observed, names):
    """Warn when modalities fall into groups that never co-occur, directly or through a chain [design 1]."""
    k = observed.shape[1]
    if k < 2:
        return
    co = (observed.T.astype(int) @ observed.astype(int)) > 0
    group = -np.ones(k, dtype=int)
    for start in range(k):
        if group[start] >= 0:
            continue
        stack = [start]
        group[start] = start
        while stack:
            a = stack.pop()
            for b in np.flatnonzero(co[a] & (group < 0)):
                group[b] = start
                stack.append(b)
    groups = [[names[m] for m in np.flatnonzero(group == g)] for g in np.unique(group)]
    if len(groups) > 1:
        warn(
            f"Modalities fall into groups that never co-occur in any row, directly or through a chain: {groups}. "
            "The cross-structure between groups cannot be learned; imputation across them returns the prior."
        )


def warn_few_rows(counts, names, latent_dim):
    """Warn about modalities observed in no more training rows than the latent has dimensions [design 2.4].

    ``W_m`` of a modality has ``latent_dim`` columns to estimate from the rows that
    observe it: with ``latent_dim`` rows or fewer (plus one for the mean), its
    loadings, and so its imputations, are not determined by the data.
    """
    for name, n in zip(names, counts):
        if int(n) <= latent_dim:
            warn(
                f"Modality {name!r} is observed in {int(n)} training row(s), no more than latent_dim_={latent_dim}: "
                "its loadings and imputations rest on too few rows. Observe it in more rows or lower latent_dim."
            )


@dataclass
class FeatureMoments:
    """Per-feature count, sum and centred sum of squares over the rows that observe its block [design 1.3].

    Additive over row chunks: ``a + b`` are the moments of both chunks' rows
    (the pairwise update of Chan, Golub & LeVeque, 1979, which keeps the centred
    sums accurate where raw sums of squares would cancel). NaN entries inside an
    observed block are skipped.

    Attributes
    ----------
    count : ndarray of shape (n_features,)
        Non-NaN entries of the feature in the rows that observe its block.
    total : ndarray of shape (n_features,)
        Their sum.
    m2 : ndarray of shape (n_features,)
        Their sum of squared deviations from their mean.
    """

    count: np.ndarray
    total: np.ndarray
    m2: np.ndarray

    def mean(self):
        """``total / count``; NaN for a feature with no entry."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.total / self.count

    def __add__(self, other):
        count = self.count + other.count
        both = (self.count > 0) & (other.count > 0)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # huge values: inf, caught downstream
            delta = other.mean() - self.mean()
            shift = np.where(both, delta**2 * self.count * other.count / count, 0.0)
        return FeatureMoments(count, self.total + other.total, self.m2 + other.m2 + shift)


def feature_moments(X, blocks, observed):
    """:class:`FeatureMoments` of the rows of ``X`` (one chunk, or all rows)."""
    count, total, m2 = (np.zeros(X.shape[1]) for _ in range(3))
    for m, (_, idx) in enumerate(blocks):
        rows = X[observed[:, m]][:, idx].astype(np.float64)
        seen = ~np.isnan(rows)
        count[idx] = seen.sum(axis=0)
        # huge values overflow to inf here; standardized_blocks then names the modality [design 1.4]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            total[idx] = np.where(seen, rows, 0.0).sum(axis=0)
            mean = total[idx] / count[idx]
            m2[idx] = (np.where(seen, rows - mean, 0.0) ** 2).sum(axis=0)
    return FeatureMoments(count, total, m2)


def statistics_from_moments(moments, standardize):
    """Per-feature ``(mean, scale, fill)`` from :class:`FeatureMoments` [design 1.3].

    ``fill`` (the feature's observed mean) replaces NaNs inside an observed
    block; ``mean`` and ``scale`` (the standard deviation) standardize, 0 and 1
    when ``standardize`` is False. Constant features keep scale 1.
    """
    mu = moments.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(moments.m2 / moments.count)
    fill = np.where(np.isfinite(mu), mu, 0.0)
    if not standardize:
        return np.zeros_like(fill), np.ones_like(fill), fill
    scale = np.where(np.isfinite(sd) & (sd > 1e-12 * np.maximum(1.0, np.abs(fill))), sd, 1.0)
    return fill.copy(), scale, fill


def feature_statistics(X, blocks, observed, standardize):
    """Per-feature ``(mean, scale, fill)`` over the rows that observe each block [design 1].

    :func:`statistics_from_moments` of :func:`feature_moments` of all rows.
    """
    return statistics_from_moments(feature_moments(X, blocks, observed), standardize)


def standardized_blocks(X, blocks, observed, mean, scale, fill):
    """Standardized float64 blocks: partial NaNs get ``fill`` (0 after scaling), missing blocks 0 [design 1].

    Raises a ValueError naming the modality when a value is too large to compute with.
    """
    out = []
    for m, (name, idx) in enumerate(blocks):
        B = (X[:, idx] - mean[idx]) / scale[idx]
        B = np.where(np.isnan(B), (fill[idx] - mean[idx]) / scale[idx], B)
        B[~observed[:, m]] = 0.0
        big = float(np.abs(B).max(initial=0.0))
        if not big <= MAX_ABS:
            raise ValueError(
                f"Modality {name!r} has values too large to compute with: after centering and scaling by the "
                f"training statistics they reach {big:.3g} in magnitude (limit {MAX_ABS:.0e}). Rescale X or "
                "remove these outliers."
            )
        out.append(B)
    return out
