"""Baselines for the benchmark that no maintained package provides cleanly.

- :class:`GeneralizedCCA`: multi-view CCA (MAXVAR generalized CCA) after mean
  imputation, in a few lines of numpy.
- :class:`MOFATransformer`: MOFA+ (``mofapy2``) fitted on the training rows, with a
  closed-form Gaussian posterior of the factors for new rows (optional: only when
  ``mofapy2`` is importable).

Both take the canonical input of the library: one 2-D ``X`` whose blocks of
columns are the modalities, a block that is all NaN in a row marking a missing
modality.
"""

import contextlib
import os

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from sklearn_calmrl._modalities import observed_mask, resolve_modalities

__all__ = ["GeneralizedCCA", "MOFATransformer", "block_standardize"]


def block_standardize(X, blocks, mean=None, scale=None):
    """Standardize each feature on the rows that observe it; return (Xs with NaN kept, mean, scale)."""
    X = np.asarray(X, dtype=np.float64)
    if mean is None:
        with np.errstate(all="ignore"), _quiet():
            mean = np.nanmean(X, axis=0)
            scale = np.nanstd(X, axis=0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        scale = np.where(np.isfinite(scale) & (scale > 1e-12), scale, 1.0)
    return (X - mean) / scale, mean, scale


@contextlib.contextmanager
def _quiet():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _inv_sqrt_psd(C, reg):
    w, V = np.linalg.eigh(C + reg * np.eye(C.shape[0]))
    return (V / np.sqrt(np.maximum(w, 1e-12))) @ V.T


class GeneralizedCCA(TransformerMixin, BaseEstimator):
    """Multi-view CCA (MAXVAR generalized CCA) after mean imputation.

    Each block is standardized on the training rows that observe it, missing
    blocks are filled with the mean (0 after standardization), each block is
    whitened with a ridge, ``C_m^{-1/2}`` with ``C_m = X_m^T X_m / n + reg I``,
    and the leading left singular vectors of the concatenated whitened blocks are
    the shared components ``G``. A new row is projected as
    ``g = sum_m x_m C_m^{-1/2} V_m S^{-1}`` (which reproduces ``G`` on the
    training rows); a missing block contributes nothing.

    Parameters
    ----------
    modalities : list or dict
        Column blocks, as for :class:`sklearn_calmrl.CalMRLTransformer`.
    n_components : int, default=64
        Number of shared components (capped by the total number of columns).
    reg : float, default=0.1
        Ridge added to each standardized block's covariance before whitening.
    """

    def __init__(self, modalities=None, *, n_components=64, reg=0.1):
        self.modalities = modalities
        self.n_components = n_components
        self.reg = reg

    def _blocks(self, X):
        Xs, _, _ = block_standardize(X, None, self.mean_, self.scale_)
        Xs = np.where(np.isnan(Xs), 0.0, Xs)
        return [Xs[:, idx] for _, idx in self.blocks_]

    def fit(self, X, y=None):
        X = validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64)
        self.blocks_ = resolve_modalities(self.modalities, X.shape[1])
        _, self.mean_, self.scale_ = block_standardize(X, self.blocks_)
        Xb = self._blocks(X)
        n = X.shape[0]
        whiten = [_inv_sqrt_psd(B.T @ B / n, self.reg) for B in Xb]
        H = np.hstack([B @ W for B, W in zip(Xb, whiten)])
        _, s, Vt = np.linalg.svd(H, full_matrices=False)
        c = int(min(self.n_components, np.sum(s > 1e-10 * s[0])))
        self.singular_values_ = s[:c]
        self.projections_ = []
        start = 0
        for B, W in zip(Xb, whiten):
            d = B.shape[1]
            self.projections_.append(W @ Vt[:c, start : start + d].T / s[:c])
            start += d
        self.n_components_ = c
        return self

    def transform(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64, reset=False)
        return sum(B @ P for B, P in zip(self._blocks(X), self.projections_))


