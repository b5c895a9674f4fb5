"""Where and on how many threads torch computes (``_runtime``, and ``free_threads`` of ``_utils``): ``n_jobs`` threads
capped at the free cores, the caller's setting restored, concurrent fits leaving the default unchanged; in worker
processes (loky, a dask cluster; slow) torch follows their thread limit and grid searches score as in this process."""

import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from joblib import Parallel, delayed
from sklearn.model_selection import GridSearchCV, KFold

import sklearn_calmrl._training as training
from sklearn_calmrl import CalMRLTransformer
from sklearn_calmrl.datasets import ampute_modalities, make_latent_modalities

SIZES = [3, 2, 2]


def _data(n=48, random_state=0):
    X, _, _ = make_latent_modalities(n_samples=n, block_sizes=SIZES, latent_dim=2, random_state=random_state)
    return ampute_modalities(X, SIZES, rate=0.4, random_state=random_state)


SMALL = dict(latent_dim=3, embed_dim=8, max_epochs=1, batch_size=64, add_indicator=False, device="cpu", random_state=0)


def _est(**kw):
    """A cheap CalMRLTransformer."""
    return CalMRLTransformer(**{**dict(modalities=SIZES, latent_dim=2, device="cpu", random_state=0), "embed_dim": 4, "max_epochs": 2, "batch_size": 16, **kw})


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


def _torch_threads():
    import os

    import torch

    return torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")


@pytest.mark.slow  # loky worker processes
def test_loky_workers_limit_torch_threads():
    """joblib's loky backend sets OMP_NUM_THREADS = cpu_count // n_jobs in its workers; torch follows it."""
    import joblib

    limit = max(1, joblib.cpu_count() // 2)
    for threads, env in Parallel(n_jobs=2)(delayed(_torch_threads)() for _ in range(2)):
        assert threads <= limit and env == str(limit)


def _grid(mods, n_jobs):
    est = CalMRLTransformer(mods, encoder="linear", **{**SMALL, "latent_dim": 2})
    return GridSearchCV(est, {"latent_dim": [2, 3]}, cv=KFold(2), n_jobs=n_jobs)


@pytest.fixture(scope="module")
def serial_grid(latent_data):
    X, mods = latent_data
    return _grid(mods, 1).fit(X[:200])


@pytest.mark.slow  # loky worker processes
def test_grid_search_scores_do_not_depend_on_n_jobs(latent_data, serial_grid):
    """The same int random_state gives the same cross-validation scores in loky workers as in this process."""
    X, mods = latent_data
    parallel = _grid(mods, 2).fit(X[:200])
    for key in ("mean_test_score", "split0_test_score", "split1_test_score"):
        np.testing.assert_array_equal(parallel.cv_results_[key], serial_grid.cv_results_[key])
    assert np.isfinite(serial_grid.cv_results_["mean_test_score"]).all() and parallel.best_params_ == serial_grid.best_params_


@pytest.mark.slow  # about 20 s: cluster start-up and torch imports in two worker processes
def test_grid_search_on_dask_cluster(latent_data, serial_grid):
    distributed = pytest.importorskip("distributed")
    from joblib import parallel_backend

    X, mods = latent_data
    X = X[:200]
    local = serial_grid
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dask's own deprecation / port warnings
        with distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster, distributed.Client(cluster) as client:
            threads = client.run(_torch_threads)
            with parallel_backend("dask"):
                remote = _grid(mods, -1).fit(X)
    assert all(t == 1 for t, _ in threads.values())  # the nanny sets OMP_NUM_THREADS=1 in its workers
    assert remote.best_params_ == local.best_params_
    np.testing.assert_allclose(remote.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"], rtol=1e-6)
