"""The scikit-learn estimator shell: :class:`CalMRLTransformer`."""

import copy
import functools
import hashlib
import numbers
import time
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_feature_names_in, _num_samples, check_is_fitted, validate_data

from ._alignment import leading_direction, make_alignment_loss
from ._encoders import make_encoder
from ._latent import (
    NOISE_MODELS,
    LatentParams,
    fit_em,
    init_params,
    log_likelihood,
    predictive_variance,
    single_modality_maps,
)
from ._latent import SufficientStatistics, m_step, sufficient_statistics, summed_statistics
from ._modalities import is_list_of_blocks, observed_mask, resolve_modalities, stack_modalities
from ._training import TrainConfig, calibrated, encode, train
from ._training import _parameters_finite, encode_all, gradient_pass

__all__ = ["CalMRLTransformer"]

_CHUNK = 4096  # rows per transform chunk: bounds the working set
_MAX_ABS = 1e15  # largest |value| fed to the model after standardization: beyond it float32 encoders overflow


def _resolve_device(device):
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but torch finds no CUDA device; use device='auto' or 'cpu'.")
    return device


def _restore_on_error(fit):
    """Make ``fit`` all-or-nothing: on any exception (KeyboardInterrupt included) the fitted attributes
    (names ending in ``_``) are put back as they were, so the estimator is never half-updated."""

    @functools.wraps(fit)
    def wrapper(self, *args, **kwargs):
        saved = {k: v for k, v in vars(self).items() if k.endswith("_") and not k.startswith("__")}
        try:
            return fit(self, *args, **kwargs)
        except BaseException:
            for k in [k for k in vars(self) if k.endswith("_") and not k.startswith("__")]:
                delattr(self, k)
            vars(self).update(saved)
            raise

    return wrapper


