"""Tests for sklearn_calmrl.datasets: loaders, amputation and the synthetic generator."""

import hashlib
import itertools

import numpy as np
import pandas as pd
import pytest

from sklearn_calmrl._modalities import observed_mask, resolve_modalities
from sklearn_calmrl.datasets import (
    ampute_modalities,
    ampute_modalities_structured,
    load_image_segmentation,
    load_multiple_features,
    make_latent_modalities,
    make_nonlinear_modalities,
)

MF_BLOCKS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
SEG_BLOCKS = {"shape": 8, "color": 10}


@pytest.fixture(scope="module")
def mf():
    return load_multiple_features()


@pytest.fixture(scope="module")
def seg():
    return load_image_segmentation()


def _blocks(mods, n_features):
    return resolve_modalities(mods, n_features)


# --------------------------------------------------------------------------- #
# Loaders
# --------------------------------------------------------------------------- #


def _check_modalities_cover(modalities, sizes, n_features):
    assert list(modalities) == list(sizes)
    start = 0
    for name, size in sizes.items():
        cols = modalities[name]
        assert isinstance(cols, list)
        assert all(type(c) is int for c in cols)
        assert cols == list(range(start, start + size))
        start += size
    assert start == n_features
    # also accepted by the package's own resolver
    resolve_modalities(modalities, n_features)


def test_load_multiple_features(mf):
    assert mf.data.shape == (2000, 649)
    assert mf.data.dtype == np.float64
    assert mf.target.shape == (2000,)
    assert np.issubdtype(mf.target.dtype, np.integer)
    assert np.array_equal(np.bincount(mf.target), np.full(10, 200))
    assert mf.frame is None
    _check_modalities_cover(mf.modalities, MF_BLOCKS, 649)
    assert isinstance(mf.feature_names, np.ndarray) and mf.feature_names.shape == (649,)
    assert mf.feature_names[0] == "fou_0" and mf.feature_names[75] == "fou_75"
    assert mf.feature_names[76] == "fac_0" and mf.feature_names[-1] == "mor_5"
    assert all(isinstance(f, str) for f in mf.feature_names)
    assert list(mf.target_names) == [str(d) for d in range(10)]
    assert "Multiple Features" in mf.DESCR and "Breukelen" in mf.DESCR
    assert "CC BY 4.0" in mf.DESCR
    assert np.isfinite(mf.data).all()


def test_load_image_segmentation(seg):
    assert seg.data.shape == (2310, 18)
    assert seg.data.dtype == np.float64
    assert np.issubdtype(seg.target.dtype, np.integer)
    assert np.array_equal(np.bincount(seg.target), np.full(7, 330))
    assert seg.frame is None
    _check_modalities_cover(seg.modalities, SEG_BLOCKS, 18)
    assert seg.feature_names.shape == (18,)
    assert seg.feature_names[0] == "region-centroid-col"
    assert seg.feature_names[8] == "intensity-mean"
    assert len(set(seg.feature_names)) == 18
    assert list(seg.target_names) == [
        "brickface", "cement", "foliage", "grass", "path", "sky", "window"
    ]
    assert "Image Segmentation" in seg.DESCR and "CC BY 4.0" in seg.DESCR


@pytest.mark.parametrize("loader", [load_multiple_features, load_image_segmentation])
def test_as_frame(loader):
    plain = loader()
    b = loader(as_frame=True)
    assert isinstance(b.data, pd.DataFrame)
    assert list(b.data.columns) == list(plain.feature_names)
    assert isinstance(b.target, pd.Series) and b.target.name == "target"
    assert isinstance(b.frame, pd.DataFrame)
    assert b.frame.shape == (plain.data.shape[0], plain.data.shape[1] + 1)
    assert list(b.frame.columns) == list(plain.feature_names) + ["target"]
    np.testing.assert_array_equal(b.data.to_numpy(), plain.data)
    np.testing.assert_array_equal(b.target.to_numpy(), plain.target)
    assert b.modalities == plain.modalities
    # the column-name form of the modalities resolves on the frame
    by_name = {m: list(b.data.columns[cols]) for m, cols in b.modalities.items()}
    resolved = resolve_modalities(by_name, b.data.shape[1], feature_names=b.data.columns)
    assert [idx.tolist() for _, idx in resolved] == list(plain.modalities.values())


