"""Bad inputs: each either works correctly or fails with a clear message (issue 6).

Every case also checks that the caller's data is left unmodified and that the
output shares no memory with the input. Table of inputs and outcomes
(``X`` has 3 modalities ``m0, m1, m2`` of 3, 2 and 2 columns):

Input                                         Outcome
--------------------------------------------  --------------------------------------------------------------
partial NaN in an observed block (default)    works: NaNs filled with the feature's training mean (equal to
                                              filling that mean by hand), with or without standardize
partial NaN, partial_nan='raise'              ValueError "Modality 'm0' has NaN entries in 2 row(s) ..."
                                              (fit and transform)
rows with no observed modality, fit           UserWarning "3 of 40 rows observe no modality ...; fit ignores
                                              them"; the model equals the one fitted without those rows
rows with no observed modality, transform     UserWarning "... they get the prior"; latent output 0, concat
                                              output the model's mean representations
every row empty                               ValueError "None of the 40 rows observes any modality"
a modality never observed in fit              ValueError "Modality 'm1' is never observed in fit"
modalities that never co-occur                UserWarning "... never co-occur ...: [['m0', 'm1'], ['m2']]";
                                              no warning when they co-occur through a chain
inf / -inf (fit or transform)                 ValueError "Input X contains infinity"
huge values 1e300 (fit or transform)          ValueError "Modality 'm0' has values too large to compute
                                              with ... (limit 1e+15)"; never NaN output
constant column / constant block              works, finite output
object dtype holding numbers                  works, equal to the float64 result
numeric strings (dtype '<U')                  works (converted), equal to the float64 result
object dtype holding words                    ValueError "Column 4 of X holds a value that is not a number: 'abc'"
DataFrame with a text column                  ValueError "Column 'd' (index 3) of X holds a value that is not a number'
complex numbers                               ValueError "Complex data not supported"
scipy.sparse input                            TypeError "Sparse data was passed ... dense data is required"
a single sample                               ValueError "fit needs at least 2 rows that observe a modality; got 1 sample"
a single feature                              works, finite output of the documented shape
a feature NaN in every row of its modality    UserWarning "Feature(s) ['b'] of modality 'a' are NaN in every row that
                                              observes the modality"; the output is finite
zero rows (fit or transform), zero columns    ValueError "Found array with 0 sample(s)" / "0 feature(s)"
1-D X                                         ValueError "Expected 2D array"
wrong width at transform                      ValueError "X has 6 features, but ... expecting 7 features"
list of blocks: wrong block width / rows      ValueError "Modality 'm1' has 1 columns in X, but 2 during fit"
                                              / "same number of rows"; list plus modalities: "pass either"
modalities overlap                            ValueError "Modalities 'm0' and 'm1' overlap: column(s) [2]"
modalities leave columns out                  ValueError "modalities leave 1 column(s) out (indices [2])"
block sizes that do not sum to the width      ValueError "block sizes [3, 2] sum to 5, but X has 7 columns"
modalities name missing DataFrame columns     ValueError "Modality 'b' names columns that X does not have"
MLP(hidden_layer_sizes=(0,)) or (('a',))      ValueError "hidden_layer_sizes must be a tuple of positive integers"
column names without a DataFrame              ValueError "given by column names, but X has no column names"
empty modalities (list, dict, block, size 0)  ValueError "empty list" / "empty dict" / "Modality 'm1' is
                                              empty" / "block sizes must be positive"
index out of range / repeated column          ValueError "out of range" / "same column more than once"
DataFrame columns reordered at transform      ValueError "Feature names must be in the same order"
DataFrame columns renamed at transform        ValueError "Feature names unseen at fit time"
y passed or not                               y is ignored: identical output
float16 / int input                           float64 output, equal to fitting the float64 cast
float32 input                                 float32 output, equal to the float64 cast's output cast down
"""

import copy
import functools
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning

from sklearn_calmrl import MLP, CalMRLTransformer, MultiViewPPCA
from sklearn_calmrl.datasets import ampute_modalities, make_latent_modalities

N = 40
SIZES = [3, 2, 2]
COLS = list("abcdefg")
NAMED = {"a": ["a", "b", "c"], "b": ["d", "e"], "c": ["f", "g"]}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _complete():
    X, _, _ = make_latent_modalities(n_samples=N, block_sizes=SIZES, latent_dim=2, random_state=0)
    return X


