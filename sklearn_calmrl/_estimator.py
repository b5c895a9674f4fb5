"""The scikit-learn estimator :class:`CalMRLTransformer`: parameters, their checks and the fitted attributes.

Fitting, inference and persistence live in :mod:`sklearn_calmrl._base`; the loop in
:mod:`sklearn_calmrl._training`. Equation references ``[design x.y]`` point into
``doc/design.rst``.
"""

import numbers

from sklearn.utils._param_validation import Interval, StrOptions

from ._base import MultimodalBase
from ._latent import NOISE_MODELS
from ._training import TrainConfig

__all__ = ["CalMRLTransformer"]


class CalMRLTransformer(MultimodalBase):
    """Calibrated multimodal representation learning with missing modalities (CalMRL).

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
    modalities : None, list or dict, default=None
        How the columns of ``X`` split into modalities: a list of block sizes
        (``[76, 216, 64]``), a list of column-index lists, slices or (for
        DataFrames) column-name lists, or a dict ``{name: columns}``. ``None``
        means one block of all columns. A list of per-modality arrays passed to
        ``fit`` sets the blocks itself (leave ``modalities=None``).
    encoder : {'linear', 'mlp', 'identity'}, default='linear'
        Per-modality encoder. Both torch encoders start from a closed-form
        linear map (see ``encoder_init``; the MLP adds a zero-initialised
        residual branch). ``'identity'`` trains no network: the closed-form
        multi-view probabilistic PCA on the standardized blocks, as
        :class:`MultiViewPPCA`; then only ``latent_dim``, ``noise``, ``output``,
        ``standardize``, ``partial_nan``, ``em_max_iter``, ``em_tol``,
        ``device``, ``random_state`` and ``verbose`` are used.
    latent_dim : int, default=32
        Dimension ``q`` of the shared latent ``b``.
    embed_dim : int, default=64
        Dimension ``d`` of each modality's representation. Only used by the
        torch encoders (``'identity'`` keeps each block's own width).
    hidden_layer_sizes : tuple of int, default=(128,)
        Hidden widths of the residual branch. Only used when ``encoder='mlp'``.
    encoder_init : {'ppca', 'pca'}, default='ppca'
        How the torch encoders start. 'ppca' fits the closed-form model of
        ``encoder='identity'`` first and sets the first ``latent_dim`` outputs of
        encoder m to the posterior-mean map ``x^m -> E[b | x^m]``, so all
        modalities start aligned in one latent coordinate system; the other
        outputs (and all of them with 'pca') project on the block's principal
        axes [design 7].
    alignment : {'pmrl', 'gram'}, default='pmrl'
        Alignment objective on the calibrated representations [design 4].
    calibrate : bool, default=True
        Align observed plus imputed representations (CalMRL). False aligns the
        observed modalities only (the paper's uncalibrated ablation).
    output : {'concat', 'latent', 'anchor', 'mean'}, default='concat'
        What :meth:`transform` returns [design 5]: the ``k`` calibrated
        representations side by side, the latent posterior mean ``m_i``
        (``latent_dim`` columns), the leading left singular vector ``u_i`` of the
        calibrated columns, or their normalized mean.
    noise : {'isotropic', 'diagonal', 'shared'}, default='isotropic'
        Noise model of the latent model: ``s_m^2 I`` per modality, a diagonal per
        modality (factor analysis), or one ``s^2`` for all [design 2.4].
    max_epochs : int, default=20
        Maximum number of training epochs.
    batch_size : int, default=256
        Mini-batch size of the gradient steps.
    learning_rate : float, default=1e-4
        Adam learning rate of the encoders, at most 1e30 (larger steps overflow
        float32). A step that makes a weight non-finite stops training with a
        RuntimeWarning and keeps the last completed epoch.
    em_every : int, default=1
        Re-encode every row and refresh the latent model with
        ``em_refresh_iter`` EM iterations every ``em_every`` epochs. 0 uses
        streaming EM instead: one M-step per epoch from the sufficient
        statistics summed over that epoch's mini-batches (no re-encoding, for
        large data) [design 3].
    em_refresh_iter : int, default=3
        EM iterations per refresh (``em_every >= 1``).
    em_max_iter : int, default=200
        Maximum EM iterations of the initial closed-form fit (the only fit of
        ``encoder='identity'``).
    em_tol : float, default=1e-3
        EM stops when the mean per-sample log-likelihood gains less than this.
    detach_imputation : bool, default=True
        Treat imputed columns as calibrated targets: no gradient flows through
        the imputation into the observed encoders. Only used when
        ``calibrate=True``.
    normalize_imputed : bool, default=True
        Re-normalize imputed representations to unit length, like the encoder
        outputs. Used in training and in :meth:`transform`.
    tau_intra, tau_inter : float, default=0.05, 0.1
        PMRL temperatures of the singular-value and inter-sample terms. Only
        used when ``alignment='pmrl'`` (GRAM learns its own temperature).
    standardize : bool, default=True
        Standardize every feature on the training rows that observe it.
    partial_nan : {'mean', 'raise'}, default='mean'
        What to do with NaNs inside an otherwise observed block: fill with the
        feature's training mean, or raise a ValueError.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows, stop when their loss stops
        improving and restore the best weights.
    validation_fraction : float, default=0.1
        Share of rows held out. Only used when ``early_stopping=True``.
    n_iter_no_change : int, default=10
        Epochs without an improvement of at least ``tol`` of the monitored loss
        (validation loss with early stopping, training loss otherwise) before
        training stops.
    tol : float, default=1e-4
        Minimum loss improvement that counts.
    device : {'auto', 'cpu', 'cuda'}, default='auto'
        Where torch computes; 'auto' uses CUDA when available.
    n_jobs : int, default=None
        Number of CPU threads torch may use while fitting and transforming.
        ``None`` means 1 unless in a :func:`joblib.parallel_config` context;
        ``-1`` means all processors. The default of one thread is the fastest
        choice on a shared machine: torch's threads stall beside another busy
        process (see doc/scaling.md, "Threads"). The caller's own torch thread
        setting is restored afterwards.
    random_state : int, RandomState instance or None, default=None
        Seeds the encoders' initialisation, the shuffles, the early-stopping
        split and the latent model's initialisation. The caller's global torch
        and numpy RNG states are left unchanged.
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
        ``W_m`` per modality.
    means_ : list of ndarray of shape (representation_dim,)
        ``mu_m`` per modality.
    noise_variance_ : ndarray of shape (n_modalities,)
        ``s_m^2`` per modality (mean over dimensions for ``noise='diagonal'``).
    noise_variances_ : list of ndarray of shape (representation_dim,)
        Per-dimension noise variances.
    encoders_ : torch.nn.ModuleList or None
        The fitted encoders (None for ``encoder='identity'``).
    n_iter_ : int
        Training epochs run by ``fit`` (EM iterations for
        ``encoder='identity'``); ``partial_fit`` calls since the first one.
    loss_curve_ : list of float
        Mean alignment loss per epoch (per ``partial_fit`` call); empty for
        ``encoder='identity'``.
    validation_loss_curve_ : list of float
        Loss on the held-out rows per epoch when ``early_stopping``, else empty.
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
        "modalities": [None, list, tuple, dict],
        "encoder": [StrOptions({"linear", "mlp", "identity"})],
        "latent_dim": [Interval(numbers.Integral, 1, None, closed="left")],
        "embed_dim": [Interval(numbers.Integral, 1, None, closed="left")],
        "hidden_layer_sizes": [tuple, list],
        "encoder_init": [StrOptions({"ppca", "pca"})],
        "alignment": [StrOptions({"pmrl", "gram"})],
        "calibrate": ["boolean"],
        "output": [StrOptions({"concat", "latent", "anchor", "mean"})],
        "noise": [StrOptions(set(NOISE_MODELS))],
        "max_epochs": [Interval(numbers.Integral, 0, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate": [Interval(numbers.Real, 0, 1e30, closed="right")],
        "em_every": [Interval(numbers.Integral, 0, None, closed="left")],
        "em_refresh_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "em_max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "em_tol": [Interval(numbers.Real, 0, None, closed="left")],
        "detach_imputation": ["boolean"],
        "normalize_imputed": ["boolean"],
        "tau_intra": [Interval(numbers.Real, 0, None, closed="neither")],
        "tau_inter": [Interval(numbers.Real, 0, None, closed="neither")],
        "standardize": ["boolean"],
        "partial_nan": [StrOptions({"mean", "raise"})],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "device": [StrOptions({"auto", "cpu", "cuda"})],
        "n_jobs": [None, numbers.Integral],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        modalities=None,
        *,
        encoder="linear",
        latent_dim=32,
        embed_dim=64,
        hidden_layer_sizes=(128,),
        encoder_init="ppca",
        alignment="pmrl",
        calibrate=True,
        output="concat",
        noise="isotropic",
        max_epochs=20,
        batch_size=256,
        learning_rate=1e-4,
        em_every=1,
        em_refresh_iter=3,
        em_max_iter=200,
        em_tol=1e-3,
        detach_imputation=True,
        normalize_imputed=True,
        tau_intra=0.05,
        tau_inter=0.1,
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
        self.embed_dim = embed_dim
        self.hidden_layer_sizes = hidden_layer_sizes
        self.encoder_init = encoder_init
        self.alignment = alignment
        self.calibrate = calibrate
        self.output = output
        self.noise = noise
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.em_every = em_every
        self.em_refresh_iter = em_refresh_iter
        self.em_max_iter = em_max_iter
        self.em_tol = em_tol
        self.detach_imputation = detach_imputation
        self.normalize_imputed = normalize_imputed
        self.tau_intra = tau_intra
        self.tau_inter = tau_inter
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
        return TrainConfig(
            encoder=self.encoder,
            embed_dim=self.embed_dim,
            hidden_layer_sizes=hidden,
            encoder_init=self.encoder_init,
            latent_dim=self.latent_dim,
            alignment=self.alignment,
            calibrate=self.calibrate,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            em_every=self.em_every,
            em_init_iter=self.em_max_iter,
            em_refresh_iter=self.em_refresh_iter,
            em_tol=self.em_tol,
            noise=self.noise,
            detach_imputation=self.detach_imputation,
            normalize_imputed=self.normalize_imputed,
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
        self.validation_loss_curve_ = list(history.validation_loss_curve)
        self.fit_time_em_ = history.time_em
        self.fit_time_gradient_ = history.time_gradient

    @property
    def encoders_(self):
        """The fitted torch encoders (None for ``encoder='identity'``)."""
        return self._trainer_.encoders
