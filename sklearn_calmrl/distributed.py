"""Fitting past one machine: the estimators on a dask array whose rows no single worker holds [design 3.4].

Three functions take an estimator and a ``dask.array.Array`` ``X`` (rows in
chunks, every column in each chunk; other column chunkings are merged first):

- :func:`fit_dask` fits the closed-form model (:class:`~sklearn_calmrl.MultiViewPPCA`)
  exactly as ``fit`` would on the same rows in memory. The workers reduce the
  standardization statistics of their chunks, then every EM iteration sums the
  chunks' sufficient statistics on the workers (a tree reduction) and the M-step
  runs on the client; only statistics and parameters travel, never rows.
- :func:`partial_fit_dask` trains torch encoders by streaming the chunks, one at a
  time on the client, through ``partial_fit`` (incremental EM [design 3.2]).
- :func:`transform_dask` maps ``transform`` over the chunks.

The fitted estimator is an ordinary one: ``transform``, ``score``, pickling and
``partial_fit`` work on in-memory data as after ``fit``. Computations run on
dask's current scheduler: the ``distributed.Client`` when one is active,
otherwise dask's default. Workers compute on the CPU. ``X`` is read once per
EM iteration (plus once for the statistics and once for the initialisation
sample), so persist it first (``X = X.persist()``) unless reading it is cheap.
dask is an optional dependency (``pip install "sklearn-calmrl[distributed]"``).

References ``[design x.y]`` point into ``doc/design.rst``.
"""

import functools
import uuid
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._base import Prepared, _all_or_nothing, _fitted_names
from ._chunks import CHUNK
from ._latent import chunked_statistics, run_em, summed_statistics
from ._modalities import FeatureMoments, check_rows_observe, feature_moments, linking_rows, observed_mask, standardized_blocks
from ._ppca import MultiViewPPCA
from ._runtime import resolve_device
from ._streams import INIT_ROWS, init_rows

try:
    import dask
    import dask.array as da
except ImportError:  # pragma: no cover - exercised only without dask
    dask = da = None

__all__ = ["fit_dask", "partial_fit_dask", "transform_dask"]


def _dask_array(X):
    """``X`` as a 2-D dask array with one chunk across the columns and known row chunks."""
    if da is None:  # pragma: no cover - exercised only without dask
        raise ImportError('sklearn_calmrl.distributed needs dask: pip install "sklearn-calmrl[distributed]".')
    if not isinstance(X, da.Array):
        raise TypeError(f"X must be a dask.array.Array, got {type(X).__name__}; use the estimator's own methods for in-memory data.")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got {X.ndim} dimensions.")
    if any(np.isnan(c) for c in X.chunks[0]):
        raise ValueError("X has unknown row-chunk sizes; call X.compute_chunk_sizes() first.")
    return X if X.numblocks[1] == 1 else X.rechunk({1: -1})


def _broadcast(obj):
    """One graph key holding ``obj``, shared by every task that takes it (sent to each worker once)."""
    return dask.delayed(obj, name=f"calmrl-{type(obj).__name__}-{uuid.uuid4().hex}", traverse=False)


def _tree_sum(parts, split_every):
    """A delayed sum of ``parts`` (objects with ``+``; None ignored), ``split_every`` at a time on the workers."""
    total = dask.delayed(_sum)
    while len(parts) > 1:
        parts = [total(parts[i : i + split_every]) for i in range(0, len(parts), split_every)]
    return total(parts)


def _sum(parts):
    return summed_statistics(p for p in parts if p is not None)


@dataclass
class _Summary:
    """What the first pass over the chunks collects: feature moments and missingness-pattern counts."""

    moments: FeatureMoments
    patterns: dict  # tuple of k bools -> number of rows with that pattern

    def __add__(self, other):
        patterns = dict(self.patterns)
        for p, c in other.patterns.items():
            patterns[p] = patterns.get(p, 0) + c
        return _Summary(self.moments + other.moments, patterns)


def _summarize(estimator, chunk):
    """Worker: validate a chunk with the estimator's own input checks [design 1.4], then summarize it."""
    X, blocks, observed = estimator._validate_input(chunk, reset=True)
    patterns, counts = np.unique(observed, axis=0, return_counts=True)
    return _Summary(feature_moments(X, blocks, observed), {tuple(p): int(c) for p, c in zip(patterns.tolist(), counts)})


def _summary(estimator, chunks, split_every):
    """Every chunk summarized on the workers and summed: the moments, the distinct missingness patterns (P, k) and
    their numbers of rows."""
    unfitted = _broadcast(estimator)
    summary = _tree_sum([dask.delayed(_summarize)(unfitted, c) for c in chunks], split_every).compute()
    patterns = np.array(list(summary.patterns), dtype=bool).reshape(len(summary.patterns), -1)
    return summary.moments, patterns, np.array(list(summary.patterns.values()), dtype=np.int64)


