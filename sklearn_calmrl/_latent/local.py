"""Local correction of a latent model's imputations by stored rows (the ``K -> n`` limit of the mixture) [design 2.9].

It wraps any kind of latent model through the protocol (design 2.13): the model's
imputations of the query and of the stored rows, and the noise variances of its
marginal covariance (:meth:`kernel_metric`), which scale the kernel's distance.
"""

import threading
from typing import NamedTuple

import torch

from .gaussian import missingness_patterns
from .protocol import impute_calibrated
from .seeding import seed_rows


class CentreCache:
    """The stored rows' terms of :func:`local_corrections`, kept across the chunks of one inference call.

    A transform walks its rows in chunks and meets the same missingness patterns in every chunk. The stored rows'
    terms that do not depend on the pattern are prepared once per call; those of a pattern are kept while the kept
    terms stay within ``max_bytes`` (later patterns are prepared per chunk, as without a cache).
    """

    def __init__(self, max_bytes=256 << 20):
        self.max_bytes = max_bytes
        self.stored = None
        self.patterns = {}
        self.lock = threading.Lock()  # the chunks of transform_dask may share one cache across threads

    def __getstate__(self):  # sent to dask workers: a lock does not pickle
        state = self.__dict__.copy()
        del state["lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.lock = threading.Lock()

    def keep(self, key, terms):
        size = sum(t.numel() * t.element_size() for t in terms if torch.is_tensor(t))
        with self.lock:
            if size <= self.max_bytes and key not in self.patterns:
                self.patterns[key] = terms
                self.max_bytes -= size
        return terms


class Centres(NamedTuple):
    """The stored rows of the local correction [design 2.9]: each stands for a group of training rows."""

    rows: list  # per block m, (n_c, d_m): the weighted mean of the group's rows, completed by the model
    given: list  # per block m, (n_c, d_m): the weighted mean of block m over the group's rows that observe it
    counts: torch.Tensor  # (n_c, k): the weight of the group's rows that observe each block
    weights: torch.Tensor  # (n_c,): the weight of the group

    def to(self, **kwargs):
        """Every tensor moved or cast (``Tensor.to``'s arguments)."""
        move = lambda ts: [t.to(**kwargs) for t in ts]  # noqa: E731
        return Centres(move(self.rows), move(self.given), self.counts.to(**kwargs), self.weights.to(**kwargs))


def training_centres(Z, observed, params, weights=None):
    """Every row ``Z`` (missing blocks anything) as its own centre of weight ``weights`` (1 by default): its blocks
    completed by ``params`` [design 2.3], and counted for the blocks it observes."""
    rows = impute_calibrated(Z, observed, params)
    w = torch.ones(observed.shape[0], dtype=rows[0].dtype, device=rows[0].device) if weights is None else weights.to(rows[0].dtype)
    return Centres(rows, rows, observed.to(rows[0].dtype) * w[:, None], w)


def concat_centres(a, b):
    """The centres of ``a`` followed by those of ``b``."""
    cat = lambda x, y: [torch.cat([s, t]) for s, t in zip(x, y)]  # noqa: E731
    return Centres(cat(a.rows, b.rows), cat(a.given, b.given), torch.cat([a.counts, b.counts]), torch.cat([a.weights, b.weights]))


def _scaled_blocks(blocks, psi):
    """Per block ``m``: ``Psi_m^-1/2 z^m``, the coordinates in which the kernel is Euclidean [design 2.9]."""
    return [b / p.sqrt() for b, p in zip(blocks, psi)]


def representatives(centres, params, size, generator, *, axes=None):
    """At most ``size`` centres that stand for ``centres`` in the kernel of :func:`local_corrections` [design 2.9].

    The centres' rows are scaled as the kernel measures them (every block in units of its noise, a block with
    principal ``axes`` as its scores on them); ``size`` of them are drawn by D^2 sampling (k-means++ seeding,
    weighted by their weights), every centre goes to the drawn one nearest to it, and each group's rows, observed
    blocks and counts are the weighted means and sums of its members'. With at most ``size`` centres, ``centres``.
    """
    n = centres.weights.shape[0]
    if n <= size:
        return centres
    psi = params.kernel_metric().psi
    axes = axes or [None] * len(centres.rows)
    scaled = _scaled_blocks(centres.rows, psi)
    X = torch.cat([s if a is None else s @ a.to(s.dtype) for s, a in zip(scaled, axes)], dim=1)
    chosen = seed_rows(X, size, generator, weights=centres.weights)
    nearest = torch.cdist(X, X[chosen]).argmin(dim=1)

    def summed(values, weights):  # per group, the sum of weights * values
        return torch.zeros((size, *values.shape[1:]), dtype=values.dtype, device=values.device).index_add_(0, nearest, values * weights[:, None])

    weights = torch.zeros(size, dtype=centres.weights.dtype, device=centres.weights.device).index_add_(0, nearest, centres.weights)
    counts = torch.zeros((size, centres.counts.shape[1]), dtype=centres.counts.dtype, device=centres.counts.device).index_add_(0, nearest, centres.counts)
    tiny = torch.finfo(weights.dtype).tiny
    rows = [summed(r, centres.weights) / weights[:, None] for r in centres.rows]
    given = [summed(g, centres.counts[:, m]) / counts[:, m, None].clamp_min(tiny) for m, g in enumerate(centres.given)]
    return Centres(rows, given, counts, weights)


def _stored_terms(params, centres):
    """The stored rows' terms that no pattern changes: the kernel's noise scales (:meth:`kernel_metric`), the rows
    scaled, their squared norms per block and their log-weights [design 2.9]."""
    psi = params.kernel_metric().psi
    scaled = _scaled_blocks(centres.rows, psi)
    return psi, scaled, torch.stack([(s**2).sum(1) for s in scaled], 1), torch.log(centres.weights)


def _imputed_from(patterns, params, rows):
    """Per pattern ``O``, the model's imputations of the stored rows ``rows`` from their blocks in ``O`` alone
    [design 2.3]: one posterior for every pattern together (the stored rows repeated once per pattern)."""
    n_c = rows[0].shape[0]
    masks = torch.tensor(patterns, dtype=torch.bool, device=rows[0].device).repeat_interleave(n_c, dim=0)
    imputed = params.impute(params.posterior([r.repeat(len(patterns), 1) for r in rows], masks))
    return [[b[i * n_c : (i + 1) * n_c] for b in imputed] for i in range(len(patterns))]


def _centre_terms(pattern, alone, stored, centres, bandwidth, return_variance):
    """Everything the kernel of one missingness pattern needs from the stored rows [design 2.9]; ``alone`` are the
    model's imputations of the stored rows from their blocks in the pattern (:func:`_imputed_from`)."""
    psi, scaled, square_norms, log_weights = stored
    seen = [m for m, o in enumerate(pattern) if o]
    width = sum(centres.rows[m].shape[1] for m in seen)
    # ||z^O - x^O||^2_{Psi_O^-1}: its part that depends on the query alone cancels in the softmax, the rest is one
    # product with the stored rows' scaled blocks; a stored row's weight w_j enters as log w_j
    scale = 1.0 / (2 * bandwidth * width)
    # logits = query @ centre_terms.T - centre_bias, the query in Psi^-1/2 units (query_scale)
    centre_terms = 2 * scale * torch.cat([scaled[m] for m in seen], dim=1)
    centre_bias = scale * square_norms[:, seen].sum(1) - log_weights
    query_scale = torch.cat([psi[m].rsqrt().expand(centres.rows[m].shape[1]) for m in seen])
    # per missing block m that some stored row observes: the residual r = x^m - zhat^m(x^O) of the group's mean
    # observed block m and the share f of the group's weight that observes it, as columns [r f, f] (and r^2 f for
    # the spread), zero where no row of the group observes m: one product with the kernel gives every weighted sum
    columns, layout = [], []
    for m in (m for m, o in enumerate(pattern) if not o):
        if bool((centres.counts[:, m] > 0).any()):  # no stored row observes m: the model alone
            f = (centres.counts[:, m] / centres.weights)[:, None]
            r = centres.given[m] - alone[m]
            columns += [r * f, f, r**2 * f] if return_variance else [r * f, f]
            layout.append(m)
    return query_scale, centre_terms, centre_bias, layout, torch.cat(columns, dim=1) if columns else None


def local_corrections(Z, observed, params, centres, bandwidth, *, chunk_size=2048, cache=None, return_variance=True):
    """Kernel correction of the imputations by the stored rows' residuals (the ``K -> n`` limit of the mixture) [design 2.9].

    Every stored row ``j`` (a "centre", completed by the model where it misses a
    block) weighs a query by a Gaussian kernel in the observed blocks, each
    block's distance measured in units of its noise variance. A query with
    observed blocks ``O`` then imputes block ``m`` as the model's conditional
    mean plus the kernel-weighted residuals of the centres that observe ``m``::

        zhat^m = zhat^m(z_i^O) + sum_j r_ij (x_j^m - zhat^m(x_j^O)),
        r_ij  ~ w_j exp(-||z_i^O - x_j^O||^2_{Psi_O^-1} / (2 h d_O)),   d_O = sum_{m in O} d_m,

    where ``zhat^m(.)`` is the model's imputation from the blocks in ``O``
    (``W_m m^(O) + mu_m`` for one linear-Gaussian model, the responsibility-
    weighted one for a mixture) and ``Psi`` the noise variances of the model's
    marginal covariance (:meth:`kernel_metric`). A centre standing for a group
    of rows (:func:`representatives`) sits at their mean row ``x_j``, weighs
    ``w_j``, and contributes to block ``m`` the residual of the mean block ``m``
    of its rows that observe it, with the share of ``w_j`` they hold. ``h = inf`` is the model
    itself; small ``h`` approaches the nearest stored neighbour.

    Parameters
    ----------
    Z : list of Tensor (n, d_m)
    observed : bool Tensor (n, k)
    params : latent model (LatentParams or MixtureParams)
    centres : Centres
        The stored rows (:func:`training_centres`, :func:`representatives`).
    bandwidth : float
        ``h`` (> 0).
    chunk_size : int
        Query rows per kernel matrix (memory ``chunk_size x n_c``).
    cache : CentreCache or None
        Keeps the stored rows' terms across calls with the same parameters and stored rows (the chunks of one
        inference call); None prepares them afresh.
    return_variance : bool
        Also compute the spread (the ``r^2`` columns of the kernel product).

    Returns
    -------
    corrections : list of Tensor (n, d_m)
        The added residual average, zero for observed blocks.
    variances : list of Tensor (n, d_m) or None
        The residuals' weighted variance (the spread between neighbours), zero
        for observed blocks; None unless ``return_variance``.
    """
    cache = CentreCache(0) if cache is None else cache
    if cache.stored is None:
        with cache.lock:  # chunks in other threads wait for the one that prepares them
            if cache.stored is None:
                cache.stored = _stored_terms(params, centres)
    corrections = [torch.zeros_like(z) for z in Z]
    variances = [torch.zeros_like(z) for z in Z] if return_variance else None
    patterns, inverse = missingness_patterns(observed)
    patterns = [tuple(p) for p in patterns.tolist()]
    partial = [p for p in patterns if any(p) and not all(p)]
    new = [p for p in partial if (p, return_variance) not in cache.patterns]
    fresh = {}
    if new:  # the stored rows' terms of the patterns this call meets first, prepared together
        for pattern, alone in zip(new, _imputed_from(new, params, centres.rows)):
            fresh[pattern] = cache.keep((pattern, return_variance), _centre_terms(pattern, alone, cache.stored, centres, bandwidth, return_variance))
    for p, pattern in enumerate(patterns):
        if pattern not in partial:
            continue
        terms = fresh.get(pattern) or cache.patterns[(pattern, return_variance)]
        query_scale, centre_terms, centre_bias, layout, columns = terms
        if not layout:
            continue
        seen = [m for m, o in enumerate(pattern) if o]
        # the columns of each missing block's weighted sums: [r, 1, (r^2)], the 1 its kernel mass
        widths = [2 * Z[m].shape[1] + 1 if return_variance else Z[m].shape[1] + 1 for m in layout]
        starts = [sum(widths[:i]) for i in range(len(layout))]
        masses = [start + Z[m].shape[1] for start, m in zip(starts, layout)]
        rows_all = torch.nonzero(inverse == p).flatten()
        for start in range(0, rows_all.numel(), chunk_size):
            rows = rows_all[start : start + chunk_size]
            logits = torch.cat([Z[m][rows] for m in seen], dim=1) * query_scale @ centre_terms.T - centre_bias
            logits = logits - logits.amax(dim=1, keepdim=True)
            sums = torch.exp(logits) @ columns  # one exponential and one product for every missing block
            low = sums[:, masses] < 1e-250  # the centres observing a block all lie far below the nearest one: renormalize
            if bool(low.any()):
                sums = sums.clone()
                for i, m in enumerate(layout):
                    if bool(low[:, i].any()):
                        shifted = logits[low[:, i]].masked_fill(~(centres.counts[:, m] > 0)[None, :], float("-inf"))
                        block = slice(starts[i], starts[i] + widths[i])
                        sums[low[:, i], block] = torch.exp(shifted - shifted.amax(dim=1, keepdim=True)) @ columns[:, block]
            for i, m in enumerate(layout):
                d_m = Z[m].shape[1]
                moments = sums[:, starts[i] : starts[i] + widths[i]] / sums[:, masses[i], None]  # weighted means of r (and r^2)
                corrections[m][rows] = moments[:, :d_m]
                if return_variance:
                    variances[m][rows] = (moments[:, d_m + 1 :] - moments[:, :d_m] ** 2).clamp_min(0)
    return corrections, variances
