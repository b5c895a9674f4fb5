"""Persistence (pickle, joblib, CPU loading of GPU-fitted models) and DataFrame support (issue 5)."""

import io
import os
import pickle
import subprocess
import sys
import textwrap

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from sklearn_calmrl import CalMRLTransformer, MultiViewPPCA
from sklearn_calmrl.datasets import ampute_modalities, load_image_segmentation

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

FAST = dict(latent_dim=4, embed_dim=8, max_epochs=2, add_indicator=False, random_state=0)
ENCODERS = ["linear", "mlp", "ppca"]  # the two torch encoders, and the closed-form model alone


def _make(mods, encoder, device="cpu"):
    """A cheap CalMRLTransformer with this encoder, or (``'ppca'``) a MultiViewPPCA."""
    if encoder == "ppca":
        return MultiViewPPCA(mods, latent_dim=4, add_indicator=False, device=device, random_state=0)
    return CalMRLTransformer(mods, encoder=encoder, device=device, **FAST)


@pytest.fixture(scope="module")
def segment():
    data = load_image_segmentation()
    rows = np.random.RandomState(0).choice(data.data.shape[0], 400, replace=False)
    X = ampute_modalities(data.data[rows], data.modalities, rate=0.5, random_state=0)
    return X, data.target[rows], data.modalities, data


@pytest.fixture(scope="module")
def fitted(segment):
    """One fitted model per encoder, shared by the tests that do not modify it."""
    X, _, mods, _ = segment
    return {enc: _make(mods, enc).fit(X) for enc in ENCODERS}


