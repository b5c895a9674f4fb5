"""
=====================================
Tuning CalMRL with GridSearchCV
=====================================

Because the modalities of a sample live in one row of ``X`` (blocks of columns,
NaN where a modality is missing), scikit-learn can split the data by rows, and
:class:`~sklearn.model_selection.GridSearchCV` tunes CalMRL like any other
transformer. Here it chooses the latent dimension ``latent_dim`` and the
``output`` of :class:`~sklearn_calmrl.MultiViewPPCA` (the closed-form model of
CalMRL) in front of a logistic regression, on the Image Segmentation data set
(a ``shape`` and a ``color`` modality) where 60% of the samples miss one of
the two.
"""

import os

import matplotlib.pyplot as plt
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_calmrl import MultiViewPPCA
from sklearn_calmrl.datasets import ampute_modalities, load_image_segmentation

QUICK = os.environ.get("CALMRL_QUICK") == "1"  # shrink the example for CI

seg = load_image_segmentation()
X = ampute_modalities(seg.data, seg.modalities, rate=0.6, random_state=0)
y = seg.target
print({name: len(cols) for name, cols in seg.modalities.items()})

# %%
# The search
# ----------
# Parameters of a pipeline step are addressed as ``<step>__<parameter>``. The
# closed-form model keeps the example fast; the same search works with
# :class:`~sklearn_calmrl.CalMRLTransformer` and its encoders. The grid
# includes the default ``latent_dim='auto'``, which sets the dimension from
# the number of training rows that observe both modalities.
pipe = Pipeline(
    [
        ("calmrl", MultiViewPPCA(seg.modalities, random_state=0)),
        ("scale", StandardScaler()),
        ("clf", LogisticRegression(max_iter=2000)),
    ]
)
dims = [2, 8, "auto"] if QUICK else [2, 4, 6, 8, "auto"]
param_grid = {"calmrl__latent_dim": dims, "calmrl__output": ["latent", "concat"]}
cv = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
search = GridSearchCV(pipe, param_grid, cv=cv, n_jobs=1).fit(X, y)
print(
    "best parameters:",
    search.best_params_,
    f"cross-validated accuracy {search.best_score_:.3f}",
)
print("latent_dim of the refitted best model:", search.best_estimator_["calmrl"].latent_dim_)

# %%
# Results
# -------
# ``output='latent'`` returns the posterior mean ``m_i`` of the shared latent
# (``latent_dim`` columns); ``output='concat'`` returns the observed blocks next
# to their imputations (here the 18 standardized features, missing ones filled
# in from the latent), so it depends on ``latent_dim`` only through the
# imputation. Both are followed by the default ``add_indicator=True`` columns,
# one per modality, 1 where the sample observes it.
results = search.cv_results_
param_dim = [str(d) for d in results["param_calmrl__latent_dim"]]
param_output = np.asarray(results["param_calmrl__output"])
positions = np.arange(len(dims))
fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
for output, marker in [("latent", "o"), ("concat", "s")]:
    index = [
        int(np.flatnonzero((np.asarray(param_dim) == str(d)) & (param_output == output))[0])
        for d in dims
    ]
    ax.errorbar(
        positions,
        results["mean_test_score"][index],
        yerr=results["std_test_score"][index],
        marker=marker,
        capsize=3,
        label=f"output='{output}'",
    )
ax.set_xlabel("latent_dim")
ax.set_ylabel("3-fold CV accuracy")
ax.set_xticks(positions, [str(d) for d in dims])
ax.legend()
plt.show()