class MOFATransformer(TransformerMixin, BaseEstimator):
    """MOFA+ (``mofapy2``) factors, with a closed-form posterior for new rows.

    ``fit`` standardizes each block on its observed training rows and trains
    MOFA+ (Gaussian likelihoods, missing blocks as NaN). ``transform`` does not
    reuse MOFA's training-row factors: for every row (training or new) it
    computes the Gaussian posterior mean of the factors given the observed blocks
    and the fitted loadings ``E[W_m]`` and noise precisions ``E[tau_m]``:
    ``V = (I + sum_m E[W_m^T T_m W_m])^-1``, ``z = V sum_m W_m^T T_m x_m``.

    Parameters
    ----------
    modalities : list or dict
    n_factors : int, default=20
    max_iter : int, default=1000
    random_state : int, default=0
    """

    def __init__(self, modalities=None, *, n_factors=20, max_iter=1000, random_state=0):
        self.modalities = modalities
        self.n_factors = n_factors
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X, y=None):
        from mofapy2.run.entry_point import entry_point

        X = validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64)
        self.blocks_ = resolve_modalities(self.modalities, X.shape[1])
        Xs, self.mean_, self.scale_ = block_standardize(X, self.blocks_)
        observed = observed_mask(X, self.blocks_)
        data = []
        for m, (_, idx) in enumerate(self.blocks_):
            B = Xs[:, idx]
            B[observed[:, m]] = np.nan_to_num(B[observed[:, m]])  # stray NaNs inside an observed block -> mean
            data.append([np.ascontiguousarray(B)])
        seed = int(self.random_state) if self.random_state is not None else 0
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), _quiet():
            ent = entry_point()
            ent.set_data_options(scale_views=False)
            ent.set_data_matrix(data, views_names=[name for name, _ in self.blocks_])
            ent.set_model_options(factors=int(min(self.n_factors, X.shape[1], X.shape[0] - 1)))
            ent.set_train_options(iter=self.max_iter, convergence_mode="fast", seed=seed, quiet=True, verbose=False)
            ent.build()
            ent.run()
        W = ent.model.nodes["W"].getExpectations()
        tau = ent.model.nodes["Tau"].getExpectations()
        self.components_, self.precisions_, self.prec_terms_ = [], [], []
        for m in range(len(self.blocks_)):
            E, E2 = np.asarray(W[m]["E"]), np.asarray(W[m]["E2"])
            t = np.asarray(tau[m]["E"], dtype=np.float64)
            t = t.reshape(-1, E.shape[0]).mean(axis=0)  # per feature
            var = np.maximum(E2 - E**2, 0.0)
            self.components_.append(E)
            self.precisions_.append(t)
            self.prec_terms_.append((E.T * t) @ E + np.diag(t @ var))
        self.n_factors_ = self.components_[0].shape[1]
        return self

    def _posterior(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64, reset=False)
        observed = observed_mask(X, self.blocks_)
        Xs, _, _ = block_standardize(X, None, self.mean_, self.scale_)
        Xs = np.where(np.isnan(Xs), 0.0, Xs)
        K = self.n_factors_
        Z = np.zeros((X.shape[0], K))
        patterns, inverse = np.unique(observed, axis=0, return_inverse=True)
        inverse = np.ravel(inverse)
        for p, pattern in enumerate(patterns):
            rows = np.flatnonzero(inverse == p)
            P = np.eye(K)
            rhs = np.zeros((rows.size, K))
            for m, (_, idx) in enumerate(self.blocks_):
                if pattern[m]:
                    P += self.prec_terms_[m]
                    rhs += (Xs[np.ix_(rows, idx)] * self.precisions_[m]) @ self.components_[m]
            Z[rows] = np.linalg.solve(P, rhs.T).T
        return X, observed, Xs, Z

    def transform(self, X):
        return self._posterior(X)[3]

    def impute(self, X):
        """X with each missing block replaced by its posterior mean reconstruction (original units)."""
        X, observed, Xs, Z = self._posterior(X)
        out = X.copy()
        for m, (_, idx) in enumerate(self.blocks_):
            miss = ~observed[:, m]
            out[np.ix_(miss, idx)] = (Z[miss] @ self.components_[m].T) * self.scale_[idx] + self.mean_[idx]
        return out