def _tensors(obj, path="est", seen=None):
    """Yield (path, tensor) for every torch tensor reachable from ``obj``.

    Walks modules (parameters and buffers), optimizer state, dicts, lists, tuples
    and what pickle stores of plain objects (their own ``__getstate__``, else their
    ``__dict__``; for example the trainer that ``partial_fit`` continues).
    """
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, (str, bytes, int, float, bool, type(None), np.ndarray, np.generic)):
        return
    seen.add(id(obj))
    if torch.is_tensor(obj):
        yield path, obj
    elif isinstance(obj, torch.nn.Module):
        for name, t in list(obj.named_parameters()) + list(obj.named_buffers()):
            yield f"{path}.{name}", t
        yield from _tensors(obj.__dict__.get("_modules", {}), path, seen)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{path}[{k!r}]", seen)
    elif isinstance(obj, (list, tuple, set)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{path}[{i}]", seen)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        state = obj.__getstate__() if "__getstate__" in type(obj).__dict__ else vars(obj)
        for k, v in state.items():
            yield from _tensors(v, f"{path}.{k}", seen)


def _assert_no_cuda_tensor(est):
    on_cuda = [p for p, t in _tensors(est) if t.device.type != "cpu"]
    assert not on_cuda, f"tensors not on the CPU: {on_cuda[:5]}"


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("encoder", ENCODERS)
def test_pickle_round_trip_gives_identical_transforms(fitted, segment, encoder):
    X = segment[0]
    est = fitted[encoder]
    clone = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(clone.transform(X), est.transform(X))
    np.testing.assert_array_equal(clone.score_samples(X), est.score_samples(X))
    assert clone.get_params() == est.get_params()


@pytest.mark.parametrize("encoder", ENCODERS)
def test_joblib_round_trip_gives_identical_transforms(fitted, segment, encoder, tmp_path):
    X = segment[0]
    est = fitted[encoder]
    path = tmp_path / "model.joblib"
    joblib.dump(est, path)
    clone = joblib.load(path)
    np.testing.assert_array_equal(clone.transform(X), est.transform(X))
    # compressed dumps too
    buf = io.BytesIO()
    joblib.dump(est, buf, compress=3)
    buf.seek(0)
    np.testing.assert_array_equal(joblib.load(buf).transform(X), est.transform(X))


def test_pipeline_round_trip(segment, tmp_path):
    X, y, mods, _ = segment
    pipe = make_pipeline(CalMRLTransformer(mods, device="cpu", **FAST), LogisticRegression(max_iter=500)).fit(X, y)
    joblib.dump(pipe, tmp_path / "pipe.joblib")
    clone = joblib.load(tmp_path / "pipe.joblib")
    np.testing.assert_array_equal(clone.predict_proba(X), pipe.predict_proba(X))


@pytest.mark.parametrize("encoder", ENCODERS)
def test_unpickled_model_resolves_device_and_holds_no_cuda_tensor(fitted, encoder):
    clone = pickle.loads(pickle.dumps(fitted[encoder]))
    assert clone.device_ == "cpu"  # fitted with device='cpu': stays there, GPU or not
    if not torch.cuda.is_available():
        _assert_no_cuda_tensor(clone)
        if encoder != "ppca":
            assert all(t.device.type == "cpu" for t in clone.encoders_.parameters())
            assert all(t.device.type == "cpu" for t in clone.encoders_.buffers())


@pytest.mark.parametrize("encoder", ENCODERS)
def test_saved_state_is_plain_numpy(fitted, encoder):
    """What pickle, joblib and skops store holds no torch object: numpy arrays and plain data (issue 21)."""
    est = fitted[encoder]
    state = est.__getstate__()
    saved = {"block model": est._block_model().__getstate__()}
    if encoder != "ppca":
        saved["trainer"] = state["_trainer_"].__getstate__()
    assert not list(_tensors(saved)) and not list(_tensors(state))

    def walk(obj):
        if isinstance(obj, dict):
            assert all(isinstance(k, str) for k in obj)
            for v in obj.values():
                yield from walk(v)
        elif isinstance(obj, list):
            for v in obj:
                yield from walk(v)
        else:
            yield obj

    kinds = {type(v) for v in walk(saved)}
    assert kinds <= {np.ndarray, str, int, float, bool, type(None)}, kinds
    if encoder != "ppca":
        assert "encoders" in saved["trainer"] and "optimizer" in saved["trainer"]


@pytest.mark.parametrize("encoder", ENCODERS)
def test_skops_round_trip_trusts_only_this_library(fitted, segment, encoder, tmp_path):
    """skops.io dumps and loads both estimators and a pipeline, trusting only this library's types (issue 21)."""
    sio = pytest.importorskip("skops.io")
    X, y = segment[0], segment[1]
    est = fitted[encoder]
    pipe = make_pipeline(_make(segment[2], encoder), LogisticRegression(max_iter=500)).fit(X, y)
    for model, out in ((est, est.transform), (pipe, pipe.predict_proba)):
        path = tmp_path / "model.skops"
        sio.dump(model, path)
        untrusted = sio.get_untrusted_types(file=path)
        assert set(untrusted) <= {
            "sklearn_calmrl._estimator.CalMRLTransformer",
            "sklearn_calmrl._ppca.MultiViewPPCA",
            "sklearn_calmrl._closed_form.ClosedFormModel",
            "sklearn_calmrl._training.Trainer",
        }, untrusted
        loaded = sio.load(path, trusted=untrusted)
        method = getattr(loaded, out.__name__)
        np.testing.assert_array_equal(method(X), out(X))
    data = sio.dumps(est)  # the loaded model keeps learning
    loaded = sio.loads(data, trusted=sio.get_untrusted_types(data=data))
    loaded.partial_fit(X[:100])
    assert np.isfinite(loaded.transform(X)).all()


def test_pickling_does_not_change_the_original(fitted, segment):
    X = segment[0]
    est = fitted["linear"]
    before = est.transform(X)
    pickle.dumps(est)
    assert est.device_ == "cpu" and est.encoders_ is not None
    np.testing.assert_array_equal(est.transform(X), before)


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("device_param", ["auto", "cuda"])
def test_simulated_gpu_fitted_model_loads_on_cpu(segment, encoder, device_param):
    """Fit on the CPU, pretend it was fitted on a GPU, and load it where there is none."""
    if torch.cuda.is_available():
        pytest.skip("simulates a CPU-only machine; this one has CUDA")
    X = segment[0]
    est = _make(segment[2], encoder).fit(X)
    expected = est.transform(X)
    est.device_ = "cuda"  # as after fit(device='cuda') on a GPU machine
    est.set_params(device=device_param)
    clone = pickle.loads(pickle.dumps(est))
    assert clone.device_ == "cpu"
    _assert_no_cuda_tensor(clone)
    np.testing.assert_allclose(clone.transform(X), expected, rtol=0, atol=0)
    clone2 = joblib.load(_dump_to_buffer(est))
    assert clone2.device_ == "cpu"
    np.testing.assert_array_equal(clone2.transform(X), expected)


def test_simulated_gpu_fitted_partial_fit_model_loads_on_cpu(segment):
    if torch.cuda.is_available():
        pytest.skip("simulates a CPU-only machine; this one has CUDA")
    X = segment[0]
    est = CalMRLTransformer(segment[2], encoder="linear", device="cpu", **FAST)
    if not hasattr(est, "partial_fit"):
        pytest.skip("partial_fit not available")
    est.partial_fit(X[:200]).partial_fit(X[200:])
    expected = est.transform(X)
    est.device_ = "cuda"
    clone = pickle.loads(pickle.dumps(est))
    assert clone.device_ == "cpu"
    _assert_no_cuda_tensor(clone)
    np.testing.assert_array_equal(clone.transform(X), expected)
    clone.partial_fit(X[:200])  # the loaded model keeps learning on the CPU
    assert np.isfinite(clone.transform(X)).all()


def _dump_to_buffer(obj):
    buf = io.BytesIO()
    joblib.dump(obj, buf)
    buf.seek(0)
    return buf


@pytest.mark.slow  # a process
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fitted_model_loads_in_a_process_without_cuda(segment, tmp_path):
    """The real thing: fit on the GPU, load and transform in a process that sees no GPU."""
    X = segment[0]
    est = CalMRLTransformer(segment[2], encoder="linear", device="cuda", **FAST).fit(X)
    assert est.device_ == "cuda"
    _assert_no_cuda_tensor(est.__getstate__())
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "Z.npy", est.transform(X))
    joblib.dump(est, tmp_path / "model.joblib")
    script = textwrap.dedent(
        f"""
        import joblib, numpy as np, torch
        assert not torch.cuda.is_available()
        est = joblib.load({str(tmp_path / "model.joblib")!r})
        assert est.device_ == "cpu", est.device_
        assert all(p.device.type == "cpu" for p in est.encoders_.parameters())
        Z = est.transform(np.load({str(tmp_path / "X.npy")!r}))
        np.testing.assert_allclose(Z, np.load({str(tmp_path / "Z.npy")!r}), atol=1e-4)
        print("ok")
        """
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "ok" in out.stdout


# --------------------------------------------------------------------------- DataFrames


@pytest.fixture(scope="module")
def frame(segment):
    X, y, _, data = segment
    names = list(data.feature_names)
    df = pd.DataFrame(X, columns=names, index=pd.RangeIndex(1000, 1000 + X.shape[0]))
    shape_cols, color_cols = names[:8], names[8:]
    return df, y, shape_cols, color_cols


@pytest.mark.parametrize("encoder", ["ppca", "linear"])
def test_modalities_as_dict_of_column_names(frame, encoder):
    df, _, shape_cols, color_cols = frame
    est = _make({"shape": shape_cols, "color": color_cols}, encoder).fit(df)
    assert list(est.modalities_) == ["shape", "color"]
    assert est.modalities_["shape"] == list(range(8)) and est.modalities_["color"] == list(range(8, 18))
    assert list(est.feature_names_in_) == list(df.columns)
    # concat: the representations (linear: embed_dim each), then the calibrated blocks under the input's names
    expected = [f"shape_emb{j}" for j in range(8)] + [f"color_emb{j}" for j in range(8)] if encoder == "linear" else []
    assert list(est.get_feature_names_out()) == expected + shape_cols + color_cols
    with pytest.warns(UserWarning, match="feature names"):
        from_array = est.transform(df.to_numpy())  # scikit-learn warns, and the columns are taken by position
    np.testing.assert_array_equal(est.transform(df), from_array)


def test_modalities_as_list_of_column_name_lists(frame):
    df, _, shape_cols, color_cols = frame
    est = CalMRLTransformer([shape_cols, color_cols], **FAST).fit(df)
    assert list(est.modalities_) == ["m0", "m1"]
    assert list(est.get_feature_names_out()[:2]) == ["m0_emb0", "m0_emb1"]
    assert list(est.get_feature_names_out()[-1:]) == [color_cols[-1]]


def test_column_names_in_any_order_select_the_right_columns(frame, segment):
    """Named columns that are not contiguous give the same model as the equivalent index lists."""
    df, _, shape_cols, color_cols = frame
    shuffled = df[color_cols[::2] + shape_cols + color_cols[1::2]]
    by_name = _make({"shape": shape_cols, "color": color_cols}, "ppca").fit(shuffled)
    cols = list(shuffled.columns)
    by_index = _make({"shape": [cols.index(c) for c in shape_cols], "color": [cols.index(c) for c in color_cols]}, "ppca")
    by_index.fit(shuffled.to_numpy())
    np.testing.assert_allclose(by_name.transform(shuffled), by_index.transform(shuffled.to_numpy()))


@pytest.mark.parametrize(
    "output, expected",
    [
        ("latent", [f"latent{j}" for j in range(4)]),
        ("embeddings", [f"shape_emb{j}" for j in range(8)] + [f"color_emb{j}" for j in range(8)]),
        ("concat", [f"shape_emb{j}" for j in range(8)] + [f"color_emb{j}" for j in range(8)]),  # + the input's columns
    ],
)
def test_set_output_pandas_gives_named_columns(frame, output, expected):
    df, _, shape_cols, color_cols = frame
    if output == "concat":
        expected = expected + shape_cols + color_cols
    est = CalMRLTransformer({"shape": shape_cols, "color": color_cols}, output=output, **FAST)
    est.set_output(transform="pandas")
    out = est.fit_transform(df)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == expected == list(est.get_feature_names_out())
    assert out.index.equals(df.index)
    np.testing.assert_array_equal(out.to_numpy(), est.set_output(transform="default").transform(df))


def test_impute_follows_set_output(frame):
    """impute returns the container set_output asks for, with the input's names and index (issue 21)."""
    df, _, shape_cols, color_cols = frame
    est = MultiViewPPCA({"shape": shape_cols, "color": color_cols}, random_state=0).fit(df)
    plain, plain_std = est.impute(df, return_std=True)
    est.set_output(transform="pandas")
    filled, std = est.impute(df, return_std=True)
    for out, ref in ((filled, plain), (std, plain_std)):
        assert isinstance(out, pd.DataFrame) and list(out.columns) == list(df.columns) and out.index.equals(df.index)
        np.testing.assert_array_equal(out.to_numpy(), ref)
    arrays = MultiViewPPCA([8, 10], random_state=0).set_output(transform="pandas").fit(df.to_numpy())
    assert list(arrays.impute(df.to_numpy()).columns) == [f"x{j}" for j in range(18)]
    assert isinstance(est.set_output(transform="default").impute(df), np.ndarray)


def test_get_feature_names_out_checks_input_features(frame):
    df, _, shape_cols, color_cols = frame
    est = CalMRLTransformer({"shape": shape_cols, "color": color_cols}, output="latent", **FAST).fit(df)
    assert list(est.get_feature_names_out(list(df.columns))) == [f"latent{j}" for j in range(4)]
    with pytest.raises(ValueError):
        est.get_feature_names_out(["x"] * df.shape[1])


def test_pandas_output_in_a_pipeline_and_after_pickling(frame):
    df, y, shape_cols, color_cols = frame
    pipe = make_pipeline(
        CalMRLTransformer({"shape": shape_cols, "color": color_cols}, output="latent", **FAST),
        LogisticRegression(max_iter=500),
    )
    pipe.set_output(transform="pandas")
    pipe.fit(df, y)
    assert list(pipe[:-1].get_feature_names_out()) == [f"latent{j}" for j in range(4)]
    assert list(pipe[-1].feature_names_in_) == [f"latent{j}" for j in range(4)]
    clone = pickle.loads(pickle.dumps(pipe))
    out = clone[0].transform(df)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == [f"latent{j}" for j in range(4)]
    np.testing.assert_array_equal(clone.predict(df), pipe.predict(df))


@pytest.mark.filterwarnings("ignore:.*observe no modality:UserWarning")
def test_dataframe_with_missing_modalities_keeps_nan_blocks_semantics(frame):
    """A NaN block in a DataFrame row is a missing modality, exactly as in an array."""
    df, _, shape_cols, color_cols = frame
    mods = {"shape": shape_cols, "color": color_cols}
    est = _make(mods, "ppca").set_params(output="latent").fit(df)
    only_shape = df.copy()
    only_shape.loc[:, color_cols] = np.nan
    rows = ~df[shape_cols].isna().all(axis=1).to_numpy()
    full = est.transform(df)
    partial = est.transform(only_shape)
    assert np.isfinite(partial[rows]).all()
    assert not np.allclose(full[rows], partial[rows])  # dropping a modality changes the posterior mean


def test_model_without_local_correction_carries_no_training_rows(frame):
    """The default model keeps training rows for the local correction; local_bandwidth=None keeps none (issue 21)."""
    df, _, shape_cols, color_cols = frame
    mods = {"shape": shape_cols, "color": color_cols}
    default = MultiViewPPCA(mods, random_state=0).fit(df)
    bare = MultiViewPPCA(mods, local_bandwidth=None, random_state=0).fit(df)
    assert default._block_model().centres[0][0].shape[0] == min(len(df), 256) and bare._block_model().centres is None
    assert len(pickle.dumps(bare)) < 0.3 * len(pickle.dumps(default))  # the 256 stored rows are most of the pickle
