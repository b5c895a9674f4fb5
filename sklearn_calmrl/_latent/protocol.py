"""The latent-model protocol as functions (design 2.13), and what is built on it for any kind of model.

Every kind of latent model (:class:`~sklearn_calmrl._latent.gaussian.LatentParams`,
:class:`~sklearn_calmrl._latent.mixture.MixtureParams`) implements the same methods;
these functions call them, so the EM driver, the local correction, the trainer and
the estimators never ask which kind they hold.
"""

import torch

from .gaussian import NOISE_FLOOR, RIDGE


def posterior(Z, observed, params):
    """E-step: ``params.posterior(Z, observed)`` [design 2.2, 2.8]."""
    return params.posterior(Z, observed)


def impute(post, params):
    """Representation-level imputation of every modality from ``post`` [design 2.3, 2.8]."""
    return params.impute(post)


def predictive_variance(post, params):
    """Diagonal of the predictive covariance per row and modality [design 2.3, 2.8]."""
    return params.predictive_variance(post)


def imputation_confidence(post, params, observed):
    """Share of an imputed block's signal variance that the row's observed blocks determine [design 2.14].

    With ``v_im`` the predictive variance of block ``m`` in row ``i``
    (:func:`predictive_variance`) and ``W_m``, ``psi_m`` those of the model's
    marginal covariance (:meth:`kernel_metric`; the model itself for one
    linear-Gaussian model)::

        w_im = (tr(W_m W_m^T) - (sum_j v_imj - sum_j psi_mj)) / tr(W_m W_m^T)     clipped to [0, 1]

    For one model ``v_im = diag(W_m V_O W_m^T + Psi_m)``, so
    ``w_im = tr(W_m (I - V_O) W_m^T) / tr(W_m W_m^T)``: 0 when the observed blocks
    say nothing about block ``m`` (the imputation is the mean ``mu_m``), 1 when
    they fix its latent part, and never smaller when a row observes more blocks.
    Observed blocks get 1; a block without signal (``W_m = 0``) gets 0 where imputed.

    Parameters
    ----------
    post : posterior of ``params`` (:func:`posterior`)
    params : latent model (LatentParams or MixtureParams)
    observed : bool Tensor of shape (n, k)

    Returns
    -------
    Tensor of shape (n, k)
    """
    metric = params.kernel_metric()
    weights = []
    for m, v in enumerate(params.predictive_variance(post)):
        signal = (metric.W[m] ** 2).sum()  # [design 2.14] tr(W_m W_m^T)
        uncertain = v.sum(dim=1) - metric.psi[m].sum()  # [design 2.14] tr(W_m V_O W_m^T) for one model
        share = ((signal - uncertain) / signal.clamp_min(torch.finfo(signal.dtype).tiny)).clamp(0.0, 1.0)
        share = torch.where(signal > 0, share, torch.zeros_like(share))
        weights.append(torch.where(observed[:, m], torch.ones_like(share), share))  # [design 2.14] 1 on observed blocks
    return torch.stack(weights, dim=1)


def log_likelihood(Z, observed, params, post=None):
    """Observed-data log-likelihood ``log p(z_i^O)`` of every row [design 2.5, 2.8]; a Tensor (n,)."""
    return params.log_likelihood(Z, observed, post)


def sufficient_statistics(Z, observed, params, post=None, weights=None):
    """E-step statistics of a chunk for the M-step and the log-likelihood [design 2.4, 2.8].

    ``post`` may pass the chunk's already computed posterior under ``params``;
    ``weights`` (n,) weighs the rows (a single model only: a mixture component's
    responsibilities).
    """
    return params.statistics(Z, observed, post, weights)


def m_step(stats, params, *, noise, noise_floor=NOISE_FLOOR, ridge=RIDGE):
    """M-step of ``params``'s kind from summed statistics [design 2.4, 2.8]."""
    return params.m_step(stats, noise=noise, noise_floor=noise_floor, ridge=ridge)


def calibrated(Z, observed, params, *, max_norm=None, post=None):
    """Observed columns kept, missing columns imputed as ``W_m m_i + mu_m`` [design 2.3]; returns them and the posterior.

    ``post`` may pass the rows' posterior under ``params``. With ``max_norm``
    (unit encoder outputs), an imputed vector longer than that is shortened to
    it; a shorter one keeps the norm the posterior shrank it to, so an uncertain
    imputation weighs less in the alignment than an observed column.
    """
    post = params.posterior(Z, observed) if post is None else post
    Zhat = params.impute(post)  # zhat^m' = W_m' m_i + mu_m'  [design 2.3]
    if max_norm is not None:
        Zhat = [z / (z.norm(dim=1, keepdim=True) / max_norm).clamp_min(1.0) for z in Zhat]  # ||zhat|| <= max_norm
    return [torch.where(observed[:, m, None], Z[m], Zhat[m]) for m in range(len(Z))], post


def impute_calibrated(Z, observed, params):
    """Observed blocks kept, the others imputed [design 2.3]: the rows as the model completes them."""
    return calibrated(Z, observed, params)[0]


def variance_explained(Z, observed, params, post=None):
    """Share of each block's variance explained by the latent, per latent dimension, as MOFA+ defines it [design 2.12].

    With ``y_i^m`` a row's block minus the model's mean for it and ``c_ij^m`` the
    part of its reconstruction ``W_m m_i`` that comes from latent dimension
    ``j`` (responsibility-weighted over the components of a mixture)::

        R2[m, j] = 1 - sum_i ||y_i^m - c_ij^m||^2 / sum_i ||y_i^m||^2
        R2_total[m] = 1 - sum_i ||y_i^m - sum_j c_ij^m||^2 / sum_i ||y_i^m||^2

    over the rows that observe ``m``, with ``m_i`` the posterior mean given all
    of the row's observed blocks (the block itself included). Returns the
    ``(k, q)`` and ``(k,)`` tensors; a block without variance gets 0.
    """
    post = params.posterior(Z, observed) if post is None else post
    q = params.latent_dim
    eye = torch.eye(q, dtype=Z[0].dtype, device=Z[0].device)
    base = params.impute(post.keep_dims(torch.zeros_like(eye[0])))  # the means mu_m (per row, for a mixture)
    full = params.impute(post)
    k = len(Z)
    r2, total = torch.zeros(k, q, dtype=Z[0].dtype), torch.zeros(k, dtype=Z[0].dtype)
    parts = [params.impute(post.keep_dims(eye[j])) for j in range(q)]
    for m in range(k):
        rows = observed[:, m]
        y = Z[m][rows] - base[m][rows]
        ss = float((y**2).sum())
        if ss <= 0:
            continue
        total[m] = 1 - float(((y - (full[m][rows] - base[m][rows])) ** 2).sum()) / ss
        for j in range(q):
            r2[m, j] = 1 - float(((y - (parts[j][m][rows] - base[m][rows])) ** 2).sum()) / ss
    return r2, total
