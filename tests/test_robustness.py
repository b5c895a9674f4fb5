"""Divergence guard, determinism, RNG hygiene, interrupted fit and thread safety (issue 6).

Documented behaviour checked here:

- An absurd learning rate (1e12) with PMRL gives finite output: Adam's steps are bounded by the learning rate and the
  representations are unit-normalised. Whenever a loss, a log-likelihood or an encoder weight becomes NaN or inf
  (GRAM at 1e12, a temperature that underflows float32, any NaN loss), training stops with a RuntimeWarning
  "diverged at epoch e" and keeps the last completed epoch, so the output stays finite. learning_rate above 1e30 is
  rejected up front (float32 Adam steps overflow).
- The same int random_state gives bitwise-identical output across fits on CPU and the same grid-search scores with
  n_jobs=1 and n_jobs=2; fit leaves the caller's global numpy and torch RNG states unchanged.
- fit is all-or-nothing: an exception raised during fit (KeyboardInterrupt included) leaves a fresh estimator
  unfitted and a fitted estimator exactly as it was.
- transform called concurrently from several threads gives the sequential result.
"""

import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.validation import check_is_fitted

import sklearn_calmrl._training as training
from sklearn_calmrl import PMRL, CalMRLTransformer, MultiViewPPCA
from sklearn_calmrl.datasets import ampute_modalities, make_latent_modalities

SIZES = [3, 2, 2]


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _data(n=48, random_state=0):
    X, _, _ = make_latent_modalities(n_samples=n, block_sizes=SIZES, latent_dim=2, random_state=random_state)
    return ampute_modalities(X, SIZES, rate=0.4, random_state=random_state)


def _est(**kw):
    """A cheap CalMRLTransformer, or with ``encoder='identity'`` the closed-form model alone (MultiViewPPCA)."""
    params = dict(modalities=SIZES, latent_dim=2, device="cpu", random_state=0)
    if kw.get("encoder") == "identity":
        return MultiViewPPCA(**{**params, **{k: v for k, v in kw.items() if k not in ("encoder", "hidden_layer_sizes")}})
    return CalMRLTransformer(**{**params, "embed_dim": 4, "max_epochs": 2, "batch_size": 16, **kw})


def _fitted_attributes(est):
    return {k: v for k, v in vars(est).items() if k.endswith("_") and not k.startswith("__")}


# ----------------------------------------------------------------------------- divergence guard
def test_absurd_learning_rate_pmrl_gives_finite_output():
    X = _data()
    est = _est(learning_rate=1e12, max_epochs=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no divergence: the weights stay finite
        out = est.fit_transform(X)
    assert np.isfinite(out).all()
    assert len(est.loss_curve_) == 3 and np.isfinite(est.loss_curve_).all()
    assert np.isfinite(est.loglik_curve_).all()
    assert all(torch.isfinite(p).all() for p in est.encoders_.parameters())


def test_absurd_learning_rate_gram_diverges_with_warning_and_keeps_last_good_state():
    X = _data()
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
    X = _data()
    with pytest.warns(RuntimeWarning, match="diverged at epoch 1"):
        est = _est(alignment=PMRL(**{param: 1e-45})).fit(X)
    assert np.isfinite(est.transform(X)).all()


def test_nan_loss_mid_training_keeps_last_completed_epoch(monkeypatch):
    X = _data()  # 48 rows, batch_size 16: 3 batches per epoch
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


def test_learning_rate_beyond_float32_is_rejected():
    with pytest.raises(InvalidParameterError, match="learning_rate"):
        _est(learning_rate=1e38).fit(_data())


# ----------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("encoder", ["linear", "mlp", "identity"])
def test_same_random_state_is_bitwise_identical(encoder):
    X = _data()
    kw = dict(encoder=encoder, hidden_layer_sizes=(8,))
    a = _est(**kw).fit(X).transform(X)
    b = _est(**kw).fit(X).transform(X)
    np.testing.assert_array_equal(a, b)
    if encoder != "identity":  # the seed matters (shuffles, initialisation)
        assert not np.array_equal(a, _est(random_state=1, **kw).fit(X).transform(X))


def test_grid_search_scores_do_not_depend_on_n_jobs():
    X = _data(n=60)
    grid = {"latent_dim": [1, 2]}
    scores = []
    for n_jobs in (1, 2):
        search = GridSearchCV(_est(), grid, cv=2, n_jobs=n_jobs, refit=False, error_score="raise").fit(X)
        scores.append(search.cv_results_["mean_test_score"])
    assert np.isfinite(scores[0]).all()
    np.testing.assert_array_equal(scores[0], scores[1])


@pytest.mark.parametrize("encoder", ["linear", "identity"])
def test_fit_leaves_global_rng_states_unchanged(encoder):
    np.random.seed(123)
    torch.manual_seed(456)
    np_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    _est(encoder=encoder).fit(_data())
    after = np.random.get_state()
    assert after[0] == np_state[0] and after[2:] == np_state[2:]
    np.testing.assert_array_equal(after[1], np_state[1])
    assert torch.equal(torch.get_rng_state(), torch_state)


# ----------------------------------------------------------------------------- interrupted fit
def _interrupt_after(monkeypatch, n_calls):
    calls = []
    real = training.Trainer.batch_terms

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) > n_calls:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(training.Trainer, "batch_terms", interrupted)
    return calls


