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

Early stopping uses scikit-learn's MLP vocabulary: ``early_stopping=True``
holds out ``validation_fraction`` of the rows before anything is fitted;
after every epoch their cross-modal Recall@1 (the validation *score*, higher is
better) is measured, training stops after ``n_iter_no_change`` epochs without
an improvement of at least ``tol``, and the best epoch (the closed-form start
included) is restored. When ``max_epochs`` is reached first, a
:class:`~sklearn.exceptions.ConvergenceWarning` says so. Without early
stopping the model trains for exactly ``max_epochs`` epochs and does not warn.
"""

import os
import warnings

import matplotlib.pyplot as plt
from sklearn.exceptions import ConvergenceWarning

from sklearn_calmrl import CalMRLTransformer
from sklearn_calmrl.datasets import ampute_modalities, load_multiple_features
from sklearn_calmrl.plotting import plot_training_curves

QUICK = os.environ.get("CALMRL_QUICK") == "1"  # shrink the example for CI

mf = load_multiple_features()
X = ampute_modalities(mf.data, mf.modalities, rate=0.5, random_state=0)

# %%
# Fit with progress output and early stopping
# -------------------------------------------
est = CalMRLTransformer(
    mf.modalities,
    max_epochs=4 if QUICK else 30,
    early_stopping=True,
    validation_fraction=0.1,
    n_iter_no_change=2 if QUICK else 5,
    verbose=1,
    random_state=0,
)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", ConvergenceWarning)
    est.fit(X)
for w in caught:
    if issubclass(w.category, ConvergenceWarning):
        print("ConvergenceWarning:", w.message)
print(f"ran {est.n_iter_} epochs; best validation Recall@1 {est.best_validation_score_:.3f}")

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
# first epoch, then one refresh of three EM steps per epoch). Unlike EM on
# fixed data it need not rise: every epoch moves the encoders, so the refresh
# fits a latent model to new representations, and three EM steps catch up
# only partly. The calibrated imputations use the refreshed model.
axes = plot_training_curves(est)
plt.show()

# %%
# With ``encoder='identity'`` there is no gradient training: the curve is the
# EM log-likelihood, which never decreases.
identity = CalMRLTransformer(
    mf.modalities, encoder="identity", latent_dim=32, random_state=0
).fit(X)
axes = plot_training_curves(identity)
plt.show()
