"""End-to-end behaviour of CalMRLTransformer on the bundled real data and in scikit-learn tools."""

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_calmrl import MLP, CalMRLTransformer, EarlyStopping, MultiViewPPCA, stack_modalities
from sklearn_calmrl.datasets import ampute_modalities, load_image_segmentation, load_multiple_features

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

FAST = dict(latent_dim=8, embed_dim=16, max_epochs=3, add_indicator=False, device="cpu", random_state=0)
SMALL = dict(latent_dim=3, embed_dim=8, max_epochs=1, batch_size=64, add_indicator=False, device="cpu", random_state=0)


@pytest.fixture(scope="module")
def mfeat():
    data = load_multiple_features()
    rows = np.random.RandomState(0).choice(2000, 600, replace=False)
    X = ampute_modalities(data.data[rows], data.modalities, rate=0.5, random_state=0)
    return X, data.target[rows], data.modalities


@pytest.fixture(scope="module")
def segment():
    data = load_image_segmentation()
    X = ampute_modalities(data.data, data.modalities, rate=0.5, random_state=0)
    return X, data.target, data.modalities, data


@pytest.mark.parametrize("encoder", ["ppca", "linear", "mlp"])
def test_pipeline_on_real_data_beats_chance_by_far(mfeat, encoder):
    X, y, mods = mfeat
    if encoder == "ppca":  # the closed-form model alone
        est = MultiViewPPCA(mods, latent_dim=8, add_indicator=False, device="cpu", random_state=0)
    else:
        est = CalMRLTransformer(mods, encoder=encoder, **FAST)
    pipe = make_pipeline(StandardScaler(), est, LogisticRegression(max_iter=500))
    pipe.fit(X[:450], y[:450])
    assert pipe.score(X[450:], y[450:]) > 0.8  # chance is 0.1


@pytest.mark.parametrize(
    "output,width", [("latent", 8), ("embeddings", 6 * 16), ("concat", 6 * 16 + 649)]
)
def test_outputs_and_feature_names(mfeat, output, width):
    X, _, mods = mfeat
    est = CalMRLTransformer(mods, output=output, **FAST).fit(X)
    Z = est.transform(X)
    assert Z.shape == (X.shape[0], width) and np.isfinite(Z).all()
    names = est.get_feature_names_out()
    assert len(names) == width
    if output in ("concat", "embeddings"):
        assert names[0] == "fou_emb0" and names[95] == "mor_emb15"
        if output == "concat":  # then the calibrated blocks (none wider than max_block_width), named as the input's columns
            assert list(names[96:]) == [f"x{j}" for j in range(649)]
            est.set_params(output="embeddings")
            np.testing.assert_array_equal(Z[:, :96], est.transform(X))
    else:
        assert names[0] == f"{output}0"


def test_fitted_attributes(mfeat):
    X, _, mods = mfeat
    est = CalMRLTransformer(mods, **FAST).fit(X)
    assert list(est.modalities_) == list(mods)
    assert len(est.components_) == 6 and est.components_[0].shape == (16, 8)
    assert len(est.means_) == 6 and est.noise_variance_.shape == (6,)
    assert est.n_iter_ == 3 and len(est.loss_curve_) == 3 and est.device_ == "cpu"
    # the first model of the representations, then a refresh every em_every=2 epochs (epoch 3)
    assert all(np.isfinite(est.loss_curve_)) and len(est.loglik_curve_) == 2
    assert est.n_components_ == 1 and est.latent_dim_ == 8 and list(est.weights_) == [1.0]


