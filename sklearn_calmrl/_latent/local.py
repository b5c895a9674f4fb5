"""Local correction of a latent model's imputations by stored rows (the ``K -> n`` limit of the mixture) [design 2.9].

It wraps any kind of latent model through the protocol (design 2.13): the model's
imputations of the query and of the stored rows, and the Mahalanobis metric of
its marginal covariance (:meth:`kernel_metric`).
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


def _whitened_blocks(blocks, params, which):
    """Per block ``m`` in ``which``: ``Psi_m^-1/2 (z^m - mu_m)`` and ``(z^m - mu_m)^T Psi_m^-1 W_m`` [design 2.9]."""
    centred = [blocks[m] - params.mu[m] for m in which]
    return [c / params.psi[m].sqrt() for c, m in zip(centred, which)], [(c / params.psi[m]) @ params.W[m] for c, m in zip(centred, which)]


def _stored_terms(params, centres, centres_observed):
    """The stored rows' terms that no pattern changes: the kernel's metric (:meth:`kernel_metric`), the rows as the
    model completes them, whitened and projected under that metric [design 2.9]."""
    metric = params.kernel_metric()
    filled = impute_calibrated(centres, centres_observed, params)
    whitened, projected = _whitened_blocks(filled, metric, range(len(filled)))
    return metric, filled, whitened, projected, torch.stack([(w**2).sum(1) for w in whitened], 1)


def _centre_terms(pattern, params, stored, centres_observed, bandwidth, return_variance):
    """Everything the kernel of one missingness pattern needs from the stored rows [design 2.9]."""
    metric, filled, whitened, projected, square_norms = stored
    seen = [m for m, o in enumerate(pattern) if o]
    eye = torch.eye(metric.latent_dim, dtype=metric.W[0].dtype, device=metric.W[0].device)
    # Cholesky of I + sum_{m in O} W_m^T Psi_m^-1 W_m under the metric [design 2.2, 2.9]
    L = torch.linalg.cholesky(eye + sum(metric.W[m].T @ (metric.W[m] / metric.psi[m][:, None]) for m in seen))
    g_c = torch.linalg.solve_triangular(L, sum(projected[m] for m in seen).T, upper=False)
    # ||z - x||^2_{C_OO^-1} = ||Psi^-1/2 (z - x)||^2 - ||L^-1 W^T Psi^-1 (z - x)||^2 (Woodbury); its part that
    # depends on the query alone cancels in the softmax, the rest is one product with [s_c, -g_c]
    centre_terms = torch.cat([whitened[m] for m in seen] + [-g_c.T], dim=1)
    centre_norms = square_norms[:, seen].sum(1) - (g_c**2).sum(0)
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
    return L, centre_terms, centre_norms, scale, layout, torch.cat(columns, dim=1) if columns else None


def local_corrections(Z, observed, params, centres, centres_observed, bandwidth, *, chunk_size=512, cache=None, return_variance=True):
    """Kernel correction of the imputations by the stored rows' residuals (the ``K -> n`` limit of the mixture) [design 2.9].

    Every stored row ``j`` (a "centre", completed by the model where it misses a
    block) is a mixture component with the model's covariance scaled by ``h``:
    ``z | j ~ N(x_j, h (W W^T + Psi))``. A query with observed blocks ``O`` then
    imputes block ``m`` as the model's conditional mean plus the responsibility-
    weighted residuals of the centres that observe ``m``::

        zhat^m = zhat^m(z_i^O) + sum_j r_ij (x_j^m - zhat^m(x_j^O)),
        r_ij  ~ exp(-||z_i^O - x_j^O||^2_{C_OO^-1} / (2 h d_O)),   d_O = sum_{m in O} d_m,

    where ``zhat^m(.)`` is the model's imputation from the blocks in ``O``
    (``W_m m^(O) + mu_m`` for one linear-Gaussian model, the responsibility-
    weighted one for a mixture) and the Mahalanobis distance is under the
    model's marginal covariance ``C_OO = W_O W_O^T + Psi_O`` of
    :meth:`kernel_metric`, by the Woodbury identity (``Q x Q`` work per
    pattern, ``Q`` the metric's columns). ``h = inf`` is the model itself;
    small ``h`` approaches the nearest stored neighbour.

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
        L, centre_terms, centre_norms, scale, layout, columns = terms
        if not layout:
            continue
        seen = [m for m, o in enumerate(pattern) if o]
        rows_all = torch.nonzero(inverse == p).flatten()
        for start in range(0, rows_all.numel(), chunk_size):
            rows = rows_all[start : start + chunk_size]
            s_q, proj_q = _whitened_blocks([z[rows] for z in Z], cache.stored[0], seen)
            g_q = torch.linalg.solve_triangular(L, sum(proj_q).T, upper=False).T
            logits = (2 * torch.cat(s_q + [g_q], dim=1) @ centre_terms.T - centre_norms) * scale
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