def _amputed():
    return ampute_modalities(_complete(), SIZES, rate=0.3, random_state=0)


def _est(**kw):
    """A cheap CalMRLTransformer, or with ``encoder='ppca'`` the closed-form model alone (MultiViewPPCA)."""
    params = dict(modalities=SIZES, latent_dim=2, add_indicator=False, device="cpu", random_state=0)
    if kw.get("encoder") == "ppca":
        return MultiViewPPCA(**{**params, **{k: v for k, v in kw.items() if k != "encoder"}})
    return CalMRLTransformer(**{**params, "embed_dim": 4, "max_epochs": 2, "batch_size": 64, **kw})


@functools.lru_cache(maxsize=None)
def _base_output(encoder):
    """Output of the model fitted on the amputed float64 data (shared reference, read-only)."""
    out = _est(encoder=encoder).fit(_amputed()).transform(_amputed())
    out.setflags(write=False)
    return out


def _arrays(X):
    """The numpy arrays holding the caller's data."""
    if isinstance(X, (list, tuple)):
        return [a for b in X for a in _arrays(b)]
    if isinstance(X, pd.DataFrame):
        return [X.to_numpy(copy=False)]
    if isinstance(X, np.ndarray):
        return [X]
    return []


def _assert_unchanged(X, X0):
    """The caller's data equals its copy taken before the call (NaN == NaN)."""
    if sparse.issparse(X):
        np.testing.assert_array_equal(X.toarray(), X0.toarray())
    elif isinstance(X, pd.DataFrame):
        pd.testing.assert_frame_equal(X, X0)
    elif isinstance(X, (list, tuple)):
        for a, b in zip(X, X0):
            _assert_unchanged(a, b)
    else:
        assert X.dtype == X0.dtype and X.shape == X0.shape
        if X.dtype == object:
            assert pd.DataFrame(X.reshape(len(X), -1)).equals(pd.DataFrame(X0.reshape(len(X0), -1)))
        else:
            np.testing.assert_array_equal(X, X0)


def _assert_no_shared_memory(out, *inputs):
    for X in inputs:
        for a in _arrays(X):
            assert not np.shares_memory(out, a)


def _fit_transform_checked(est, X, y=None):
    """fit then transform, checking the caller's X is not modified nor aliased by the output."""
    X0 = copy.deepcopy(X)
    out = est.fit(X, y).transform(X)
    _assert_unchanged(X, X0)
    _assert_no_shared_memory(out, X)
    return out


# ----------------------------------------------------------------------------- errors
def _with(fn):
    """Copy of the amputed data modified in place by ``fn``."""

    def make():
        X = _amputed()
        fn(X)
        return X

    return make


def _set(i, j, v):
    def fn(X):
        X[i, j] = v

    return fn


def _partial_nan(X):
    X[0, 0] = np.nan  # rows 0 and 5 observe m0 but miss one of its entries
    X[5, 1] = np.nan


def _never_m1(X):
    X[:, 3:5] = np.nan
    X[np.isnan(X).all(axis=1), :3] = 1.0  # keep every row non-empty: only m1 is at fault


def _as_words():
    X = _amputed().astype(object)
    X[2, 4] = "abc"
    return X


def _frame():
    return pd.DataFrame(_amputed(), columns=COLS)


def _frame_with_text():
    X = _frame()
    X["d"] = X["d"].astype(object)
    X.loc[5, "d"] = "red"
    return X