def test_calibrated_columns_keep_observed_and_impute_missing(mfeat):
    X, _, mods = mfeat
    est = CalMRLTransformer(mods, **FAST).fit(X)
    reps, var = est.impute_representations(X[:50], return_variance=True)
    embeddings = est.set_params(output="embeddings").transform(X[:50])
    np.testing.assert_allclose(np.hstack(list(reps.values())), embeddings)
    cols = mods["fou"]
    missing = np.isnan(X[:50, cols]).all(axis=1)
    assert missing.any() and (~missing).any()
    assert np.all(var["fou"][~missing] == 0) and np.all(var["fou"][missing] > 0)
    norms = np.linalg.norm(reps["fou"], axis=1)
    np.testing.assert_allclose(norms[~missing], 1.0, atol=1e-6)  # observed: unit encoder outputs
    assert np.all(norms[missing] <= 1 + 1e-9) and np.all(norms[missing] > 0)  # imputed: shrunk by the posterior


def test_grid_search_over_two_parameters_of_a_pipeline(mfeat):
    X, y, mods = mfeat
    pipe = make_pipeline(CalMRLTransformer(mods, **FAST), LogisticRegression(max_iter=300))
    grid = GridSearchCV(
        pipe,
        {"calmrltransformer__latent_dim": [4, 8], "calmrltransformer__output": ["latent", "concat"]},
        cv=StratifiedKFold(2),
    )
    grid.fit(X, y)
    assert grid.best_score_ > 0.7 and len(grid.cv_results_["params"]) == 4


def test_column_transformer_upstream(segment):
    X, y, mods, data = segment
    df = pd.DataFrame(X, columns=data.feature_names)
    shape_cols, color_cols = list(data.feature_names[:8]), list(data.feature_names[8:])
    pre = ColumnTransformer([("shape", StandardScaler(), shape_cols), ("color", StandardScaler(), color_cols)])
    pipe = make_pipeline(pre, CalMRLTransformer([8, 10], **FAST), LogisticRegression(max_iter=500))
    pipe.fit(df, y)
    assert pipe.score(df, y) > 0.6


def test_dataframe_with_named_modalities_and_pandas_output(segment):
    X, _, _, data = segment
    df = pd.DataFrame(X, columns=data.feature_names)
    mods = {"shape": list(data.feature_names[:8]), "color": list(data.feature_names[8:])}
    est = CalMRLTransformer(mods, output="latent", **FAST).set_output(transform="pandas")
    out = est.fit_transform(df)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == [f"latent{j}" for j in range(8)]
    assert list(est.feature_names_in_) == list(data.feature_names)
    reordered = df[df.columns[::-1]]
    with pytest.raises(ValueError, match="[Ff]eature names"):
        est.transform(reordered)


def test_samples_with_exactly_one_modality(segment):
    X, _, mods, data = segment
    est = CalMRLTransformer(mods, **FAST).fit(X)
    only_shape = data.data.copy()
    only_shape[:, mods["color"]] = np.nan
    only_color = data.data.copy()
    only_color[:, mods["shape"]] = np.nan
    for Xo in (only_shape, only_color):
        Z = est.transform(Xo[:20])
        assert Z.shape == (20, 2 * 16 + 18) and np.isfinite(Z).all()


def test_list_of_blocks_equals_canonical_form(segment):
    X, _, mods, _ = segment
    blocks = [X[:, mods["shape"]], X[:, mods["color"]]]
    Xc, spec = stack_modalities(blocks)
    a = CalMRLTransformer(**FAST).fit(blocks)
    b = CalMRLTransformer(spec, **FAST).fit(Xc)
    np.testing.assert_array_equal(a.transform(blocks), b.transform(Xc))
    np.testing.assert_array_equal(a.transform(Xc), b.transform(blocks))


def test_same_seed_same_output_and_rng_untouched(segment):
    X, _, mods, _ = segment
    np_state = np.random.get_state()[1].copy()
    torch_state = torch.get_rng_state().clone()
    Z1 = CalMRLTransformer(mods, **FAST).fit_transform(X)
    Z2 = CalMRLTransformer(mods, **FAST).fit_transform(X)
    np.testing.assert_array_equal(Z1, Z2)
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_dtype_follows_input_and_input_not_modified(segment):
    X, _, mods, _ = segment
    X32 = X.astype(np.float32)
    before = X32.copy()
    est = CalMRLTransformer(mods, **FAST).fit(X32)
    Z = est.transform(X32)
    assert Z.dtype == np.float32 and est.transform(X).dtype == np.float64
    np.testing.assert_array_equal(X32, before)
    assert not np.shares_memory(Z, X32)


