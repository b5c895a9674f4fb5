"""The training-curve plotting helper (Agg backend, no display needed)."""

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402

from sklearn_calmrl import CalMRLTransformer, EarlyStopping, MultiViewPPCA  # noqa: E402
from sklearn_calmrl.datasets import ampute_modalities, load_image_segmentation  # noqa: E402
from sklearn_calmrl.plotting import plot_training_curves  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

FAST = dict(latent_dim=4, embed_dim=8, device="cpu", random_state=0)


@pytest.fixture(scope="module")
def data():
    seg = load_image_segmentation()
    X = ampute_modalities(seg.data[:400], seg.modalities, rate=0.5, random_state=0)
    return X, seg.modalities


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _line_data(ax):
    return {line.get_label(): line.get_ydata() for line in ax.get_lines()}


def test_new_figure_with_loss_and_loglik(data):
    X, mods = data
    est = CalMRLTransformer(mods, max_epochs=4, **FAST).fit(X)
    axes = plot_training_curves(est)
    assert axes.shape == (2,)
    ax_loss, ax_ll = axes
    assert ax_loss.figure is ax_ll.figure and ax_loss is not ax_ll
    lines = _line_data(ax_loss)
    np.testing.assert_allclose(lines["training loss"], est.loss_curve_)
    np.testing.assert_allclose(_line_data(ax_ll)["log-likelihood"], est.loglik_curve_)
    assert ax_loss.get_xlabel() == "epoch" and ax_ll.get_ylabel() == "mean log-likelihood"
    ax_loss.figure.canvas.draw()  # renders without error


def test_validation_scores_and_loss_terms_are_drawn_with_best_epoch(data):
    X, mods = data
    est = CalMRLTransformer(mods, max_epochs=5, early_stopping=EarlyStopping(n_iter_no_change=2), **FAST).fit(X)
    assert len(est.validation_scores_) == est.n_iter_
    ax_loss = plot_training_curves(est)[0]
    lines = _line_data(ax_loss)
    np.testing.assert_allclose(lines["intra term"], est.loss_terms_curve_["intra"])
    np.testing.assert_allclose(lines["inter term"], est.loss_terms_curve_["inter"])
    validation = [a for a in ax_loss.figure.axes if a.get_ylabel() == "validation Recall@1"][0]
    np.testing.assert_allclose(_line_data(validation)["validation R@1"], est.validation_scores_)
    assert any(label.startswith("best epoch (") for label in lines)


def test_closed_form_model_has_no_loss_curve(data):
    X, mods = data
    est = MultiViewPPCA(mods, latent_dim=4, random_state=0).fit(X)
    ax_loss, ax_ll = plot_training_curves(est)
    assert not ax_loss.get_lines()
    assert any("no gradient training" in t.get_text() for t in ax_loss.texts)
    ll = _line_data(ax_ll)["log-likelihood"]
    np.testing.assert_allclose(ll, est.loglik_curve_)
    assert np.all(np.diff(ll) >= -1e-8)  # EM never decreases the log-likelihood
    assert ax_ll.get_xlabel() == "EM iteration"


def test_single_axes_uses_a_twin_axis(data):
    X, mods = data
    est = CalMRLTransformer(mods, max_epochs=3, **FAST).fit(X)
    fig, ax = plt.subplots()
    ax_loss, ax_ll = plot_training_curves(est, ax=ax)
    assert ax_loss is ax and ax_ll is not ax and ax_ll.figure is fig
    assert len(fig.axes) == 2
    assert ax.get_legend() is not None


def test_two_axes_are_used_as_given(data):
    X, mods = data
    est = CalMRLTransformer(mods, max_epochs=3, **FAST).fit(X)
    fig, axs = plt.subplots(2, 1)
    out = plot_training_curves(est, ax=axs)
    assert out[0] is axs[0] and out[1] is axs[1] and len(fig.axes) == 2


def test_wrong_number_of_axes_and_unfitted_model(data):
    X, mods = data
    est = CalMRLTransformer(mods, max_epochs=2, **FAST)
    with pytest.raises(NotFittedError):
        plot_training_curves(est)
    est.fit(X)
    _, axs = plt.subplots(1, 3)
    with pytest.raises(ValueError, match="two Axes"):
        plot_training_curves(est, ax=axs)


def test_variance_explained_heat_map_shows_the_fitted_values(data):
    """plot_variance_explained draws variance_explained_ in percent, totals in the row labels (issue 21)."""
    from sklearn_calmrl import MultiViewPPCA
    from sklearn_calmrl.plotting import plot_variance_explained

    X, mods = data
    est = MultiViewPPCA(mods, latent_dim=4, random_state=0).fit(X)
    ax = plot_variance_explained(est)
    np.testing.assert_allclose(ax.images[0].get_array(), 100 * np.clip(est.variance_explained_, 0, None))
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [f"{name} ({100 * t:.0f}%)" for name, t in zip(mods, est.variance_explained_total_)]
    assert len(ax.texts) == est.variance_explained_.size
    with pytest.raises(NotFittedError):
        plot_variance_explained(MultiViewPPCA(mods))
