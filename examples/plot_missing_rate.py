"""
==========================================
Accuracy against the rate of missingness
==========================================

How much does a linear probe lose as more samples miss modalities? For a
missing rate ``p``, a fraction ``p`` of the Multiple Features digits lose a
random non-empty proper subset of their six modalities, in the training and
the test rows alike. Each representation is fitted on the 70% training split
only, inside a :class:`~sklearn.pipeline.Pipeline`, and a logistic regression
on top is scored on the other 30%.

Compared:

* **mean imputation, concatenated** -- fill missing entries with the column
  mean and use all standardized features;
* **mean imputation + PCA** -- the same, reduced to 64 components;
* **MultiViewPPCA** -- the closed-form multi-view probabilistic PCA of
  CalMRL: observed blocks next to their calibrated imputations;
* **CalMRLTransformer** -- linear encoders trained with the PMRL alignment loss
  on observed plus imputed representations, next to the blocks of the
  closed-form model.

Both CalMRL estimators run with their default parameters (the quick mode only
trains for fewer epochs), including ``add_indicator=True``: one column per
modality that tells the probe which modalities a sample observes.

This is one split (about one point of noise); the benchmarks page repeats the
protocol with 5-fold cross-validation on four data sets.
"""

import os

import matplotlib.pyplot as plt
from sklearn.decomposition import PCA
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_calmrl import CalMRLTransformer, MultiViewPPCA
from sklearn_calmrl.datasets import ampute_modalities, load_multiple_features

QUICK = os.environ.get("CALMRL_QUICK") == "1"  # shrink the example for CI

mf = load_multiple_features()
rates = [0.0, 0.7] if QUICK else [0.0, 0.3, 0.5, 0.7]
# The quick mode only shortens training; otherwise every parameter keeps its default (max_epochs=30).
SHORT = {"max_epochs": 3} if QUICK else {}


def probe():
    return LogisticRegression(max_iter=2000)


def make_models():
    return {
        "mean imputation, concatenated": make_pipeline(
            SimpleImputer(), StandardScaler(), probe()
        ),
        "mean imputation + PCA": make_pipeline(
            SimpleImputer(),
            StandardScaler(),
            PCA(n_components=64, random_state=0),
            probe(),
        ),
        "MultiViewPPCA": make_pipeline(
            MultiViewPPCA(mf.modalities, random_state=0), probe()
        ),
        "CalMRLTransformer": make_pipeline(
            CalMRLTransformer(mf.modalities, random_state=0, **SHORT), probe()
        ),
    }


# %%
# Fit every model at every rate
# -----------------------------
accuracy = {name: [] for name in make_models()}
for rate in rates:
    X = ampute_modalities(mf.data, mf.modalities, rate=rate, random_state=0)
    X_train, X_test, y_train, y_test = train_test_split(
        X, mf.target, test_size=0.3, stratify=mf.target, random_state=0
    )
    for name, model in make_models().items():
        accuracy[name].append(model.fit(X_train, y_train).score(X_test, y_test))
    print(
        f"p={rate:.1f}: "
        + ", ".join(f"{name} {acc[-1]:.3f}" for name, acc in accuracy.items())
    )

# %%
# Plot
# ----
fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
styles = {
    "mean imputation, concatenated": dict(color="C7", marker="o", linestyle="--"),
    "mean imputation + PCA": dict(color="C2", marker="v", linestyle="--"),
    "MultiViewPPCA": dict(color="C0", marker="s"),
    "CalMRLTransformer": dict(color="C1", marker="D"),
}
for name, acc in accuracy.items():
    ax.plot(rates, acc, label=name, **styles[name])
ax.set_xlabel("fraction of samples that miss modalities (train and test)")
ax.set_ylabel("test accuracy of a logistic regression")
ax.set_title("Multiple Features (6 modalities, 10 digits)")
ax.set_xticks(rates)
ax.legend(loc="lower left")
ax.grid(alpha=0.3)

plt.show()