@pytest.mark.parametrize("encoder", ["linear", "mlp"])
def test_pickle_round_trip(segment, encoder):
    X, _, mods, _ = segment
    est = CalMRLTransformer(mods, encoder=encoder, **FAST).fit(X)
    clone = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(est.transform(X), clone.transform(X))


@pytest.mark.parametrize("alignment", ["pmrl", "gram"])
def test_alignment_and_calibration_variants_train(segment, alignment):
    """Both objectives train with and without calibration, and calibration changes the encoders (and so the
    output), not only how the loss is computed."""
    X, _, mods, _ = segment
    fitted = {c: CalMRLTransformer(mods, alignment=alignment, calibrate=c, **FAST).fit(X[:500]) for c in (True, False)}
    for est in fitted.values():
        assert np.all(np.isfinite(est.loss_curve_)) and np.isfinite(est.transform(X[:50])).all()
    weights = [torch.cat([p.detach().flatten() for p in est.encoders_.parameters()]) for est in fitted.values()]
    assert not torch.equal(*weights)
    assert not np.allclose(fitted[True].transform(X[:50]), fitted[False].transform(X[:50]))


def test_cuda_path_runs():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    data = load_image_segmentation()
    X = ampute_modalities(data.data, data.modalities, rate=0.5, random_state=0)
    est = CalMRLTransformer(data.modalities, **{**FAST, "device": "cuda"}).fit(X)
    assert est.device_ == "cuda" and next(est.encoders_.parameters()).is_cuda
    Z = est.transform(X)
    clone = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(clone.transform(X), Z, atol=1e-5)


def test_refit_with_another_encoder_leaves_the_attributes_of_a_fresh_fit(segment):
    X, _, mods, _ = segment
    est = CalMRLTransformer(mods, encoder="linear", early_stopping=True, **FAST).fit(X[:300])
    est.set_params(encoder=MLP(hidden_layer_sizes=(8,)), early_stopping=False).fit(X[:300])
    fresh = CalMRLTransformer(mods, encoder=MLP(hidden_layer_sizes=(8,)), **FAST).fit(X[:300])
    assert sorted(vars(est)) == sorted(vars(fresh))
    assert est.validation_scores_ == [] and np.isnan(est.best_validation_score_) and est.n_iter_ == fresh.n_iter_
    np.testing.assert_array_equal(est.transform(X), fresh.transform(X))