class CalMRLTransformer(TransformerMixin, BaseEstimator):
    """Calibrated multimodal representation learning with missing modalities (CalMRL).

    ``X`` holds one block of columns per modality; a row that is NaN across a
    whole block misses that modality. One encoder per modality maps each observed
    block into a shared space, a closed-form probabilistic latent model gives the
    posterior of a shared latent from whatever modalities a sample has and imputes
    the missing ones at the representation level, and training alternates that
    closed-form step (E/M) with gradient steps of an alignment loss (PMRL or GRAM)
    on observed plus imputed representations.

    Parameters
    ----------
    modalities : None, list or dict, default=None
        How the columns of ``X`` split into modalities: a list of block sizes
        (``[76, 216, 64]``), a list of column-index lists, slices or (for
        DataFrames) column-name lists, or a dict ``{name: columns}``. ``None``
        means one block of all columns. A list of per-modality arrays passed to
        ``fit`` sets the blocks itself (leave ``modalities=None``).
    encoder : {'linear', 'mlp', 'identity'}, default='linear'
        Per-modality encoder. Both torch encoders start from the block's PCA
        projection (the MLP adds a zero-initialised residual branch).
        ``'identity'`` trains no network: the closed-form multi-view
        probabilistic PCA on the standardized blocks.
    latent_dim : int, default=32
        Dimension ``q`` of the shared latent ``b``.
    embed_dim : int, default=64
        Dimension ``d`` of each modality's representation (ignored by
        ``encoder='identity'``, which keeps each block's own width).
    hidden_layer_sizes : tuple of int, default=(128,)
        Hidden widths of the MLP encoders' residual branch.
    encoder_init : {'ppca', 'pca'}, default='ppca'
        How the torch encoders start. 'ppca' fits the closed-form model of
        ``encoder='identity'`` first and sets the first ``latent_dim`` outputs of
        encoder m to the posterior-mean map ``x^m -> E[b | x^m]``, so all
        modalities start aligned in one latent coordinate system; the other
        outputs (and all of them with 'pca') project on the block's principal axes.
    alignment : {'pmrl', 'gram'}, default='pmrl'
        Alignment objective on the calibrated representations.
    calibrate : bool, default=True
        Align observed plus imputed representations (CalMRL). False aligns the
        observed modalities only (the paper's uncalibrated ablation).
    output : {'concat', 'latent', 'anchor', 'mean'}, default='concat'
        What :meth:`transform` returns: the ``k`` calibrated representations side
        by side, the latent posterior mean ``m_i`` (``latent_dim`` columns), the
        leading left singular vector ``u_i`` of the calibrated columns, or their
        normalized mean.
    noise : {'isotropic', 'diagonal', 'shared'}, default='isotropic'
        Noise model of the latent model: ``s_m^2 I`` per modality, a diagonal per
        modality (factor analysis), or one ``s^2`` for all.
    max_epochs : int, default=20
        Maximum number of training epochs (torch encoders only).
    batch_size : int, default=256
        Mini-batch size.
    learning_rate : float, default=1e-4
        Adam learning rate of the encoders, at most 1e30 (larger steps overflow
        float32). A step that makes a weight non-finite stops training with a
        RuntimeWarning and keeps the last completed epoch.
    em_every : int, default=1
        Re-encode every row and refresh the latent model with ``em_refresh_iter``
        EM iterations every ``em_every`` epochs. 0 uses streaming EM instead: one
        M-step per epoch from the sufficient statistics summed over that epoch's
        mini-batches (no re-encoding).
    em_refresh_iter : int, default=3
        EM iterations per refresh.
    em_max_iter : int, default=200
        Maximum EM iterations of the initial fit (and of ``encoder='identity'``).
    em_tol : float, default=1e-3
        EM stops when the mean per-sample log-likelihood gains less than this.
    detach_imputation : bool, default=True
        Treat imputed columns as calibrated targets (no gradient through the
        imputation into the observed encoders).
    normalize_imputed : bool, default=True
        Re-normalize imputed representations to unit length (torch encoders).
    tau_intra, tau_inter : float, default=0.05, 0.1
        PMRL temperatures of the singular-value and inter-sample terms.
    standardize : bool, default=True
        Standardize every feature on the training rows that observe it.
    partial_nan : {'mean', 'raise'}, default='mean'
        What to do with NaNs inside an otherwise observed block: fill with the
        feature's training mean, or raise a ValueError.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows, stop when their loss stops
        improving and restore the best weights.
    validation_fraction : float, default=0.1
        Share of rows held out for early stopping.
    n_iter_no_change : int, default=10
        Epochs without an improvement of at least ``tol`` before stopping.
    tol : float, default=1e-4
        Minimum loss improvement that counts.
    device : {'auto', 'cpu', 'cuda'}, default='auto'
        Where torch computes; 'auto' uses CUDA when available.
    random_state : int, RandomState instance or None, default=None
        Seeds the encoders' initialisation, the shuffles and the latent model's
        initialisation. The caller's global torch RNG state is left unchanged.
    verbose : int, default=0
        1 prints one line per epoch, 2 adds EM detail.

    Attributes
    ----------
    modalities_ : dict
        Resolved blocks, ``{name: column indices}``.
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
        Training epochs run (EM iterations for ``encoder='identity'``).
    loss_curve_ : list of float
        Mean alignment loss per epoch.
    validation_scores_ : list of float
        Validation loss per epoch when ``early_stopping``.
    loglik_curve_ : list of float
        Mean observed-data log-likelihood after each closed-form step.
    device_ : str
        Device the model computes on (re-resolved when unpickled).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Defined when ``X`` has string column names.

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
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ input
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def _validate_input(self, X, *, reset):
        """Validate X, resolve the modalities and build the observed mask.

        Returns the float array (never the caller's object when it must change),
        the list of (name, column indices) blocks and the observed mask.
        """
        list_form = is_list_of_blocks(X)
        if list_form:
            if reset and self.modalities is not None:
                raise ValueError(
                    "fit got a list of per-modality arrays and modalities is set as well: pass either "
                    "the list with modalities=None, or one 2-D X with modalities."
                )
            names = list(self.modalities_) if not reset else None
            if not reset and len(X) != len(self.modalities_):
                raise ValueError(f"X is a list of {len(X)} blocks, but the model was fitted on {len(self.modalities_)} modalities.")
            X, spec = stack_modalities(X, names=names)
        X = validate_data(self, X, reset=reset, ensure_all_finite="allow-nan", dtype=[np.float64, np.float32])
        if reset:
            spec = spec if list_form else self.modalities
            blocks = resolve_modalities(spec, X.shape[1], getattr(self, "feature_names_in_", None))
        else:
            blocks = [(name, np.asarray(idx)) for name, idx in self.modalities_.items()]
            if list_form:
                for (name, idx), (_, got) in zip(blocks, resolve_modalities(spec, X.shape[1])):
                    if len(idx) != len(got):
                        raise ValueError(f"Modality {name!r} has {len(got)} columns in X, but {len(idx)} during fit.")
        observed = observed_mask(X, blocks)
        if self.partial_nan == "raise":
            for m, (name, idx) in enumerate(blocks):
                partial = np.isnan(X[observed[:, m]][:, idx]).any(axis=1)
                if partial.any():
                    raise ValueError(
                        f"Modality {name!r} has NaN entries in {int(partial.sum())} row(s) where the block is not "
                        "entirely NaN (partial_nan='raise'); fill them or use partial_nan='mean'."
                    )
        return X, blocks, observed

    def _check_fit_blocks(self, blocks, observed, where):
        """Every modality observed at least once, and ``output`` possible with these blocks.

        ``where`` completes "Modality 'x' is never observed in ..." (``{n}`` is the row count).
        """
        never = [name for (name, _), seen in zip(blocks, observed.any(axis=0)) if not seen]
        if never:
            raise ValueError(
                f"Modality {never[0]!r} is never observed in {where.format(n=observed.shape[0])}: its encoder and "
                "loadings cannot be learned."
            )
        if self.encoder == "identity" and self.output in ("anchor", "mean") and len({len(i) for _, i in blocks}) > 1:
            raise ValueError(
                f"output={self.output!r} needs representations of equal size, but encoder='identity' keeps the "
                f"raw blocks (sizes {[len(i) for _, i in blocks]}); use output='concat' or 'latent'."
            )

    def _standardized_blocks(self, X, blocks, observed):
        """Standardized float blocks; partial NaNs get the training mean (0 after scaling), missing blocks 0."""
        out = []
        for m, (name, idx) in enumerate(blocks):
            B = (X[:, idx] - self.feature_mean_[idx]) / self.feature_scale_[idx]
            fill = (self.feature_fill_[idx] - self.feature_mean_[idx]) / self.feature_scale_[idx]  # 0 if standardized
            B = np.where(np.isnan(B), fill, B)
            B[~observed[:, m]] = 0.0
            big = float(np.abs(B).max(initial=0.0))
            if not big <= _MAX_ABS:
                raise ValueError(
                    f"Modality {name!r} has values too large to compute with: after centering and scaling by the "
                    f"training statistics they reach {big:.3g} in magnitude (limit {_MAX_ABS:.0e}). Rescale X or "
                    "remove these outliers."
                )
            out.append(B)
        return out

    # ------------------------------------------------------------------ fit
    @_restore_on_error
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the encoders and the latent model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or list of arrays
            Blocks side by side as described by ``modalities`` (NaN blocks mark
            missing modalities), or a list of per-modality arrays.
        y : None
            Ignored.

        Returns
        -------
        self : CalMRLTransformer
            The fitted estimator.
        """
        X, blocks, observed = self._validate_input(X, reset=True)
        names = [name for name, _ in blocks]
        empty = ~observed.any(axis=1)
        if empty.all():
            raise ValueError(f"None of the {X.shape[0]} rows observes any modality (every block is all NaN).")
        if empty.any():
            warnings.warn(
                f"{int(empty.sum())} of {X.shape[0]} rows observe no modality (every block is NaN); fit ignores them.",
                UserWarning,
                stacklevel=2,
            )
        keep = ~empty
        self._check_fit_blocks(blocks, observed[keep], "fit (all {n} rows are NaN across its block)")
        _warn_disconnected(observed[keep], names)

        # Standardize each feature on the rows that observe it (DESIGN 6).
        mean, scale, fill = _feature_statistics(X, blocks, observed, self.standardize)
        self.feature_mean_ = mean
        self.feature_scale_ = scale
        self.feature_fill_ = fill
        device = _resolve_device(self.device)
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        Xs = self._standardized_blocks(X, blocks, observed)
        Xs = [b[keep] for b in Xs]
        obs = torch.as_tensor(observed[keep], device=device)

        generator = torch.Generator().manual_seed(seed)  # every draw of fit comes from here, not the global RNG
        if self.encoder == "identity":
            params, history, n_iter = self._fit_identity(Xs, obs, device, seed)
            encoders, loss_curve, val_curve, loglik_curve = None, [], [], history
        else:
            result = self._train_encoders(Xs, obs, device, generator, rng, seed)
            encoders, params, n_iter = result.encoders, result.params, result.n_epochs
            loss_curve, val_curve, loglik_curve = result.loss_curve, result.validation_curve, result.loglik_curve
            self.fit_time_em_, self.fit_time_gradient_ = result.time_em, result.time_gradient

        # Assign the fitted state only now: an interrupted fit leaves the estimator as it was.
        self.modalities_ = {name: idx.tolist() for name, idx in blocks}
        self.device_ = device
        self.encoders_ = encoders
        self._set_params(params)
        self.n_iter_ = n_iter
        self.loss_curve_ = loss_curve
        self.validation_scores_ = val_curve
        self.loglik_curve_ = loglik_curve
        return self

    def _fit_identity(self, Xs, obs, device, seed):
        """Closed-form multi-view probabilistic PCA on the standardized blocks (DESIGN 3, identity encoders)."""
        Z = [torch.as_tensor(b, dtype=torch.float64, device=device) for b in Xs]
        params = init_params(Z, obs, self.latent_dim, generator=torch.Generator(device=device).manual_seed(seed))
        return fit_em(Z, obs, params, max_iter=self.em_max_iter, tol=self.em_tol, noise=self.noise, chunk_size=_CHUNK)

    def _train_config(self):
        """The estimator's parameters of the bi-step loop."""
        return TrainConfig(
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

    def _init_encoders(self, Xs, obs, device, seed):
        """Encoders drawn from seeded generators, then started from the data (``encoder_init``)."""
        encoders = torch.nn.ModuleList(
            make_encoder(self.encoder, b.shape[1], self.embed_dim, self.hidden_layer_sizes,
                         generator=torch.Generator(device=device).manual_seed(seed + m), device=device)
            for m, b in enumerate(Xs)
        )
        X_t = [torch.as_tensor(b, dtype=torch.float32, device=device) for b in Xs]
        maps = [None] * len(Xs)
        if self.encoder_init == "ppca":
            ppca, _, _ = self._fit_identity(Xs, obs, device, seed)
            maps = [(A.float(), c.float()) for A, c in single_modality_maps(ppca)]
        for m, enc in enumerate(encoders):
            enc.init_from_data(X_t[m][obs[:, m]], maps[m])
        return encoders, X_t

    def _train_encoders(self, Xs, obs, device, generator, rng, seed):
        encoders, X_t = self._init_encoders(Xs, obs, device, seed)
        validation = None
        if self.early_stopping:
            n = obs.shape[0]
            n_val = max(1, int(round(self.validation_fraction * n)))
            if n - n_val < 2:
                raise ValueError(f"early_stopping needs more rows: {n} rows leave {n - n_val} for training.")
            perm = torch.as_tensor(rng.permutation(n), device=device)
            val_idx, train_idx = perm[:n_val], perm[n_val:]
            validation = ([x[val_idx] for x in X_t], obs[val_idx])
            X_t, obs = [x[train_idx] for x in X_t], obs[train_idx]
        return train(encoders, X_t, obs, self._train_config(), generator=generator, device=device, validation=validation)

    def _set_params(self, params):
        self.components_ = [w.detach().cpu().numpy() for w in params.W]
        self.means_ = [m.detach().cpu().numpy() for m in params.mu]
        self.noise_variances_ = [p.detach().cpu().numpy() for p in params.psi]
        self.noise_variance_ = np.array([p.mean() for p in self.noise_variances_])

    def _latent_params(self):
        to = dict(dtype=torch.float64, device=self.device_)
        return LatentParams(
            [torch.as_tensor(w, **to) for w in self.components_],
            [torch.as_tensor(m, **to) for m in self.means_],
            [torch.as_tensor(p, **to) for p in self.noise_variances_],
        )

    # ------------------------------------------------------------------ incremental fit
    @_restore_on_error
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """Update the model from one chunk of rows (scikit-learn's incremental convention).

        The first call initialises the model from its chunk: the standardization
        statistics (each feature's mean and standard deviation over the chunk's
        rows that observe it; they are frozen afterwards), the encoders (PCA
        initialisation on the chunk) and the latent model (``init_params`` and EM
        to convergence on the chunk). Every call then

        1. for torch encoders, runs one pass of mini-batch gradient steps of the
           alignment loss over the chunk (E-step with the current latent
           parameters, as in ``fit``; ``max_epochs`` and ``early_stopping`` do not
           apply);
        2. computes the chunk's EM sufficient statistics (``A_m``, ``C_m``,
           scatter, counts; DESIGN 2.4) under the current parameters and encoders;
        3. adds them to running totals and does one M-step from the totals.

        Statistics are kept per chunk, keyed by a hash of the chunk's contents: a
        chunk seen before has its old contribution *replaced* by the recomputed
        one (Neal & Hinton's incremental EM), so passing the same chunks several
        times converges to the full-batch EM fixed point, while new chunks add to
        the totals. Contributions of chunks that are not seen again stay as they
        were computed (under older parameters and, for torch encoders, older
        encoders). Memory: one set of statistics per distinct chunk,
        ``k (q+1)^2 + sum_m d_m (q+2)`` floats.

        Calling ``partial_fit`` after ``fit`` continues from the fitted encoders
        and latent parameters with empty running totals; calling ``fit`` starts
        afresh.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or list of arrays
            One chunk, same layout on every call. The first chunk must observe
            every modality.
        y : None
            Ignored.

        Returns
        -------
        self : CalMRLTransformer
            The updated estimator.
        """
        first = not hasattr(self, "modalities_")
        state = None if first else getattr(self, "_partial_fit_state_", None)
        if state is not None and state.owner is not self.components_:
            state = None  # fit ran since the last partial_fit: its totals belong to another model
        X, blocks, observed = self._validate_input(X, reset=first)
        names = [name for name, _ in blocks]
        key = _chunk_key(X)
        keep = observed.any(axis=1)
        if first:
            if not keep.any():
                raise ValueError(f"None of the {X.shape[0]} rows observes any modality (every block is all NaN).")
            self._check_fit_blocks(
                blocks,
                observed[keep],
                "the first chunk passed to partial_fit: the first chunk sets the standardization and the encoder "
                "initialisation, so it must observe every modality",
            )
            self.feature_mean_, self.feature_scale_, self.feature_fill_ = _feature_statistics(X, blocks, observed, self.standardize)
        if not keep.all():
            warnings.warn(
                f"{int((~keep).sum())} of {X.shape[0]} rows observe no modality (every block is NaN); partial_fit ignores them.",
                UserWarning,
                stacklevel=2,
            )
        if not keep.any():
            return self
        device = _resolve_device(self.device) if first else self.device_
        if state is None:
            seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
            state = _PartialFitState(seed)
        else:
            state = state.copy().to(device)
        Xs = [b[keep] for b in self._standardized_blocks(X, blocks, observed)]
        obs = torch.as_tensor(observed[keep], device=device)
        deep = self.encoder != "identity"
        cfg = self._train_config()
        time_em = time_grad = 0.0
        generator = torch.Generator().manual_seed(state.seed + state.calls)
        if deep:
            if first:
                encoders, X_t = self._init_encoders(Xs, obs, device, state.seed)
            else:
                X_t = [torch.as_tensor(b, dtype=torch.float32, device=device) for b in Xs]
                encoders = copy.deepcopy(self.encoders_).to(device)
            if state.loss_fn is None:
                kw = {"tau_intra": self.tau_intra, "tau_inter": self.tau_inter} if self.alignment == "pmrl" else {}
                state.loss_fn = make_alignment_loss(self.alignment, **kw).to(device)
            else:
                state.loss_fn = copy.deepcopy(state.loss_fn)
            optimizer = torch.optim.Adam(list(encoders.parameters()) + list(state.loss_fn.parameters()), lr=self.learning_rate)
            if state.optim is not None:
                optimizer.load_state_dict(copy.deepcopy(state.optim))
        t0 = time.perf_counter()
        if first:  # latent model: init_params and EM to convergence on the first chunk (DESIGN 2.6)
            Z = encode_all(encoders, X_t, obs) if deep else [torch.as_tensor(b, dtype=torch.float64, device=device) for b in Xs]
            init_gen = torch.Generator(device=device).manual_seed(state.seed)
            params = init_params(Z, obs, self.latent_dim, generator=init_gen)
            params, _, _ = fit_em(Z, obs, params, max_iter=self.em_max_iter, tol=self.em_tol, noise=self.noise, chunk_size=_CHUNK)
        else:
            params = self._latent_params()
        time_em += time.perf_counter() - t0

        chunk_loss = float("nan")
        if deep:  # one pass of gradient steps over the chunk, latent parameters fixed (DESIGN 3)
            init_state = copy.deepcopy(encoders.state_dict()) if first else None
            t0 = time.perf_counter()
            chunk_loss = gradient_pass(encoders, state.loss_fn, optimizer, X_t, obs, params, cfg, generator=generator)
            time_grad += time.perf_counter() - t0
            if not (np.isfinite(chunk_loss) and _parameters_finite(encoders, state.loss_fn)):
                warnings.warn(
                    f"partial_fit diverged on this chunk (loss={chunk_loss}); "
                    + ("kept the initial encoders. " if first else "the model was left as it was. ")
                    + f"Lower learning_rate (now {self.learning_rate}).",
                    RuntimeWarning,
                    stacklevel=2,
                )
                if not first:
                    return self
                encoders.load_state_dict(init_state)
                state.loss_fn, state.optim = None, None
            else:
                state.optim = optimizer.state_dict()

        # the chunk's statistics under the current parameters replace its previous contribution (DESIGN 2.4, 3)
        t0 = time.perf_counter()
        Z = encode_all(encoders, X_t, obs) if deep else [torch.as_tensor(b, dtype=torch.float64, device=device) for b in Xs]
        stats = summed_statistics(
            sufficient_statistics([z[s : s + _CHUNK] for z in Z], obs[s : s + _CHUNK], params)
            for s in range(0, obs.shape[0], _CHUNK)
        )
        del Z
        state.add_chunk(key, stats)
        params = m_step(state.total, params, noise=self.noise)
        time_em += time.perf_counter() - t0
        if not all(bool(torch.isfinite(t).all()) for group in params for t in group):
            if first:
                raise ValueError("partial_fit's M-step on the first chunk gave non-finite latent parameters; rescale X.")
            warnings.warn("partial_fit's M-step gave non-finite parameters; the model was left as it was.", RuntimeWarning, stacklevel=2)
            return self

        state.calls += 1
        self.modalities_ = {name: idx.tolist() for name, idx in blocks}
        self.device_ = device
        self.encoders_ = encoders if deep else None
        self._set_params(params)
        state.owner = self.components_
        self._partial_fit_state_ = state
        self.n_iter_ = state.calls
        self.n_samples_seen_ = (0 if first else getattr(self, "n_samples_seen_", 0)) + int(obs.shape[0])
        self.loss_curve_ = ([] if first else list(getattr(self, "loss_curve_", []))) + ([chunk_loss] if deep else [])
        self.loglik_curve_ = ([] if first else list(getattr(self, "loglik_curve_", []))) + [float(stats.loglik) / stats.n_rows]
        self.validation_scores_ = []
        if deep:
            self.fit_time_em_ = (0.0 if first else getattr(self, "fit_time_em_", 0.0)) + time_em
            self.fit_time_gradient_ = (0.0 if first else getattr(self, "fit_time_gradient_", 0.0)) + time_grad
        return self

    # ------------------------------------------------------------------ inference
    def _validated_for_inference(self, X):
        """Validate X against the fitted model and warn about rows with no modality."""
        check_is_fitted(self)
        X, blocks, observed = self._validate_input(X, reset=False)
        empty = ~observed.any(axis=1)
        if empty.any():
            warnings.warn(
                f"{int(empty.sum())} of {X.shape[0]} rows observe no modality; they get the prior "
                "(latent mean 0 and the model's mean representations).",
                UserWarning,
                stacklevel=3,
            )
        return X, blocks, observed

    def _chunks(self, X):
        """Yield ``(Z, observed, Zhat, posterior, params)`` per chunk of ``_CHUNK`` rows, float64, no gradients.

        Standardization, encoding and the E-step all happen chunk by chunk, so
        the working set beyond the input and the output is a few chunks.
        """
        X, blocks, observed = self._validated_for_inference(X)
        params = self._latent_params()
        deep = self.encoders_ is not None
        # a float64 copy per call: batch-size-independent rows, and threads never share a module
        encoders = copy.deepcopy(self.encoders_).to(device=self.device_, dtype=torch.float64) if deep else None
        with torch.no_grad():
            for s in range(0, X.shape[0], _CHUNK):
                Xs = self._standardized_blocks(X[s : s + _CHUNK], blocks, observed[s : s + _CHUNK])
                obs = torch.as_tensor(observed[s : s + _CHUNK], device=self.device_)
                Z = [torch.as_tensor(b, dtype=torch.float64, device=self.device_) for b in Xs]
                if deep:
                    Z = encode(encoders, Z, obs)
                Zhat, post = calibrated(Z, obs, params, normalize_imputed=deep and self.normalize_imputed)
                yield Z, obs, Zhat, post, params

    def transform(self, X):
        """Representation of every sample, as chosen by ``output``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or list of arrays
            Same layout as in ``fit``; rows may miss any modalities.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_components)
            float32 when ``X`` is float32, float64 otherwise.
        """
        dtype = _output_dtype(X)
        result, start = None, 0
        for _, _, Zhat, post, _ in self._chunks(X):
            if self.output == "latent":
                out = post.mean
            elif self.output == "concat":
                out = torch.cat(Zhat, dim=1)
            elif self.output == "mean":
                out = torch.nn.functional.normalize(torch.stack(Zhat, dim=1).mean(dim=1), dim=1)
            else:
                out, _ = leading_direction(torch.stack(Zhat, dim=1), eps=0.0)
            if result is None:  # written chunk by chunk into one preallocated output
                result = np.empty((_n_rows(X), out.shape[1]), dtype=dtype)
            result[start : start + out.shape[0]] = out.cpu().numpy()
            start += out.shape[0]
        return result

    def impute_representations(self, X, *, return_variance=False):
        """Per-modality representations with missing modalities imputed (DESIGN 2.3).

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
        names = list(self.modalities_) if hasattr(self, "modalities_") else None
        reps, variances = [], []
        for _, obs, Zhat, post, params in self._chunks(X):
            reps.append([z.cpu().numpy() for z in Zhat])
            if return_variance:
                var = predictive_variance(post, params)
                variances.append([torch.where(obs[:, m, None], 0.0, v).cpu().numpy() for m, v in enumerate(var)])
        out = {name: np.concatenate([r[m] for r in reps]) for m, name in enumerate(names)}
        if not return_variance:
            return out
        return out, {name: np.concatenate([v[m] for v in variances]) for m, name in enumerate(names)}

    def score_samples(self, X):
        """Observed-data log-likelihood of each sample's representations under the latent model (DESIGN 2.5).

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return np.concatenate([log_likelihood(Z, obs, params, post).cpu().numpy() for Z, obs, _, post, params in self._chunks(X)])

    def score(self, X, y=None):
        """Mean observed-data log-likelihood of the samples' representations (DESIGN 2.5).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or list of arrays
        y : None
            Ignored.

        Returns
        -------
        float
        """
        return float(np.mean(self.score_samples(X)))

    def get_feature_names_out(self, input_features=None):
        """Names of the output columns.

        ``latent0..``, ``anchor0..``, ``mean0..``, or ``<modality>_<j>`` for
        ``output='concat'``.
        """
        check_is_fitted(self)
        _check_feature_names_in(self, input_features, generate_names=False)
        if self.output == "concat":
            names = [f"{name}_{j}" for name, w in zip(self.modalities_, self.components_) for j in range(w.shape[0])]
        elif self.output == "latent":
            names = [f"latent{j}" for j in range(self.components_[0].shape[1])]
        else:
            names = [f"{self.output}{j}" for j in range(self.components_[0].shape[0])]
        return np.asarray(names, dtype=object)

    # ------------------------------------------------------------------ persistence
    def __getstate__(self):
        state = super().__getstate__()
        if state.get("encoders_") is not None:
            state["encoders_"] = copy.deepcopy(state["encoders_"]).cpu()
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if "device_" in state:
            self.device_ = "cuda" if self.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
            if self.encoders_ is not None:
                self.encoders_.to(self.device_)


def _n_rows(X):
    return _num_samples(X[0]) if is_list_of_blocks(X) else _num_samples(X)


def _output_dtype(X):
    dtype = getattr(X, "dtype", None)
    if is_list_of_blocks(X):
        dtype = np.result_type(*[getattr(b, "dtype", np.float64) for b in X])
    return np.float32 if dtype == np.float32 else np.float64


def _warn_disconnected(observed, names):
    """Warn when modalities fall into groups that never co-occur, directly or through a chain."""
    k = observed.shape[1]
    if k < 2:
        return
    co = (observed.T.astype(int) @ observed.astype(int)) > 0
    group = -np.ones(k, dtype=int)
    for start in range(k):
        if group[start] >= 0:
            continue
        stack = [start]
        group[start] = start
        while stack:
            a = stack.pop()
            for b in np.flatnonzero(co[a] & (group < 0)):
                group[b] = start
                stack.append(b)
    groups = [[names[m] for m in np.flatnonzero(group == g)] for g in np.unique(group)]
    if len(groups) > 1:
        warnings.warn(
            f"Modalities fall into groups that never co-occur in any row, directly or through a chain: {groups}. "
            "The cross-structure between groups cannot be learned; imputation across them returns the prior.",
            UserWarning,
            stacklevel=3,
        )


# ---------------------------------------------------------------------- partial_fit helpers
def _feature_statistics(X, blocks, observed, standardize):
    """Per-feature (mean, scale, fill) over the rows observing each block, as ``fit`` computes them (DESIGN 6)."""
    mean = np.zeros(X.shape[1])
    scale = np.ones(X.shape[1])
    fill = np.zeros(X.shape[1])
    for m, (_, idx) in enumerate(blocks):
        rows = X[observed[:, m]][:, idx].astype(np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mu = np.nanmean(rows, axis=0)
            sd = np.nanstd(rows, axis=0)
        fill[idx] = np.where(np.isfinite(mu), mu, 0.0)
        if standardize:
            mean[idx] = fill[idx]
            scale[idx] = np.where(np.isfinite(sd) & (sd > 1e-12 * np.maximum(1.0, np.abs(mean[idx]))), sd, 1.0)
    return mean, scale, fill


def _chunk_key(X):
    """Fingerprint of a validated chunk: its shape, dtype and bytes."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((X.shape, X.dtype.str)).encode())
    h.update(np.ascontiguousarray(X).data)
    return h.hexdigest()


def _stats_map(stats, fn):
    return SufficientStatistics(fn(stats.count), [fn(a) for a in stats.A], [fn(c) for c in stats.C], [fn(s) for s in stats.S], fn(stats.loglik), stats.n_rows)


class _PartialFitState:
    """What ``partial_fit`` carries between calls: running EM statistics, per-chunk contributions, optimizer.

    ``owner`` is the ``components_`` list this state was built with: ``fit`` replaces that
    list, which is how ``partial_fit`` notices that its totals belong to an older model.
    Pickles with every tensor on the CPU; ``to`` moves it back to the compute device.
    """

    def __init__(self, seed):
        self.seed = seed
        self.calls = 0
        self.owner = None
        self.total = None  # SufficientStatistics summed over the chunks
        self.chunks = {}  # chunk fingerprint -> its current contribution to total
        self.loss_fn = None  # alignment loss module (GRAM's temperature is learned)
        self.optim = None  # Adam state_dict

    def copy(self):
        new = copy.copy(self)
        new.chunks = dict(self.chunks)
        return new

    def add_chunk(self, key, stats):
        """Add a chunk's statistics, replacing its previous contribution when it was seen before."""
        old = self.chunks.get(key)
        if self.total is None:
            self.total = stats
        elif old is None:
            self.total = self.total + stats
        else:
            neg = _stats_map(old, torch.neg)
            neg.n_rows = -old.n_rows
            self.total = self.total + neg + stats
        self.chunks[key] = stats

    def to(self, device):
        """A copy with every tensor on ``device`` (the same object when it is there already)."""
        if self.total is None or self.total.count.device.type == torch.device(device).type:
            return self
        move = lambda t: t.to(device)  # noqa: E731
        new = self.copy()
        new.total = None if self.total is None else _stats_map(self.total, move)
        new.chunks = {k: _stats_map(s, move) for k, s in self.chunks.items()}
        if self.loss_fn is not None:
            new.loss_fn = copy.deepcopy(self.loss_fn).to(device)
        return new  # Adam's load_state_dict moves its state to the parameters' device

    def __getstate__(self):
        state = (self.to("cpu") if self.total is not None and self.total.count.device.type != "cpu" else self).__dict__.copy()
        if self.optim is not None:
            state["optim"] = {
                "state": {i: {k: v.cpu() if torch.is_tensor(v) else v for k, v in s.items()} for i, s in self.optim["state"].items()},
                "param_groups": self.optim["param_groups"],
            }
        return state
