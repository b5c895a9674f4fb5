"""Fitting on dask arrays (sklearn_calmrl.distributed, issue 12): equal to the in-memory fit."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.utils import check_random_state

from sklearn_calmrl import CalMRLTransformer, MultiViewPPCA
from sklearn_calmrl._chunks import CHUNK
from sklearn_calmrl._latent import fit_em
from sklearn_calmrl._modalities import feature_statistics, observed_mask, standardized_blocks
from sklearn_calmrl._streams import init_rows
from sklearn_calmrl.datasets import ampute_modalities, make_latent_modalities

dask = pytest.importorskip("dask", reason="dask is not installed (optional: pip install 'sklearn-calmrl[distributed]')")
da = pytest.importorskip("dask.array", reason="dask.array is not installed")
from sklearn_calmrl.distributed import fit_dask, partial_fit_dask, transform_dask  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]

I32 = np.iinfo(np.int32).max
FITTED = ("components_", "means_", "noise_variances_")


@pytest.fixture(scope="module")
def data():
    """1500 rows, 4 modalities, 40% of the rows missing some, a few partial NaNs and two rows that observe nothing."""
    X, mods, _ = make_latent_modalities(1500, block_sizes=(6, 5, 4, 5), latent_dim=3, noise=0.5, random_state=0)
    X = ampute_modalities(X, mods, rate=0.4, random_state=0) * 3.0 + 10.0  # standardization has work to do
    X[[3, 7], 1] = np.nan  # partial NaNs (partial_nan='mean' fills them)
    X[[5, 11]] = np.nan  # rows with no modality: both fits ignore them
    return X, mods


@pytest.fixture
def synchronous():
    with dask.config.set(scheduler="synchronous"):
        yield


def _fit(est, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the rows that observe nothing
        return est.fit(X)


def _dask_fit(est, X, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fit_dask(est, X, **kwargs)


def assert_same_model(got, want, rtol=1e-8):
    for name in FITTED:
        for g, w in zip(getattr(got, name), getattr(want, name)):
            np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * np.abs(w).max(), err_msg=name)
    assert got.n_iter_ == want.n_iter_
    np.testing.assert_allclose(got.loglik_curve_, want.loglik_curve_, rtol=rtol)
    for name in ("feature_mean_", "feature_scale_", "_feature_fill_"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-10, err_msg=name)
    assert got.n_samples_seen_ == want.n_samples_seen_ and got.n_features_in_ == want.n_features_in_
    assert got.modalities_ == want.modalities_


@pytest.mark.parametrize(
    "make",
    [
        lambda mods: MultiViewPPCA(mods, latent_dim=3, tol=1e-6, random_state=0),
        lambda mods: MultiViewPPCA(mods, latent_dim=2, noise="diagonal", output="latent", tol=1e-6, random_state=1),
    ],
    ids=["ppca", "ppca-diagonal-latent"],
)
def test_fit_dask_equals_fit(data, synchronous, make):
    """Uneven chunks, the synchronous scheduler: the same model, curve, standardization and outputs as fit."""
    X, mods = data
    Xd = da.from_array(X, chunks=((400, 500, 1, 599), (20,)))
    got, want = _dask_fit(make(mods), Xd), _fit(make(mods), X)
    assert want.n_iter_ > 15  # a long fit: rounding had iterations to grow
    assert_same_model(got, want)
    assert got._block_model().incremental is False and got._block_model().time_em > 0
    Y = transform_dask(got, Xd)
    assert isinstance(Y, da.Array) and Y.chunks[0] == Xd.chunks[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the rows that observe nothing get the prior
        np.testing.assert_allclose(Y.compute(), want.transform(X), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(pickle.loads(pickle.dumps(got)).score(X), want.score(X), rtol=1e-10)
        assert transform_dask(got, Xd.astype(np.float32)).compute().dtype == np.float32


@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
def test_transform_dask_prepares_the_stored_rows_once(data, monkeypatch, scheduler):
    """The local correction's stored-row terms are prepared once for all chunks, not per chunk (issue 21)."""
    import sklearn_calmrl._latent.local as latent

    X, mods = data
    est = _fit(MultiViewPPCA(mods, latent_dim=3, random_state=0), X)
    calls = []
    real = latent._stored_terms
    monkeypatch.setattr(latent, "_stored_terms", lambda *a: calls.append(1) or real(*a))
    with warnings.catch_warnings(), dask.config.set(scheduler=scheduler):
        warnings.simplefilter("ignore", UserWarning)  # the rows that observe nothing get the prior
        Y = transform_dask(est, da.from_array(X, chunks=(200, -1))).compute()
        np.testing.assert_allclose(Y, est.transform(X), rtol=1e-10, atol=1e-12)
    assert len(calls) == 2  # once for the 8 chunks, once for the in-memory transform


def test_fit_dask_initialises_on_a_sample(data, synchronous):
    """Above init_size rows, init_params sees init_rows' sample; EM then runs on every row."""
    X, mods = data
    est = _dask_fit(MultiViewPPCA(mods, latent_dim=3, tol=1e-6, random_state=0), da.from_array(X, chunks=(300, -1)), init_size=400)
    # the documented rule, in memory: seed, then the sample's generator, both from random_state
    rng = check_random_state(0)
    model = est._model(int(rng.randint(I32)))
    model.latent_dim_ = 3  # latent_dim=3 is given: the linking rows do not matter
    blocks = [(name, np.asarray(idx)) for name, idx in mods.items()]
    observed = observed_mask(X, blocks)
    keep = observed.any(axis=1)
    Z = [torch.as_tensor(b) for b in standardized_blocks(X, blocks, observed, *feature_statistics(X, blocks, observed, True))]
    rows = init_rows(X.shape[0], torch.Generator().manual_seed(int(rng.randint(I32))), 400)
    assert rows.numel() == 400
    sample = torch.as_tensor(keep)[rows]
    start = model._initial_params([z[rows][sample] for z in Z], torch.as_tensor(observed)[rows][sample])
    params, curve, n_iter = fit_em([z[keep] for z in Z], torch.as_tensor(observed[keep]), start, max_iter=200, tol=1e-6, noise="isotropic", chunk_size=CHUNK)
    assert est.n_iter_ == n_iter
    np.testing.assert_allclose(est.loglik_curve_, curve, rtol=1e-8)
    for got, want in zip(est.components_, params.W):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-8, atol=1e-10)


