"""The scikit-learn estimator :class:`MultiViewPPCA`: the closed-form latent model alone.

Equation references ``[design x.y]`` point into ``doc/design.rst``.
"""

import numbers

import torch
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._base import MultimodalBase, shared_docs
from ._closed_form import ClosedFormModel
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
    modalities : None, list, 1-D ndarray or dict, default=None
        How the columns of ``X`` split into modalities: a list (or 1-D array) of block sizes,
        a list of column-index lists, slices or (for DataFrames) column-name
        lists, or a dict ``{name: columns}``. ``None`` means one block.
    latent_dim : int or 'auto', default='auto'
        Dimension ``q`` of the shared latent. ``'auto'``:
        ``clip(n_linking // 8, 4, 32)``, below the total width, where
        ``n_linking`` counts the training rows that observe at least two
        modalities [design 2.10].
    n_components : int or 'auto', default=1
        Number of components of the mixture of such models [design 2.8].
        ``'auto'``: the best of 1, 2, 4, 8, 16 by held-out log-likelihood.
    local_bandwidth : float or None, default=0.05
        Bandwidth ``h`` of the local correction of the imputations [design 2.9]:
        the model's conditional mean plus the kernel-weighted residuals of the
        training rows nearest in the observed blocks (the limit of a mixture
        with one component per row; the training rows, at most 4096, are
        kept). None: the model alone. With ``n_components > 1`` it corrects
        the mixture's imputations, under the mixture's marginal covariance.
        The fitted model stores those training rows (standardized; up to
        4096 of them) for the correction, so a pickle of it carries them:
        fit with ``local_bandwidth=None`` to share a model without them.
    add_indicator : bool, default=True
        Append one column per modality, 1 where the row observes it, to the
        output of :meth:`transform`.
    noise : {'isotropic', 'diagonal'}, default='isotropic'
        ``s_m^2 I`` per modality or a diagonal per modality (factor analysis)
        [design 2.4]. ``'shared'`` (one ``s^2`` for all) is deprecated since 0.2
        and will be removed in 0.3.
    output : {'concat', 'latent'}, default='concat'
        What :meth:`transform` returns: the standardized blocks with the
        missing ones imputed, side by side (``n_features`` columns), or the
        latent posterior mean (``latent_dim`` columns).
    {standardize}
    {partial_nan}
    max_iter : int, default=200
        Maximum number of EM iterations.
    tol : float, default=1e-3
        EM stops when the mean per-sample log-likelihood gains less than this.
    {device}
    {n_jobs}
    random_state : int, RandomState instance or None, default=None
        Seeds every random choice of the fit, each from its own stream
        [design 3.5]: the initial loadings when there are too few complete rows
        for the PCA start [design 2.6], the mixture's start and component
        selection, the stored rows of the local correction, the cross-fitting
        of the imputation weights [design 2.11] and the rows of
        ``variance_explained_``.
    verbose : int, default=0
        1 prints a line per fit (EM steps, log-likelihood, time; and every
        10 s of a long one); 2 prints every EM step.

    Attributes
    ----------
    {variance_explained_}
    {variance_explained_total_}
    {modalities_}
    {feature_mean_}
    {feature_scale_}
    components_ : list of ndarray of shape (block_width, latent_dim)
        ``W_m`` per modality.
    means_ : list of ndarray of shape (block_width,)
        ``mu_m`` per modality.
    noise_variance_ : ndarray of shape (n_modalities,)
        ``s_m^2`` per modality (mean over features for ``noise='diagonal'``).
    noise_variances_ : list of ndarray of shape (block_width,)
        Per-feature noise variances. With ``n_components_ > 1`` these four
        attributes gain a leading component axis.
    {weights_}
    {n_components_}
    {latent_dim_}
    n_iter_ : int
        E-steps run by ``fit`` (passes over the rows; an extrapolation that
        SQUAREM rejects counts as one) [design 2.7]; ``partial_fit`` calls
        since the first.
    loglik_curve_ : list of float
        Mean observed-data log-likelihood before each M-step (non-decreasing).
    n_samples_seen_ : int
        Rows that observe at least one modality.
    device_ : str
        Device the model computes on.
    {n_features_in_}
    {feature_names_in_}

    See Also
    --------
    CalMRLTransformer : Adds per-modality torch encoders aligned on top of this model.
    sklearn.decomposition.FactorAnalysis : The single-block model with diagonal noise.

    Examples
    --------
    >>> from sklearn_calmrl import MultiViewPPCA
    >>> from sklearn_calmrl.datasets import load_multiple_features, ampute_modalities
    >>> data = load_multiple_features()
    >>> X = ampute_modalities(data.data, data.modalities, rate=0.5, random_state=0)
    >>> MultiViewPPCA(data.modalities, latent_dim=8, random_state=0).fit_transform(X).shape
    (2000, 649)
    """

    _parameter_constraints: dict = {
        **MultimodalBase._shared_parameter_constraints,
        "output": [StrOptions({"concat", "latent"})],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        modalities=None,
        *,
        latent_dim="auto",
        n_components=1,
        local_bandwidth=0.05,
        add_indicator=True,
        noise="isotropic",
        output="concat",
        standardize=True,
        partial_nan="mean",
        max_iter=200,
        tol=1e-3,
        device="auto",
        n_jobs=None,
        random_state=None,
        verbose=0,
    ):
        self.modalities = modalities
        self.latent_dim = latent_dim
        self.n_components = n_components
        self.local_bandwidth = local_bandwidth
        self.add_indicator = add_indicator
        self.noise = noise
        self.output = output
        self.standardize = standardize
        self.partial_nan = partial_nan
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    def _model(self, seed):
        """An unfitted :class:`~sklearn_calmrl._closed_form.ClosedFormModel` with this estimator's parameters."""
        return ClosedFormModel(
            latent_dim=self.latent_dim, n_components=self.n_components, noise=self.noise, max_iter=self.max_iter, tol=self.tol,
            local_bandwidth=self.local_bandwidth, seed=seed, verbose=self.verbose, label="closed-form model of the blocks",
        )

    def _fit_prepared(self, prep, **sample):
        """Fit the closed-form model on the prepared rows [design 2]; ``sample`` passes ``n_linking`` and
        ``fit_single`` when the rows are a sample (:func:`~sklearn_calmrl.distributed.fit_dask`)."""
        self._model_ = self._model(prep.seed).fit(prep.X, prep.observed, warn_cap=True, **sample)
        self._set_fitted(prep, prep.n_rows)

    def _partial_fit_prepared(self, prep):
        """One incremental step of the closed-form model on a chunk [design 3.2], on a copy kept only when it succeeds."""
        model = self._model_.clone() if hasattr(self, "_model_") else self._model(prep.seed)
        if not model.partial_fit(prep.X, prep.observed, prep.key, n_linking=prep.n_linking):
            return False
        seen = self.n_samples_seen_ if model.n_iter > 1 else 0  # a fresh incremental run counts from 0
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
            return torch.cat(self._model_.complete(B, observed, state)[0], dim=1)  # [design 2.3, 2.9, 2.11]
        return posterior(B, observed, state.params).mean  # "latent" [design 2.2]

    def _block_model(self):
        return self._model_

    def _scored_model(self):
        return self._model_.params.to(dtype=torch.float64, device=self.device_), lambda B, observed: B

    def _to_device(self, device):
        self._model_.to(device)
