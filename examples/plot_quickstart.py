"""
=============================================
Quickstart: CalMRL in a scikit-learn Pipeline
=============================================

Half of the 2000 handwritten digits of the Multiple Features data set lose a
random subset of their six modalities (whole blocks of columns become NaN).
:class:`~sklearn_calmrl.CalMRLTransformer` turns each sample, whatever
modalities it has, into one representation; a
:class:`~sklearn.linear_model.LogisticRegression` on top classifies the digits.
The usual recipe -- impute the missing entries with the column mean, then
:class:`~sklearn.decomposition.PCA` -- serves as the baseline.
"""

import os
import tempfile
import time
import warnings
from pathlib import Path

import joblib
import matplotlib.pyplot as plt
import numpy as np
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_calmrl import CalMRLTransformer
from sklearn_calmrl.datasets import ampute_modalities, load_multiple_features

QUICK = os.environ.get("CALMRL_QUICK") == "1"  # shrink the example for CI

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
# CalMRL fits inside the pipeline on the training rows only, like any other
# transformer. ``encoder='identity'`` is the closed-form multi-view
# probabilistic PCA (no neural network); ``encoder='linear'`` adds one linear
# encoder per modality trained with the PMRL alignment loss on observed plus
# imputed representations.
epochs = 3 if QUICK else 20
models = {
    "mean imputation + PCA": make_pipeline(
        SimpleImputer(),
        StandardScaler(),
        PCA(n_components=64, random_state=0),
        LogisticRegression(max_iter=2000),
    ),
    "CalMRL, identity": make_pipeline(
        CalMRLTransformer(
            mf.modalities, encoder="identity", latent_dim=32, random_state=0
        ),
        LogisticRegression(max_iter=2000),
    ),
    "CalMRL, linear": make_pipeline(
        CalMRLTransformer(
            mf.modalities,
            encoder="linear",
            latent_dim=32,
            embed_dim=32,
            max_epochs=epochs,
            random_state=0,
        ),
        LogisticRegression(max_iter=2000),
    ),
}

scores = {}
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)  # short training on purpose
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
# representation of *all* six modalities side by side: its own encoder output
# where the modality is observed, the model's imputation where it is missing.
calmrl = models["CalMRL, linear"][0]
Z = calmrl.transform(X_test)
print(Z.shape, calmrl.get_feature_names_out()[:3])

fig, ax = plt.subplots(figsize=(6, 3), layout="constrained")
ax.barh(list(scores), list(scores.values()), color=["C7", "C0", "C1"])
ax.set_xlim(0.8, 1.0)
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
    joblib.dump(models["CalMRL, linear"], path)
    loaded = joblib.load(path)
print(
    "same predictions after loading:",
    (loaded.predict(X_test) == models["CalMRL, linear"].predict(X_test)).all(),
)
