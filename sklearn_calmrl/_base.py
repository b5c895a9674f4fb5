"""What the two estimators share: input validation, standardization, fit / partial_fit
delegation to the trainer, chunked inference, scoring, feature names and persistence.

:class:`~sklearn_calmrl.CalMRLTransformer` and :class:`~sklearn_calmrl.MultiViewPPCA`
differ only in their parameters (and so in the :class:`~sklearn_calmrl._training.TrainConfig`
they build); everything here works for both.
"""

import contextlib
import copy
import functools
import hashlib
import numbers
import threading
from typing import NamedTuple

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils._set_output import ADAPTERS_MANAGER, _get_output_config
from sklearn.utils.validation import _check_feature_names_in, _num_samples, check_is_fitted, validate_data

from ._alignment import leading_direction
from ._latent import NOISE_MODELS, CentreCache, local_corrections, log_likelihood, predictive_variance
from ._modalities import (
    check_fit_input,
    feature_moments,
    is_list_of_blocks,
    non_numeric_column,
    observed_mask,
    resolve_modalities,
    stack_modalities,
    standardized_blocks,
    statistics_from_moments,
    warn_disconnected,
    warn_few_rows,
)
from ._training import CHUNK, Trainer, calibrated, encode
from ._utils import free_threads, warn

__all__ = ["MultimodalBase"]


def resolve_device(device):
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; 'cuda' without one is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but torch finds no CUDA device; use device='auto' or 'cpu'.")
    return device


_THREADS_LOCK = threading.Lock()
_THREADS_STATE = {"active": 0, "outer": None}  # scopes open in any thread, and the caller's setting to restore
_THREADS_LOCAL = threading.local()  # this thread's stack of scoped counts


@contextlib.contextmanager
def torch_threads(n):
    """Run the block with ``n`` torch intra-op threads, then give the caller back its own setting.

    ``torch.set_num_threads`` acts on the calling thread and on the process-wide
    default that new threads start from. Scopes nest within a thread (each
    restores the one around it) and may run in several threads at once: the
    caller's setting is recorded when the first scope opens and restored when
    the last one closes, so concurrent fits never leave a changed default.
    """
    stack = getattr(_THREADS_LOCAL, "stack", None)
    if stack is None:
        stack = _THREADS_LOCAL.stack = []
    with _THREADS_LOCK:
        if _THREADS_STATE["active"] == 0:
            _THREADS_STATE["outer"] = torch.get_num_threads()
        _THREADS_STATE["active"] += 1
        previous = stack[-1] if stack else _THREADS_STATE["outer"]
    stack.append(n)
    torch.set_num_threads(n)
    try:
        yield
    finally:
        stack.pop()
        torch.set_num_threads(previous)
        with _THREADS_LOCK:
            _THREADS_STATE["active"] -= 1
            if _THREADS_STATE["active"] == 0:
                torch.set_num_threads(_THREADS_STATE["outer"])


def _threaded(method):
    """Run an estimator method under the thread policy: ``free_threads(n_jobs)`` torch threads (1 by default)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with torch_threads(free_threads(self.n_jobs)):
            return method(self, *args, **kwargs)

    return wrapper


def _fitted_names(est):
    return [k for k in vars(est) if k.endswith("_") and not k.startswith("__")]


def _all_or_nothing(fit):
    """Make ``fit`` all-or-nothing: on any exception (KeyboardInterrupt included) the fitted attributes
    (names ending in ``_``) are put back as they were, so the estimator is never half-updated."""

    @functools.wraps(fit)
    def wrapper(self, *args, **kwargs):
        saved = {k: vars(self)[k] for k in _fitted_names(self)}
        try:
            return fit(self, *args, **kwargs)
        except BaseException:
            for k in _fitted_names(self):
                delattr(self, k)
            vars(self).update(saved)
            raise

    return wrapper


def _chunk_key(X):
    """Fingerprint of a validated ``partial_fit`` chunk: its shape, dtype and bytes."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((X.shape, X.dtype.str)).encode())
    h.update(np.ascontiguousarray(X).data)
    return h.hexdigest()


