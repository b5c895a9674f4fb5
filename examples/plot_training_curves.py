"""
===============================================
Training progress, early stopping and curves
===============================================

Training alternates closed-form steps of the latent model (EM) with gradient
steps of the alignment loss on the encoders. ``verbose=1`` prints one line per
epoch (loss, log-likelihood, time) and ``verbose=2`` adds the EM detail. The
history is kept in ``loss_curve_`` and ``loglik_curve_`` (and
``validation_loss_curve_`` with early stopping), and
:func:`sklearn_calmrl.plotting.plot_training_curves` draws it.

Early stopping uses scikit-learn's MLP vocabulary: ``early_stopping=True``
holds out ``validation_fraction`` of the rows, training stops after
``n_iter_no_change`` epochs without an improvement of at least ``tol`` of
their loss, and the best weights are restored. When ``max_epochs`` is reached
first, a :class:`~sklearn.exceptions.ConvergenceWarning` says so.
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
    encoder="linear",
    latent_dim=32,
    embed_dim=32,
    learning_rate=3e-3,
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
print(
    f"ran {est.n_iter_} epochs; best validation loss {min(est.validation_loss_curve_):.4f}"
)

# %%
# Plot the curves
# ---------------
# Left: the training loss and the loss on the held-out rows, with the epoch
# whose weights were restored. Right: the mean log-likelihood of the
# representations under the latent model after each closed-form step.
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