def test_interrupted_fit_leaves_fresh_estimator_unfitted(monkeypatch):
    est = _est(max_epochs=5)
    calls = _interrupt_after(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        est.fit(_data())
    assert len(calls) == 5  # interrupted during epoch 2
    with pytest.raises(NotFittedError):
        check_is_fitted(est)
    assert _fitted_attributes(est) == {}
    with pytest.raises(NotFittedError):
        est.transform(_data())


def test_interrupted_refit_leaves_fitted_estimator_unchanged(monkeypatch):
    X = _data()
    est = _est(max_epochs=5).fit(X)
    before = est.transform(X)
    attributes = _fitted_attributes(est)
    _interrupt_after(monkeypatch, 4)
    X_other = 3 * _data(random_state=1) + 5  # different statistics: a half-updated standardization would show
    with pytest.raises(KeyboardInterrupt):
        est.fit(X_other)
    after = _fitted_attributes(est)
    assert after.keys() == attributes.keys()
    assert all(after[k] is attributes[k] for k in attributes)
    np.testing.assert_array_equal(est.transform(X), before)


def test_failed_refit_on_other_width_leaves_fitted_estimator_unchanged():
    X = _data()
    est = _est(encoder="identity").fit(X)
    before = est.transform(X)
    X_bad = np.full((10, 4), np.nan)
    with pytest.raises(ValueError, match="None of the 10 rows observes any modality"):
        est.set_params(modalities=[2, 2]).fit(X_bad)  # validate_data has already reset n_features_in_ to 4 here
    est.set_params(modalities=SIZES)
    assert est.n_features_in_ == 7
    np.testing.assert_array_equal(est.transform(X), before)


# ----------------------------------------------------------------------------- thread safety
@pytest.mark.parametrize("encoder", ["mlp", "identity"])
def test_concurrent_transform_equals_sequential(encoder):
    X = _data(n=64)
    est = _est(encoder=encoder, hidden_layer_sizes=(8,)).fit(X)
    chunks = [X[i::4] for i in range(4)] * 4
    sequential = [est.transform(c) for c in chunks]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(est.transform, chunks))
    for s, c in zip(sequential, concurrent):
        np.testing.assert_array_equal(s, c)


# ----------------------------------------------------------------------------- thread policy
def _threads_seen_by_training(monkeypatch):
    seen = []
    real = training.Trainer.gradient_pass

    def spy(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(training.Trainer, "gradient_pass", spy)
    return seen


def _machine(monkeypatch, cores, load):
    """Pretend the process may use ``cores`` cores and the 1-minute load average is ``load`` (None: not reported)."""
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    if load is None:
        monkeypatch.delattr(os, "getloadavg", raising=False)
    else:
        monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))


@pytest.mark.parametrize(
    "n_jobs, cores, load, expected",
    [(None, 8, 0.0, 1), (1, 8, 0.0, 1), (8, 8, 0.0, 8), (4, 8, 0.3, 4), (4, 8, 5.2, 3), (-1, 2, 1.7, 1), (2, 2, 3.5, 1), (4, 4, None, 4)],
)
def test_free_threads_caps_n_jobs_at_the_cores_the_load_leaves(monkeypatch, n_jobs, cores, load, expected):
    from sklearn_calmrl._utils import free_threads

    _machine(monkeypatch, cores, load)
    assert free_threads(n_jobs) == expected


@pytest.mark.parametrize("n_jobs, expected", [(None, 1), (1, 1), (3, 3)])
def test_fit_runs_with_n_jobs_threads_and_restores_the_callers_setting(monkeypatch, n_jobs, expected):
    _machine(monkeypatch, cores=8, load=0.0)
    seen = _threads_seen_by_training(monkeypatch)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(5)  # the caller's own setting
        est = _est(n_jobs=n_jobs).fit(_data())
        assert torch.get_num_threads() == 5
        est.transform(_data())
        assert torch.get_num_threads() == 5
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {expected}


def test_concurrent_fits_leave_the_default_thread_count_unchanged(monkeypatch):
    seen = _threads_seen_by_training(monkeypatch)
    before = torch.get_num_threads()
    with ThreadPoolExecutor(max_workers=4) as pool:
        models = list(pool.map(lambda seed: _est(random_state=seed).fit(_data()), range(8)))
    assert torch.get_num_threads() == before and set(seen) == {1}
    with ThreadPoolExecutor(max_workers=1) as pool:  # a thread started afterwards sees the caller's default
        assert pool.submit(torch.get_num_threads).result() == before
    reference = _est(random_state=3).fit(_data()).transform(_data())
    np.testing.assert_array_equal(models[3].transform(_data()), reference)