@pytest.mark.parametrize("encoder", ["ppca", "linear"])
def test_verbose_reports_the_closed_form_fit_and_every_epoch(segment, encoder, capsys):
    X, _, mods, _ = segment
    make = (lambda **kw: MultiViewPPCA(mods, latent_dim=8, random_state=0, **kw)) if encoder == "ppca" else (
        lambda **kw: CalMRLTransformer(mods, encoder=encoder, **{**FAST, "max_epochs": 3, **kw})
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = make(verbose=1).fit(X)
    lines = capsys.readouterr().out.splitlines()
    em_lines = [line for line in lines if "EM steps, log-likelihood" in line]
    assert em_lines and all(line.startswith("[CalMRL] ") for line in lines)
    epochs = [line for line in lines if line.startswith("[CalMRL] epoch ")]
    assert len(epochs) == (0 if encoder == "ppca" else est.n_iter_)
    make().fit(X[:100])  # verbose=0 prints nothing
    assert capsys.readouterr().out == ""


def test_add_indicator_appends_the_observed_modalities(segment):
    X, _, mods, _ = segment
    for output in ("concat", "latent"):
        est = CalMRLTransformer(mods, output=output, **{**FAST, "add_indicator": True}).fit(X[:400])
        Z, names = est.transform(X[:400]), est.get_feature_names_out()
        plain = est.set_params(add_indicator=False).transform(X[:400])
        assert list(names[-2:]) == ["observed_shape", "observed_color"] and len(names) == Z.shape[1] == plain.shape[1] + 2
        np.testing.assert_array_equal(Z[:, :-2], plain)
        observed = np.stack([~np.isnan(X[:400, cols]).all(axis=1) for cols in mods.values()], axis=1)
        np.testing.assert_array_equal(Z[:, -2:], observed.astype(float))


@pytest.mark.parametrize("encoder", ["linear", "mlp"])
def test_mixture_of_latent_models_through_the_estimator(segment, encoder):
    """n_components > 1 [design 2.8] runs end to end for every encoder: fit, attributes, outputs, impute, pickle."""
    X, _, mods, _ = segment
    X = X[:600]
    params = dict(latent_dim=3, n_components=3, local_bandwidth=None, max_epochs=3, device="cpu", random_state=0)
    est = CalMRLTransformer(mods, encoder=encoder, **params).fit(X)
    assert est.n_components_ == 3 and est.weights_.shape == (3,)
    np.testing.assert_allclose(est.weights_.sum(), 1.0)
    assert len(est.components_) == 2 and est.components_[0].shape[::2] == (3, 3)  # per modality: (component, d_m, q)
    assert est.means_[1].shape[0] == 3 and est.noise_variance_.shape == (3, 2)
    Z = est.transform(X)
    assert np.isfinite(Z).all() and np.isfinite(est.score(X))
    latent = est.set_params(output="latent").transform(X)
    assert latent.shape == (600, 3 * 3 + 2)  # r_ic m_ic for every component, then the indicators
    assert list(est.get_feature_names_out()[:2]) == ["latent0", "latent1"]
    filled = est.impute(X)
    assert np.isfinite(filled).all()
    np.testing.assert_array_equal(filled[~np.isnan(X)], X[~np.isnan(X)])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(est)).transform(X), latent)


def test_mixture_partial_fit_with_torch_encoders(segment):
    X, _, mods, _ = segment
    est = CalMRLTransformer(mods, latent_dim=3, n_components=2, local_bandwidth=None, device="cpu", random_state=0)
    for chunk in np.array_split(X[:900], 3):
        est.partial_fit(chunk)
    assert est.n_components_ == 2 and est.n_iter_ == 3 and np.isfinite(est.transform(X[:50])).all()


def _readme_options():
    """The keyword arguments the README lists under "Options beyond the defaults", as dicts."""
    import ast
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    paragraph = text[text.index("Options beyond the defaults") :].split("\n\n")[0]
    options, last = [], None
    for span in re.findall(r"`([^`]+)`", paragraph):
        if "=" in span:
            call = ast.parse(f"f({span})", mode="eval").body
            options.append({kw.arg: ast.literal_eval(kw.value) for kw in call.keywords})
            last = options[-1]
        elif span.startswith("'") and last is not None and len(last) == 1:  # `output='latent'` / `'embeddings'`
            options.append({next(iter(last)): ast.literal_eval(span)})
    return options


def test_readme_lists_options_that_fit_with_every_other_default():
    """Each option of the README works with all other parameters at their defaults (issue 21)."""
    options = _readme_options()
    assert {"encoder": "mlp"} in options and {"output": "embeddings"} in options and {"n_components": "auto"} in options
    data = load_image_segmentation()
    rows = np.random.RandomState(0).choice(len(data.target), 300, replace=False)
    X = ampute_modalities(data.data[rows], data.modalities, rate=0.5, random_state=0)
    for option in options:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = CalMRLTransformer(data.modalities, random_state=0, n_jobs=1, **option).fit_transform(X)
        assert out.shape[0] == 300 and np.isfinite(out).all(), option


