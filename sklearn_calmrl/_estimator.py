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
from ._callbacks import EarlyStopping, resolve_early_stopping
from ._docs import shared_docs
from ._encoders import ENCODERS, resolve_encoder
from ._latent import predictive_variance
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
    encoder : {'linear', 'mlp'}, Linear or MLP instance, default='linear'
        Per-modality encoder [design 7.1]: ``'linear'`` is :class:`Linear`
        ``()``, ``'mlp'`` is :class:`MLP` ``()``. Both start from the
        closed-form model of the blocks (``block_model_``): encoder m's outputs
        start as the posterior-mean map ``x^m -> E[b | x^m]``, so all
        modalities start in one coordinate system (the MLP adds a
        zero-initialised residual branch). An instance sets the encoder's own
        parameters (the MLP's hidden widths), reachable through
        ``set_params(encoder__hidden_layer_sizes=...)`` and grid searches.
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
        modality-specific detail a downstream model may need (a block wider
        than ``max_block_width`` as its principal scores ``<modality>_pc<j>``).
        ``'embeddings'``: the calibrated representations only. ``'latent'``:
        the latent posterior mean of the model of the representations
        (``latent_dim`` columns).
    {noise}
    max_epochs : int, default=30
        Number of training epochs (the maximum with ``early_stopping``). An
        epoch passes over the training rows, or over 2048 of them drawn afresh
        when there are more, so training is a budget of samples seen whatever
        the rows [design 3.1]. ``partial_fit`` runs one pass over its chunk
        per call, as scikit-learn's MLP runs one iteration.
    batch_size : int, default=128
        Mini-batch size of the gradient steps.
    learning_rate : float, default=3e-3
        Adam learning rate of the encoders, at most 1e30 (larger steps overflow
        float32). A step that makes a weight non-finite stops training with a
        RuntimeWarning and keeps the last completed epoch.
    {standardize}
    {partial_nan}
    early_stopping : bool or EarlyStopping instance, default=False
        ``True`` is :class:`EarlyStopping` ``()``: ``fit`` holds out
        ``validation_fraction`` of the rows before anything is fitted, monitors
        their cross-modal Recall@1 after every epoch, stops after
        ``n_iter_no_change`` epochs without a gain of ``tol`` and restores the
        best epoch (the start included) [design 3.3]; an instance sets those
        three, reachable through ``set_params(early_stopping__tol=...)``.
        ``partial_fit`` trains on every row. Off by default: on a few hundred
        rows the held-out rows cost the closed-form start more than stopping
        gains.
    {runtime}

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
        Mean alignment loss per epoch (per ``partial_fit`` call).
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
    {fitted_input}

    See Also
    --------
    MultiViewPPCA : The closed-form latent model alone (``block_model_``).
    Linear, MLP : The encoders and their parameters.
    PMRL, GRAM : The alignment objectives and their parameters.
    EarlyStopping : Early stopping and its parameters.

    Examples
    --------
    >>> from sklearn_calmrl import CalMRLTransformer
    >>> from sklearn_calmrl.datasets import load_multiple_features, ampute_modalities
    >>> data = load_multiple_features()
    >>> X = ampute_modalities(data.data, data.modalities, rate=0.5, random_state=0)
    >>> est = CalMRLTransformer(data.modalities, latent_dim=8, max_epochs=2, random_state=0)
    >>> est.fit_transform(X).shape
    (2000, 703)
    """

    _parameter_constraints: dict = {
        **MultimodalBase._shared_parameter_constraints,
        "encoder": [StrOptions(set(ENCODERS)), *ENCODERS.values()],
        "embed_dim": [None, Interval(numbers.Integral, 1, None, closed="left")],
        "alignment": [StrOptions(set(ALIGNMENTS)), *ALIGNMENTS.values()],
        "calibrate": ["boolean"],
        "output": [StrOptions({"concat", "embeddings", "latent"})],
        "max_epochs": [Interval(numbers.Integral, 0, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate": [Interval(numbers.Real, 0, 1e30, closed="right")],
        "early_stopping": ["boolean", EarlyStopping],
    }

    def __init__(
        self, modalities=None, *, encoder="linear", latent_dim="auto", n_components=1, local_bandwidth=0.3,
        max_block_width=256, add_indicator=True, embed_dim=None, alignment="pmrl", calibrate=True, output="concat",
        noise="isotropic", max_epochs=30, batch_size=128, learning_rate=3e-3, standardize=True, partial_nan="mean",
        early_stopping=False, device="auto", n_jobs=None, random_state=None, verbose=0,
    ):
        self.modalities, self.encoder, self.latent_dim, self.n_components = modalities, encoder, latent_dim, n_components
        self.local_bandwidth, self.max_block_width, self.add_indicator = local_bandwidth, max_block_width, add_indicator
        self.embed_dim, self.alignment, self.calibrate, self.output = embed_dim, alignment, calibrate, output
        self.noise, self.max_epochs, self.batch_size, self.learning_rate = noise, max_epochs, batch_size, learning_rate
        self.standardize, self.partial_nan, self.early_stopping = standardize, partial_nan, early_stopping
        self.device, self.n_jobs, self.random_state, self.verbose = device, n_jobs, random_state, verbose

    # ------------------------------------------------------------------ parameters
    def _encoder(self):
        """The encoder with its parameters (:class:`Linear` or :class:`MLP`), validated [design 7.1]."""
        return resolve_encoder(self.encoder)

    def _alignment(self):
        """The alignment objective with its parameters (:class:`PMRL` or :class:`GRAM`), validated [design 4]."""
        return resolve_alignment(self.alignment)

    def _early_stopping(self):
        """Early stopping with its parameters (:class:`EarlyStopping`, validated), or None [design 3.3]."""
        return resolve_early_stopping(self.early_stopping)

    def _block_estimator(self):
        """The unfitted :class:`MultiViewPPCA` of the blocks, with this estimator's shared parameters (those of
        ``MultimodalBase._shared_parameter_constraints``), no indicator columns and its own defaults for the rest."""
        shared = {name: getattr(self, name) for name in MultimodalBase._shared_parameter_constraints}
        return MultiViewPPCA(**{**shared, "add_indicator": False})

    # ------------------------------------------------------------------ fit
    def _fit(self, prep, incremental):
        """The closed-form model of the blocks, then the encoders [design 3, 7.1]: a fit on the prepared rows, or
        one incremental step of both on a chunk [design 3.2], on copies kept only when both succeed.

        The parameter objects are validated first; with ``early_stopping`` a fit
        holds its validation rows out before anything is fitted [design 3.3].
        """
        first = not hasattr(self, "block_model_")
        if first:  # the parameter objects are validated before anything is fitted
            self._encoder()
            self._alignment()
        stopping = None if incremental else self._early_stopping()
        train, validation = prep, None
        if stopping is not None:
            train, validation = hold_out(prep, stopping.validation_fraction)
        block = self._block_estimator() if first else _shallow_copy(self.block_model_)
        if not block._fit(train, incremental):
            return False
        trainer = Trainer(device=prep.device, seed=prep.seed) if first else self._trainer_.clone()
        fitted = trainer._fit(
            self, train.X, train.observed, block._block_model(), incremental=incremental, key=prep.key, early_stopping=stopping, validation=validation
        )
        if not fitted:
            return False
        seen = self.n_samples_seen_ if incremental and trainer.history.n_iter > 1 else 0  # a fresh incremental run counts from 0
        self.block_model_, self._trainer_ = block, trainer
        self._set_fitted(prep, seen + prep.n_rows)
        return True

    def _set_fitted(self, prep, n_rows):
        """Every fitted attribute, from the block model and the trainer."""
        self._set_input_state(prep)
        block, history = self.block_model_, self._trainer_.history
        self.variance_explained_, self.variance_explained_total_ = block.variance_explained_, block.variance_explained_total_
        self._set_model_state(self._trainer_.model, history.n_iter, history.loglik_curve, n_rows)
        self.loss_curve_ = list(history.loss_curve)
        self.loss_terms_curve_ = {name: list(values) for name, values in history.loss_terms.items()}
        self.validation_scores_ = list(history.validation_scores)
        self.best_validation_score_ = history.best_validation_score
        self.fit_time_em_ = block._block_model().time_em + history.time_em
        self.fit_time_gradient_ = history.time_gradient

    # ------------------------------------------------------------------ inference
    def _output_parts(self):
        """``'embeddings'`` (the calibrated representations), ``'blocks'`` (the calibrated standardized blocks of
        ``block_model_``) or ``'latent'``, as ``output`` says, then ``'indicator'`` (the observed modalities)."""
        check_is_fitted(self)
        parts = {"concat": ["embeddings", "blocks"], "embeddings": ["embeddings"], "latent": ["latent"]}[self.output]
        return parts + (["indicator"] if self.add_indicator else [])

    def _inference_state(self, parts):
        """The block model's completion state (corrected when a part needs the blocks), the float64 model of the
        representations and a float64 copy of the encoders (batch-size-independent rows)."""
        return _State(self.block_model_._inference_state(parts), *self._trainer_.inference_state(self.device_))

    def _representations(self, B, observed, state, done):
        """The calibrated representations of a chunk and their posterior, computed once per chunk [design 2.3]."""
        if "representations" not in done:
            done["representations"] = represent(B, observed, state.params, state.encoders)
        return done["representations"]

    def _output_piece(self, part, B, observed, state, done):
        if part == "blocks":
            return self.block_model_._output_piece(part, B, observed, state.blocks, done)
        Zhat, post = self._representations(B, observed, state, done)
        return post.mean if part == "latent" else torch.cat(Zhat, dim=1)  # "latent" or "embeddings"

    def _part_names(self, part, inputs):
        if part == "embeddings":
            return [f"{name}_emb{j}" for name, w in zip(self.modalities_, self.components_) for j in range(w.shape[-2])]
        return super()._part_names(part, inputs)

    def _block_model(self):
        return self.block_model_._block_model()

    def _scored_model(self):
        state = self._inference_state(["latent"])
        return state.params, lambda B, observed: encode(state.encoders, B, observed)

    def _to_device(self, device):
        self.block_model_._place(device)
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
        state = self._inference_state(["embeddings"])

        def compute(B, obs):
            Zhat, post = self._representations(B, obs, state, {})
            return Zhat, [torch.where(obs[:, m, None], 0.0, v) for m, v in enumerate(predictive_variance(post, state.params))]

        reps, variances = self._by_modality(X, blocks, observed, compute)
        reps = dict(zip(self.modalities_, reps))
        return (reps, dict(zip(self.modalities_, variances))) if return_variance else reps

    @property
    def encoders_(self):
        """The fitted torch encoders."""
        return self._trainer_.encoders


class _State(NamedTuple):
    """What the chunks of one inference call of :class:`CalMRLTransformer` share."""

    blocks: object  # the block model's Completion [design 2.9, 2.11]
    params: object  # the float64 latent model of the representations
    encoders: object  # a float64 copy of the encoders