# SHA-256 (first 16 hex digits) of every bundled block (float64, C order) and target (int64), recorded when the
# bundled files were checked equal to the data of the project's shared folder. Any change to the bundled data fails.
CHECKSUMS = {
    "multiple_features": {"fou": "02b7797e21bd296f", "fac": "9b0ec35b591d5e71", "kar": "96e4613832c7458d",
                          "pix": "e8bdfbd1d74394d5", "zer": "a942b80c25bb3096", "mor": "a3f2453c73acf36b",
                          "target": "4e64a02568003d89"},
    "image_segmentation": {"shape": "588882534b106230", "color": "1b1e0cecc527da4f", "target": "d90c9c039a2b9cd4"},
}


def _sha(a, dtype):
    return hashlib.sha256(np.ascontiguousarray(np.asarray(a, dtype=dtype)).tobytes()).hexdigest()[:16]


def test_bundled_data_checksums(mf, seg):
    for data, sums in ((mf, CHECKSUMS["multiple_features"]), (seg, CHECKSUMS["image_segmentation"])):
        got = {name: _sha(data.data[:, cols], np.float64) for name, cols in data.modalities.items()}
        got["target"] = _sha(data.target, np.int64)
        assert got == sums


# --------------------------------------------------------------------------- #
# ampute_modalities
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_ampute_invariants(mf, rate):
    X = mf.data[::4]  # 500 rows: keep it fast
    X_before = X.copy()
    blocks = _blocks(mf.modalities, X.shape[1])
    Xm = ampute_modalities(X, mf.modalities, rate=rate, random_state=0)

    assert isinstance(Xm, np.ndarray) and Xm.shape == X.shape and Xm.dtype == np.float64
    assert not np.shares_memory(Xm, X)
    np.testing.assert_array_equal(X, X_before)  # input unmodified

    obs = observed_mask(Xm, blocks)
    amputed = ~obs.all(axis=1)
    assert amputed.sum() == round(rate * X.shape[0])
    assert obs.any(axis=1).all()  # every row keeps >= 1 modality
    # amputed blocks are all NaN, never partly NaN (the data have no NaN)
    nan = np.isnan(Xm)
    for m, (_, cols) in enumerate(blocks):
        assert np.array_equal(nan[:, cols].any(axis=1), ~obs[:, m])
    # un-amputed entries equal the input
    np.testing.assert_array_equal(Xm[~nan], X[~nan])


def test_ampute_rounding():
    X = np.zeros((7, 4))
    for rate in [0.1, 0.25, 0.5, 0.64, 0.99]:
        Xm = ampute_modalities(X, [1, 1, 2], rate=rate, random_state=1)
        obs = observed_mask(Xm, _blocks([1, 1, 2], 4))
        assert (~obs.all(axis=1)).sum() == round(rate * 7)
        assert obs.any(axis=1).all()


def test_ampute_dataframe():
    X, mods, _ = make_latent_modalities(n_samples=60, block_sizes=(3, 2, 2), random_state=0)
    cols = [f"c{j}" for j in range(X.shape[1])]
    df = pd.DataFrame(X, columns=cols, index=np.arange(100, 160))
    df_before = df.copy()
    by_name = {m: [cols[j] for j in c] for m, c in mods.items()}
    out = ampute_modalities(df, by_name, rate=0.5, random_state=3)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == cols and out.index.equals(df.index)
    pd.testing.assert_frame_equal(df, df_before)
    assert not np.shares_memory(out.to_numpy(), df.to_numpy())
    # same result as the ndarray path with index-based modalities
    ref = ampute_modalities(X, mods, rate=0.5, random_state=3)
    np.testing.assert_array_equal(out.to_numpy(), ref)
    assert (~observed_mask(ref, _blocks(mods, X.shape[1])).all(axis=1)).sum() == 30