def test_output_changed_after_fit_is_read_at_transform():
    """set_params(output=...) after fit: the one output definition gives every output and its names (issue 18)."""
    data = load_image_segmentation()
    X = ampute_modalities(data.data[:200], data.modalities, rate=0.3, random_state=0)
    est = CalMRLTransformer(data.modalities, **{**FAST, "latent_dim": 3}).fit(X)
    for output in ("latent", "embeddings", "concat"):
        out = est.set_params(output=output).transform(X)
        assert out.shape[1] == len(est.get_feature_names_out())


@pytest.mark.parametrize(
    "params, error",
    [
        ({"encoder": "identity"}, InvalidParameterError),  # MultiViewPPCA is the closed-form model alone
        ({"output": "anchor"}, InvalidParameterError),  # diagnostics.anchor_shift computes the anchor
        ({"output": "mean"}, InvalidParameterError),
        ({"noise": "shared"}, InvalidParameterError),
        ({"encoder": MLP(hidden_layer_sizes=(0,))}, ValueError),
        ({"early_stopping": EarlyStopping(validation_fraction=1.0)}, InvalidParameterError),
    ],
)
def test_removed_and_invalid_values_are_rejected_before_anything_is_fitted(segment, params, error):
    """The values deprecated in 0.2 were removed before the first release (CHANGELOG.md); the parameter objects are
    validated at fit."""
    X, _, mods, _ = segment
    with pytest.raises(error):
        CalMRLTransformer(mods, **{**FAST, **params}).fit(X[:200])


@pytest.mark.parametrize("name", ["hidden_layer_sizes", "validation_fraction", "n_iter_no_change"])
def test_parameters_moved_into_their_objects_are_not_the_estimators(name):
    """hidden_layer_sizes is MLP's, validation_fraction and n_iter_no_change EarlyStopping's (issue 27)."""
    with pytest.raises(TypeError, match=name):
        CalMRLTransformer(**{name: 1})
    assert name not in CalMRLTransformer().get_params() and len(CalMRLTransformer().get_params()) == 22


# ----------------------------------------------------------------------------- partial_fit [design 3.2]
@pytest.mark.parametrize("encoder,alignment", [("linear", "pmrl"), (MLP(hidden_layer_sizes=(8,)), "gram")])
def test_partial_fit_torch_encoders(latent_data, encoder, alignment):
    X, mods = latent_data
    est = CalMRLTransformer(mods, encoder=encoder, alignment=alignment, **SMALL)
    chunks = np.array_split(X, 3)
    for chunk in chunks:
        assert est.partial_fit(chunk) is est
    assert est.n_iter_ == 3 and len(est.loss_curve_) == 3 and np.isfinite(est.loss_curve_).all()
    assert est.fit_time_gradient_ > 0 and est.fit_time_em_ > 0
    Z = est.transform(X)
    assert Z.shape == (X.shape[0], 3 * SMALL["embed_dim"] + X.shape[1]) and np.isfinite(Z).all()
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
    a, b = CalMRLTransformer(mods, **SMALL), CalMRLTransformer(mods, **SMALL)
    for chunk in np.array_split(X, 2):
        a.partial_fit(chunk)
        b.partial_fit(chunk)
    np.testing.assert_array_equal(a.transform(X), b.transform(X))
    a.fit(X)  # a fresh fit: partial_fit afterwards starts new running totals from the fitted model
    a.partial_fit(X[:100])
    assert a.n_iter_ == 1 and a._trainer_.model.statistics.total.n_rows == 100 and a._block_model().statistics.total.n_rows == 100


def test_docstring_examples_run():
    """The Examples sections of both estimators run as doctests (CalMRLTransformer's output width included)."""
    import doctest

    from sklearn_calmrl import _estimator, _ppca

    for module in (_estimator, _ppca):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 0 and result.failed == 0, module.__name__