def test_fit_dask_checks_its_input(data, synchronous):
    X, mods = data
    Xd = da.from_array(X, chunks=(500, -1))
    with pytest.raises(ValueError, match="partial_fit_dask"):
        fit_dask(CalMRLTransformer(mods, encoder="linear"), Xd)
    with pytest.raises(TypeError, match="dask.array"):
        fit_dask(MultiViewPPCA(mods), X)
    est = _dask_fit(MultiViewPPCA(mods, latent_dim=2, random_state=0), Xd)
    before = {name: getattr(est, name) for name in FITTED}
    # errors raised on the workers or the client leave a fitted estimator as it was
    bad = X.copy()
    bad[1000, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        fit_dask(est, da.from_array(bad, chunks=(500, -1)))
    with pytest.raises(ValueError, match="partial_nan='raise'"):
        fit_dask(est.set_params(partial_nan="raise"), Xd)
    never = X.copy()
    never[:, mods["m2"]] = np.nan
    with pytest.raises(ValueError, match="'m2' is never observed"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the rows left with no modality
        fit_dask(est.set_params(partial_nan="mean"), da.from_array(never, chunks=(500, -1)))
    assert all(getattr(est, name) is value for name, value in before.items())
    with pytest.warns(UserWarning, match="2 of 1500 rows observe no modality"):
        fit_dask(est, Xd)
    # columns split over several chunks are merged first
    assert_same_model(_dask_fit(MultiViewPPCA(mods, latent_dim=2, random_state=0), da.from_array(X, chunks=(500, 7))), est)


def test_partial_fit_dask_equals_partial_fit_on_the_chunks(data, synchronous):
    """Torch encoders: streaming the chunks through partial_fit, twice, is exactly the in-memory loop."""
    X, mods = data
    X = X[12:]  # the first chunk observes every modality and no row without one
    kw = dict(encoder="linear", latent_dim=3, embed_dim=8, batch_size=64, device="cpu", random_state=0)
    got = partial_fit_dask(CalMRLTransformer(mods, **kw), da.from_array(X, chunks=(500, -1)), n_passes=2)
    want = CalMRLTransformer(mods, **kw)
    for _ in range(2):
        for s in range(0, X.shape[0], 500):
            want.partial_fit(X[s : s + 500])
    assert got.n_iter_ == want.n_iter_ == 6 and got.n_samples_seen_ == want.n_samples_seen_
    np.testing.assert_array_equal(got.loss_curve_, want.loss_curve_)
    np.testing.assert_array_equal(got.transform(X), want.transform(X))
    with pytest.raises(ValueError, match="n_passes"):
        partial_fit_dask(got, da.from_array(X, chunks=(500, -1)), n_passes=0)


def test_partial_fit_dask_gives_the_columns_of_fit(data, synchronous):
    """latent_dim='auto' resolved from every chunk's linking rows (issue 21): partial_fit_dask of 100-row chunks has
    fit's output columns, where the first chunk alone would give a smaller latent."""
    X, mods = data
    X = X[12:]
    kw = dict(max_epochs=1, device="cpu", random_state=0)
    want = CalMRLTransformer(mods, **kw).fit(X)
    got = partial_fit_dask(CalMRLTransformer(mods, **kw), da.from_array(X, chunks=(100, -1)))
    assert got.latent_dim_ == want.latent_dim_ and list(got.get_feature_names_out()) == list(want.get_feature_names_out())
    first_chunk_only = CalMRLTransformer(mods, **kw).partial_fit(X[:100])
    assert first_chunk_only.latent_dim_ < want.latent_dim_  # what n_linking_rows avoids
    observed = ~np.isnan(X[:, [cols[0] for cols in mods.values()]])
    told = CalMRLTransformer(mods, **kw).partial_fit(X[:100], n_linking_rows=int((observed.sum(axis=1) >= 2).sum()))
    assert told.latent_dim_ == want.latent_dim_


@pytest.mark.slow  # starts a cluster of two worker processes
def test_fit_dask_on_a_two_worker_local_cluster(data):
    """Two worker processes, X persisted across them: each runs EM tasks; the model equals the in-memory fit.

    About 10 s on a 2-core machine (25 s when other jobs load it), most of it the workers importing torch.
    """
    distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed")
    X, mods = data
    want = _fit(MultiViewPPCA(mods, latent_dim=3, tol=1e-5, random_state=0), X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dask's own port and deprecation warnings
        with distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster, distributed.Client(cluster) as client:
            Xd = client.persist(da.from_array(X, chunks=(500, -1)))
            with distributed.get_task_stream(client) as stream:
                got = fit_dask(MultiViewPPCA(mods, latent_dim=3, tol=1e-5, random_state=0), Xd)
            Y = transform_dask(got, Xd).compute()
    assert_same_model(got, want)
    em_workers = {t["worker"] for t in stream.data if str(t["key"]).startswith("_chunk_statistics")}
    assert len(em_workers) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        np.testing.assert_allclose(Y, want.transform(X), rtol=1e-8, atol=1e-10)