def test_ampute_reproducible_and_modality_forms():
    X = np.random.RandomState(0).randn(200, 6)
    a = ampute_modalities(X, [2, 3, 1], rate=0.6, random_state=42)
    b = ampute_modalities(X, [2, 3, 1], rate=0.6, random_state=42)
    c = ampute_modalities(X, [2, 3, 1], rate=0.6, random_state=43)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.isnan(a), np.isnan(c))
    # every spec form that resolve_modalities accepts gives the same blocks
    for spec in ([[0, 1], [2, 3, 4], [5]], [slice(0, 2), slice(2, 5), slice(5, 6)],
                 {"x": [0, 1], "y": [2, 3, 4], "z": [5]}):
        np.testing.assert_array_equal(ampute_modalities(X, spec, rate=0.6, random_state=42), a)
    rs = np.random.RandomState(5)
    ampute_modalities(X, [2, 3, 1], rate=0.6, random_state=rs)  # accepts a RandomState


def test_ampute_dtypes():
    X32 = np.ones((10, 4), dtype=np.float32)
    assert ampute_modalities(X32, [2, 2], rate=0.5, random_state=0).dtype == np.float32
    Xint = np.ones((10, 4), dtype=np.int64)
    out = ampute_modalities(Xint, [2, 2], rate=0.5, random_state=0)
    assert out.dtype == np.float64 and np.isnan(out).any()
    # a list input works too
    assert isinstance(ampute_modalities(Xint.tolist(), [2, 2], rate=0.5, random_state=0), np.ndarray)


def test_ampute_rate_zero_is_copy():
    X = np.arange(12.0).reshape(4, 3)
    out = ampute_modalities(X, None, rate=0.0)
    np.testing.assert_array_equal(out, X)
    assert not np.shares_memory(out, X)


def test_ampute_subsets_roughly_uniform():
    k = 4
    n = 7000  # 14 subsets -> about 500 each
    X = np.zeros((n, k))
    Xm = ampute_modalities(X, [1] * k, rate=1.0, random_state=0)
    lost = np.isnan(Xm)
    codes = lost @ (1 << np.arange(k))
    counts = np.bincount(codes, minlength=2**k)
    assert counts[0] == 0 and counts[-1] == 0
    inner = counts[1:-1]
    expected = n / (2**k - 2)
    chi2 = ((inner - expected) ** 2 / expected).sum()
    assert chi2 < 45  # 13 dof: P(chi2 > 45) ~ 2e-5
    assert inner.min() > 0.8 * expected


def test_ampute_two_modalities_both_patterns():
    X = np.zeros((1000, 2))
    lost = np.isnan(ampute_modalities(X, [1, 1], rate=1.0, random_state=0))
    assert (lost.sum(axis=1) == 1).all()
    assert 400 < lost[:, 0].sum() < 600


@pytest.mark.parametrize("rate", [-0.1, 1.5, np.nan, "half", None, True])
def test_ampute_bad_rate(rate):
    with pytest.raises(ValueError, match="rate"):
        ampute_modalities(np.zeros((4, 2)), [1, 1], rate=rate)


def test_ampute_single_modality():
    with pytest.raises(ValueError, match="at least 2 modalities"):
        ampute_modalities(np.zeros((4, 2)), None, rate=0.5)
    with pytest.raises(ValueError, match="at least 2 modalities"):
        ampute_modalities(np.zeros((4, 2)), [2], rate=0.1)


def test_ampute_bad_modalities():
    with pytest.raises(ValueError):
        ampute_modalities(np.zeros((4, 3)), [1, 1], rate=0.5)  # leaves a column out


# --------------------------------------------------------------------------- #
# ampute_modalities_structured
# --------------------------------------------------------------------------- #


