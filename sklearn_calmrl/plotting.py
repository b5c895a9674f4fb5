"""Plotting helpers (need matplotlib, which is an optional dependency)."""

import numpy as np
from sklearn.utils.validation import check_is_fitted

__all__ = ["plot_training_curves", "plot_variance_explained"]


def plot_training_curves(estimator, ax=None):
    """Plot the training history of a fitted :class:`~sklearn_calmrl.CalMRLTransformer` or :class:`~sklearn_calmrl.MultiViewPPCA`.

    Read more in the :ref:`User Guide <user_guide>`.

    The left panel shows the mean alignment loss per epoch (``loss_curve_``),
    its terms (``loss_terms_curve_``, dashed) and, when the model was fitted
    with ``early_stopping=True``, the cross-modal Recall@1 of the held-out rows
    (``validation_scores_``, on a second y-axis) with the best epoch. The right
    panel shows the
    mean observed-data log-likelihood after each closed-form step
    (``loglik_curve_``): for torch encoders the initial EM fit and then one
    point per refresh; for :class:`~sklearn_calmrl.MultiViewPPCA` one point
    per EM iteration (such a model has no loss curve, and its left panel says
    so).

    Parameters
    ----------
    estimator : CalMRLTransformer or MultiViewPPCA
        A fitted estimator (any object with a ``loglik_curve_`` attribute,
        and a ``loss_curve_`` when it trained by gradient steps).
    ax : matplotlib Axes or sequence of two Axes, default=None
        Where to draw. ``None`` creates a new figure with two panels side by
        side. Two Axes get the loss and the log-likelihood. A single Axes gets
        the loss, and the log-likelihood on a twin y-axis (``ax.twinx()``).

    Returns
    -------
    axes : ndarray of matplotlib Axes of shape (2,)
        The Axes of the loss and of the log-likelihood.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn_calmrl import MultiViewPPCA
    >>> from sklearn_calmrl.datasets import make_latent_modalities
    >>> from sklearn_calmrl.plotting import plot_training_curves
    >>> X, mods, _ = make_latent_modalities(n_samples=200, random_state=0)
    >>> est = MultiViewPPCA(mods, latent_dim=3).fit(X)
    >>> axes = plot_training_curves(est)
    >>> [a.get_ylabel() for a in axes]
    ['alignment loss', 'mean log-likelihood']
    """
    import matplotlib.pyplot as plt

    check_is_fitted(estimator, ["loglik_curve_"])
    loss = np.asarray(getattr(estimator, "loss_curve_", []), dtype=float)
    loglik = np.asarray(estimator.loglik_curve_, dtype=float)
    validation = np.asarray(getattr(estimator, "validation_scores_", None) or [], dtype=float)
    terms = getattr(estimator, "loss_terms_curve_", None) or {}

    twin = False
    if ax is None:
        _, (ax_loss, ax_ll) = plt.subplots(1, 2, figsize=(9, 3.5), layout="constrained")
    elif np.iterable(ax):
        axes = list(np.ravel(ax))
        if len(axes) != 2:
            raise ValueError(f"ax must be one Axes or a sequence of two Axes, got {len(axes)}.")
        ax_loss, ax_ll = axes
    else:
        ax_loss, ax_ll, twin = ax, ax.twinx(), True

    epochs = np.arange(1, loss.size + 1)
    if loss.size:
        ax_loss.plot(epochs, loss, marker="o", markersize=3, color="C0", label="training loss")
        for j, (name, values) in enumerate(terms.items()):
            ax_loss.plot(np.arange(1, len(values) + 1), values, linestyle="--", color=f"C{3 + j}", label=f"{name} term")
        if validation.size and not twin:
            ax_val = ax_loss.twinx()
            ax_val.plot(np.arange(1, validation.size + 1), validation, marker="s", markersize=3, color="C1", label="validation R@1")
            ax_val.set_ylabel("validation Recall@1")
            best = int(np.argmax(validation)) + 1
            if validation[best - 1] >= getattr(estimator, "best_validation_score_", -np.inf):
                ax_loss.axvline(best, color="C1", linestyle=":", linewidth=1, label=f"best epoch ({best})")
            else:
                ax_loss.axvline(0, color="C1", linestyle=":", linewidth=1, label="best epoch (0: the start)")
            handles = [h + v for h, v in zip(ax_loss.get_legend_handles_labels(), ax_val.get_legend_handles_labels())]
            ax_loss.legend(*handles, loc="best", fontsize="small")
        ax_loss.set_xlabel("epoch")
    else:
        ax_loss.text(0.5, 0.5, "no gradient training\n(closed-form model)", ha="center", va="center", transform=ax_loss.transAxes)
        ax_loss.set_xlabel("epoch")
        if not twin:
            ax_loss.set_xticks([])
            ax_loss.set_yticks([])
    ax_loss.set_ylabel("alignment loss")

    if loglik.size:
        ax_ll.plot(np.arange(loglik.size), loglik, marker="^", markersize=3, color="C2", label="log-likelihood")
    ax_ll.set_ylabel("mean log-likelihood")
    if not twin:
        ax_ll.set_xlabel("EM iteration" if not loss.size else "closed-form step (0 = initial EM)")
        ax_loss.set_title("alignment loss")
        ax_ll.set_title("latent model log-likelihood")
        if loss.size and ax_loss.get_legend() is None:
            ax_loss.legend(loc="best", fontsize="small")
    else:
        handles = ax_loss.get_legend_handles_labels()
        handles_ll = ax_ll.get_legend_handles_labels()
        if handles[0] or handles_ll[0]:
            ax_loss.legend(handles[0] + handles_ll[0], handles[1] + handles_ll[1], loc="best", fontsize="small")
    return np.array([ax_loss, ax_ll], dtype=object)


