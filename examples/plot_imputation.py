"""
====================
CalMRL as an imputer
====================

Often the goal is not a representation but the data itself, with the missing
blocks filled in. ``impute`` does that with the closed-form model of CalMRL:
each missing block gets the model's conditional mean given the blocks the
sample has (by default plus a local correction from the training samples
nearest in those blocks), returned in the caller's units (observed values are
passed through), and with
``return_std=True`` the predictive standard deviation of every entry beside it.
:class:`~sklearn_calmrl.CalMRLTransformer` has the same method, which imputes
with the closed-form model its encoders start from.

We hide one modality block of held-out complete samples and compare
:meth:`MultiViewPPCA.impute <sklearn_calmrl.MultiViewPPCA.impute>` with
scikit-learn's :class:`~sklearn.impute.KNNImputer`,
:class:`~sklearn.impute.IterativeImputer` and mean imputation, on the two
bundled data sets: Multiple Features (six modalities, 649 features) and Image
Segmentation (a ``shape`` and a ``color`` modality, 18 features). Every
imputer is fitted on training rows of which half miss modalities. Then we ask
whether the predictive standard deviation is calibrated: how often the hidden
value falls within two standard deviations of its imputation.
"""

import os
import time
from math import erf, sqrt

import matplotlib.pyplot as plt
import numpy as np
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer
from sklearn.preprocessing import StandardScaler

from sklearn_calmrl import MultiViewPPCA
from sklearn_calmrl.datasets import (
    ampute_modalities,
    load_image_segmentation,
    load_multiple_features,
)

QUICK = os.environ.get("CALMRL_QUICK") == "1"  # shrink the example for CI

# %%
# The protocol
# ------------
# 70% of the rows are for training, and half of them lose a random subset of
# their modalities. Each of the other 30% (complete rows) loses one modality
# block, drawn at random; the imputers must give it back.


def held_out_blocks(data, seed=0):
    rows = np.random.RandomState(seed).permutation(len(data.data))
    n_train = int(0.7 * len(rows))
    train, test = rows[:n_train], rows[n_train:]
    X_train = ampute_modalities(data.data[train], data.modalities, rate=0.5, random_state=seed)
    truth = data.data[test]
    names = list(data.modalities)
    hidden_block = np.random.RandomState(seed + 1).randint(len(names), size=len(test))
    hidden = np.zeros(truth.shape, dtype=bool)
    for i, m in enumerate(hidden_block):
        hidden[i, data.modalities[names[m]]] = True
    X_test = np.where(hidden, np.nan, truth)
    return X_train, X_test, truth, hidden


def on_standardized(imputer):
    """Run a scikit-learn imputer on standardized features and return the caller's units.

    KNN distances and the regressions of IterativeImputer then weigh every
    feature alike (the features of Multiple Features differ in scale by orders
    of magnitude); MultiViewPPCA standardizes internally.
    """

    def impute(X_train, X_test):
        scaler = StandardScaler().fit(X_train)  # NaNs are ignored
        fitted = imputer.fit(scaler.transform(X_train))
        return scaler.inverse_transform(fitted.transform(scaler.transform(X_test)))

    return impute


# IterativeImputer fits one regression per feature and iteration: with 649
# features it is kept fast by regressing each feature on its 30 most
# correlated features only, and by 3 iterations in the quick mode (10, its
# default, otherwise). So few iterations may end before its own tolerance is
# met, in which case scikit-learn says so with a ConvergenceWarning.
iterative = dict(max_iter=3 if QUICK else 10, n_nearest_features=30, random_state=0)