def _standardized_rows(X, blocks, standardization):
    """The rows of ``X`` that observe a modality: float64 standardized blocks as tensors and their mask [design 1]."""
    observed = observed_mask(X, blocks)
    keep = observed.any(axis=1)
    Z = [torch.as_tensor(b[keep]) for b in standardized_blocks(X, blocks, observed, *standardization)]
    return Z, torch.as_tensor(observed[keep])


def _chunk_statistics(chunk, standardizer, params):
    """Worker: the chunk's sufficient statistics under ``params`` [design 2.4]; None for a chunk without a row.

    ``standardizer`` is the pair ``(blocks, (mean, scale, fill))``.
    """
    Z, observed = _standardized_rows(np.asarray(chunk), *standardizer)
    return chunked_statistics(Z, observed, params, CHUNK) if observed.shape[0] else None


@_all_or_nothing
def fit_dask(estimator, X, *, init_size=INIT_ROWS, split_every=8):
    """Fit the closed-form model of ``estimator`` on a dask array, with the workers doing the row work [design 3.4].

    Read more in the :ref:`User Guide <user_guide>`.

    Equal to ``estimator.fit(X.compute())`` up to rounding whenever ``X`` has at
    most ``init_size`` rows (tested to 1e-8). The steps:

    1. one pass over the chunks: each worker validates its chunk and returns
       the per-feature :class:`~sklearn_calmrl._modalities.FeatureMoments` and
       the counts of its missingness patterns; the sums give the
       standardization of ``fit`` [design 1.3] and its checks (rows that observe
       nothing, modalities never observed or never co-occurring) [design 1.2];
    2. the initialisation [design 2.6] on a bounded sample gathered to the
       client: ``init_size`` rows drawn at random from the whole array without
       replacement (all rows when there are at most ``init_size``), the rule
       ``fit`` uses for the representation-level model of torch encoders;
    3. EM [design 2.4]: per iteration, each worker standardizes its chunk and
       computes its :func:`~sklearn_calmrl._latent.sufficient_statistics` under
       the current parameters (sent once per worker), the statistics are summed
       ``split_every`` at a time on the workers, and the M-step runs on the
       client; it stops on ``fit``'s rule (``tol`` / ``max_iter``).

    Parameters
    ----------
    estimator : MultiViewPPCA
        Its parameters are used as ``fit`` uses them; fitted attributes are
        replaced (on error the estimator is left as it was). For the encoders
        of a :class:`~sklearn_calmrl.CalMRLTransformer` use :func:`partial_fit_dask`.
    X : dask.array.Array of shape (n_samples, n_features)
        Blocks side by side as described by ``modalities``; NaN blocks mark
        missing modalities.
    init_size : int, default=20000
        Most rows gathered to the client for the initialisation.
    split_every : int, default=8
        Fan-in of the tree reduction of the statistics.

    Returns
    -------
    estimator : object
        The fitted estimator.

    Examples
    --------
    >>> import dask.array as da
    >>> from sklearn_calmrl import MultiViewPPCA
    >>> from sklearn_calmrl.datasets import ampute_modalities, make_latent_modalities
    >>> from sklearn_calmrl.distributed import fit_dask
    >>> X, mods, _ = make_latent_modalities(2000, block_sizes=(5, 4, 3), latent_dim=2, random_state=0)
    >>> X = da.from_array(ampute_modalities(X, mods, rate=0.3, random_state=0), chunks=(500, -1))
    >>> fit_dask(MultiViewPPCA(mods, latent_dim=2, random_state=0), X).components_[0].shape
    (5, 2)
    """
    X = _dask_array(X)
    if not isinstance(estimator, MultiViewPPCA):
        raise ValueError(
            f"fit_dask fits the closed-form model only (MultiViewPPCA), got {type(estimator).__name__}; "
            "train torch encoders on a dask array with partial_fit_dask."
        )
    estimator._validate_params()
    if estimator.n_components != 1:
        raise ValueError(f"fit_dask fits a single latent model (n_components=1), got n_components={estimator.n_components!r}.")
    device = resolve_device(estimator.device)
    for name in _fitted_names(estimator):  # a refit leaves exactly the attributes of a fresh fit
        delattr(estimator, name)
    n = int(X.shape[0])
    rng = check_random_state(estimator.random_state)
    seed = int(rng.randint(np.iinfo(np.int32).max))
    sample_rows = init_rows(n, torch.Generator().manual_seed(int(rng.randint(np.iinfo(np.int32).max))), init_size)
    sample, blocks, _ = estimator._validate_input(X[sample_rows.numpy()].compute(), reset=True)
    chunks = list(X.to_delayed().ravel())

    moments, patterns, counts = _summary(estimator, chunks, split_every)
    seen = patterns.any(axis=1)
    n_empty = int(counts[~seen].sum())
    check_rows_observe(n_empty, n, "fit_dask")
    # the checks and the standardization of fit, on the chunks' patterns and moments [design 1.2, 1.3]
    standardization = estimator._checked_standardization(blocks, patterns[seen], n - n_empty, moments, "X (all its rows are NaN across its block)")

    Z_sample, observed_sample = _standardized_rows(sample, blocks, standardization)
    del sample
    standardizer = _broadcast((blocks, standardization))

    def statistics(params):
        """Every chunk's statistics under ``params``, summed on the workers."""
        current = _broadcast(params)
        return _tree_sum([dask.delayed(_chunk_statistics)(c, standardizer, current) for c in chunks], split_every).compute()

    def fit_single(start):  # the model of all rows, EM on the workers [design 3.4]
        return run_em(statistics, start, max_iter=estimator.max_iter, tol=estimator.tol, noise=estimator.noise)

    # the estimator's own fit path [design 3.4]: the start, the stored rows [design 2.9], the cross-fitted weights
    # [design 2.11] and the variance explained [design 2.12] from the sample, EM on every chunk
    prep = Prepared(
        blocks, standardization, Z_sample, observed_sample, n - n_empty, seed, "cpu", None,
        estimator.n_features_in_, getattr(estimator, "feature_names_in_", None),
        n_linking=linking_rows(patterns, counts), fit_single=fit_single,
    )
    estimator._fit(prep, incremental=False)
    estimator._place(device)  # fitted on the client's CPU, computing where the estimator asks
    estimator._warn_few_rows((patterns[seen] * counts[seen, None]).sum(axis=0), blocks)
    return estimator


