"""Modality specification, masks and stacking."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sklearn_calmrl import stack_modalities
from sklearn_calmrl._modalities import drop_modalities, is_list_of_blocks, observed_mask, resolve_modalities

NAMES = np.array([f"c{j}" for j in range(6)])


@pytest.mark.parametrize(
    "spec,expected",
    [
        (None, [("m0", [0, 1, 2, 3, 4, 5])]),
        ([2, 4], [("m0", [0, 1]), ("m1", [2, 3, 4, 5])]),
        ([[5, 0], [1, 2, 3, 4]], [("m0", [5, 0]), ("m1", [1, 2, 3, 4])]),
        ([slice(0, 3), slice(3, None)], [("m0", [0, 1, 2]), ("m1", [3, 4, 5])]),
        ({"a": [0, 1], "b": slice(2, 6)}, [("a", [0, 1]), ("b", [2, 3, 4, 5])]),
        ({"a": ["c0", "c1", "c2"], "b": ["c3", "c4", "c5"]}, [("a", [0, 1, 2]), ("b", [3, 4, 5])]),
        ([[-1, 0, 1, 2, 3], [4]], [("m0", [5, 0, 1, 2, 3]), ("m1", [4])]),
    ],
)
def test_resolve_forms(spec, expected):
    blocks = resolve_modalities(spec, 6, NAMES)
    assert [(n, idx.tolist()) for n, idx in blocks] == expected


@pytest.mark.parametrize(
    "spec,match",
    [
        ([2, 3], "sum to 5, but X has 6"),
        ([[0, 1, 2], [2, 3, 4, 5]], "overlap"),
        ([[0, 1], [2, 3]], "leave 2 column"),
        ({"a": [], "b": list(range(6))}, "'a' is empty"),
        ({}, "empty dict"),
        ([], "empty list"),
        ({"a": ["c0", "zz"], "b": ["c1"]}, "does not have: \\['zz'\\]"),
        ([[0, 9], [1, 2, 3, 4, 5]], "out of range"),
        ([[0, 0], [1, 2, 3, 4, 5]], "same column more than once"),
        ([0, 6], "must be positive"),
        ("abc", "must be None, a list"),
        ({"a": 3, "b": [0]}, "scalar"),
    ],
)
def test_resolve_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        resolve_modalities(spec, 6, NAMES)


def test_names_need_a_dataframe():
    with pytest.raises(ValueError, match="no column names"):
        resolve_modalities({"a": ["c0"]}, 1)


def test_observed_mask_whole_block_nan_only():
    X = np.arange(12, dtype=float).reshape(3, 4)
    X[0, :2] = np.nan  # whole block 0 missing
    X[1, 2] = np.nan  # partial NaN: still observed
    mask = observed_mask(X, resolve_modalities([2, 2], 4))
    assert mask.tolist() == [[False, True], [True, True], [True, True]]


def test_stack_modalities_round_trip():
    a, b = np.ones((4, 2)), np.zeros((4, 3))
    X, spec = stack_modalities([a, b], names=["x", "y"])
    assert spec == {"x": [0, 1], "y": [2, 3, 4]}
    blocks = resolve_modalities(spec, X.shape[1])
    np.testing.assert_array_equal(X[:, blocks[1][1]], b)
    assert is_list_of_blocks([a, b]) and not is_list_of_blocks(X) and not is_list_of_blocks([[1, 2], [3, 4]])


def test_stack_modalities_errors():
    with pytest.raises(ValueError, match="row counts \\[4, 3\\]"):
        stack_modalities([np.ones((4, 2)), np.ones((3, 2))])
    with pytest.raises(ValueError, match="2-D"):
        stack_modalities([np.ones(4)])
    with pytest.raises(ValueError, match="distinct"):
        stack_modalities([np.ones((2, 1)), np.ones((2, 1))], names=["a", "a"])


@pytest.mark.parametrize("k", [1, 3, 6, 63])
def test_missingness_patterns_equal_rowwise_unique(k):
    from sklearn_calmrl._latent import missingness_patterns

    observed = torch.as_tensor(np.random.RandomState(k).rand(500, k) < 0.6)
    observed[:3] = True
    patterns, inverse = missingness_patterns(observed)
    want_patterns, want_inverse = torch.unique(observed, dim=0, return_inverse=True)
    assert torch.equal(patterns, want_patterns) and torch.equal(inverse, want_inverse)
    assert torch.equal(patterns[inverse], observed)


# ----------------------------------------------------------------------------- modality dropout [design 3.6]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 12),
    k=st.integers(1, 6),
    density=st.floats(0.0, 1.0),
    rate=st.floats(0.0, 1.0, exclude_max=True),
    seed=st.integers(0, 2**32 - 1),
)
def test_drop_modalities_hides_observed_entries_only_and_never_a_whole_row(n, k, density, rate, seed):
    rng = np.random.default_rng(seed)
    observed = torch.as_tensor(rng.random((n, k)) < density)
    before = observed.clone()
    dropped = drop_modalities(observed, rate, torch.Generator().manual_seed(seed))
    assert torch.equal(observed, before)  # input unchanged
    assert dropped.dtype == torch.bool and dropped.shape == observed.shape
    assert not (dropped & ~observed).any()  # only observed entries are hidden
    counts = observed.sum(1)
    assert torch.equal(dropped.any(1), observed.any(1))  # a row that observed something still does
    assert torch.equal(dropped[counts <= 1], observed[counts <= 1])  # single-modality rows untouched


@pytest.mark.parametrize("rate", [0.3, 0.7])
def test_drop_modalities_hide_rate(rate):
    observed = torch.ones(4000, 10, dtype=torch.bool)
    hidden = ~drop_modalities(observed, rate, torch.Generator().manual_seed(0))
    assert abs(hidden.double().mean().item() - rate) < 0.01  # rate - rate^10 / 10, about rate
    # two observed modalities: each ends hidden w.p. rate - rate^2 / 2 (both drawn hidden: one is kept)
    pairs = torch.zeros(20000, 4, dtype=torch.bool)
    pairs[:, [0, 2]] = True
    hidden_pairs = ~drop_modalities(pairs, rate, torch.Generator().manual_seed(1))[:, [0, 2]]
    assert abs(hidden_pairs.double().mean().item() - (rate - rate**2 / 2)) < 0.01
    both = (~hidden_pairs).all(1).double().mean().item()
    assert abs(both - (1 - rate) ** 2) < 0.01


def test_drop_modalities_deterministic_numpy_and_zero_rate():
    observed = np.random.default_rng(2).random((50, 4)) < 0.7
    state = torch.get_rng_state()
    first = drop_modalities(torch.as_tensor(observed), 0.5, torch.Generator().manual_seed(3))
    second = drop_modalities(torch.as_tensor(observed), 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(first, second)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is not drawn from
    as_numpy = drop_modalities(observed, 0.5, torch.Generator().manual_seed(3))
    assert isinstance(as_numpy, np.ndarray) and as_numpy.dtype == bool
    np.testing.assert_array_equal(as_numpy, first.numpy())
    assert not np.array_equal(as_numpy, observed)
    np.testing.assert_array_equal(drop_modalities(observed, 0.0, torch.Generator().manual_seed(3)), observed)


@pytest.mark.parametrize("rate", [1.0, -0.1, float("nan"), "0.5", None, True])
def test_drop_modalities_rate_validation(rate):
    with pytest.raises(ValueError, match="rate"):
        drop_modalities(torch.ones(3, 2, dtype=torch.bool), rate, torch.Generator())


def test_drop_modalities_mask_validation():
    with pytest.raises(ValueError, match="boolean"):
        drop_modalities(torch.ones(3, 2), 0.5, torch.Generator())
