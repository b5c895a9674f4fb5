"""
==========================================================
Variance explained per modality and latent dimension
==========================================================

Multi-omics users start from the variance each latent factor explains in each
modality (MOFA+'s most used plot). Both estimators give it after ``fit``:
``variance_explained_[m, j]`` is the share of modality ``m``'s variance that
latent dimension ``j`` reconstructs (R^2 over the training rows that observe
``m``), and ``variance_explained_total_[m]`` the share all dimensions
reconstruct together. A dimension that explains several modalities is what
they share; a dimension that explains one is private to it.

Here on the Multiple Features data (six descriptors of handwritten digits),
half of the rows missing some descriptors.
"""

import matplotlib.pyplot as plt

from sklearn_calmrl import MultiViewPPCA
from sklearn_calmrl.datasets import ampute_modalities, load_multiple_features
from sklearn_calmrl.plotting import plot_variance_explained

data = load_multiple_features()
X = ampute_modalities(data.data, data.modalities, rate=0.5, random_state=0)
ppca = MultiViewPPCA(data.modalities, latent_dim=10, random_state=0).fit(X)

ax = plot_variance_explained(ppca)
plt.show()

# %%
# The totals per modality, and which dimension explains most of each:
for name, total, row in zip(ppca.modalities_, ppca.variance_explained_total_, ppca.variance_explained_):
    print(f"{name:>4}: {100 * total:5.1f}% in all, most by dimension {row.argmax()} ({100 * row.max():.1f}%)")