def plot_variance_explained(estimator, ax=None, *, cmap="Blues"):
    """Heat map of the variance each latent dimension explains in each modality, as MOFA+ draws it.

    Read more in the :ref:`User Guide <user_guide>`.

    Draws ``variance_explained_`` (modalities as rows, latent dimensions as
    columns, R^2 in percent written in every cell) with the total per modality
    (``variance_explained_total_``) at the end of each row label [design 2.12].
    A dimension that explains much of two modalities is what they share; one
    that explains a single modality is private to it.

    Parameters
    ----------
    estimator : CalMRLTransformer or MultiViewPPCA
        A fitted estimator (any object with ``variance_explained_``,
        ``variance_explained_total_`` and ``modalities_``).
    ax : matplotlib Axes, default=None
        Where to draw; ``None`` creates a new figure sized to the table.
    cmap : str or Colormap, default='Blues'

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> from sklearn_calmrl import MultiViewPPCA
    >>> from sklearn_calmrl.datasets import load_image_segmentation
    >>> from sklearn_calmrl.plotting import plot_variance_explained
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> data = load_image_segmentation()
    >>> ax = plot_variance_explained(MultiViewPPCA(data.modalities, latent_dim=3, random_state=0).fit(data.data))
    >>> ax.get_xlabel()
    'latent dimension'
    """
    import matplotlib.pyplot as plt

    check_is_fitted(estimator, ["variance_explained_", "variance_explained_total_"])
    r2 = 100 * np.clip(np.asarray(estimator.variance_explained_, dtype=float), 0, None)
    total = 100 * np.asarray(estimator.variance_explained_total_, dtype=float)
    names = list(estimator.modalities_)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.5 + 0.45 * r2.shape[1], 1.0 + 0.45 * r2.shape[0]), layout="constrained")
    image = ax.imshow(r2, cmap=cmap, vmin=0, vmax=max(float(r2.max()), 1e-9), aspect="auto")
    for (m, j), value in np.ndenumerate(r2):
        ax.text(j, m, f"{value:.0f}", ha="center", va="center", fontsize="x-small",
                color="white" if value > 0.6 * r2.max() else "black")
    ax.set_xticks(range(r2.shape[1]), [str(j) for j in range(r2.shape[1])])
    ax.set_yticks(range(r2.shape[0]), [f"{name} ({t:.0f}%)" for name, t in zip(names, total)])
    ax.set_xlabel("latent dimension")
    ax.set_title("variance explained (R$^2$, %)")
    ax.figure.colorbar(image, ax=ax, shrink=0.8)
    return ax