# id, estimator params (encoder='ppca' unless given), input of fit, input of transform (None: the error is
# raised by fit), error, message
ERROR_CASES = [
    ("inf-fit", {}, _with(_set(0, 0, np.inf)), None, ValueError, "Input X contains infinity"),
    ("minus-inf-fit", {}, _with(_set(1, 4, -np.inf)), None, ValueError, "Input X contains infinity"),
    ("inf-transform", {}, _amputed, _with(_set(0, 0, np.inf)), ValueError, "Input X contains infinity"),
    ("huge-fit", {"encoder": "linear"}, _with(_set(0, 0, 1e300)), None, ValueError, r"Modality 'm0' has values too large.*limit 1e\+15"),
    ("huge-fit-ppca", {}, _with(_set(0, 0, 1e300)), None, ValueError, "Modality 'm0' has values too large"),
    ("huge-all-fit", {}, lambda: _amputed() * 1e300, None, ValueError, "has values too large"),
    ("huge-transform", {"encoder": "linear"}, _amputed, _with(_set(1, 5, 1e300)), ValueError, "Modality 'm2' has values too large"),
    ("huge-transform-ppca", {}, _amputed, _with(_set(1, 5, -1e300)), ValueError, "Modality 'm2' has values too large"),
    ("words", {}, _as_words, None, ValueError, "Column 4 of X holds a value that is not a number: 'abc'.*OneHotEncoder"),
    ("words-in-frame", {"modalities": NAMED}, _frame_with_text, None, ValueError,
     "Column 'd' \\(index 3\\) of X holds a value that is not a number: 'red'"),
    ("single-sample", {}, lambda: _complete()[:1], None, ValueError, "fit needs at least 2 rows that observe a modality; got 1 sample"),
    ("complex", {}, lambda: _amputed() + 1j, None, ValueError, "Complex data not supported"),
    ("sparse", {}, lambda: sparse.csr_matrix(np.nan_to_num(_amputed())), None, TypeError, "Sparse data was passed.*dense data is required"),
    ("sparse-transform", {}, _amputed, lambda: sparse.csr_matrix(np.nan_to_num(_amputed())), TypeError, "Sparse data was passed"),
    ("zero-rows-fit", {}, lambda: _amputed()[:0], None, ValueError, r"Found array with 0 sample\(s\)"),
    ("zero-rows-transform", {}, _amputed, lambda: _amputed()[:0], ValueError, r"Found array with 0 sample\(s\)"),
    ("zero-columns", {"modalities": None}, lambda: np.empty((N, 0)), None, ValueError, r"0 feature\(s\)"),
    ("one-dimensional", {"modalities": None}, lambda: _complete()[:, 0], None, ValueError, "Expected 2D array"),
    ("wrong-width-transform", {}, _amputed, lambda: _amputed()[:, :6], ValueError, "X has 6 features, but MultiViewPPCA is expecting 7 features"),
    ("list-wrong-block-width", {"modalities": None}, lambda: [_complete()[:, :3], _complete()[:, 3:5], _complete()[:, 5:]],
     lambda: [_complete()[:, :3], _complete()[:, 3:4], _complete()[:, 4:]], ValueError, "Modality 'm1' has 1 columns in X, but 2 during fit"),
    ("list-unequal-rows", {"modalities": None}, lambda: [_complete()[:, :3], _complete()[:30, 3:]], None, ValueError, r"same number of rows.*\[40, 30\]"),
    ("list-and-modalities", {}, lambda: [_complete()[:, :3], _complete()[:, 3:]], None, ValueError, "pass either"),
    ("every-row-empty", {}, lambda: np.full((N, 7), np.nan), None, ValueError, "None of the 40 rows observes any modality"),
    ("modality-never-observed", {}, _with(_never_m1), None, ValueError, "Modality 'm1' is never observed in fit"),
    ("partial-nan-raise-fit", {"partial_nan": "raise"}, _with(_partial_nan), None, ValueError, r"Modality 'm0' has NaN entries in 2 row\(s\)"),
    ("partial-nan-raise-transform", {"partial_nan": "raise"}, _complete, _with(_set(slice(0, 3), 3, np.nan)), ValueError,
     r"Modality 'm1' has NaN entries in 3 row\(s\)"),
    ("modalities-overlap", {"modalities": [[0, 1, 2], [2, 3, 4], [5, 6]]}, _amputed, None, ValueError,
     r"Modalities 'm0' and 'm1' overlap: column\(s\) \[2\]"),
    ("modalities-leave-out", {"modalities": [[0, 1], [3, 4], [5, 6]]}, _amputed, None, ValueError,
     r"modalities leave 1 column\(s\) out \(indices \[2\]\)"),
    ("sizes-wrong-sum", {"modalities": [3, 2]}, _amputed, None, ValueError, r"block sizes \[3, 2\] sum to 5, but X has 7 columns"),
    ("names-missing-column", {"modalities": {"a": ["a", "b", "c"], "b": ["d", "zz"], "c": ["f", "g"], "d": ["e"]}}, _frame, None,
     ValueError, r"Modality 'b' names columns that X does not have: \['zz'\]"),
    ("names-without-frame", {"modalities": NAMED}, _amputed, None, ValueError, "given by column names, but X has no column names"),
    ("empty-list", {"modalities": []}, _amputed, None, ValueError, "modalities is an empty list"),
    ("empty-dict", {"modalities": {}}, _amputed, None, ValueError, "modalities is an empty dict"),
    ("empty-block", {"modalities": [[0, 1, 2, 3, 4, 5, 6], []]}, _amputed, None, ValueError, "Modality 'm1' is empty"),
    ("zero-size-block", {"modalities": [3, 0, 4]}, _amputed, None, ValueError, "block sizes must be positive"),
    ("index-out-of-range", {"modalities": [[0, 1, 2], [3, 4], [5, 6, 7]]}, _amputed, None, ValueError, r"out of range.*\[7\]"),
    ("repeated-column", {"modalities": [[0, 1, 2, 2], [3, 4], [5, 6]]}, _amputed, None, ValueError, "same column more than once"),
    ("frame-columns-reordered", {"modalities": NAMED}, _frame, lambda: _frame()[COLS[::-1]], ValueError,
     "Feature names must be in the same order"),
    ("frame-columns-renamed", {"modalities": NAMED}, _frame, lambda: _frame().rename(columns={"g": "h"}), ValueError,
     "Feature names unseen at fit time"),
    ("latent-dim-above-width", {"latent_dim": 8}, _amputed, None, ValueError,
     r"latent_dim=8 is larger than the 7 feature\(s\) of X in all blocks together"),
    ("modalities-2d-array", {"modalities": np.array([[3, 2, 2]])}, _amputed, None, ValueError,
     r"modalities given as an array must be 1-D \(block sizes\), got shape \(1, 3\)"),
    ("hidden-layer-zero", {"encoder": MLP(hidden_layer_sizes=(0,))}, _amputed, None, ValueError,
     r"hidden_layer_sizes must be a tuple of positive integers.*\(0,\)"),
    ("hidden-layer-string", {"encoder": MLP(hidden_layer_sizes=("a",))}, _amputed, None, ValueError,
     r"hidden_layer_sizes must be a tuple of positive integers.*\('a',\)"),
]


