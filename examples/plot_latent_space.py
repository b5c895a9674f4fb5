"""
=======================================================
The shared latent space, whatever modalities are seen
=======================================================

With ``output='latent'``, :class:`~sklearn_calmrl.MultiViewPPCA` (and
:class:`~sklearn_calmrl.CalMRLTransformer`) returns the posterior mean ``m_i``
of the shared latent ``b`` given the modalities that sample ``i`` has. Samples with different modalities land in the same space:
a digit seen only through its 6 morphological features and a digit seen
through all six modalities are placed where the model expects that digit. The
posterior of a sample with few modalities is wider, so its mean shrinks
towards the origin.

The first figure maps the latent means of the Multiple Features digits to two
dimensions with t-SNE (principal components in the quick mode used by the
tests), coloured by digit, with the marker telling how many modalities the
sample has. The second figure projects the latent means of Image Segmentation
on their two leading principal components, with the marker telling *which* of
its two modalities a sample has.
"""

import os

import matplotlib.pyplot as plt
import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from sklearn_calmrl import MultiViewPPCA
from sklearn_calmrl.datasets import (
    ampute_modalities,
    load_image_segmentation,
    load_multiple_features,
)

QUICK = os.environ.get("CALMRL_QUICK") == "1"  # shrink the example for CI


def project(Z, tsne=False):
    if tsne and not QUICK:  # t-SNE shows the classes better but takes ~10 s more
        return TSNE(n_components=2, init="pca", random_state=0).fit_transform(Z)
    return PCA(n_components=2, random_state=0).fit_transform(Z)


def scatter_classes(ax, P, target, marker):
    """2-D points coloured by class (up to 10 classes)."""
    ax.scatter(P[:, 0], P[:, 1], c=target, cmap="tab10", vmin=0, vmax=9, marker=marker, s=14, alpha=0.7)


def marker_handles(labels):
    """Legend entries for ``{label: marker}`` (black markers, no line)."""
    return [plt.Line2D([], [], linestyle="", marker=m, color="k", label=label) for label, m in labels.items()]


def zoom(ax, P):
    """Keep the bulk of the points in view (a few outliers may fall outside)."""
    for j, set_lim in enumerate([ax.set_xlim, ax.set_ylim]):
        lo, hi = np.percentile(P[:, j], [0.5, 99.5])
        pad = 0.05 * (hi - lo)
        set_lim(lo - pad, hi + pad)


def observed_mask(X, modalities):
    return np.stack(
        [~np.isnan(X[:, cols]).all(axis=1) for cols in modalities.values()], axis=1
    )


# %%
# Multiple Features: marker by how many modalities are observed
# --------------------------------------------------------------
mf = load_multiple_features()
X = ampute_modalities(mf.data, mf.modalities, rate=0.7, random_state=0)
n_observed = observed_mask(X, mf.modalities).sum(axis=1)

# The latent coordinates are plotted as points, so the observed-indicator
# columns that ``add_indicator=True`` (the default) appends to every output are
# switched off: they are 0/1 flags, not coordinates of the latent space, and a
# projection of both would mix the two.
est = MultiViewPPCA(mf.modalities, output="latent", add_indicator=False, random_state=0)
Z = est.fit_transform(X)
print(Z.shape, f"latent_dim_={est.latent_dim_}", est.get_feature_names_out()[:3])
tsne = not QUICK
P = project(Z, tsne=tsne)

markers = {1: "v", 2: "^", 3: "<", 4: ">", 5: "s", 6: "o"}
fig, ax = plt.subplots(figsize=(7, 5.5), layout="constrained")
for k, marker in markers.items():
    scatter_classes(ax, P[n_observed == k], mf.target[n_observed == k], marker)
for digit in range(10):  # label each class at its median position
    x, y = np.median(P[mf.target == digit], axis=0)
    ax.annotate(
        str(digit), (x, y), fontsize=14, weight="bold", ha="center", va="center"
    )
handles = marker_handles({f"{k} of 6 ({np.sum(n_observed == k)})": m for k, m in markers.items()})
ax.legend(handles=handles, title="modalities observed", loc="best", fontsize="small")
ax.set_title(
    "Multiple Features, 70% of samples miss modalities: latent posterior means"
)
ax.set_xlabel("t-SNE 1" if tsne else "component 1")
ax.set_ylabel("t-SNE 2" if tsne else "component 2")

# %%
# Image Segmentation: marker by which modality is observed
# --------------------------------------------------------
# Here the two modalities never have to appear together: half of the samples
# have only their ``shape`` features or only their ``color`` features.
seg = load_image_segmentation()
X = ampute_modalities(seg.data, seg.modalities, rate=0.5, random_state=0)
obs = observed_mask(X, seg.modalities)
which = np.where(
    obs.all(axis=1), "both", np.where(obs[:, 0], "shape only", "color only")
)

# As above, ``add_indicator=False``: only the latent coordinates are projected.
# Here the default ``latent_dim='auto'`` gives 17 dimensions for 18 features,
# and the two leading principal components of such a latent show little of
# its structure; a 4-dimensional latent is drawn instead.
est = MultiViewPPCA(
    seg.modalities, latent_dim=4, output="latent", add_indicator=False, random_state=0
)
Z = est.fit_transform(X)
print(Z.shape, f"latent_dim_={est.latent_dim_}")
P = project(Z)

fig, ax = plt.subplots(figsize=(7, 5.5), layout="constrained")
which_markers = {"both": "o", "shape only": "x", "color only": "^"}
for label, marker in which_markers.items():
    scatter_classes(ax, P[which == label], seg.target[which == label], marker)
handles = marker_handles({f"{label} ({np.sum(which == label)})": m for label, m in which_markers.items()})
handles += [
    plt.Line2D([], [], linestyle="", marker="o", color=plt.cm.tab10(c), label=name)
    for c, name in enumerate(seg.target_names)
]
ax.legend(handles=handles, loc="best", fontsize="small", ncol=2)
zoom(ax, P)
ax.set_title("Image Segmentation: latent posterior means")
ax.set_xlabel("component 1")
ax.set_ylabel("component 2")
plt.show()
