"""The callbacks of the epoch loop (``_callbacks``, design 3.3): the divergence guard of fit and partial_fit, early
stopping and its public parameters.

- An absurd learning rate (1e12) with PMRL gives finite output: Adam's steps are bounded by the learning rate and the
  representations are unit-normalised. Whenever a loss, a log-likelihood or an encoder weight becomes NaN or inf
  (GRAM at 1e12, a temperature that underflows float32, any NaN loss), fit stops with a RuntimeWarning
  "diverged at epoch e" and keeps the last completed epoch, so the output stays finite; a partial_fit chunk that
  diverges is rejected with the same guard (the first chunk keeps the initial encoders).
- Early stopping restores the best epoch, stops after n_iter_no_change epochs without a gain of its tol, and warns
  when the score was still improving at max_epochs.
"""

import warnings

import numpy as np
import pytest
import torch
from _tiny import SIZES, quiet_convergence, tiny_data  # noqa: F401 - quiet_convergence: autouse fixture
from sklearn.exceptions import ConvergenceWarning

import sklearn_calmrl._training as training
from sklearn_calmrl import PMRL, CalMRLTransformer, EarlyStopping
from sklearn_calmrl.datasets import ampute_modalities, load_image_segmentation

FAST = dict(latent_dim=8, embed_dim=16, max_epochs=3, add_indicator=False, device="cpu", random_state=0)


def _est(**kw):
    """A cheap CalMRLTransformer."""
    return CalMRLTransformer(**{**dict(modalities=SIZES, latent_dim=2, device="cpu", random_state=0), "embed_dim": 4, "max_epochs": 2, "batch_size": 16, **kw})


