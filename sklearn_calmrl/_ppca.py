"""The scikit-learn estimator :class:`MultiViewPPCA`: the closed-form latent model alone.

Equation references ``[design x.y]`` point into ``doc/design.rst``.
"""

import numbers

import torch
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._base import MultimodalBase
from ._closed_form import ClosedFormModel
from ._docs import shared_docs
from ._latent import posterior

__all__ = ["MultiViewPPCA"]


@shared_docs
class MultiViewPPCA(MultimodalBase):
    """Multi-view probabilistic PCA with missing modalities, fitted in closed form (EM).

    Read more in the :ref:`User Guide <user_guide>`.

    The closed-form core of CalMRL without encoders: every modality's standardized
    block is ``x^m = W_m b + mu_m + e_m`` with one shared latent
    ``b ~ N(0, I_q)`` [design 2.1]. For each sample, whatever modalities it has,
    the posterior of ``b`` is computed in closed form [design 2.2] and its missing
    blocks are imputed as ``W_m E[b | observed] + mu_m`` [design 2.3]. Fast (no
    gradient steps), deterministic, and the closed-form model of the blocks that
    :class:`CalMRLTransformer` holds (``block_model_``) [design 2.13].

    Parameters
    ----------
    {modalities}
    {latent_dim}
    {n_components}
    {local_bandwidth}
    {max_block_width}
    {add_indicator}
    {noise}
    output : {'concat', 'latent'}, default='concat'
        What :meth:`transform` returns: the standardized blocks with the
        missing ones imputed, side by side (a block wider than
        ``max_block_width`` as its principal scores), or the latent posterior
        mean (``latent_dim`` columns).
    {standardize}
    {partial_nan}
    max_iter : int, default=200
        Maximum number of EM iterations.
    tol : float, default=1e-3
        EM stops when the mean per-sample log-likelihood gains less than this.
    {runtime}

    Attributes
    ----------
    {fitted_model}
    n_iter_ : int
        E-steps run by ``fit`` (passes over the rows; an extrapolation that
        SQUAREM rejects counts as one) [design 2.7]; ``partial_fit`` calls
        since the first.
    loglik_curve_ : list of float
        Mean observed-data log-likelihood before each M-step (non-decreasing).
    {fitted_input}

    See Also
    --------
    CalMRLTransformer : Adds per-modality torch encoders aligned on top of this model.
    sklearn.decomposition.FactorAnalysis : The single-block model with diagonal noise.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_calmrl import MultiViewPPCA
    >>> from sklearn_calmrl.datasets import load_multiple_features, ampute_modalities
    >>> data = load_multiple_features()
    >>> X = ampute_modalities(data.data, data.modalities, rate=0.5, random_state=0)
    >>> ppca = MultiViewPPCA(data.modalities, latent_dim=8, random_state=0).fit(X)
    >>> ppca.transform(X).shape, bool(np.isnan(ppca.impute(X)).any())
    ((2000, 655), False)
    """

    _parameter_constraints: dict = {
        **MultimodalBase._shared_parameter_constraints,
        "output": [StrOptions({"concat", "latent"})],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
    }

    def __init__(
        self, modalities=None, *, latent_dim="auto", n_components=1, local_bandwidth=0.3, max_block_width=256,
        add_indicator=True, noise="isotropic", output="concat", standardize=True, partial_nan="mean", max_iter=200,
        tol=1e-3, device="auto", n_jobs=None, random_state=None, verbose=0,
    ):
        self.modalities, self.latent_dim, self.n_components = modalities, latent_dim, n_components
        self.local_bandwidth, self.max_block_width, self.add_indicator = local_bandwidth, max_block_width, add_indicator
        self.noise, self.output, self.standardize, self.partial_nan = noise, output, standardize, partial_nan
        self.max_iter, self.tol = max_iter, tol
        self.device, self.n_jobs, self.random_state, self.verbose = device, n_jobs, random_state, verbose

    def _model(self, seed):
        """An unfitted :class:`~sklearn_calmrl._closed_form.ClosedFormModel` with this estimator's parameters."""
        return ClosedFormModel(
            latent_dim=self.latent_dim, n_components=self.n_components, noise=self.noise, max_iter=self.max_iter, tol=self.tol,
            local_bandwidth=self.local_bandwidth, max_block_width=self.max_block_width, seed=seed, verbose=self.verbose, label="closed-form model of the blocks",
        )

    def _fit(self, prep, incremental):
        """Fit the closed-form model on the prepared rows [design 2], or take one incremental step on a chunk
        [design 3.2] on a copy kept only when it succeeds."""
        first = not hasattr(self, "_model_")
        model = self._model(prep.seed) if first or not incremental else self._model_.clone()
        sample = dict(n_linking=prep.n_linking, fit_single=prep.fit_single)
        if not model.fit(prep.X, prep.observed, incremental=incremental, key=prep.key, warn_cap=not incremental, **sample):
            return False
        seen = self.n_samples_seen_ if incremental and model.n_iter > 1 else 0  # a fresh incremental run counts from 0
        self._model_ = model
        self._set_fitted(prep, seen + prep.n_rows)
        return True

    def _set_fitted(self, prep, n_rows):
        self._set_input_state(prep)
        model = self._model_
        self._set_model_state(model, model.n_iter, model.loglik_curve, n_rows)
        self.variance_explained_, self.variance_explained_total_ = (t.numpy() for t in model.variance_explained)  # [design 2.12]

    def _output_parts(self):
        """The parts of the output, in column order [design 5]: the completed blocks or the latent, then the indicators."""
        check_is_fitted(self)
        return ["blocks" if self.output == "concat" else "latent"] + (["indicator"] if self.add_indicator else [])

    def _inference_state(self, parts):
        return self._model_.completion(self.device_, corrected="blocks" in parts)

    def _output_piece(self, part, B, observed, state, done):
        if part == "blocks":
            return torch.cat(self._model_.compact(self._model_.complete(B, observed, state)[0], state), dim=1)  # [design 2.3, 2.9, 2.11, 5.1]
        return posterior(B, observed, state.params).mean  # "latent" [design 2.2]

    def _block_model(self):
        return self._model_

    def _scored_model(self):
        return self._model_.params.to(dtype=torch.float64, device=self.device_), lambda B, observed: B

    def _to_device(self, device):
        self._model_.to(device)