# %%
# Impute and measure
# ------------------
# ``MultiViewPPCA(modalities).impute(X)`` returns ``X`` with every missing
# block filled in, in the units of ``X``. The error is measured in standardized
# units (each feature divided by its standard deviation over the training rows
# that observe it) so that features of different scales count alike: the root
# mean squared error over the hidden entries, where predicting each feature's
# training mean (mean imputation) scores near 1.
datasets = {
    "Multiple Features": load_multiple_features(),
    "Image Segmentation": load_image_segmentation(),
}
methods = ["MultiViewPPCA", "KNNImputer", "IterativeImputer", "mean imputation"]
errors = {name: {} for name in datasets}
uncertainty = {}
for data_name, data in datasets.items():
    X_train, X_test, truth, hidden = held_out_blocks(data)
    scaler = StandardScaler().fit(X_train)
    for method in methods:
        start = time.perf_counter()
        if method == "MultiViewPPCA":
            ppca = MultiViewPPCA(data.modalities, random_state=0).fit(X_train)
            X_filled, std = ppca.impute(X_test, return_std=True)
            uncertainty[data_name] = (X_filled, std, truth, hidden)
        elif method == "KNNImputer":
            X_filled = on_standardized(KNNImputer())(X_train, X_test)
        elif method == "IterativeImputer":
            X_filled = on_standardized(IterativeImputer(**iterative))(X_train, X_test)
        else:
            X_filled = SimpleImputer().fit(X_train).transform(X_test)
        seconds = time.perf_counter() - start
        residual = scaler.transform(X_filled) - scaler.transform(truth)
        errors[data_name][method] = np.sqrt(np.mean(residual[hidden] ** 2))
        print(f"{data_name:18s} {method:16s} fit + impute {seconds:5.1f} s")

print()
print(f"{'RMSE, standardized units':24s}" + "".join(f"{name:>20s}" for name in datasets))
for method in methods:
    print(f"{method:24s}" + "".join(f"{errors[name][method]:20.3f}" for name in datasets))

fig, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
width = 0.8 / len(methods)
positions = np.arange(len(datasets))
for j, method in enumerate(methods):
    values = [errors[name][method] for name in datasets]
    bars = ax.bar(positions + (j - 1.5) * width, values, width, label=method)
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
ax.set_xticks(positions, list(datasets))
ax.set_ylabel("RMSE of the hidden block\n(standardized units)")
ax.set_title("Imputing one hidden modality of held-out samples")
ax.set_ylim(0, 1.4 * max(max(e.values()) for e in errors.values()))
ax.legend(fontsize=8, ncols=2, loc="upper center")
plt.show()

# %%
# In the caller's units, with its uncertainty
# -------------------------------------------
# One held-out Image Segmentation sample whose ``color`` block was hidden:
# the true values, the imputation and its predictive standard deviation, all
# in the units of the data.
seg = datasets["Image Segmentation"]
X_filled, std, truth, hidden = uncertainty["Image Segmentation"]
color = seg.modalities["color"]
row = int(np.flatnonzero(hidden[:, color[0]])[0])
print(f"{'feature':18s} {'true':>9s} {'imputed':>9s} {'std':>8s}")
for j in color:
    print(f"{seg.feature_names[j]:18s} {truth[row, j]:9.2f} {X_filled[row, j]:9.2f} {std[row, j]:8.2f}")

# %%
# Is the uncertainty calibrated?
# ------------------------------
# If the imputation errors were Gaussian with the predicted standard
# deviation, 68.3% of the hidden entries would lie within one standard
# deviation of their imputation and 95.4% within two. The printed fractions
# are what this run measured: below the nominal value the model is
# over-confident, above it under-confident.
levels = np.linspace(0, 3, 61)
nominal = np.array([erf(k / sqrt(2)) for k in levels])
fig, ax = plt.subplots(figsize=(5, 4), layout="constrained")
ax.plot(levels, nominal, color="k", linestyle="--", label="Gaussian, as predicted")
for data_name, (X_filled, std, truth, hidden) in uncertainty.items():
    z = np.abs(truth - X_filled)[hidden] / std[hidden]
    print(
        f"{data_name}: within 1 std {np.mean(z <= 1):.1%}, within 2 std {np.mean(z <= 2):.1%} "
        f"(nominal 68.3% and 95.4%)"
    )
    ax.plot(levels, [np.mean(z <= k) for k in levels], label=data_name)
ax.set_xlabel("k (multiples of the predictive std)")
ax.set_ylabel("fraction of hidden entries within ±k std")
ax.set_title("Calibration of MultiViewPPCA's predictive std")
ax.legend()
ax.grid(alpha=0.3)
plt.show()