def test_structured_groups():
    X, _, _ = make_latent_modalities(n_samples=203, block_sizes=(2, 3, 2, 1), random_state=0)
    X_before = X.copy()
    mods = {"v": [0, 1], "a": [2, 3, 4], "t": [5, 6], "d": [7]}
    pairs = [("v", "t"), ("a", "t"), (3, 0)]
    Xm = ampute_modalities_structured(X, mods, pairs=pairs, complete_fraction=0.1, random_state=0)
    np.testing.assert_array_equal(X, X_before)
    assert not np.shares_memory(Xm, X)
    obs = observed_mask(Xm, _blocks(mods, X.shape[1]))
    patterns = {
        "complete": np.array([True, True, True, True]),
        0: np.array([True, False, True, False]),
        1: np.array([False, True, True, False]),
        2: np.array([True, False, False, True]),
    }
    counts = {key: int((obs == p).all(axis=1).sum()) for key, p in patterns.items()}
    assert sum(counts.values()) == 203  # every row has exactly one of these patterns
    assert counts["complete"] == round(0.1 * 203)
    rest = 203 - counts["complete"]
    for g in range(3):
        assert counts[g] in (rest // 3, rest // 3 + 1)
    nan = np.isnan(Xm)
    np.testing.assert_array_equal(Xm[~nan], X[~nan])
    # dropped blocks are entirely NaN
    for m, (_, cols) in enumerate(_blocks(mods, X.shape[1])):
        assert np.array_equal(nan[:, cols].all(axis=1), ~obs[:, m])
    # reproducible
    again = ampute_modalities_structured(X, mods, pairs=pairs, complete_fraction=0.1, random_state=0)
    np.testing.assert_array_equal(Xm, again)


def test_structured_dataframe_and_extremes():
    df = pd.DataFrame(np.ones((20, 3)), columns=["a", "b", "c"], index=list("abcdefghijklmnopqrst"))
    mods = {"x": ["a"], "y": ["b"], "z": ["c"]}
    out = ampute_modalities_structured(df, mods, pairs=[("x", "y")], complete_fraction=0.5, random_state=0)
    assert isinstance(out, pd.DataFrame) and out.index.equals(df.index)
    assert list(out.columns) == ["a", "b", "c"]
    assert out["c"].isna().sum() == 10 and out[["a", "b"]].isna().sum().sum() == 0
    assert df.notna().all().all()
    full = ampute_modalities_structured(df, mods, pairs=[("x", "y")], complete_fraction=1.0)
    assert full.notna().all().all()
    none = ampute_modalities_structured(df, mods, pairs=[(0, 2), (1,)], complete_fraction=0.0, random_state=1)
    assert none.isna().any(axis=1).all()


def test_structured_errors():
    X = np.zeros((10, 3))
    mods = {"v": [0], "a": [1], "t": [2]}
    with pytest.raises(ValueError, match="'x'"):
        ampute_modalities_structured(X, mods, pairs=[("v", "x")])
    with pytest.raises(ValueError, match="position"):
        ampute_modalities_structured(X, mods, pairs=[(0, 5)])
    with pytest.raises(ValueError, match="empty"):
        ampute_modalities_structured(X, mods, pairs=[])
    with pytest.raises(ValueError, match="more than once"):
        ampute_modalities_structured(X, mods, pairs=[("v", "v")])
    with pytest.raises(ValueError, match="complete_fraction"):
        ampute_modalities_structured(X, mods, pairs=[("v", "t")], complete_fraction=1.2)
    with pytest.raises(TypeError):
        ampute_modalities_structured(X, mods)  # pairs is required


# --------------------------------------------------------------------------- #
# make_latent_modalities
# --------------------------------------------------------------------------- #


def test_make_latent_modalities_structure():
    X, mods, params = make_latent_modalities(n_samples=50, random_state=0)
    assert X.shape == (50, 18) and X.dtype == np.float64
    assert mods == {"m0": list(range(8)), "m1": list(range(8, 14)), "m2": list(range(14, 18))}
    assert [W.shape for W in params["W"]] == [(8, 3), (6, 3), (4, 3)]
    assert [mu.shape for mu in params["mu"]] == [(8,), (6,), (4,)]
    np.testing.assert_allclose(params["noise_variance"], [0.01] * 3)
    assert params["latent"].shape == (50, 3)
    X2, _, _ = make_latent_modalities(n_samples=50, random_state=0)
    np.testing.assert_array_equal(X, X2)
    # noiseless data is exactly the linear model
    Xn, mods_n, p = make_latent_modalities(n_samples=20, block_sizes=(3, 2), noise=0.0, random_state=1)
    for m, cols in enumerate(mods_n.values()):
        np.testing.assert_allclose(Xn[:, cols], p["latent"] @ p["W"][m].T + p["mu"][m])


def test_make_latent_modalities_covariance():
    noise = [0.5, 1.0, 0.2]
    X, mods, params = make_latent_modalities(
        n_samples=40000, block_sizes=(5, 4, 3), latent_dim=2, noise=noise, random_state=0
    )
    for m, cols in enumerate(mods.values()):
        W = params["W"][m]
        expected = W @ W.T + params["noise_variance"][m] * np.eye(len(cols))
        emp = np.cov(X[:, cols], rowvar=False)
        scale = np.abs(expected).max()
        np.testing.assert_allclose(emp, expected, atol=0.05 * scale)
        np.testing.assert_allclose(X[:, cols].mean(axis=0), params["mu"][m], atol=0.05 * np.sqrt(scale))
    np.testing.assert_allclose(params["noise_variance"], np.square(noise))


@pytest.mark.parametrize(
    "kwargs",
    [{"n_samples": 0}, {"latent_dim": 0}, {"block_sizes": ()}, {"block_sizes": (3, 0)},
     {"noise": -1.0}, {"noise": [0.1, 0.2]}],
)
def test_make_latent_modalities_errors(kwargs):
    with pytest.raises(ValueError):
        make_latent_modalities(**kwargs)


def test_make_latent_then_ampute():
    X, mods, _ = make_latent_modalities(n_samples=100, random_state=0)
    Xm = ampute_modalities(X, mods, rate=0.7, random_state=0)
    obs = observed_mask(Xm, _blocks(mods, X.shape[1]))
    assert (~obs.all(axis=1)).sum() == 70 and obs.any(axis=1).all()
    patterns = {tuple(r) for r in obs[~obs.all(axis=1)]}
    assert patterns <= {p for p in itertools.product([False, True], repeat=3) if 0 < sum(p) < 3}


# --------------------------------------------------------------------------- #
# make_nonlinear_modalities
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def nonlinear():
    return make_nonlinear_modalities(n_samples=1001, random_state=0)


def test_make_nonlinear_modalities_fields(nonlinear):
    d = nonlinear
    assert d.data.shape == d.data_full.shape == (1001, 128)
    assert d.data.dtype == d.data_full.dtype == np.float64
    assert d.target.shape == (1001,) and d.target.dtype == np.int64
    assert np.bincount(d.target).tolist() == [101] + [100] * 9  # balanced classes
    assert d.latent.shape == (1001, 8) and d.latent.dtype == np.float64
    _check_modalities_cover(d.modalities, {f"m{m}": 32 for m in range(4)}, 128)
    assert list(d.feature_names[[0, 31, 32]]) == ["m0_0", "m0_31", "m1_0"]
    assert list(d.target_names) == [str(c) for c in range(10)]
    assert d.pairs == [("m0", "m1"), ("m1", "m2"), ("m2", "m3")]
    assert d.frequent_pairs == d.pairs
    assert d.rare_pairs == [("m0", "m2"), ("m0", "m3"), ("m1", "m3")]
    assert d.groups.shape == d.complete.shape == (1001,) and d.observed.shape == (1001, 4)
    assert np.isfinite(d.data_full).all() and "Nonlinear modalities" in d.DESCR
    # standardized signal plus noise of standard deviation 0.5
    np.testing.assert_allclose(d.data_full.var(axis=0), 1.25, rtol=0.15)
    sizes = make_nonlinear_modalities(n_samples=20, n_modalities=3, block_sizes=[2, 5, 1], latent_dim=2, random_state=0)
    assert sizes.data.shape == (20, 8) and sizes.latent.shape == (20, 2)


def _check_structured_missingness(d, complete_fraction):
    n, k = d.data.shape[0], len(d.modalities)
    names = list(d.modalities)
    blocks = _blocks(d.modalities, d.data.shape[1])
    observed = observed_mask(d.data, blocks)
    np.testing.assert_array_equal(observed, d.observed)
    # missing modalities are whole NaN blocks; everything observed equals data_full
    nan = np.isnan(d.data)
    for m, (_, cols) in enumerate(blocks):
        assert np.array_equal(nan[:, cols].any(axis=1), ~observed[:, m])
        assert np.array_equal(nan[:, cols].all(axis=1), ~observed[:, m])
    np.testing.assert_array_equal(d.data[~nan], d.data_full[~nan])
    # complete rows observe everything; every other row exactly the pair of its group
    assert d.complete.sum() == round(complete_fraction * n)
    np.testing.assert_array_equal(d.complete, d.groups == -1)
    assert observed[d.complete].all()
    for g, pair in enumerate(d.pairs):
        rows = d.groups == g
        expected = np.isin(names, pair)
        assert (observed[rows] == expected).all()
        assert abs(rows.sum() - (n - d.complete.sum()) / len(d.pairs)) <= 1
    assert set(np.unique(d.groups)) <= set(range(-1, len(d.pairs)))
    # rare pairs co-occur only in the complete rows, frequent pairs also elsewhere
    assert len(d.rare_pairs) + len(d.frequent_pairs) == k * (k - 1) // 2
    for a, b in d.rare_pairs:
        together = observed[:, names.index(a)] & observed[:, names.index(b)]
        assert not together[~d.complete].any()
    for a, b in d.frequent_pairs:
        together = observed[:, names.index(a)] & observed[:, names.index(b)]
        assert together[~d.complete].any()
    assert observed.any(axis=0).all()


def test_make_nonlinear_modalities_missingness(nonlinear):
    _check_structured_missingness(nonlinear, 0.05)
    star = make_nonlinear_modalities(
        n_samples=500, n_modalities=6, block_sizes=4, pairs="star", complete_fraction=0.1, random_state=1)
    assert star.pairs == [("m0", f"m{m}") for m in range(1, 6)]
    assert ("m1", "m2") in star.rare_pairs and len(star.rare_pairs) == 10
    _check_structured_missingness(star, 0.1)
    # explicit groups, by name or position (normalized to sorted names), and a singleton
    mixed = make_nonlinear_modalities(
        n_samples=300, n_modalities=5, block_sizes=3, pairs=[("m3", "m0"), (1, 4), ("m2",)],
        complete_fraction=0.2, random_state=2)
    assert mixed.pairs == [("m0", "m3"), ("m1", "m4"), ("m2",)]
    assert mixed.frequent_pairs == [("m0", "m3"), ("m1", "m4")]
    _check_structured_missingness(mixed, 0.2)
    # no complete rows: every modality is still observed through the chain
    none = make_nonlinear_modalities(n_samples=200, block_sizes=3, complete_fraction=0.0, random_state=0)
    _check_structured_missingness(none, 0.0)
    full = make_nonlinear_modalities(n_samples=50, block_sizes=3, complete_fraction=1.0, random_state=0)
    np.testing.assert_array_equal(full.data, full.data_full)


def test_make_nonlinear_modalities_deterministic(nonlinear):
    state = np.random.get_state()
    again = make_nonlinear_modalities(n_samples=1001, random_state=0)
    assert _same_random_state(state, np.random.get_state())  # the global RNG is not used
    for key in ("data", "data_full", "target", "latent", "groups"):
        np.testing.assert_array_equal(again[key], nonlinear[key])
    other = make_nonlinear_modalities(n_samples=1001, random_state=1)
    for key in ("data_full", "latent", "groups"):
        assert not np.array_equal(other[key], nonlinear[key])
    rng = np.random.RandomState(0)
    first, second = (make_nonlinear_modalities(n_samples=100, block_sizes=2, random_state=rng) for _ in range(2))
    assert not np.array_equal(first.data_full, second.data_full)


def _same_random_state(a, b):
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


def _r2(X_train, Y_train, X_test, Y_test, model):
    return model.fit(X_train, Y_train).score(X_test, Y_test)


def test_make_nonlinear_modalities_is_nonlinear():
    """Without noise, a linear map of the latent misses much of each modality; a local regressor does not."""
    from sklearn.linear_model import LinearRegression
    from sklearn.neighbors import KNeighborsRegressor

    d = make_nonlinear_modalities(n_samples=5000, noise=0.0, random_state=0)
    split = (d.latent[:4000], d.data_full[:4000], d.latent[4000:], d.data_full[4000:])
    linear, knn = _r2(*split, LinearRegression()), _r2(*split, KNeighborsRegressor(10))
    assert linear < 0.8 and knn > linear + 0.1
    control = make_nonlinear_modalities(n_samples=500, noise=0.0, hidden_layer_sizes=(), random_state=0)
    split = (control.latent[:400], control.data_full[:400], control.latent[400:], control.data_full[400:])
    assert _r2(*split, LinearRegression()) > 0.999


def test_make_nonlinear_modalities_classes(nonlinear):
    from sklearn.linear_model import LogisticRegression

    d = nonlinear
    clf = LogisticRegression(max_iter=300).fit(d.data_full[:800], d.target[:800])
    assert clf.score(d.data_full[800:], d.target[800:]) > 0.6  # chance is 0.1
    # the class means lie at distance class_sep from the origin
    means = np.stack([d.latent[d.target == c].mean(axis=0) for c in range(10)])
    np.testing.assert_allclose(np.linalg.norm(means, axis=1), 3.0, atol=0.5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_samples": 0}, "n_samples"),
        ({"n_modalities": 1}, "n_modalities"),
        ({"n_modalities": 2.0}, "n_modalities"),
        ({"block_sizes": 0}, "block_sizes"),
        ({"block_sizes": [3, 3]}, "block_sizes"),
        ({"block_sizes": "32"}, "block_sizes"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"n_classes": 0}, "n_classes"),
        ({"class_sep": -1.0}, "class_sep"),
        ({"class_sep": np.inf}, "class_sep"),
        ({"hidden_layer_sizes": (8, 0)}, "hidden_layer_sizes"),
        ({"hidden_layer_sizes": None}, "hidden_layer_sizes"),
        ({"gain": 0.0}, "gain"),
        ({"noise": -0.1}, "noise"),
        ({"noise": [0.1, 0.2]}, "noise"),
        ({"complete_fraction": 1.5}, "complete_fraction"),
        ({"pairs": "ring"}, "pairs"),
        ({"pairs": [("m0", "m7")]}, "'m7'"),
        ({"pairs": []}, "empty"),
        ({"pairs": [("m0", "m1")], "complete_fraction": 0.0}, r"\['m2', 'm3'\] would never be observed"),
    ],
)
def test_make_nonlinear_modalities_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_nonlinear_modalities(**{"n_samples": 20, **kwargs})


