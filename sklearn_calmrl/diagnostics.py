"""Diagnostics of the paper's mechanism: the anchor shift [design 4.5] (paper Theorem 1)."""

import numpy as np
import torch

from ._losses import leading_direction

__all__ = ["anchor_shift"]


def anchor_shift(estimator, X_full, X_masked):
    """Per-sample anchor shift with and without calibration.

    Read more in the :ref:`User Guide <user_guide>`.

    The anchor of a sample is the leading left singular vector ``u`` of its
    representations stacked as columns [design 4]. On samples whose modalities are
    all known (``X_full``) and then partly hidden (``X_masked``, same rows, hidden
    blocks all NaN), the shift is the distance ``||u_partial - u_full||`` between
    the anchor computed without the hidden modalities and the full-data anchor
    (both signs fixed as in [design 4.2]). Without calibration, ``u_partial`` uses the
    observed columns only; with calibration it uses the observed plus imputed
    columns (``estimator.impute_representations``).

    Parameters
    ----------
    estimator : CalMRLTransformer
        Fitted, with a torch encoder (all representations of equal size).
    X_full : array-like of shape (n_samples, n_features)
        Samples with every modality observed.
    X_masked : array-like of shape (n_samples, n_features)
        The same samples with some modality blocks set to NaN.

    Returns
    -------
    shift_observed : ndarray of shape (n_samples,)
        Shift of the anchor of the observed columns only (no calibration).
    shift_calibrated : ndarray of shape (n_samples,)
        Shift of the anchor of the calibrated columns.
    """
    if getattr(estimator, "encoders_", None) is None:  # MultiViewPPCA, or a CalMRLTransformer not fitted yet
        raise ValueError(f"anchor_shift needs a fitted CalMRLTransformer (it has encoders), got {type(estimator).__name__}.")
    X_masked = np.asarray(X_masked, dtype=np.float64)
    full = estimator.impute_representations(X_full)
    partial = estimator.impute_representations(X_masked)
    observed = np.stack([~np.isnan(X_masked[:, cols]).all(axis=1) for cols in estimator.modalities_.values()], axis=1)

    def anchor(reps, mask=None):
        Z = torch.as_tensor(np.stack(list(reps.values()), axis=1))
        u, _ = leading_direction(Z, None if mask is None else torch.as_tensor(mask), eps=0.0)
        return u.numpy()

    u_full = anchor(full)
    shift_observed = np.linalg.norm(anchor(full, observed) - u_full, axis=1)
    shift_calibrated = np.linalg.norm(anchor(partial) - u_full, axis=1)
    return shift_observed, shift_calibrated
