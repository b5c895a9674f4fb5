"""Scaling features (issue 4): partial_fit (incremental EM), per-pattern E-step, parallel and dask grid search."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from joblib import Parallel, delayed
from sklearn.model_selection import GridSearchCV, KFold

from sklearn_calmrl import CalMRLTransformer, MultiViewPPCA
from sklearn_calmrl._latent import init_params
from sklearn_calmrl.datasets import ampute_modalities, make_latent_modalities

pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]

FAST = dict(latent_dim=3, embed_dim=8, max_epochs=1, batch_size=64, add_indicator=False, device="cpu", random_state=0)


@pytest.fixture(scope="module")
def latent_data():
    X, mods, _ = make_latent_modalities(400, block_sizes=(6, 5, 4), latent_dim=3, noise=0.5, random_state=0)
    return ampute_modalities(X, mods, rate=0.3, random_state=0), mods


def _model_summary(est):
    W = np.concatenate(est.components_)
    return {"WWt": W @ W.T, "mu": np.concatenate(est.means_), "noise": est.noise_variance_}


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---------------------------------------------------------------------------- partial_fit
def test_partial_fit_of_the_closed_form_model_reaches_full_batch_em():
    """Incremental EM over 5 chunks, 20 passes, reaches the full-batch EM fixed point to 1e-3 relative.

    The data are noisy (noise sd 2 on N(0, 1) loadings) so that EM itself converges fast: with small
    noise, EM's mean/latent-shift direction contracts by about 1 - s^2 / (s^2 + ||W||^2) per iteration
    for full-batch and incremental EM alike, and reaching 1e-3 takes thousands of iterations.
    """
    X, mods, _ = make_latent_modalities(1500, block_sizes=(6, 5, 4, 5), latent_dim=2, noise=2.0, random_state=0)
    X = ampute_modalities(X, mods, rate=0.3, random_state=0)
    kw = dict(latent_dim=2, standardize=False, device="cpu", random_state=0)
    full = _model_summary(MultiViewPPCA(mods, tol=1e-10, **kw).fit(X))
    inc = MultiViewPPCA(mods, **kw)
    chunks = np.array_split(X, 5)
    for _ in range(20):
        for chunk in chunks:
            inc.partial_fit(chunk)
    got = _model_summary(inc)
    for name in full:
        assert _rel(got[name], full[name]) < 1e-3, name
    # revisited chunks replace their contribution: the totals count every row once
    assert inc._model_.statistics.total.n_rows == X.shape[0]
    assert inc.n_iter_ == 100 and inc.n_samples_seen_ == 100 * 300 and len(inc.loglik_curve_) == 100


def test_partial_fit_single_chunk_is_one_em_step_after_init(latent_data):
    """First call = init + EM on the chunk, then one incremental M-step: finite, every attribute set."""
    X, mods = latent_data
    est = MultiViewPPCA(mods, latent_dim=3, device="cpu", random_state=0).partial_fit(X)
    assert est.n_iter_ == 1 and est.n_samples_seen_ == X.shape[0]
    assert np.isfinite(est.transform(X)).all() and np.isfinite(est.score(X))
    np.testing.assert_allclose(est.feature_mean_, np.nanmean(X, axis=0))  # standardization from the first chunk


@pytest.mark.parametrize("encoder,alignment", [("linear", "pmrl"), ("mlp", "gram")])
def test_partial_fit_torch_encoders(latent_data, encoder, alignment):
    X, mods = latent_data
    est = CalMRLTransformer(mods, encoder=encoder, alignment=alignment, hidden_layer_sizes=(8,), **FAST)
    chunks = np.array_split(X, 3)
    for chunk in chunks:
        assert est.partial_fit(chunk) is est
    assert est.n_iter_ == 3 and len(est.loss_curve_) == 3 and np.isfinite(est.loss_curve_).all()
    assert est.fit_time_gradient_ > 0 and est.fit_time_em_ > 0
    Z = est.transform(X)
    assert Z.shape == (X.shape[0], 3 * FAST["embed_dim"] + X.shape[1]) and np.isfinite(Z).all()
    # the width is checked on every call
    with pytest.raises(ValueError, match="features"):
        est.partial_fit(X[:, :-1])
    # pickled state continues (statistics and optimizer travel on the CPU)
    clone = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(clone.transform(X), Z)
    clone.partial_fit(chunks[0])
    assert clone.n_iter_ == 4 and clone._trainer_.model.statistics.total.n_rows == X.shape[0]


def test_partial_fit_is_seeded_and_fit_resets(latent_data):
    X, mods = latent_data
    a, b = CalMRLTransformer(mods, **FAST), CalMRLTransformer(mods, **FAST)
    for chunk in np.array_split(X, 2):
        a.partial_fit(chunk)
        b.partial_fit(chunk)
    np.testing.assert_array_equal(a.transform(X), b.transform(X))
    a.fit(X)  # a fresh fit: partial_fit afterwards starts new running totals from the fitted model
    a.partial_fit(X[:100])
    assert a.n_iter_ == 1 and a._trainer_.model.statistics.total.n_rows == 100 and a.block_model_._model_.statistics.total.n_rows == 100


def test_partial_fit_first_chunk_must_observe_every_modality(latent_data):
    X, mods = latent_data
    X = X.copy()
    X[:, mods["m2"]] = np.nan
    with pytest.raises(ValueError, match="first chunk"):
        MultiViewPPCA(mods, latent_dim=2, device="cpu").partial_fit(X)


# ---------------------------------------------------------------------------- parallel grid search
def _torch_threads():
    import os

    import torch

    return torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")


def test_loky_workers_limit_torch_threads():
    """joblib's loky backend sets OMP_NUM_THREADS = cpu_count // n_jobs in its workers; torch follows it."""
    import joblib

    limit = max(1, joblib.cpu_count() // 2)
    for threads, env in Parallel(n_jobs=2)(delayed(_torch_threads)() for _ in range(2)):
        assert threads <= limit and env == str(limit)


def _grid(mods, n_jobs):
    est = CalMRLTransformer(mods, encoder="linear", **{**FAST, "latent_dim": 2})
    return GridSearchCV(est, {"latent_dim": [2, 3]}, cv=KFold(2), n_jobs=n_jobs)


@pytest.fixture(scope="module")
def serial_grid(latent_data):
    X, mods = latent_data
    return _grid(mods, 1).fit(X[:200])


def test_grid_search_n_jobs_2_matches_n_jobs_1(latent_data, serial_grid):
    X, mods = latent_data
    serial = serial_grid
    parallel = _grid(mods, 2).fit(X[:200])
    for key in ("mean_test_score", "split0_test_score", "split1_test_score"):
        np.testing.assert_allclose(parallel.cv_results_[key], serial.cv_results_[key], rtol=1e-6)
    assert parallel.best_params_ == serial.best_params_


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


# ---------------------------------------------------------------------------- multi-process EM (design check)
def _problem():
    """Standardized blocks as representations, their mask and initial parameters (400 rows, 3 modalities)."""
    X, mods, _ = make_latent_modalities(400, block_sizes=(4, 4, 4), latent_dim=2, noise=0.5, random_state=0)
    X = ampute_modalities(X, mods, rate=0.3, random_state=0)
    observed = torch.as_tensor(np.stack([~np.isnan(X[:, c]).all(axis=1) for c in mods.values()], axis=1))
    Z = [torch.as_tensor(np.nan_to_num(X[:, c])) for c in mods.values()]
    return Z, observed, init_params(Z, observed, 2, generator=torch.Generator().manual_seed(0))


def _flatten_stats(st):
    return torch.cat([st.count, st.loglik.reshape(1)] + [t.flatten() for group in (st.A, st.C, st.S) for t in group])


def _unflatten_stats(flat, like, n_rows):
    from sklearn_calmrl._latent import SufficientStatistics

    k = like.count.numel()
    parts, pos = [], k + 1
    for group in (like.A, like.C, like.S):
        out = []
        for t in group:
            out.append(flat[pos : pos + t.numel()].reshape(t.shape))
            pos += t.numel()
        parts.append(out)
    return SufficientStatistics(flat[:k], *parts, flat[k], n_rows)


def _distributed_em_worker(rank, world, port, path, n_iter):
    """One rank: EM on its shard of rows, statistics all-reduced (summed) before every M-step."""
    import torch.distributed as dist

    from sklearn_calmrl._latent import m_step, sufficient_statistics

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        Z, observed, params = _problem()
        Z, observed = [z[rank::world] for z in Z], observed[rank::world]
        for _ in range(n_iter):
            st = sufficient_statistics(Z, observed, params)
            flat = _flatten_stats(st)
            dist.all_reduce(flat)  # SUM: count, loglik, A_m, C_m, S_m
            params = m_step(_unflatten_stats(flat, st, 400), params)
        if rank == 0:
            torch.save([list(g) for g in params], path)
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_em_equals_single_process_em(tmp_path):
    """The multi-GPU design's closed-form half: all-reducing the statistics gives exactly the full-batch EM."""
    import socket

    import torch.multiprocessing as mp

    from sklearn_calmrl._latent import fit_em

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = str(tmp_path / "params.pt")
    mp.spawn(_distributed_em_worker, args=(2, port, path, 5), nprocs=2, join=True)
    got = torch.load(path)
    Z, observed, params = _problem()
    want, _, n_iter = fit_em(Z, observed, params, max_iter=5, tol=-1.0, accelerate=False)
    assert n_iter == 5
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)