def test_digits_halves_are_the_image_columns():
    from sklearn.datasets import load_digits

    from sklearn_calmrl.datasets import load_digits_halves

    data, raw = load_digits_halves(), load_digits()
    assert data.data.shape == (1797, 64) and list(data.modalities) == ["left", "right"]
    images = raw.images.reshape(-1, 8, 8)
    np.testing.assert_array_equal(data.data[:, data.modalities["left"]].reshape(-1, 8, 4), images[:, :, :4])
    np.testing.assert_array_equal(data.data[:, data.modalities["right"]].reshape(-1, 8, 4), images[:, :, 4:])
    np.testing.assert_array_equal(data.target, raw.target)
    _check_modalities_cover(data.modalities, {"left": 32, "right": 32}, 64)


def test_breast_cancer_views_group_the_ten_measurements():
    from sklearn.datasets import load_breast_cancer

    from sklearn_calmrl.datasets import load_breast_cancer_views

    data, raw = load_breast_cancer_views(as_frame=True), load_breast_cancer()
    assert data.data.shape == (569, 30) and list(data.modalities) == ["mean", "error", "worst"]
    measurements = [f[len("mean "):] for f in raw.feature_names[:10]]
    for view, cols in data.modalities.items():
        names = list(data.data.columns[cols])
        expected = [f"mean {m}" for m in measurements] if view == "mean" else (
            [f"{m} error" for m in measurements] if view == "error" else [f"worst {m}" for m in measurements])
        assert names == expected
        np.testing.assert_array_equal(data.data[names].to_numpy(), raw.data[:, [list(raw.feature_names).index(n) for n in names]])


def test_docstring_examples_run():
    """The Examples sections of the loaders, the amputation helpers and the generators run as doctests."""
    import doctest

    from sklearn_calmrl.datasets import _base, _synthetic

    for module in (_base, _synthetic):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 0 and result.failed == 0, module.__name__


@pytest.mark.slow  # a process
def test_datasets_import_without_torch():
    """``sklearn_calmrl.datasets`` loads and amputes without importing torch (issue 18)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from sklearn_calmrl.datasets import ampute_modalities, load_image_segmentation, make_nonlinear_modalities\n"
        "d = load_image_segmentation(); X = ampute_modalities(d.data, d.modalities, rate=0.5, random_state=0)\n"
        "make_nonlinear_modalities(n_samples=100, random_state=0)\n"
        "import sklearn_calmrl; assert 'CalMRLTransformer' in dir(sklearn_calmrl)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(X.shape)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(2310, 18)"
