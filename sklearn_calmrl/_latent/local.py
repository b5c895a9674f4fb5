"""Local correction of a latent model's imputations by stored rows (the ``K -> n`` limit of the mixture) [design 2.9].

It wraps any kind of latent model through the protocol (design 2.13): the model's
imputations of the query and of the stored rows, and the noise variances of its
marginal covariance (:meth:`kernel_metric`), which scale the kernel's distance.
"""

import threading

import torch

from .gaussian import missingness_patterns
from .protocol import impute_calibrated


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


def _scaled_blocks(blocks, psi, which):
    """Per block ``m`` in ``which``: ``Psi_m^-1/2 z^m``, the coordinates in which the kernel is Euclidean [design 2.9]."""
    return [blocks[m] / psi[m].sqrt() for m in which]


def _stored_terms(params, centres, centres_observed):
    """The stored rows' terms that no pattern changes: the kernel's noise scales (:meth:`kernel_metric`), the rows as
    the model completes them, scaled, and their squared norms per block [design 2.9]."""
    psi = params.kernel_metric().psi
    filled = impute_calibrated(centres, centres_observed, params)
    scaled = _scaled_blocks(filled, psi, range(len(filled)))
    return psi, filled, scaled, torch.stack([(s**2).sum(1) for s in scaled], 1)


def _centre_terms(pattern, params, stored, centres_observed, bandwidth, return_variance):
    """Everything the kernel of one missingness pattern needs from the stored rows [design 2.9]."""
    _, filled, scaled, square_norms = stored
    seen = [m for m, o in enumerate(pattern) if o]
    # ||z^O - x^O||^2_{Psi_O^-1}: its part that depends on the query alone cancels in the softmax, the rest is one
    # product with the stored rows' scaled blocks
    centre_terms = torch.cat([scaled[m] for m in seen], dim=1)
    centre_norms = square_norms[:, seen].sum(1)
    scale = 1.0 / (2 * bandwidth * sum(filled[m].shape[1] for m in seen))
    # the model's imputations of the stored rows from their blocks in O alone [design 2.3]
    alone = params.impute(params.posterior(filled, torch.tensor(pattern, device=centres_observed.device).expand_as(centres_observed)))
    # per missing block m that some stored row observes, the residuals r = x^m - zhat^m(x^O) and a column of
    # ones (and r^2 for the spread), zero in the rows that miss m: one product with the kernel gives every
    # weighted sum
    columns, layout = [], []
    for m in (m for m, o in enumerate(pattern) if not o):
        if bool(centres_observed[:, m].any()):  # no stored row observes m: the model alone
            mask = centres_observed[:, m, None].to(filled[m].dtype)
            r = (filled[m] - alone[m]) * mask
            columns += [r, mask, r**2] if return_variance else [r, mask]
            layout.append(m)
    return centre_terms, centre_norms, scale, layout, torch.cat(columns, dim=1) if columns else None


def local_corrections(Z, observed, params, centres, centres_observed, bandwidth, *, chunk_size=512, cache=None, return_variance=True):
    """Kernel correction of the imputations by the stored rows' residuals (the ``K -> n`` limit of the mixture) [design 2.9].

    Every stored row ``j`` (a "centre", completed by the model where it misses a
    block) weighs a query by a Gaussian kernel in the observed blocks, each
    block's distance measured in units of its noise variance. A query with
    observed blocks ``O`` then imputes block ``m`` as the model's conditional
    mean plus the kernel-weighted residuals of the centres that observe ``m``::

        zhat^m = zhat^m(z_i^O) + sum_j r_ij (x_j^m - zhat^m(x_j^O)),
        r_ij  ~ exp(-||z_i^O - x_j^O||^2_{Psi_O^-1} / (2 h d_O)),   d_O = sum_{m in O} d_m,

    where ``zhat^m(.)`` is the model's imputation from the blocks in ``O``
    (``W_m m^(O) + mu_m`` for one linear-Gaussian model, the responsibility-
    weighted one for a mixture) and ``Psi`` the noise variances of the model's
    marginal covariance (:meth:`kernel_metric`). ``h = inf`` is the model
    itself; small ``h`` approaches the nearest stored neighbour.

    Parameters
    ----------
    Z : list of Tensor (n, d_m)
    observed : bool Tensor (n, k)
    params : latent model (LatentParams or MixtureParams)
    centres : list of Tensor (n_c, d_m)
        The stored rows' blocks (anything where unobserved).
    centres_observed : bool Tensor (n_c, k)
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
                cache.stored = _stored_terms(params, centres, centres_observed)
    corrections = [torch.zeros_like(z) for z in Z]
    variances = [torch.zeros_like(z) for z in Z] if return_variance else None
    patterns, inverse = missingness_patterns(observed)
    for p, pattern in enumerate(map(tuple, patterns.tolist())):
        if all(pattern) or not any(pattern):
            continue
        terms = cache.patterns.get((pattern, return_variance))
        if terms is None:
            terms = cache.keep((pattern, return_variance), _centre_terms(pattern, params, cache.stored, centres_observed, bandwidth, return_variance))
        centre_terms, centre_norms, scale, layout, columns = terms
        if not layout:
            continue
        seen = [m for m, o in enumerate(pattern) if o]
        rows_all = torch.nonzero(inverse == p).flatten()
        for start in range(0, rows_all.numel(), chunk_size):
            rows = rows_all[start : start + chunk_size]
            query = torch.cat(_scaled_blocks([z[rows] for z in Z], cache.stored[0], seen), dim=1)
            logits = (2 * query @ centre_terms.T - centre_norms) * scale
            logits = logits - logits.amax(dim=1, keepdim=True)
            sums = torch.exp(logits) @ columns  # one exponential and one product for every missing block
            offset = 0
            for m in layout:
                d_m = Z[m].shape[1]
                width = 2 * d_m + 1 if return_variance else d_m + 1
                block = sums[:, offset : offset + width]
                low = block[:, d_m] < 1e-250  # the centres observing m all lie far below the nearest one: renormalize
                if bool(low.any()):
                    shifted = logits[low].masked_fill(~centres_observed[:, m][None, :], float("-inf"))
                    block = block.clone()
                    block[low] = torch.exp(shifted - shifted.amax(dim=1, keepdim=True)) @ columns[:, offset : offset + width]
                moments = block / block[:, d_m, None]  # weighted means of r (and r^2)
                corrections[m][rows] = moments[:, :d_m]
                if return_variance:
                    variances[m][rows] = (moments[:, d_m + 1 :] - moments[:, :d_m] ** 2).clamp_min(0)
                offset += width
    return corrections, variances