@pytest.mark.parametrize(
    "params, make_fit, make_transform, error, match",
    [pytest.param(*case[1:], id=case[0]) for case in ERROR_CASES],
)
def test_bad_input_raises_clear_error(params, make_fit, make_transform, error, match):
    est = _est(**{"encoder": "ppca", **params})  # validation is shared by both estimators and every encoder
    X_fit = make_fit()
    X_fit0 = copy.deepcopy(X_fit)
    if make_transform is None:
        with pytest.raises(error, match=match):
            est.fit(X_fit)
        _assert_unchanged(X_fit, X_fit0)
        return
    est.fit(X_fit)
    X_bad = make_transform()
    X_bad0 = copy.deepcopy(X_bad)
    with pytest.raises(error, match=match):
        est.transform(X_bad)
    _assert_unchanged(X_bad, X_bad0)
    _assert_unchanged(X_fit, X_fit0)


# ----------------------------------------------------------------------------- inputs that work
def _const_column():
    X = _amputed()
    X[:, 1] = np.where(np.isnan(X[:, 1]), np.nan, 7.5)
    return X


def _const_block():
    X = _amputed()
    X[:, 3:5] = np.where(np.isnan(X[:, 3:5]), np.nan, -2.0)
    return X


# id, estimator params, input, output dtype, output rows, and the reference input whose fit the output must equal
# ("base": the amputed float64 data with modalities=SIZES) or None
WORKING_CASES = [
    ("float64", {}, _amputed, np.float64, N, "base"),
    ("float32", {}, lambda: _amputed().astype(np.float32), np.float32, N, lambda: _amputed().astype(np.float32).astype(np.float64)),
    ("float16", {}, lambda: _amputed().astype(np.float16), np.float64, N, lambda: _amputed().astype(np.float16).astype(np.float64)),
    ("int", {}, lambda: np.rint(_complete() * 10).astype(np.int64), np.float64, N, lambda: np.rint(_complete() * 10)),
    ("object-numbers", {}, lambda: _amputed().astype(object), np.float64, N, "base"),
    ("numeric-strings", {}, lambda: _complete().astype(str), np.float64, N, lambda: _complete().astype(str).astype(np.float64)),
    ("constant-column", {}, _const_column, np.float64, N, None),
    ("constant-block", {}, _const_block, np.float64, N, None),
    ("single-feature", {"modalities": None, "latent_dim": 1}, lambda: _complete()[:, :1], np.float64, N, None),
    ("partial-nan-default", {}, _with(_partial_nan), np.float64, N, None),
    ("dataframe-named", {"modalities": NAMED}, _frame, np.float64, N, "base"),
    ("sizes-as-array", {"modalities": np.array(SIZES)}, _amputed, np.float64, N, "base"),
    ("list-of-blocks", {"modalities": None}, lambda: [_amputed()[:, :3], _amputed()[:, 3:5], _amputed()[:, 5:]], np.float64, N, "base"),
]


