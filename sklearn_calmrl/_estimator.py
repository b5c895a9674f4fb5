"""The scikit-learn estimator :class:`CalMRLTransformer`: parameters, their checks and the fitted attributes.

What both estimators share (validation, the preparation of every fit, chunked
inference, imputation, persistence) lives in :mod:`sklearn_calmrl._base`; the
closed-form model of the blocks is a :class:`~sklearn_calmrl.MultiViewPPCA`
(:mod:`sklearn_calmrl._ppca`); the training loop of the encoders is in
:mod:`sklearn_calmrl._training`. Equation references ``[design x.y]`` point into
``doc/design.rst``.
"""

import numbers
from typing import NamedTuple

import torch
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._alignment import ALIGNMENTS, resolve_alignment
from ._base import MultimodalBase, _shallow_copy
from ._docs import shared_docs
from ._latent import predictive_variance
from ._losses import leading_direction
from ._ppca import MultiViewPPCA
from ._runtime import threaded
from ._training import Trainer, encode, hold_out, represent

__all__ = ["CalMRLTransformer"]


@shared_docs
class CalMRLTransformer(MultimodalBase):
    """Calibrated multimodal representation learning with missing modalities (CalMRL).

    Read more in the :ref:`User Guide <user_guide>`.

    ``X`` holds one block of columns per modality; a row that is NaN across a
    whole block misses that modality. One encoder per modality maps each observed
    block into a shared space, a closed-form probabilistic latent model gives the
    posterior of a shared latent from whatever modalities a sample has and imputes
    the missing ones at the representation level, and training alternates that
    closed-form step (E/M) with gradient steps of an alignment loss (PMRL or GRAM)
    on observed plus imputed representations [design 3].

    The closed-form model of the blocks is a fitted :class:`MultiViewPPCA`
    (``block_model_``, with this estimator's ``modalities``, ``latent_dim``,
    ``n_components``, ``local_bandwidth``, ``max_block_width``, ``noise``, ``standardize``,
    ``partial_nan``, ``device``, ``n_jobs``, ``random_state`` and ``verbose``):
    the encoders start from it, the output's calibrated blocks and
    :meth:`impute` come from it. For that model alone use :class:`MultiViewPPCA`.

    Parameters
    ----------
    {modalities}
    encoder : {'linear', 'mlp'}, default='linear'
        Per-modality encoder. Both start from the closed-form model of the
        blocks (``block_model_``): encoder m's outputs start as the
        posterior-mean map ``x^m -> E[b | x^m]``, so all modalities start in
        one coordinate system [design 7.1] (the MLP adds a zero-initialised
        residual branch). ``'identity'`` (no encoder: the closed-form model
        alone) is deprecated since 0.2 and will be removed in 0.3: use
        :class:`MultiViewPPCA`, which is that model.
    {latent_dim}
    {n_components}
    {local_bandwidth}
    {max_block_width}
    {add_indicator}
    embed_dim : int or None, default=None
        Dimension ``d`` of each modality's representation (torch encoders).
        None means ``latent_dim``: every output is a shared latent coordinate.
        Larger values add outputs that start on the block's own principal
        axes (modality-private directions); smaller values are an error.
    hidden_layer_sizes : tuple of int, default=(128,)
        Hidden widths of the residual branch. Only used when ``encoder='mlp'``.
    alignment : {'pmrl', 'gram'}, PMRL or GRAM instance, default='pmrl'
        Alignment objective on the calibrated representations [design 4]:
        ``'pmrl'`` is :class:`PMRL` ``()``, ``'gram'`` is :class:`GRAM` ``()``.
        An instance sets the objective's own parameters (PMRL's temperatures,
        the weight of the pairwise InfoNCE term), reachable through
        ``set_params(alignment__tau_intra=...)`` and grid searches.
    calibrate : bool, default=True
        Align observed plus imputed representations (CalMRL). False aligns the
        observed modalities only (the paper's uncalibrated ablation).
    output : {'concat', 'embeddings', 'latent'}, default='concat'
        What :meth:`transform` returns [design 5]. ``'concat'``: the ``k``
        calibrated representations side by side, then the calibrated
        standardized blocks of ``block_model_``, which keep the
        modality-specific detail a downstream model may need.
        ``'embeddings'``: the calibrated representations only. ``'latent'``:
        the latent posterior mean of the model of the representations
        (``latent_dim`` columns). ``'anchor'`` and ``'mean'`` (the leading
        left singular vector and the normalized mean of the calibrated
        representations) are deprecated since 0.2 and will be removed in 0.3;
        :func:`~sklearn_calmrl.diagnostics.anchor_shift` computes the anchor.
    {noise}
    max_epochs : int, default=30
        Number of training epochs (the maximum with ``early_stopping``). An
        epoch passes over the training rows, or over 2048 of them drawn afresh
        when there are more, so training is a budget of samples seen whatever
        the rows [design 3.1].
    batch_size : int, default=128
        Mini-batch size of the gradient steps.
    learning_rate : float, default=3e-3
        Adam learning rate of the encoders, at most 1e30 (larger steps overflow
        float32). A step that makes a weight non-finite stops training with a
        RuntimeWarning and keeps the last completed epoch.
    {standardize}
    {partial_nan}
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows before anything is fitted,
        monitor their cross-modal Recall@1 after every epoch and restore the
        best epoch (the start included) [design 3.3]. Off by default: on a few
        hundred rows the held-out rows cost the closed-form start more than
        stopping gains.
    validation_fraction : float, default=0.1
        Share of rows held out. Only used when ``early_stopping=True``.
    n_iter_no_change : int, default=10
        Epochs without an improvement of the validation score before training
        stops. Only used when ``early_stopping=True``.
    {device}
    {n_jobs}
    {random_state}
    {verbose}

    Attributes
    ----------
    {fitted_model}
    block_model_ : MultiViewPPCA
        The fitted closed-form model of the standardized blocks (the encoders'
        start, the blocks of ``output='concat'``, :meth:`impute`).
    encoders_ : torch.nn.ModuleList
        The fitted encoders.
    n_iter_ : int
        Training epochs run by ``fit``; ``partial_fit`` calls since the first one.
    loss_curve_ : list of float
        Mean alignment loss per epoch (per ``partial_fit`` call); empty for
        ``encoder='identity'``.
    loss_terms_curve_ : dict of str to list of float
        The same, term by term: ``'intra'`` and ``'inter'`` (PMRL) or ``'gram'``,
        ``'pair'`` when the objective's ``pair_weight > 0`` and ``'match'`` when
        its ``matching_weight > 0``.
    validation_scores_ : list of float
        Cross-modal Recall@1 of the held-out rows after every epoch (higher is
        better) when ``early_stopping``, else empty.
    best_validation_score_ : float
        The best of them, the start included (NaN without ``early_stopping``).
    loglik_curve_ : list of float
        Mean observed-data log-likelihood after each closed-form step.
    fit_time_em_ : float
        Seconds spent in the closed-form steps (EM) of the fit.
    fit_time_gradient_ : float
        Seconds spent in gradient steps.
    {n_samples_seen_}
    {device_}
    {n_features_in_}
    {feature_names_in_}

    See Also
    --------
    MultiViewPPCA : The closed-form latent model alone (``block_model_``).
    PMRL, GRAM : The alignment objectives and their parameters.

    Examples
    --------
    >>> from sklearn_calmrl import CalMRLTransformer
    >>> from sklearn_calmrl.datasets import load_multiple_features, ampute_modalities
    >>> data = load_multiple_features()
    >>> X = ampute_modalities(data.data, data.modalities, rate=0.5, random_state=0)
    >>> est = CalMRLTransformer(data.modalities, latent_dim=8, max_epochs=2, random_state=0)
    >>> est.fit_transform(X).shape
    (2000, 697)
    """

    _parameter_constraints: dict = {
        **MultimodalBase._shared_parameter_constraints,
        "encoder": [StrOptions({"linear", "mlp", "identity"})],
        "embed_dim": [None, Interval(numbers.Integral, 1, None, closed="left")],
        "hidden_layer_sizes": [tuple, list],
        "alignment": [StrOptions(set(ALIGNMENTS)), *ALIGNMENTS.values()],
        "calibrate": ["boolean"],
        "output": [StrOptions({"concat", "embeddings", "latent", "anchor", "mean"})],
        "max_epochs": [Interval(numbers.Integral, 0, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate": [Interval(numbers.Real, 0, 1e30, closed="right")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        modalities=None,
        *,
        encoder="linear",
        latent_dim="auto",
        n_components=1,
        local_bandwidth=0.3,
        max_block_width=96,
        add_indicator=True,
        embed_dim=None,
        hidden_layer_sizes=(128,),
        alignment="pmrl",
        calibrate=True,
        output="concat",
        noise="isotropic",
        max_epochs=30,
        batch_size=128,
        learning_rate=3e-3,
        standardize=True,
        partial_nan="mean",
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        device="auto",
        n_jobs=None,
        random_state=None,
        verbose=0,
    ):
        self.modalities = modalities
        self.encoder = encoder
        self.latent_dim = latent_dim
        self.n_components = n_components
        self.local_bandwidth = local_bandwidth
        self.max_block_width = max_block_width
        self.add_indicator = add_indicator
        self.embed_dim = embed_dim
        self.hidden_layer_sizes = hidden_layer_sizes
        self.alignment = alignment
        self.calibrate = calibrate
        self.output = output
        self.noise = noise
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.standardize = standardize
        self.partial_nan = partial_nan
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.device = device
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ parameters
    _deprecated_values: dict = {
        **MultimodalBase._deprecated_values,
        "encoder": {
            "identity": "it fits the closed-form model alone, which is MultiViewPPCA (with the same modalities, latent_dim, "
            "n_components, local_bandwidth, noise, output and add_indicator)"
        },
        "output": dict.fromkeys(
            ("anchor", "mean"), "use 'concat', 'embeddings' or 'latent' (sklearn_calmrl.diagnostics.anchor_shift computes the anchor)"
        ),
    }

    def _check_parameters(self, blocks):
        super()._check_parameters(blocks)
        self._check_output([len(idx) for _, idx in blocks], self.encoder == "identity")
        hidden = tuple(self.hidden_layer_sizes)
        if self.encoder == "mlp" and not all(isinstance(h, numbers.Integral) and not isinstance(h, bool) and h >= 1 for h in hidden):
            raise ValueError(f"hidden_layer_sizes must be a tuple of positive integers (layer widths), got {self.hidden_layer_sizes!r}.")
        self._alignment()

    def _check_output(self, sizes, identity):
        """``output`` against the blocks' ``sizes`` (checked at fit and at every transform)."""
        if identity and self.output in ("anchor", "mean") and len(set(sizes)) > 1:
            raise ValueError(
                f"output={self.output!r} needs representations of equal size, but encoder='identity' keeps the "
                f"raw blocks (sizes {list(sizes)}); use output='concat' or 'latent'."
            )

    def _alignment(self):
        """The alignment objective with its parameters (:class:`PMRL` or :class:`GRAM`), validated [design 4]."""
        return resolve_alignment(self.alignment)

    def _block_estimator(self):
        """The unfitted :class:`MultiViewPPCA` of the blocks, with this estimator's shared parameters."""
        return MultiViewPPCA(
            self.modalities, latent_dim=self.latent_dim, n_components=self.n_components, local_bandwidth=self.local_bandwidth,
            max_block_width=self.max_block_width, add_indicator=False, noise=self.noise, standardize=self.standardize, partial_nan=self.partial_nan,
            device=self.device, n_jobs=self.n_jobs, random_state=self.random_state, verbose=self.verbose,
        )

    @property
    def _identity(self):
        return self._trainer_ is None

    # ------------------------------------------------------------------ fit
    def _fit_prepared(self, prep):
        """The closed-form model of the blocks on the training rows, then the encoders [design 3, 7.1].

        With ``early_stopping`` the held-out rows are drawn before anything is fitted [design 3.3].
        """
        train, validation = prep, None
        if self.encoder != "identity" and self.early_stopping:
            train, validation = hold_out(prep, self.validation_fraction)
        self.block_model_ = self._block_estimator()
        self.block_model_._fit_prepared(train)
        self._trainer_ = None
        if self.encoder != "identity":
            self._trainer_ = Trainer(device=prep.device, seed=prep.seed).fit(self, train.X, train.observed, self.block_model_._model_, validation)
        self._set_fitted(prep, prep.n_rows)

    def _partial_fit_prepared(self, prep):
        """One incremental step of the model of the blocks, then of the encoders, on copies kept only when both
        succeed [design 3.2]."""
        first = not hasattr(self, "block_model_")
        block = self._block_estimator() if first else _shallow_copy(self.block_model_)
        if not block._partial_fit_prepared(prep):
            return False
        trainer = None
        if self.encoder != "identity":
            trainer = Trainer(device=prep.device, seed=prep.seed) if first else self._trainer_.clone()
            if not trainer.partial_fit(self, prep.X, prep.observed, prep.key, block._model_):
                return False
        n_iter = block.n_iter_ if trainer is None else trainer.history.n_iter
        seen = self.n_samples_seen_ if n_iter > 1 else 0  # a fresh incremental run counts from 0
        self.block_model_, self._trainer_ = block, trainer
        self._set_fitted(prep, seen + prep.n_rows)
        return True

    def _set_fitted(self, prep, n_rows):
        """Every fitted attribute, from the block model and the trainer."""
        self._set_input_state(prep)
        block = self.block_model_
        self.variance_explained_, self.variance_explained_total_ = block.variance_explained_, block.variance_explained_total_
        if self._identity:  # deprecated: the closed-form model alone
            self._set_model_state(block._model_, block.n_iter_, block.loglik_curve_, n_rows)
            self.loss_curve_, self.loss_terms_curve_, self.validation_scores_ = [], {}, []
            self.best_validation_score_, self.fit_time_em_, self.fit_time_gradient_ = float("nan"), block._model_.time_em, 0.0
            return
        history = self._trainer_.history
        self._set_model_state(self._trainer_.model, history.n_iter, history.loglik_curve, n_rows)
        self.loss_curve_ = list(history.loss_curve)
        self.loss_terms_curve_ = {name: list(values) for name, values in history.loss_terms.items()}
        self.validation_scores_ = list(history.validation_scores)
        self.best_validation_score_ = history.best_validation_score
        self.fit_time_em_ = block._model_.time_em + history.time_em
        self.fit_time_gradient_ = history.time_gradient

    # ------------------------------------------------------------------ inference
    def _output_parts(self):
        """The parts of the output, in column order: the one definition that :meth:`transform`,
        :meth:`get_feature_names_out` and :func:`~sklearn_calmrl.distributed.transform_dask` read [design 5].

        ``'embeddings'`` are the calibrated representations, ``'blocks'`` the calibrated standardized blocks of
        ``block_model_`` (the representations themselves for the deprecated ``encoder='identity'``), ``'latent'``,
        ``'anchor'`` and ``'mean'`` as ``output`` says, ``'indicator'`` the observed-modality columns.
        """
        check_is_fitted(self)
        self._check_output([len(i) for i in self.modalities_.values()], self._identity)
        if self.output == "concat":
            parts = ["blocks"] if self._identity else ["embeddings", "blocks"]
        elif self.output == "embeddings":
            parts = ["blocks"] if self._identity else ["embeddings"]
        else:
            parts = [self.output]
        return parts + (["indicator"] if self.add_indicator else [])

    def _inference_state(self, parts):
        """What every chunk of one inference call reads: the completion state of the block model (when a part needs
        the blocks), the float64 model of the representations and a float64 copy of the encoders (batch-size-
        independent rows)."""
        needs_blocks = "blocks" in parts or (self._identity and self.output != "latent")
        blocks = self.block_model_._model_.completion(self.device_, corrected=needs_blocks)
        if self._identity:
            return _State(blocks, blocks.params, None)
        return _State(blocks, *self._trainer_.inference_state(self.device_))

    def _representations(self, B, observed, state, done):
        """The calibrated representations of a chunk and their posterior, computed once per chunk [design 2.3]; for
        the deprecated ``encoder='identity'`` the completed blocks and their posterior."""
        if "representations" not in done:
            if self._identity:
                done["representations"] = self.block_model_._model_.complete(B, observed, state.blocks)[:2]
            else:
                done["representations"] = represent(B, observed, state.params, state.encoders)
        return done["representations"]

    def _output_piece(self, part, B, observed, state, done):
        if part == "blocks":
            model = self.block_model_._model_
            return torch.cat(model.compact(model.complete(B, observed, state.blocks)[0], state.blocks), dim=1)  # [design 2.3, 2.9, 2.11, 5.1]
        Zhat, post = self._representations(B, observed, state, done)
        if part == "latent":
            return post.mean
        if part == "embeddings":
            return torch.cat(Zhat, dim=1)
        if part == "mean":
            return torch.nn.functional.normalize(torch.stack(Zhat, dim=1).mean(dim=1), dim=1)
        return leading_direction(torch.stack(Zhat, dim=1), eps=0.0)[0]  # "anchor"

    def _part_names(self, part, inputs):
        if part == "embeddings":
            return [f"{name}_emb{j}" for name, w in zip(self.modalities_, self.components_) for j in range(w.shape[-2])]
        if part in ("anchor", "mean"):
            return [f"{part}{j}" for j in range(self.components_[0].shape[-2])]
        return super()._part_names(part, inputs)

    def _block_model(self):
        return self.block_model_._model_

    def _scored_model(self):
        state = self._inference_state(["latent"])
        return state.params, (lambda B, observed: B) if self._identity else (lambda B, observed: encode(state.encoders, B, observed))

    def _to_device(self, device):
        if self._trainer_ is not None:
            self._trainer_.to(device)

    @threaded
    def impute_representations(self, X, *, return_variance=False):
        """Per-modality representations with missing modalities imputed [design 2.3].

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or list of arrays
        return_variance : bool, default=False
            Also return the diagonal of the predictive covariance
            ``W_m V_O W_m^T + s_m^2 I`` (0 for observed modalities).

        Returns
        -------
        representations : dict
            ``{modality name: ndarray (n_samples, representation_dim)}``.
        variances : dict
            Same layout; only when ``return_variance``.
        """
        X, blocks, observed = self._inference_input(X)
        if self._identity:
            reps, variances = self._completed_blocks(X, blocks, observed, self.block_model_._model_)
        else:
            state = self._inference_state(["embeddings"])

            def compute(B, obs):
                Zhat, post = self._representations(B, obs, state, {})
                return Zhat, [torch.where(obs[:, m, None], 0.0, v) for m, v in enumerate(predictive_variance(post, state.params))]

            reps, variances = self._by_modality(X, blocks, observed, compute)
        reps = dict(zip(self.modalities_, reps))
        return (reps, dict(zip(self.modalities_, variances))) if return_variance else reps

    @property
    def encoders_(self):
        """The fitted torch encoders (None for the deprecated ``encoder='identity'``)."""
        return None if self._trainer_ is None else self._trainer_.encoders


class _State(NamedTuple):
    """What the chunks of one inference call of :class:`CalMRLTransformer` share."""

    blocks: object  # the block model's Completion [design 2.9, 2.11]
    params: object  # the float64 latent model of the representations (of the blocks for encoder='identity')
    encoders: object  # a float64 copy of the encoders, or None

