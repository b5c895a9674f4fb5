"""
===============================================
Training progress, early stopping and curves
===============================================

Training alternates closed-form steps of the latent model (EM) with gradient
steps of the alignment loss on the encoders. ``verbose=1`` prints a line per
closed-form fit and one per epoch (the loss and its terms, the validation
score, the log-likelihood, the time); ``verbose=2`` adds every EM step. The
history is kept in ``loss_curve_``, ``loss_terms_curve_``, ``loglik_curve_``
(and ``validation_scores_`` with early stopping), and
:func:`sklearn_calmrl.plotting.plot_training_curves` draws it.

Early stopping uses scikit-learn's MLP vocabulary, gathered in
:class:`~sklearn_calmrl.EarlyStopping` (``early_stopping=True`` is
``EarlyStopping()``): ``fit`` holds out ``validation_fraction`` of the rows
before anything is fitted;
after every epoch their cross-modal Recall@1 (the validation *score*, higher is
better) is measured, training stops after ``n_iter_no_change`` epochs without
an improvement of at least ``tol``, and the best epoch (the closed-form start
included) is restored. When ``max_epochs`` is reached first, a
:class:`~sklearn.exceptions.ConvergenceWarning` says so. Without early
stopping (the default) the model trains for exactly ``max_epochs`` epochs and
does not warn.
"""

import os

import matplotlib.pyplot as plt
import numpy as np

from sklearn_calmrl import CalMRLTransformer, EarlyStopping, MultiViewPPCA
from sklearn_calmrl.datasets import ampute_modalities, load_multiple_features
from sklearn_calmrl.plotting import plot_training_curves

QUICK = os.environ.get("CALMRL_QUICK") == "1"  # shrink the example for CI

mf = load_multiple_features()
X = ampute_modalities(mf.data, mf.modalities, rate=0.5, random_state=0)

# %%
# Fit with progress output and early stopping
# -------------------------------------------
# Everything but the early stopping and the progress output keeps its default
# (``max_epochs=30``, ``validation_fraction=0.1``). The quick mode gives up
# after two epochs without improvement instead of five.
est = CalMRLTransformer(
    mf.modalities,
    early_stopping=EarlyStopping(n_iter_no_change=2 if QUICK else 5),
    verbose=1,
    random_state=0,
)
est.fit(X)
best = int(np.argmax(est.validation_scores_)) + 1
print(
    f"ran {est.n_iter_} of max_epochs={est.max_epochs} epochs; best validation Recall@1 "
    f"{est.best_validation_score_:.3f} (epoch {best}, restored)"
)

# %%
# Plot the curves
# ---------------
# Left: the training loss with its two PMRL terms (dashed): ``intra`` pulls a
# sample's modalities together, ``inter`` keeps different samples apart; and
# the validation Recall@1 on a second axis, with the epoch that was restored.
# The loss keeps falling while the held-out retrieval levels off, which is
# why early stopping watches retrieval and not the loss.
#
# Right: the mean log-likelihood of the *representations* under their latent
# model, after each closed-form step (0 is the fit to convergence before the
# first epoch, then the refresh of three EM steps at the start of every later
# epoch). Unlike EM on fixed data it need not rise: every epoch moves the
# encoders, so the refresh fits a latent model to new representations, and
# three EM steps catch up only partly. The calibrated imputations use the
# refreshed model.
axes = plot_training_curves(est)
plt.show()

# %%
# A default fit
# -------------
# Without early stopping, training runs ``max_epochs`` epochs (30 by default,
# 3 in the quick mode) and no warning is raised. The loss is typically still
# falling at the last epoch, and the log-likelihood of the representations
# need not have risen, for the reasons above: neither is a sign that training
# was cut short. The loss measures the alignment of the training rows and keeps
# improving after the held-out retrieval has levelled off; the default number
# of epochs was chosen on tuning rows by held-out retrieval, not by the loss.
default = CalMRLTransformer(
    mf.modalities, random_state=0, **({"max_epochs": 3} if QUICK else {})
).fit(X)
print(
    f"default fit: {default.n_iter_} epochs, loss {default.loss_curve_[0]:.4f} -> "
    f"{default.loss_curve_[-1]:.4f}, log-likelihood {default.loglik_curve_[0]:.1f} -> "
    f"{default.loglik_curve_[-1]:.1f}"
)
axes = plot_training_curves(default)
plt.show()

# %%
# :class:`~sklearn_calmrl.MultiViewPPCA` (the closed-form model alone) has no
# gradient training: the curve is the EM log-likelihood, which never decreases.
closed_form = MultiViewPPCA(mf.modalities, random_state=0).fit(X)
axes = plot_training_curves(closed_form)
plt.show()