@pytest.mark.parametrize("encoder", ["linear", "ppca"])
@pytest.mark.parametrize(
    "params, make_X, dtype, n_rows, make_reference",
    [pytest.param(*case[1:], id=case[0]) for case in WORKING_CASES],
)
def test_input_that_works(encoder, params, make_X, dtype, n_rows, make_reference):
    X = make_X()
    out = _fit_transform_checked(_est(encoder=encoder, **params), X)
    assert out.dtype == dtype
    assert out.shape[0] == n_rows and out.ndim == 2
    assert np.isfinite(out).all()
    if make_reference == "base":
        np.testing.assert_array_equal(out, _base_output(encoder))
    elif make_reference is not None:
        ref = _est(encoder=encoder, **dict(params, modalities=SIZES)).fit(make_reference()).transform(make_reference())
        np.testing.assert_array_equal(out, ref.astype(dtype))


@pytest.mark.parametrize("encoder", ["linear", "ppca"])
def test_y_is_ignored(encoder):
    X = _amputed()
    y = np.arange(N) % 2
    y0 = y.copy()
    with_y = _fit_transform_checked(_est(encoder=encoder), X, y)
    np.testing.assert_array_equal(with_y, _base_output(encoder))
    np.testing.assert_array_equal(y, y0)
    assert not np.shares_memory(with_y, y)


# ----------------------------------------------------------------------------- partial NaN, empty rows, disconnection
@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize("encoder", ["linear", "ppca"])
def test_partial_nan_filled_with_training_mean(encoder, standardize):
    X = _with(_partial_nan)()
    est = _est(encoder=encoder, standardize=standardize)
    out = _fit_transform_checked(est, X)
    # fill by hand: each feature's mean over the training rows that observe its modality
    X_hand = X.copy()
    start = 0
    for size in SIZES:
        block = X[:, start : start + size]
        observed = ~np.isnan(block).all(axis=1)
        means = np.nanmean(block[observed], axis=0)
        X_hand[:, start : start + size] = np.where(observed[:, None] & np.isnan(block), means, block)
        start += size
    assert np.isnan(X_hand).sum() < np.isnan(X).sum()
    np.testing.assert_allclose(out, est.transform(X_hand), rtol=0, atol=1e-12)


@pytest.mark.parametrize("encoder", ["linear", "ppca"])
def test_rows_without_modality_are_ignored_by_fit(encoder):
    X = _amputed()
    X_empty = X.copy()
    X_empty[[4, 11, 30]] = np.nan
    kept = np.setdiff1d(np.arange(N), [4, 11, 30])
    X0 = X_empty.copy()
    with pytest.warns(UserWarning, match=r"3 of 40 rows observe no modality \(every block is NaN\); fit ignores them"):
        est = _est(encoder=encoder).fit(X_empty)
    _assert_unchanged(X_empty, X0)
    reference = _est(encoder=encoder).fit(X[kept])
    np.testing.assert_array_equal(est.transform(X[kept]), reference.transform(X[kept]))


