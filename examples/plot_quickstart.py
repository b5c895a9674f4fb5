"""
=============================================
Quickstart: CalMRL in a scikit-learn Pipeline
=============================================

Half of the 2000 handwritten digits of the Multiple Features data set lose a
random subset of their six modalities (whole blocks of columns become NaN).
:class:`~sklearn_calmrl.MultiViewPPCA` (the closed-form latent model) and
:class:`~sklearn_calmrl.CalMRLTransformer` (the same model with per-modality
encoders aligned on top) turn each sample, whatever modalities it has, into
one representation; a :class:`~sklearn.linear_model.LogisticRegression` on
top classifies the digits. The usual recipe -- impute the missing entries with
the column mean, then :class:`~sklearn.decomposition.PCA` -- serves as the
baseline. Both CalMRL estimators run with their default parameters.
"""

import os
import tempfile
import time
from pathlib import Path

import joblib
import matplotlib.pyplot as plt
import numpy as np
from sklearn.decomposition import PCA
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_calmrl import CalMRLTransformer, MultiViewPPCA
from sklearn_calmrl.datasets import ampute_modalities, load_multiple_features

QUICK = os.environ.get("CALMRL_QUICK") == "1"  # shrink the example for CI
# The quick mode only shortens training; otherwise every parameter keeps its default (max_epochs=30).
SHORT = {"max_epochs": 3} if QUICK else {}

# %%
# Data with missing modalities
# ----------------------------
# ``mf.modalities`` maps each modality name to its columns. A sample misses a
# modality when its whole block is NaN; ``ampute_modalities`` removes a random
# non-empty proper subset of the modalities from half of the rows.
mf = load_multiple_features()
X = ampute_modalities(mf.data, mf.modalities, rate=0.5, random_state=0)
y = mf.target
print({name: len(cols) for name, cols in mf.modalities.items()})

observed = np.stack(
    [~np.isnan(X[:, cols]).all(axis=1) for cols in mf.modalities.values()], axis=1
)
print(
    "modalities observed per sample:",
    np.bincount(observed.sum(axis=1), minlength=7)[1:],
)

X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.3, stratify=y, random_state=0
)

# %%
# Three pipelines
# ---------------
# Both CalMRL estimators fit inside the pipeline on the training rows only,
# like any other transformer. :class:`~sklearn_calmrl.MultiViewPPCA` is the
# closed-form multi-view probabilistic PCA (no neural network);
# :class:`~sklearn_calmrl.CalMRLTransformer` adds one linear encoder per
# modality trained with the PMRL alignment loss on observed plus imputed
# representations.
models = {
    "mean imputation + PCA": make_pipeline(
        SimpleImputer(),
        StandardScaler(),
        PCA(n_components=64, random_state=0),
        LogisticRegression(max_iter=2000),
    ),
    "MultiViewPPCA": make_pipeline(
        MultiViewPPCA(mf.modalities, random_state=0),
        LogisticRegression(max_iter=2000),
    ),
    "CalMRLTransformer": make_pipeline(
        CalMRLTransformer(mf.modalities, random_state=0, **SHORT),
        LogisticRegression(max_iter=2000),
    ),
}

scores = {}
for name, model in models.items():
    start = time.perf_counter()
    model.fit(X_train, y_train)
    scores[name] = model.score(X_test, y_test)
    seconds = time.perf_counter() - start
    print(f"{name:24s} accuracy {scores[name]:.3f}  ({seconds:.1f} s)")

# %%
# The representation
# ------------------
# With the default ``output='concat'`` every sample gets the calibrated
# representation of *all* six modalities side by side -- its own encoder output
# where the modality is observed, the model's imputation where it is missing
# -- then the calibrated standardized blocks of the closed-form model (which
# keep the modality-specific detail), then, with the default
# ``add_indicator=True``, one column per modality that is 1 where the sample
# observes it. ``latent_dim='auto'`` chose the size of the shared latent (and
# so of each representation) from the number of training rows that link
# modalities.
calmrl = models["CalMRLTransformer"][0]
Z = calmrl.transform(X_test)
names = calmrl.get_feature_names_out()
print(Z.shape, f"latent_dim_={calmrl.latent_dim_}")
print("first columns:", list(names[:2]), " last columns:", list(names[-3:]))

fig, ax = plt.subplots(figsize=(6, 3), layout="constrained")
ax.barh(list(scores), list(scores.values()), color=["C7", "C0", "C1"])
ax.set_xlim(min(0.8, min(scores.values()) - 0.02), 1.0)
ax.set_xlabel("test accuracy (half of the samples miss modalities)")
for i, s in enumerate(scores.values()):
    ax.text(s + 0.002, i, f"{s:.3f}", va="center")
plt.show()

# %%
# Save and load
# -------------
# A fitted pipeline is saved and loaded with joblib (or pickle). The encoders
# are stored on the CPU, so a model fitted on a GPU loads on a machine without
# one.
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "calmrl_pipeline.joblib"
    joblib.dump(models["CalMRLTransformer"], path)
    loaded = joblib.load(path)
print(
    "same predictions after loading:",
    (loaded.predict(X_test) == models["CalMRLTransformer"].predict(X_test)).all(),
)