def partial_fit_dask(estimator, X, *, n_passes=1):
    """Train any estimator on a dask array by streaming its row chunks through ``partial_fit`` [design 3.2].

    Read more in the :ref:`User Guide <user_guide>`.

    The chunks are computed one at a time on the client (where the torch
    encoders train) and each is passed to ``estimator.partial_fit``: one pass of
    gradient steps over the chunk and one incremental M-step. The client holds
    one chunk at a time. The same result as calling ``partial_fit`` on the
    computed chunks in order; with ``n_passes > 1`` the chunks come back and
    replace their earlier statistics, so the latent model approaches the
    full-batch EM fixed point. Choose the row chunks as ``partial_fit`` chunks:
    the first must observe every modality and sets the standardization.

    With ``latent_dim='auto'`` an unfitted estimator first counts, on the
    workers, the rows of every chunk that observe at least two modalities, and
    the first ``partial_fit`` call resolves ``latent_dim`` from that count
    (``n_linking_rows``), as ``fit`` does from all rows: the output has
    ``fit``'s columns whatever the chunking [design 2.10].

    Parameters
    ----------
    estimator : CalMRLTransformer or MultiViewPPCA
        Unfitted (the first chunk initialises it) or fitted (continues from it).
    X : dask.array.Array of shape (n_samples, n_features)
    n_passes : int, default=1
        Passes over the chunks, in order.

    Returns
    -------
    estimator : object
        The updated estimator.
    """
    X = _dask_array(X)
    if n_passes < 1:
        raise ValueError(f"n_passes must be at least 1, got {n_passes}.")
    chunks = X.to_delayed().ravel()
    n_linking = None
    if not hasattr(estimator, "modalities_") and estimator.latent_dim == "auto":
        _, patterns, counts = _summary(estimator, chunks, 8)
        n_linking = linking_rows(patterns, counts)
    for p in range(n_passes):
        for c, chunk in enumerate(chunks):
            estimator.partial_fit(chunk.compute(), **({"n_linking_rows": n_linking} if p == c == 0 else {}))
    return estimator


def transform_dask(estimator, X):
    """``estimator.transform`` of every row chunk of a dask array, as a lazy dask array.

    Read more in the :ref:`User Guide <user_guide>`.

    Parameters
    ----------
    estimator : fitted CalMRLTransformer or MultiViewPPCA
    X : dask.array.Array of shape (n_samples, n_features)

    Returns
    -------
    X_new : dask.array.Array of shape (n_samples, n_features_out)
        Row chunks as ``X``'s; float32 when ``X`` is float32, float64 otherwise.
    """
    check_is_fitted(estimator)
    X = _dask_array(X)
    width = len(estimator.get_feature_names_out())
    dtype = np.float32 if X.dtype == np.float32 else np.float64
    # one inference state for every chunk: the local correction's stored-row terms are prepared once, not per chunk
    state = estimator._inference_state(estimator._output_parts())
    return X.map_blocks(functools.partial(estimator._transform, state=state), chunks=(X.chunks[0], (width,)), dtype=dtype,
                        meta=np.empty((0, width), dtype=dtype))
