"""The anchor shift [design 4.5]: checked against a row-by-row SVD of the representations.

Whether calibration reduces the shift is a measurement, not a property of the code: the
benchmark reports it (doc/benchmarks.md, columns "anchor shift obs / cal").
"""

import numpy as np
import pytest

from sklearn_calmrl import CalMRLTransformer, MultiViewPPCA
from sklearn_calmrl.datasets import ampute_modalities, load_multiple_features
from sklearn_calmrl.diagnostics import anchor_shift


def _anchor(columns):
    """Leading left singular vector of the columns, signed so that sum_m <u, z_m> > 0, a tie (two unit columns of
    negative cosine) broken by the first column [design 4.2]."""
    U, _, _ = np.linalg.svd(np.stack(columns, axis=1), full_matrices=False)
    u = U[:, 0]
    proj = np.stack(columns) @ u
    decider = proj.sum() if abs(proj.sum()) > 1e-9 else proj[0]
    return -u if decider < 0 else u


def test_anchor_shift_equals_a_row_by_row_svd():
    data = load_multiple_features()
    rows = np.random.RandomState(0).permutation(2000)
    train, test = rows[:800], rows[800:860]
    X_train = ampute_modalities(data.data[train], data.modalities, rate=0.5, random_state=0)
    est = CalMRLTransformer(data.modalities, latent_dim=8, max_epochs=2, device="cpu", random_state=0).fit(X_train)
    X_full = data.data[test]
    X_masked = ampute_modalities(X_full, data.modalities, rate=1.0, random_state=1)
    shift_obs, shift_cal = anchor_shift(est, X_full, X_masked)
    assert shift_obs.shape == shift_cal.shape == (60,)
    full = est.impute_representations(X_full)
    partial = est.impute_representations(X_masked)
    names = list(est.modalities_)
    for i in range(60):
        u_full = _anchor([full[n][i] for n in names])
        seen = [n for n in names if not np.isnan(X_masked[i, est.modalities_[n]]).all()]
        np.testing.assert_allclose(shift_obs[i], np.linalg.norm(_anchor([full[n][i] for n in seen]) - u_full), atol=1e-8)
        np.testing.assert_allclose(shift_cal[i], np.linalg.norm(_anchor([partial[n][i] for n in names]) - u_full), atol=1e-8)
    # no hidden modality: no shift either way
    same_obs, same_cal = anchor_shift(est, X_full[:20], X_full[:20])
    np.testing.assert_allclose(same_obs, 0.0, atol=1e-6)
    np.testing.assert_allclose(same_cal, 0.0, atol=1e-6)


def test_anchor_shift_needs_encoders():
    data = load_multiple_features()
    est = MultiViewPPCA(data.modalities, latent_dim=4, tol=1.0).fit(data.data[:200])
    with pytest.raises(ValueError, match="needs a fitted CalMRLTransformer .* got MultiViewPPCA"):
        anchor_shift(est, data.data[:5], data.data[:5])