@pytest.mark.parametrize("encoder", ["linear", "ppca"])
def test_rows_without_modality_get_the_prior_in_transform(encoder):
    est = _est(encoder=encoder).fit(_amputed())
    X = _amputed()
    X[[2, 7]] = np.nan
    X0 = X.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # transform does not warn: the fit warned about its own such rows (issue 21)
        concat = est.transform(X)
    _assert_unchanged(X, X0)
    assert not np.shares_memory(concat, X)
    means = [m / max(np.linalg.norm(m), 1.0) for m in est.means_]  # the prior's representations (norm at most 1)
    block = est._block_model()
    weights = [a.numpy() for a in block.imputation_weights]  # imputed entries shrunk [design 2.11]
    block_means = [a * p.numpy() for a, p in zip(weights, block.params.mu)]  # the prior's standardized blocks
    prior = np.concatenate(means + block_means) if encoder != "ppca" else np.concatenate(block_means)
    np.testing.assert_allclose(concat[[2, 7]], np.tile(prior, (2, 1)), rtol=1e-12, atol=1e-12)
    assert np.isfinite(concat).all()
    est.set_params(output="latent")
    latent = est.transform(X)
    np.testing.assert_array_equal(latent[[2, 7]], 0.0)
    assert np.abs(latent[[0, 1]]).sum() > 0


def test_rows_without_modality_warn_once_per_fit_in_cross_validation():
    """Inside a pipeline a fold fits, transforms its training rows and its test rows: one warning, from the fit."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline

    X = _amputed()
    X[[2, 7, 30]] = np.nan
    y = np.arange(40) % 2
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        cross_val_score(make_pipeline(_est(encoder="linear"), LogisticRegression()), X, y, cv=2)
    messages = [str(w.message) for w in record if "observe no modality" in str(w.message)]
    assert len(messages) == 2 and all("fit ignores them" in m for m in messages)  # one per fold


def test_modalities_that_never_cooccur_warn_with_groups():
    X = _complete()
    X[:20, 5:] = np.nan  # rows 0-19: m0 and m1 only
    X[20:, :5] = np.nan  # rows 20-39: m2 only
    X0 = X.copy()
    with pytest.warns(UserWarning, match=re.escape("never co-occur in any row, directly or through a chain: [['m0', 'm1'], ['m2']]")):
        est = _est(encoder="ppca").fit(X)
    _assert_unchanged(X, X0)
    assert np.isfinite(est.transform(X)).all()


def test_modalities_linked_through_a_chain_do_not_warn():
    X = _complete()
    X[:20, 5:] = np.nan  # rows 0-19: m0 with m1
    X[20:, :3] = np.nan  # rows 20-39: m1 with m2; m0 and m2 never meet directly
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _est(encoder="ppca").fit(X)
    assert not [w for w in record if "co-occur" in str(w.message)]


def test_warnings_point_at_the_callers_line():
    """Warnings name the line of user code that called the estimator, directly or through a Pipeline."""
    from sklearn.pipeline import make_pipeline

    X = _amputed()
    X[[4, 11]] = np.nan
    for call in (lambda: _est().fit(X), lambda: make_pipeline(_est()).fit(X), lambda: make_pipeline(_est()).fit_transform(X)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        ours = [w for w in caught if "observe no modality" in str(w.message)]
        assert ours and all(w.filename == __file__ for w in ours), [(w.filename, w.lineno) for w in ours]


def test_feature_nan_in_every_observed_row_warns_with_its_name():
    X = _frame()
    X["b"] = np.nan
    with pytest.warns(UserWarning, match=r"Feature\(s\) \['b'\] of modality 'a' are NaN in every row that observes the modality"):
        est = _est(modalities=NAMED, encoder="ppca").fit(X)
    assert np.isfinite(est.transform(X)).all()


@pytest.mark.parametrize("observed_rows", [1, 2])
def test_modality_observed_in_too_few_rows_warns(observed_rows):
    """latent_dim=2 loadings of m1 from 1 or 2 rows: a warning naming the modality and the count (issue 21)."""
    X = _complete()
    X[observed_rows:, 3:5] = np.nan
    with pytest.warns(UserWarning, match=rf"Modality 'm1' is observed in {observed_rows} training row\(s\), no more than latent_dim_=2"):
        _est(encoder="ppca").fit(X)


def test_modality_observed_in_enough_rows_does_not_warn():
    X = _complete()
    X[3:, 3:5] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", ConvergenceWarning)  # the 20-step cap of _est is not what this test checks
        _est(encoder="ppca").fit(X)


def test_modality_observed_in_too_few_rows_warns_in_partial_fit_too():
    X = _complete()
    X[2:, 3:5] = np.nan
    with pytest.warns(UserWarning, match=r"Modality 'm1' is observed in 2 training row\(s\)"):
        _est(encoder="ppca").partial_fit(X)
