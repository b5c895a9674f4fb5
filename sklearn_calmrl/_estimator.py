"""The scikit-learn estimator :class:`CalMRLTransformer`: parameters, their checks and the fitted attributes.

Fitting, inference and persistence live in :mod:`sklearn_calmrl._base`; the loop in
:mod:`sklearn_calmrl._training`. Equation references ``[design x.y]`` point into
``doc/design.rst``.
"""

import numbers

from sklearn.utils._param_validation import Interval, StrOptions

from ._base import MultimodalBase
from ._training import TrainConfig

__all__ = ["CalMRLTransformer"]


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

    For the closed-form model alone (no encoders, fewer parameters) see
    :class:`MultiViewPPCA`; ``encoder='identity'`` here fits the same model.

    Parameters
    ----------
    modalities : None, list, 1-D ndarray or dict, default=None
        How the columns of ``X`` split into modalities: a list (or 1-D array) of block sizes
        (``[76, 216, 64]``), a list of column-index lists, slices or (for
        DataFrames) column-name lists, or a dict ``{name: columns}``. ``None``
        means one block of all columns. A list of per-modality arrays passed to
        ``fit`` sets the blocks itself (leave ``modalities=None``).
    encoder : {'linear', 'mlp', 'identity'}, default='linear'
        Per-modality encoder. Both torch encoders start from the closed-form
        model of the blocks: encoder m's outputs start as the posterior-mean map
        ``x^m -> E[b | x^m]``, so all modalities start in one coordinate system
        [design 7.1] (the MLP adds a zero-initialised residual branch).
        ``'identity'`` trains no network: the closed-form model of the
        standardized blocks alone, as :class:`MultiViewPPCA`; then only
        ``latent_dim``, ``n_components``, ``local_bandwidth``,
        ``add_indicator``, ``noise``, ``output``, ``standardize``,
        ``partial_nan``, ``em_max_iter``, ``em_tol``, ``device``, ``n_jobs``,
        ``random_state`` and ``verbose`` are used.
    latent_dim : int or 'auto', default='auto'
        Dimension ``q`` of the shared latent ``b``. A block may be narrower.
        ``'auto'``: ``clip(n_linking // 8, 4, 32)``, below the total width, where
        ``n_linking`` counts the training rows that observe at least two
        modalities (what estimates the cross-modality structure) [design 2.10].
    n_components : int or 'auto', default=1
        Number of components of the mixture of latent models [design 2.8], the
        model of the blocks and of the representations. ``'auto'``: the best of
        1, 2, 4, 8, 16 by held-out log-likelihood. More than one helps on data
        whose modalities are linked through discrete structure (clusters,
        classes); see doc/benchmarks.md.
    local_bandwidth : float or None, default=0.05
        Bandwidth ``h`` of the local correction of the imputed blocks [design 2.9]:
        the model's imputation plus the kernel-weighted residuals of the
        training rows nearest in the observed blocks (the limit of a mixture with
        one component per row). None switches it off (the model alone). With
        ``n_components > 1`` it corrects the mixture's imputations. Applies to
        the blocks of ``output='concat'`` and to :meth:`impute`.
        The fitted model stores those training rows (standardized; up to
        4096 of them) for the correction, so a pickle of it carries them:
        fit with ``local_bandwidth=None`` to share a model without them.
    add_indicator : bool, default=True
        Append one column per modality, 1 where the row observes it, to the
        output (as :class:`~sklearn.impute.SimpleImputer`'s ``add_indicator``):
        a downstream linear model can then weigh imputed rows differently.
    embed_dim : int or None, default=None
        Dimension ``d`` of each modality's representation (torch encoders).
        None means ``latent_dim``: every output is a shared latent coordinate.
        Larger values add outputs that start on the block's own principal
        axes (modality-private directions); smaller values are an error.
    hidden_layer_sizes : tuple of int, default=(128,)
        Hidden widths of the residual branch. Only used when ``encoder='mlp'``.
    alignment : {'pmrl', 'gram'}, default='pmrl'
        Alignment objective on the calibrated representations [design 4].
    calibrate : bool, default=True
        Align observed plus imputed representations (CalMRL). False aligns the
        observed modalities only (the paper's uncalibrated ablation).
    output : {'concat', 'embeddings', 'latent', 'anchor', 'mean'}, default='concat'
        What :meth:`transform` returns [design 5]. ``'concat'``: the ``k``
        calibrated representations side by side, then (torch encoders) the
        calibrated standardized blocks of the closed-form model, which keep the
        modality-specific detail a downstream model may need. ``'embeddings'``:
        the calibrated representations only. ``'latent'``: the latent posterior
        mean (``latent_dim`` columns). ``'anchor'``: the leading left singular
        vector of the calibrated representations. ``'mean'``: their normalized
        mean.
    noise : {'isotropic', 'diagonal', 'shared'}, default='isotropic'
        Noise model of the latent models: ``s_m^2 I`` per modality, a diagonal
        per modality (factor analysis), or one ``s^2`` for all [design 2.4].
    max_epochs : int, default=30
        Number of training epochs (the maximum with ``early_stopping``).
    batch_size : int, default=128
        Mini-batch size of the gradient steps.
    learning_rate : float, default=3e-3
        Adam learning rate of the encoders, at most 1e30 (larger steps overflow
        float32). A step that makes a weight non-finite stops training with a
        RuntimeWarning and keeps the last completed epoch.
    pair_weight : float or None, default=None
        Weight of a symmetric InfoNCE term over every pair of modalities observed
        together [design 4.6] (the tabular stand-in for the paper's matching
        loss). None means 0 with ``alignment='pmrl'`` and 1 with ``'gram'``,
        whose volume cannot tell a vector from its opposite.
    tau_intra, tau_inter : float, default=0.3, 0.1
        PMRL temperatures of the singular-value term (on singular values
        normalized to ``[0, 1]``) and of the inter-sample term. Only used when
        ``alignment='pmrl'`` (GRAM learns its own temperature).
    em_every : int, default=2
        Re-encode every row and refresh the latent model of the representations
        with 3 EM iterations every ``em_every`` epochs (every second epoch
        halves the closed-form time and changed no accuracy or retrieval on the
        tuning rows). 0 uses streaming EM instead: one M-step per epoch from the
        sufficient statistics summed over that epoch's mini-batches (no
        re-encoding, for large data) [design 3.1].
    em_max_iter : int, default=200
        Maximum EM steps of the closed-form fit of the blocks (the first model
        of the representations takes at most 20: the encoders move right after).
    em_tol : float, default=1e-3
        EM stops when the mean per-sample log-likelihood gains less than this.
    standardize : bool, default=True
        Standardize every feature on the training rows that observe it.
    partial_nan : {'mean', 'raise'}, default='mean'
        What to do with NaNs inside an otherwise observed block: fill with the
        feature's training mean, or raise a ValueError.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows before anything is fitted,
        monitor their cross-modal Recall@1 after every epoch and restore the
        best epoch (the start included) [design 3.3]. Off by default: on a few
        hundred rows the held-out rows cost the closed-form start more than
        stopping gains.
    validation_fraction : float, default=0.1
        Share of rows held out. Only used when ``early_stopping=True``.
    n_iter_no_change : int, default=10
        Epochs without an improvement of the validation score by at least
        ``tol`` before training stops. Only used when ``early_stopping=True``.
    tol : float, default=1e-4
        Minimum improvement of the validation score that counts. Only used
        when ``early_stopping=True``.
    device : {'auto', 'cpu', 'cuda'}, default='auto'
        Where torch computes; 'auto' uses CUDA when available.
    n_jobs : int, default=None
        Number of CPU threads torch may use while fitting and transforming.
        ``None`` means 1 unless in a :func:`joblib.parallel_config` context;
        ``-1`` means all processors. Either is capped at the cores the 1-minute
        load average leaves free (never below one): torch's threads stall
        beside another busy process, so more threads than free cores made fits
        several times slower (see doc/scaling.md, "Busy neighbour"). The caller's own
        torch thread setting is restored afterwards.
    random_state : int, RandomState instance or None, default=None
        Seeds every random choice of the fit, each from its own stream
        [design 3.5]: the encoders' initial weights, the early-stopping split
        and the epochs' shuffles, the latent models' initialisation, the
        mixture's start and component selection, the stored rows of the local
        correction, the cross-fitting of the imputation weights [design 2.11]
        and the rows of ``variance_explained_``. The caller's global torch and
        numpy RNG states are left unchanged.
    verbose : int, default=0
        1 prints a line per closed-form fit (EM steps, log-likelihood, time;
        and every 10 s of a long one) and one per epoch; 2 adds every EM step
        and the refresh of every epoch.

    Attributes
    ----------
    modalities_ : dict
        Resolved blocks, ``{name: column indices}``.
    feature_mean_ : ndarray of shape (n_features,)
        Mean of each feature over the training rows that observe its block
        (0 when ``standardize=False``).
    feature_scale_ : ndarray of shape (n_features,)
        Standard deviation used to scale each feature (1 when
        ``standardize=False`` or for constant features).
    components_ : list of ndarray of shape (representation_dim, latent_dim)
        ``W_m`` per modality of the latent model of the representations.
    means_ : list of ndarray of shape (representation_dim,)
        ``mu_m`` per modality.
    noise_variance_ : ndarray of shape (n_modalities,)
        ``s_m^2`` per modality (mean over dimensions for ``noise='diagonal'``).
    noise_variances_ : list of ndarray of shape (representation_dim,)
        Per-dimension noise variances. With ``n_components_ > 1`` these four
        attributes gain a leading component axis.
    weights_ : ndarray of shape (K,)
        Mixing weights of the ``K = n_components_`` components (``[1.]`` for one).
    variance_explained_ : ndarray of shape (n_modalities, latent_dim_)
        Share of each standardized block's variance explained by each latent
        dimension of the closed-form model of the blocks, as MOFA+ defines it
        (R^2 of ``W_m[:, j] m_ij`` against the block minus its mean, over the
        training rows that observe it; at most 20,000 rows, drawn by
        ``random_state``) [design 2.12]. ``partial_fit`` computes it on the
        first chunk.
    variance_explained_total_ : ndarray of shape (n_modalities,)
        The same for all latent dimensions together.
    n_components_ : int
        Number of components (resolved when ``n_components='auto'``).
    latent_dim_ : int
        Latent dimension (resolved when ``latent_dim='auto'``).
    encoders_ : torch.nn.ModuleList or None
        The fitted encoders (None for ``encoder='identity'``).
    n_iter_ : int
        Training epochs run by ``fit`` (EM steps for ``encoder='identity'``);
        ``partial_fit`` calls since the first one.
    loss_curve_ : list of float
        Mean alignment loss per epoch (per ``partial_fit`` call); empty for
        ``encoder='identity'``.
    loss_terms_curve_ : dict of str to list of float
        The same, term by term: ``'intra'`` and ``'inter'`` (PMRL) or ``'gram'``,
        and ``'pair'`` when ``pair_weight > 0``.
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
        Seconds spent in gradient steps (0 for ``encoder='identity'``).
    n_samples_seen_ : int
        Rows that observe at least one modality, in ``fit`` or summed over the
        ``partial_fit`` calls.
    device_ : str
        Device the model computes on (re-resolved when unpickled).
    n_features_in_ : int
        Number of columns of ``X``.
    feature_names_in_ : ndarray of str
        Defined when ``X`` has string column names.

    See Also
    --------
    MultiViewPPCA : The closed-form latent model alone (``encoder='identity'``).

    Examples
    --------
    >>> from sklearn_calmrl import CalMRLTransformer
    >>> from sklearn_calmrl.datasets import load_multiple_features, ampute_modalities
    >>> data = load_multiple_features()
    >>> X = ampute_modalities(data.data, data.modalities, rate=0.5, random_state=0)
    >>> est = CalMRLTransformer(data.modalities, encoder="identity", latent_dim=8, random_state=0)
    >>> est.fit_transform(X).shape
    (2000, 649)
    """

    _parameter_constraints: dict = {
        **MultimodalBase._shared_parameter_constraints,
        "encoder": [StrOptions({"linear", "mlp", "identity"})],
        "embed_dim": [None, Interval(numbers.Integral, 1, None, closed="left")],
        "hidden_layer_sizes": [tuple, list],
        "alignment": [StrOptions({"pmrl", "gram"})],
        "calibrate": ["boolean"],
        "output": [StrOptions({"concat", "embeddings", "latent", "anchor", "mean"})],
        "max_epochs": [Interval(numbers.Integral, 0, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate": [Interval(numbers.Real, 0, 1e30, closed="right")],
        "pair_weight": [None, Interval(numbers.Real, 0, None, closed="left")],
        "tau_intra": [Interval(numbers.Real, 0, None, closed="neither")],
        "tau_inter": [Interval(numbers.Real, 0, None, closed="neither")],
        "em_every": [Interval(numbers.Integral, 0, None, closed="left")],
        "em_max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "em_tol": [Interval(numbers.Real, 0, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        modalities=None,
        *,
        encoder="linear",
        latent_dim="auto",
        n_components=1,
        local_bandwidth=0.05,
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
        pair_weight=None,
        tau_intra=0.3,
        tau_inter=0.1,
        em_every=2,
        em_max_iter=200,
        em_tol=1e-3,
        standardize=True,
        partial_nan="mean",
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-4,
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
        self.pair_weight = pair_weight
        self.tau_intra = tau_intra
        self.tau_inter = tau_inter
        self.em_every = em_every
        self.em_max_iter = em_max_iter
        self.em_tol = em_tol
        self.standardize = standardize
        self.partial_nan = partial_nan
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.device = device
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    def _train_config(self):
        """The loop's configuration from the parameters, with the checks constraints cannot express."""
        hidden = tuple(self.hidden_layer_sizes)
        if self.encoder == "mlp" and not all(isinstance(h, numbers.Integral) and not isinstance(h, bool) and h >= 1 for h in hidden):
            raise ValueError(f"hidden_layer_sizes must be a tuple of positive integers (layer widths), got {self.hidden_layer_sizes!r}.")
        pair_weight = self.pair_weight if self.pair_weight is not None else (1.0 if self.alignment == "gram" else 0.0)
        return TrainConfig(
            encoder=self.encoder,
            embed_dim=self.embed_dim,
            hidden_layer_sizes=hidden,
            latent_dim=self.latent_dim,
            n_components=self.n_components,
            local_bandwidth=self.local_bandwidth,
            alignment=self.alignment,
            calibrate=self.calibrate,
            pair_weight=pair_weight,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            em_every=self.em_every,
            em_init_iter=self.em_max_iter,
            em_tol=self.em_tol,
            noise=self.noise,
            tau_intra=self.tau_intra,
            tau_inter=self.tau_inter,
            early_stopping=self.early_stopping,
            validation_fraction=self.validation_fraction,
            n_iter_no_change=self.n_iter_no_change,
            tol=self.tol,
            verbose=self.verbose,
        )

    def _set_fitted(self, blocks, standardization, trainer, n_rows):
        super()._set_fitted(blocks, standardization, trainer, n_rows)
        history = trainer.history
        self.loss_curve_ = list(history.loss_curve)
        self.loss_terms_curve_ = {name: list(values) for name, values in history.loss_terms.items()}
        self.validation_scores_ = list(history.validation_scores)
        self.best_validation_score_ = history.best_validation_score
        self.fit_time_em_ = history.time_em
        self.fit_time_gradient_ = history.time_gradient

    @property
    def encoders_(self):
        """The fitted torch encoders (None for ``encoder='identity'``)."""
        return self._trainer_.encoders