# ----------------------------------------------------------------------------- divergence guard
def test_absurd_learning_rate_pmrl_gives_finite_output():
    X = tiny_data()
    est = _est(learning_rate=1e12, max_epochs=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no divergence: the weights stay finite
        out = est.fit_transform(X)
    assert np.isfinite(out).all()
    assert len(est.loss_curve_) == 3 and np.isfinite(est.loss_curve_).all()
    assert np.isfinite(est.loglik_curve_).all()
    assert all(torch.isfinite(p).all() for p in est.encoders_.parameters())


def test_absurd_learning_rate_gram_diverges_with_warning_and_keeps_last_good_state():
    X = tiny_data()
    with pytest.warns(RuntimeWarning, match=r"diverged at epoch 1 .*kept the parameters of epoch 0 and stopped"):
        est = _est(alignment="gram", learning_rate=1e12).fit(X)
    out = est.transform(X)
    assert np.isfinite(out).all()
    assert est.n_iter_ == 0 and est.loss_curve_ == []
    # the kept state is the one before the first gradient step
    np.testing.assert_array_equal(out, _est(alignment="gram", max_epochs=0).fit(X).transform(X))


@pytest.mark.parametrize("param", ["tau_intra", "tau_inter"])
def test_underflowing_temperature_warns_instead_of_crashing(param):
    # 1e-45 is 0 in float32: the logits are inf, the first step writes NaN into the weights. Before the per-step
    # check the next batch crashed in eigh with an obscure LinAlgError.
    X = tiny_data()
    with pytest.warns(RuntimeWarning, match="diverged at epoch 1"):
        est = _est(alignment=PMRL(**{param: 1e-45})).fit(X)
    assert np.isfinite(est.transform(X)).all()


def test_nan_loss_mid_training_keeps_last_completed_epoch(monkeypatch):
    X = tiny_data()  # 48 rows, batch_size 16: 3 batches per epoch
    calls = []
    real = training.Trainer.batch_terms

    def nan_from_epoch_2(*args, **kwargs):
        terms = real(*args, **kwargs)
        calls.append(1)
        return {name: value * float("nan") for name, value in terms.items()} if len(calls) > 3 else terms

    monkeypatch.setattr(training.Trainer, "batch_terms", nan_from_epoch_2)
    with pytest.warns(RuntimeWarning, match=r"diverged at epoch 2 \(loss=nan\); kept the parameters of epoch 1"):
        est = _est(max_epochs=4).fit(X)
    assert len(calls) == 4  # stopped right after the step that poisoned the weights
    assert est.n_iter_ == 1 and len(est.loss_curve_) == 1
    monkeypatch.setattr(training.Trainer, "batch_terms", real)
    np.testing.assert_array_equal(est.transform(X), _est(max_epochs=1).fit(X).transform(X))


def test_a_diverging_partial_fit_chunk_is_rejected_by_the_same_guard():
    """partial_fit: the first chunk keeps the initial encoders (and its EM step); a later one changes nothing."""
    X = tiny_data(n=96)
    est = _est(alignment="gram", learning_rate=1e12)
    with pytest.warns(RuntimeWarning, match=r"partial_fit diverged on this chunk \(loss=.*kept the initial encoders"):
        est.partial_fit(X[:48])
    assert est.n_iter_ == 1 and est.loss_curve_ == [] and np.isfinite(est.transform(X)).all()
    before = est.transform(X)
    with pytest.warns(RuntimeWarning, match="partial_fit diverged on this chunk .*the model was left as it was"):
        est.partial_fit(X[48:])
    assert est.n_iter_ == 1 and est.n_samples_seen_ == 48
    np.testing.assert_array_equal(est.transform(X), before)


# ----------------------------------------------------------------------------- early stopping
@pytest.fixture(scope="module")
def segment():
    data = load_image_segmentation()
    X = ampute_modalities(data.data, data.modalities, rate=0.5, random_state=0)
    return X, data.modalities


def test_early_stopping_restores_best_and_warns_on_max_epochs(segment):
    X, mods = segment
    # a gain of 10 needed: no epoch counts as an improvement on the start, so training stops after 2 epochs and
    # restores the start
    kw = dict(early_stopping=EarlyStopping(n_iter_no_change=2, tol=10.0), **{**FAST, "max_epochs": 30})
    est = CalMRLTransformer(mods, **kw).fit(X)
    assert est.n_iter_ == 2 and len(est.validation_scores_) == 2 and len(est.loss_curve_) == 2
    assert all(0 <= s <= 1 for s in est.validation_scores_) and 0 <= est.best_validation_score_ <= 1
    assert est.loss_curve_[1] != est.loss_curve_[0]  # the weights moved during the two epochs
    start = CalMRLTransformer(mods, **{**kw, "max_epochs": 0}).fit(X)  # same split, same start, no epoch
    np.testing.assert_array_equal(est.transform(X), start.transform(X))  # the best (the start) was restored
    with pytest.warns(ConvergenceWarning, match="still improving at max_epochs=2"):
        CalMRLTransformer(mods, **{**kw, "max_epochs": 2, "early_stopping": EarlyStopping(n_iter_no_change=5, tol=0.0)}).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no early stopping: a fixed number of epochs, no warning
        CalMRLTransformer(mods, **FAST).fit(X)


def test_early_stopping_true_is_the_default_object_and_its_parameters_are_reachable(segment):
    X, mods = segment
    default = CalMRLTransformer(mods, early_stopping=True, **FAST).fit(X[:400])
    explicit = CalMRLTransformer(mods, early_stopping=EarlyStopping(), **FAST).fit(X[:400])
    np.testing.assert_array_equal(default.transform(X[:50]), explicit.transform(X[:50]))
    assert default.validation_scores_ == explicit.validation_scores_
    est = CalMRLTransformer(mods, early_stopping=EarlyStopping(), **FAST).set_params(early_stopping__n_iter_no_change=1)
    assert est.get_params()["early_stopping__n_iter_no_change"] == 1
    given = est.early_stopping
    est.fit(X[:400])
    assert est.early_stopping is given and not vars(given).keys() - {"validation_fraction", "n_iter_no_change", "tol"}
