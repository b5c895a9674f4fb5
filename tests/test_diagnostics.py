"""The paper's mechanism, measured: calibration reduces the anchor shift [design 6]."""

import numpy as np
import pytest

from sklearn_calmrl import CalMRLTransformer
from sklearn_calmrl.datasets import ampute_modalities, load_multiple_features
from sklearn_calmrl.diagnostics import anchor_shift


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_calibration_reduces_anchor_shift():
    data = load_multiple_features()
    rng = np.random.RandomState(0)
    rows = rng.permutation(2000)
    train, test = rows[:1200], rows[1200:1500]
    X_train = ampute_modalities(data.data[train], data.modalities, rate=0.5, random_state=0)
    est = CalMRLTransformer(data.modalities, max_epochs=5, em_max_iter=50, device="cpu", random_state=0).fit(X_train)
    X_full = data.data[test]
    X_masked = ampute_modalities(X_full, data.modalities, rate=1.0, random_state=1)
    shift_obs, shift_cal = anchor_shift(est, X_full, X_masked)
    assert shift_obs.shape == shift_cal.shape == (300,)
    assert np.all(np.isfinite(shift_obs)) and np.all(np.isfinite(shift_cal))
    assert shift_cal.mean() < shift_obs.mean()
    # no hidden modality: no shift either way
    same_obs, same_cal = anchor_shift(est, X_full[:20], X_full[:20])
    np.testing.assert_allclose(same_obs, 0.0, atol=1e-6)
    np.testing.assert_allclose(same_cal, 0.0, atol=1e-6)


def test_anchor_shift_needs_encoders():
    data = load_multiple_features()
    est = CalMRLTransformer(data.modalities, encoder="identity", latent_dim=4, em_max_iter=5).fit(data.data[:200])
    with pytest.raises(ValueError, match="encoder='linear' or 'mlp'"):
        anchor_shift(est, data.data[:5], data.data[:5])