class _InferenceState(NamedTuple):
    """What the chunks of an inference call share (:meth:`MultimodalBase._inference_state`)."""

    params: object
    block_params: object
    centres: object  # (stored blocks, their mask) of the local correction [design 2.9], or None
    centre_cache: object  # CentreCache of those stored rows, or None
    weights: object  # the cross-fitted weights of the imputed blocks [design 2.11], or None
    variance_scales: object  # the cross-fitted factors of their predictive variances [design 2.11], or None


class _Chunk(NamedTuple):
    """One chunk of inference: representations and blocks, raw and calibrated, with their posteriors."""

    Z: list
    observed: torch.Tensor
    Zhat: list
    post: object
    params: object
    B: list
    Bhat: list
    block_post: object
    block_params: object
    block_spread: object  # the local correction's spread of the blocks [design 2.9], or None


def _n_rows(X):
    return _num_samples(X[0]) if is_list_of_blocks(X) else _num_samples(X)


def _output_dtype(X):
    dtype = getattr(X, "dtype", None)
    if is_list_of_blocks(X):
        dtype = np.result_type(*[getattr(b, "dtype", np.float64) for b in X])
    return np.float32 if dtype == np.float32 else np.float64


class MultimodalBase(TransformerMixin, BaseEstimator):
    """Shared shell; subclasses define the parameters and :meth:`_train_config`."""

    # the parameters both estimators share; each adds its own to these
    _shared_parameter_constraints: dict = {
        "modalities": [None, list, tuple, dict, np.ndarray],
        "latent_dim": [Interval(numbers.Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "n_components": [Interval(numbers.Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "local_bandwidth": [None, Interval(numbers.Real, 0, None, closed="neither")],
        "add_indicator": ["boolean"],
        "noise": [StrOptions(set(NOISE_MODELS))],
        "standardize": ["boolean"],
        "partial_nan": [StrOptions({"mean", "raise"})],
        "device": [StrOptions({"auto", "cpu", "cuda"})],
        "n_jobs": [None, numbers.Integral],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def _train_config(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # ------------------------------------------------------------------ input
    def _validate_input(self, X, *, reset):
        """Validate X, resolve the modalities and build the observed mask [design 1].

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
            if not reset and len(X) != len(self.modalities_):
                raise ValueError(f"X is a list of {len(X)} blocks, but the model was fitted on {len(self.modalities_)} modalities.")
            X, spec = stack_modalities(X, names=None if reset else list(self.modalities_))
        try:
            X = validate_data(self, X, reset=reset, ensure_all_finite="allow-nan", dtype=[np.float64, np.float32])
        except ValueError as exc:
            bad = non_numeric_column(X) if "could not convert" in str(exc) else None
            if bad is None:
                raise
            j, name, value = bad
            column = f"Column {name!r} (index {j})" if name is not None else f"Column {j}"
            raise ValueError(
                f"{column} of X holds a value that is not a number: {value!r}. CalMRL needs numeric features: "
                "encode categorical columns first (for example with a OneHotEncoder in a ColumnTransformer) "
                "or drop them."
            ) from exc
        if reset:
            blocks = resolve_modalities(spec if list_form else self.modalities, X.shape[1], getattr(self, "feature_names_in_", None))
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

    def _check_output(self, sizes, identity):
        """``output`` against the blocks' ``sizes`` (fit, partial_fit, fit_dask and every transform)."""
        if identity and self.output in ("anchor", "mean") and len(set(sizes)) > 1:
            raise ValueError(
                f"output={self.output!r} needs representations of equal size, but encoder='identity' keeps the "
                f"raw blocks (sizes {list(sizes)}); use output='concat' or 'latent'."
            )

    def _output_parts(self):
        """The parts of the output, in column order: the one definition that :meth:`transform`,
        :meth:`get_feature_names_out` and :func:`~sklearn_calmrl.distributed.transform_dask` read [design 5].

        ``'blocks'`` are the calibrated standardized blocks, ``'embeddings'`` the calibrated representations
        (the blocks themselves for ``encoder='identity'``), ``'latent'``, ``'anchor'`` and ``'mean'`` as
        ``output`` says, ``'indicator'`` the observed-modality columns.
        """
        check_is_fitted(self)
        deep = self._trainer_.deep
        self._check_output([len(i) for i in self.modalities_.values()], identity=not deep)
        if self.output == "concat":
            parts = ["embeddings", "blocks"] if deep else ["blocks"]
        elif self.output == "embeddings":
            parts = ["embeddings"] if deep else ["blocks"]
        else:
            parts = [self.output]
        return parts + (["indicator"] if self.add_indicator else [])

    # ------------------------------------------------------------------ fit
    @_all_or_nothing
    @_fit_context(prefer_skip_nested_validation=True)
    @_threaded
    def fit(self, X, y=None):
        """Fit the model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or list of arrays
            Blocks side by side as described by ``modalities`` (NaN blocks mark
            missing modalities), or a list of per-modality arrays.
        y : None
            Ignored.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        for name in _fitted_names(self):  # a refit leaves exactly the attributes of a fresh fit (restored on error)
            delattr(self, name)
        cfg = self._train_config()
        X, blocks, observed = self._validate_input(X, reset=True)
        empty = ~observed.any(axis=1)
        if empty.all():
            raise ValueError(f"None of the {X.shape[0]} rows observes any modality (every block is all NaN).")
        if empty.any():
            warn(
                f"{int(empty.sum())} of {X.shape[0]} rows observe no modality (every block is NaN); fit ignores them."
            )
        keep = ~empty
        moments = feature_moments(X, blocks, observed)
        check_fit_input(blocks, observed[keep], int(keep.sum()), moments.count, "fit (all {n} rows are NaN across its block)", getattr(self, "feature_names_in_", None))
        self._check_output([len(i) for _, i in blocks], cfg.encoder == "identity")
        warn_disconnected(observed[keep], [name for name, _ in blocks])

        standardization = statistics_from_moments(moments, self.standardize)  # [design 1.3]
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        trainer = Trainer(cfg, device=resolve_device(self.device), seed=seed)
        Xs = [b[keep] for b in standardized_blocks(X, blocks, observed, *standardization)]
        obs = torch.as_tensor(observed[keep], device=trainer.device)
        trainer.fit(Xs, obs)
        warn_few_rows(observed[keep].sum(axis=0), [name for name, _ in blocks], trainer.latent_dim)

        self._set_fitted(blocks, standardization, trainer, n_rows=int(keep.sum()))
        return self

    @_all_or_nothing
    @_fit_context(prefer_skip_nested_validation=True)
    @_threaded
    def partial_fit(self, X, y=None):
        """Update the model from one chunk of rows (incremental EM) [design 3.2].

        The first call initialises the model from its chunk: the standardization
        statistics (each feature's mean and standard deviation over the chunk's
        rows that observe it; frozen afterwards), the encoders and the latent
        model (fitted to convergence on the chunk). Every call then runs one pass
        of gradient steps over the chunk (torch encoders), computes the chunk's
        EM sufficient statistics under the current model, adds them to running
        totals and does one M-step from the totals.

        Statistics are kept per chunk, keyed by a hash of the chunk's contents: a
        chunk seen before has its old contribution *replaced* (Neal & Hinton's
        incremental EM), so passing the same chunks several times converges to
        the full-batch EM fixed point, while new chunks add to the totals.
        Memory: one set of statistics per distinct chunk,
        ``k (q+1)^2 + sum_m d_m (q+2)`` floats. The parameters are read at the
        first call, and so is everything the first chunk decides: the
        standardization, ``latent_dim='auto'`` (from the first chunk's linking
        rows, so a small first chunk gives a small latent; pass an integer
        ``latent_dim`` to make it independent of the chunking), the output's
        width, the local correction's first stored rows and the cross-fitted
        weights of the imputed blocks (design 2.11). After ``fit``, ``partial_fit`` continues from the fitted
        model with empty running totals.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or list of arrays
            One chunk, same layout on every call. The first chunk must observe
            every modality.
        y : None
            Ignored.

        Returns
        -------
        self : object
            The updated estimator.
        """
        first = not hasattr(self, "_trainer_")
        X, blocks, observed = self._validate_input(X, reset=first)
        keep = observed.any(axis=1)
        if first:
            if not keep.any():
                raise ValueError(f"None of the {X.shape[0]} rows observes any modality (every block is all NaN).")
            moments = feature_moments(X, blocks, observed)
            check_fit_input(
                blocks,
                observed[keep],
                int(keep.sum()),
                moments.count,
                "the first chunk passed to partial_fit: the first chunk sets the standardization and the encoder "
                "initialisation, so it must observe every modality",
                getattr(self, "feature_names_in_", None),
            )
            cfg = self._train_config()
            self._check_output([len(i) for _, i in blocks], cfg.encoder == "identity")
            standardization = statistics_from_moments(moments, self.standardize)
            seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
            trainer = Trainer(cfg, device=resolve_device(self.device), seed=seed)
        else:
            standardization = (self.feature_mean_, self.feature_scale_, self._feature_fill_)
            trainer = self._trainer_.clone()
        if not keep.all():
            warn(
                f"{int((~keep).sum())} of {X.shape[0]} rows observe no modality (every block is NaN); partial_fit ignores them."
            )
        if not keep.any():
            return self
        Xs = [b[keep] for b in standardized_blocks(X, blocks, observed, *standardization)]
        obs = torch.as_tensor(observed[keep], device=trainer.device)
        if not trainer.partial_fit(Xs, obs, _chunk_key(X)):
            return self  # the chunk diverged: the model is left as it was
        if first:
            warn_few_rows(observed[keep].sum(axis=0), [name for name, _ in blocks], trainer.latent_dim)
        seen = self.n_samples_seen_ if trainer.history.n_iter > 1 else 0  # a fresh incremental run counts from 0
        self._set_fitted(blocks, standardization, trainer, n_rows=seen + int(keep.sum()))
        return self

    def _set_fitted(self, blocks, standardization, trainer, n_rows):
        """Every fitted attribute, from the trainer's final state."""
        self.modalities_ = {name: idx.tolist() for name, idx in blocks}
        self.feature_mean_, self.feature_scale_, self._feature_fill_ = standardization
        self.device_ = trainer.device
        self._trainer_ = trainer
        params = trainer.params
        # a mixture's parameters gain a leading component axis [design 2.8]
        single, log_weights = params.members()
        stack = (lambda arrays: arrays[0]) if len(single) == 1 else np.stack  # noqa: E731
        numpy = lambda t: t.detach().cpu().numpy()  # noqa: E731
        self.components_ = [stack([numpy(c.W[m]) for c in single]) for m in range(len(blocks))]
        self.means_ = [stack([numpy(c.mu[m]) for c in single]) for m in range(len(blocks))]
        self.noise_variances_ = [stack([numpy(c.psi[m]) for c in single]) for m in range(len(blocks))]
        self.noise_variance_ = stack([np.array([numpy(p).mean() for p in c.psi]) for c in single])
        self.weights_ = np.exp(numpy(log_weights))
        self.n_components_ = len(single)
        self.latent_dim_ = trainer.latent_dim
        self.n_iter_ = trainer.history.n_iter
        self.loglik_curve_ = list(trainer.history.loglik_curve)
        self.n_samples_seen_ = n_rows
        if trainer.variance_explained is not None:  # [design 2.12]
            self.variance_explained_ = trainer.variance_explained[0].numpy()
            self.variance_explained_total_ = trainer.variance_explained[1].numpy()

    # ------------------------------------------------------------------ inference
    def _inference_input(self, X):
        """Validate ``X`` against the fitted model; warn about rows that observe nothing."""
        check_is_fitted(self)
        X, blocks, observed = self._validate_input(X, reset=False)
        empty = ~observed.any(axis=1)
        if empty.any():
            warn(
                f"{int(empty.sum())} of {X.shape[0]} rows observe no modality; they get the prior "
                "(latent mean 0 and the model's mean representations)."
            )
        return X, blocks, observed

    def _inference_state(self, blocks_used=True):
        """The float64 parameters, stored rows and cross-fitted weights every inference chunk reads, with the local
        correction's cache of the stored rows' terms: prepared once per call (once for all chunks of
        :func:`~sklearn_calmrl.distributed.transform_dask`)."""
        trainer, device = self._trainer_, self.device_
        centres = None
        if trainer.centres is not None and blocks_used:
            centres = ([x.to(device=device, dtype=torch.float64) for x in trainer.centres[0]], trainer.centres[1].to(device))
        float64 = lambda tensors: None if tensors is None else [a.to(device=device, dtype=torch.float64) for a in tensors]  # noqa: E731
        return _InferenceState(
            params=trainer.params.to(dtype=torch.float64, device=device),
            block_params=trainer.block_params.to(dtype=torch.float64, device=device),
            centres=centres,
            centre_cache=CentreCache() if centres is not None else None,
            weights=float64(trainer.imputation_weights),
            variance_scales=float64(trainer.variance_scales),
        )

    def _chunks(self, X, blocks, observed, *, blocks_used=True, spread_used=False, state=None):
        """Yield a :class:`_Chunk` per ``CHUNK`` rows, float64, no gradients.

        ``Z``/``Zhat`` are the (calibrated) representations of the latent model
        ``params``; ``Bhat`` the calibrated standardized blocks of the closed-form
        model of the blocks (the same as ``Zhat`` for ``encoder='identity'``),
        with the local correction unless ``blocks_used`` is False (the caller
        reads neither ``Bhat`` nor the blocks' spread), and its spread only when
        ``spread_used`` (``block_spread`` is None otherwise). ``X`` is validated
        (:meth:`_inference_input`). Standardization, encoding and the E-step all
        happen chunk by chunk, so the working set beyond the input and the
        output is a few chunks, plus the local correction's terms of the stored
        rows: about ``3 n_c D`` numbers for all patterns (``n_c <= 4096`` rows,
        ``D`` features) and the per-pattern terms kept, 256 MB at most in all
        (:class:`~sklearn_calmrl._latent.CentreCache`).
        """
        trainer = self._trainer_
        state = self._inference_state(blocks_used) if state is None else state
        params, block_params, weights, centre_cache = state.params, state.block_params, state.weights, state.centre_cache
        centres = state.centres if blocks_used else None
        # a float64 copy per call: batch-size-independent rows, and threads never share a module
        encoders = copy.deepcopy(trainer.encoders).to(device=self.device_, dtype=torch.float64) if trainer.deep else None
        standardization = (self.feature_mean_, self.feature_scale_, self._feature_fill_)
        with torch.no_grad():
            for s in range(0, X.shape[0], CHUNK):
                obs = torch.as_tensor(observed[s : s + CHUNK], device=self.device_)
                Xs = standardized_blocks(X[s : s + CHUNK], blocks, observed[s : s + CHUNK], *standardization)
                B = [torch.as_tensor(b, dtype=torch.float64, device=self.device_) for b in Xs]
                Bhat, block_post = calibrated(B, obs, block_params)  # [design 2.3] on the blocks
                spread = None
                if centres is not None:  # the stored rows' residuals [design 2.9]
                    correction, spread = local_corrections(
                        B, obs, block_params, *centres, trainer.cfg.local_bandwidth, cache=centre_cache, return_variance=spread_used
                    )
                    Bhat = [b + c for b, c in zip(Bhat, correction)]
                if weights is not None:  # imputed entries shrunk by the cross-fitted weights [design 2.11]
                    Bhat = [torch.where(obs[:, m, None], b, b * a) for m, (b, a) in enumerate(zip(Bhat, weights))]
                if encoders is None:
                    yield _Chunk(B, obs, Bhat, block_post, block_params, B, Bhat, block_post, block_params, spread)
                    continue
                Z = encode(encoders, B, obs)
                Zhat, post = calibrated(Z, obs, params, max_norm=1.0)  # [design 2.3] on the representations
                yield _Chunk(Z, obs, Zhat, post, params, B, Bhat, block_post, block_params, spread)

    def transform(self, X):
        """Representation of every sample, as chosen by ``output``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or list of arrays
            Same layout as in ``fit``; rows may miss any modalities.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_features_out)
            ``n_features_out = len(get_feature_names_out())``, set by
            ``output`` and ``add_indicator``; float32 when ``X`` is float32,
            float64 otherwise.
        """
        return self._transform(X)

    @_threaded
    def _transform(self, X, state=None):
        """:meth:`transform`, with the inference state prepared by the caller (``None``: afresh)."""
        dtype = _output_dtype(X)
        result, start = None, 0
        parts = self._output_parts()
        # the blocks (with their local correction) are read by 'blocks', and by every part of the representations
        # of encoder='identity', which are the blocks
        blocks_used = "blocks" in parts or (not self._trainer_.deep and self.output != "latent")
        for chunk in self._chunks(*self._inference_input(X), blocks_used=blocks_used, state=state):
            Zhat = chunk.Zhat
            pieces = {
                "latent": lambda: chunk.post.mean,
                "embeddings": lambda: torch.cat(Zhat, dim=1),
                "blocks": lambda: torch.cat(chunk.Bhat, dim=1),
                "mean": lambda: torch.nn.functional.normalize(torch.stack(Zhat, dim=1).mean(dim=1), dim=1),
                "anchor": lambda: leading_direction(torch.stack(Zhat, dim=1), eps=0.0)[0],
                "indicator": lambda: chunk.observed.to(torch.float64),  # which modalities the row observes
            }
            out = torch.cat([pieces[p]() for p in parts], dim=1)
            if result is None:  # written chunk by chunk into one preallocated output
                result = np.empty((_n_rows(X), out.shape[1]), dtype=dtype)
            result[start : start + out.shape[0]] = out.cpu().numpy()
            start += out.shape[0]
        return result

    @_threaded
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
        reps, variances = self._imputed(*self._inference_input(X), return_variance)
        return (reps, variances) if return_variance else reps

    def _imputed(self, X, blocks, observed, return_variance, *, level="representations"):
        """Calibrated representations, or (``level='blocks'``) standardized blocks, of validated ``X`` by modality,
        with their predictive variances (0 where observed)."""
        reps, variances = [], []
        blocks_level = level == "blocks" or not self._trainer_.deep  # identity: the representations are the blocks
        state = self._inference_state(blocks_level)
        for chunk in self._chunks(X, blocks, observed, blocks_used=blocks_level, spread_used=blocks_level and return_variance, state=state):
            Zhat, post, params = (chunk.Bhat, chunk.block_post, chunk.block_params) if blocks_level else (chunk.Zhat, chunk.post, chunk.params)
            reps.append([z.cpu().numpy() for z in Zhat])
            if return_variance:
                var = predictive_variance(post, params)
                if blocks_level and chunk.block_spread is not None:  # h (W V W^T + Psi) plus the neighbours' spread [design 2.9]
                    var = [self._trainer_.cfg.local_bandwidth * v + s for v, s in zip(var, chunk.block_spread)]
                if blocks_level and state.variance_scales is not None:  # matched to held-out errors [design 2.11]
                    var = [v * c for v, c in zip(var, state.variance_scales)]
                variances.append([torch.where(chunk.observed[:, m, None], 0.0, v).cpu().numpy() for m, v in enumerate(var)])
        names = list(self.modalities_)
        stack = lambda parts: {name: np.concatenate([p[m] for p in parts]) for m, name in enumerate(names)}  # noqa: E731
        return stack(reps), (stack(variances) if return_variance else None)

    @_threaded
    def impute(self, X, *, return_std=False):
        """``X`` with its missing blocks filled in, in the caller's units [design 2.3].

        Each missing block gets its conditional mean given the sample's observed
        blocks under the closed-form model (``W_m E[b | observed] + mu_m``,
        un-standardized); observed values are returned as they are, and NaNs
        inside an observed block get the feature's training mean (as in
        :meth:`transform`). The model is the closed-form model of the
        standardized blocks: the whole model of :class:`MultiViewPPCA` and of
        ``encoder='identity'``, the encoders' start for torch encoders
        (:meth:`impute_representations` imputes their representations).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or list of arrays
            Same layout as in ``fit``.
        return_std : bool, default=False
            Also return the predictive standard deviation of every entry, in the
            caller's units: ``sqrt`` of the diagonal of ``W_m V_O W_m^T + Psi_m``
            (with the local correction's spread, design 2.9), each feature's
            variance scaled to match held-out errors at fit (design 2.11),
            times ``feature_scale_`` for imputed blocks, ``feature_scale_`` (the
            feature's training standard deviation when ``standardize=True``) for
            NaNs filled with the mean, and 0 for observed values.

        Returns
        -------
        X_filled : ndarray of shape (n_samples, n_features)
            float32 when ``X`` is float32, float64 otherwise; a DataFrame with
            the input's column names (and index) under
            ``set_output(transform='pandas')`` or ``'polars'``.
        std : ndarray of shape (n_samples, n_features)
            Only when ``return_std``; the same container.
        """
        X_checked, blocks, observed = self._inference_input(X)
        reps, variances = self._imputed(X_checked, blocks, observed, return_variance=True, level="blocks")
        filled = np.array(X_checked, dtype=np.float64)
        std = np.zeros_like(filled)
        for m, (name, idx) in enumerate(blocks):
            rows = ~observed[:, m]
            scale = self.feature_scale_[idx]
            filled[np.ix_(rows, idx)] = reps[name][rows] * scale + self.feature_mean_[idx]  # un-standardized W_m m_i + mu_m
            std[np.ix_(rows, idx)] = np.sqrt(variances[name][rows]) * scale
            block = filled[:, idx]
            partial = np.isnan(block)
            block[partial] = np.broadcast_to(self._feature_fill_[idx], block.shape)[partial]
            filled[:, idx] = block
            std[:, idx] = np.where(partial, np.broadcast_to(scale, block.shape), std[:, idx])
        dtype = _output_dtype(X)
        filled = self._input_container(filled.astype(dtype, copy=False), X)
        return (filled, self._input_container(std.astype(dtype, copy=False), X)) if return_std else filled

    def _input_container(self, data, X):
        """``data`` (the input's columns) as ``set_output(transform=...)`` asks: a DataFrame with the input's
        feature names (``x0, x1, ...`` without them) and index, or the array itself by default."""
        dense = _get_output_config("transform", self)["dense"]
        if dense == "default":
            return data
        names = getattr(self, "feature_names_in_", None)
        names = np.asarray([f"x{j}" for j in range(data.shape[1])], dtype=object) if names is None else names
        original = X if hasattr(X, "columns") else None  # keeps a DataFrame's index
        return ADAPTERS_MANAGER.adapters[dense].create_container(data, original, columns=names, inplace=False)

    @_threaded
    def score_samples(self, X):
        """Observed-data log-likelihood of each sample's representations under the latent model [design 2.5].

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or list of arrays

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        chunks = self._chunks(*self._inference_input(X), blocks_used=False)
        return np.concatenate([log_likelihood(c.Z, c.observed, c.params, c.post).cpu().numpy() for c in chunks])

    def score(self, X, y=None):
        """Mean observed-data log-likelihood of the samples' representations [design 2.5].

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

        The calibrated blocks keep the input's feature names (``x0, x1, ...``
        without them), modality by modality; representations are
        ``<modality>_emb<j>``; ``latent<j>``, ``anchor<j>`` and ``mean<j>`` for
        the other outputs.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Checked against ``feature_names_in_``; not used otherwise.

        Returns
        -------
        ndarray of str objects
        """
        parts = self._output_parts()
        inputs = [str(f) for f in _check_feature_names_in(self, input_features)]  # the input's names, or x0, x1, ...
        names = {
            "blocks": lambda: [inputs[j] for idx in self.modalities_.values() for j in idx],  # the calibrated blocks
            "embeddings": lambda: [f"{name}_emb{j}" for name, w in zip(self.modalities_, self.components_) for j in range(w.shape[-2])],
            "latent": lambda: [f"latent{j}" for j in range(self.latent_dim_ * self.n_components_)],
            "anchor": lambda: [f"anchor{j}" for j in range(self.components_[0].shape[-2])],
            "mean": lambda: [f"mean{j}" for j in range(self.components_[0].shape[-2])],
            "indicator": lambda: [f"observed_{name}" for name in self.modalities_],
        }
        names = [n for p in parts for n in names[p]()]
        return np.asarray(names, dtype=object)

    # ------------------------------------------------------------------ persistence
    def __setstate__(self, state):
        """Re-resolve the device: a model fitted on a GPU loads and computes on a machine without one."""
        super().__setstate__(state)
        if "device_" in state:
            self.device_ = "cuda" if self.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
            self._trainer_.to(self.device_)
