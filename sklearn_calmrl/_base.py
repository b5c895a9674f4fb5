"""What the two estimators share: input validation, the one preparation step of every fit, chunked inference,
imputation, scoring, feature names and persistence.

:class:`~sklearn_calmrl.MultiViewPPCA` fits a closed-form model of the standardized blocks;
:class:`~sklearn_calmrl.CalMRLTransformer` holds such a ``MultiViewPPCA`` and trains encoders
on top of it. Each implements the hooks this shell declares abstract
(:class:`MultimodalBase`): ``_fit``, ``_output_parts``, ``_inference_state``,
``_output_piece``, ``_block_model``, ``_scored_model`` and ``_to_device``.
"""

import functools
import hashlib
import numbers
from abc import ABCMeta, abstractmethod
from typing import NamedTuple

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils._set_output import ADAPTERS_MANAGER, _get_output_config
from sklearn.utils.validation import _check_feature_names_in, _num_samples, check_is_fitted, validate_data

from ._chunks import chunk_rows
from ._latent import NOISE_MODELS, log_likelihood
from ._modalities import (
    check_fit_input,
    check_rows_observe,
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
from ._runtime import resolve_device, threaded

__all__ = ["MultimodalBase", "Prepared"]


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


def _shallow_copy(estimator):
    """A copy of a fitted estimator sharing its fitted objects (no ``__setstate__``, so nothing moves)."""
    new = object.__new__(type(estimator))
    new.__dict__.update(estimator.__dict__)
    return new


def _chunk_key(X):
    """Fingerprint of a validated ``partial_fit`` chunk: its shape, dtype and bytes."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((X.shape, X.dtype.str)).encode())
    h.update(np.ascontiguousarray(X).data)
    return h.hexdigest()


def _n_rows(X):
    return _num_samples(X[0]) if is_list_of_blocks(X) else _num_samples(X)


def _output_dtype(X):
    dtype = getattr(X, "dtype", None)
    if is_list_of_blocks(X):
        dtype = np.result_type(*[getattr(b, "dtype", np.float64) for b in X])
    return np.float32 if dtype == np.float32 else np.float64


class Prepared(NamedTuple):
    """What the one preparation step gives a fit: the checked, standardized rows that observe a modality [design 1]."""

    blocks: list  # (name, column indices) per modality
    standardization: tuple  # per-feature (mean, scale, fill) [design 1.3]
    X: list  # standardized float64 blocks as tensors on the device (converted once per fit), zeros where missing
    observed: torch.Tensor  # their mask (n_rows, k), on the device
    n_rows: int
    seed: object  # the fit's seed of the named random streams [design 3.5]; None for a later partial_fit chunk
    device: str
    key: object  # the chunk's fingerprint (partial_fit), else None
    n_features_in: int  # the input's width and column names, for every estimator these rows fit
    feature_names_in: object  # ndarray of str, or None
    n_linking: object = None  # the linking rows of all the data when these rows are a part of it [design 2.10]
    fit_single: object = None  # fits the single model on all the data when these rows are a sample of it (fit_dask)


def latent_attributes(params):
    """The fitted attributes that describe a latent model (a mixture's gain a leading component axis) [design 2.8]."""
    single, log_weights = params.members()
    stack = (lambda arrays: arrays[0]) if len(single) == 1 else np.stack  # noqa: E731
    numpy = lambda t: t.detach().cpu().numpy()  # noqa: E731
    k = len(single[0].W)
    return {
        "components_": [stack([numpy(c.W[m]) for c in single]) for m in range(k)],
        "means_": [stack([numpy(c.mu[m]) for c in single]) for m in range(k)],
        "noise_variances_": [stack([numpy(c.psi[m]) for c in single]) for m in range(k)],
        "noise_variance_": stack([np.array([numpy(p).mean() for p in c.psi]) for c in single]),
        "weights_": np.exp(numpy(log_weights)),
        "n_components_": len(single),
        "latent_dim_": params.latent_dim,
    }


class MultimodalBase(TransformerMixin, BaseEstimator, metaclass=ABCMeta):
    """Shared shell of the two estimators; subclasses add their parameters and implement the abstract hooks, as
    scikit-learn's ``BaseMixture`` declares its own."""

    # the parameters both estimators share; each adds its own to these
    _shared_parameter_constraints: dict = {
        "modalities": [None, list, tuple, dict, np.ndarray],
        "latent_dim": [Interval(numbers.Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "n_components": [Interval(numbers.Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "local_bandwidth": [None, Interval(numbers.Real, 0, None, closed="neither")],
        "max_block_width": [None, Interval(numbers.Integral, 1, None, closed="left")],
        "add_indicator": ["boolean"],
        "noise": [StrOptions(set(NOISE_MODELS))],
        "standardize": ["boolean"],
        "partial_nan": [StrOptions({"mean", "raise"})],
        "device": [StrOptions({"auto", "cpu", "cuda"})],
        "n_jobs": [None, numbers.Integral],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

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

    def _checked_standardization(self, blocks, patterns, n_rows, moments, where):
        """The checks of the rows a fit sees and the standardization they give [design 1.2, 1.3]: shared by ``fit``,
        the first ``partial_fit`` and :func:`~sklearn_calmrl.distributed.fit_dask` (which passes the distinct
        missingness ``patterns`` of its chunks)."""
        check_fit_input(blocks, patterns, n_rows, moments.count, where, getattr(self, "feature_names_in_", None))
        warn_disconnected(patterns, [name for name, _ in blocks])
        return statistics_from_moments(moments, self.standardize)  # [design 1.3]

    def _prepare(self, X, *, first, caller):
        """The one preparation step of ``fit`` and ``partial_fit`` [design 1]: validation, the rows that observe
        nothing (one warning), and on a first fit the checks, the standardization and the seed."""
        X, blocks, observed = self._validate_input(X, reset=first)
        keep = observed.any(axis=1)
        check_rows_observe(int((~keep).sum()), X.shape[0], caller, first=first)
        seed = None
        if first:
            where = (
                "fit (all {n} rows are NaN across its block)"
                if caller == "fit"
                else "the first chunk passed to partial_fit: the first chunk sets the standardization and the encoder "
                "initialisation, so it must observe every modality"
            )
            standardization = self._checked_standardization(blocks, observed[keep], int(keep.sum()), feature_moments(X, blocks, observed), where)
            seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        else:
            standardization = (self.feature_mean_, self.feature_scale_, self._feature_fill_)
        device = resolve_device(self.device) if first else self.device_
        Xs = [torch.as_tensor(b[keep], device=device) for b in standardized_blocks(X, blocks, observed, *standardization)]
        key = _chunk_key(X) if caller == "partial_fit" else None
        return Prepared(
            blocks, standardization, Xs, torch.as_tensor(observed[keep], device=device), int(keep.sum()), seed, device, key,
            self.n_features_in_, getattr(self, "feature_names_in_", None),
        )

    def _set_input_state(self, prep):
        """The fitted attributes of the input: width and column names, blocks, standardization, device."""
        self.n_features_in_ = prep.n_features_in
        if prep.feature_names_in is not None:
            self.feature_names_in_ = prep.feature_names_in
        self.modalities_ = {name: idx.tolist() for name, idx in prep.blocks}
        self.feature_mean_, self.feature_scale_, self._feature_fill_ = prep.standardization
        self.device_ = prep.device

    def _set_model_state(self, model, n_iter, loglik_curve, n_rows):
        """The fitted attributes of a fitted latent model, its variance explained and the counts."""
        vars(self).update(latent_attributes(model.params))
        self.n_iter_, self.loglik_curve_, self.n_samples_seen_ = n_iter, list(loglik_curve), n_rows

    def _warn_few_rows(self, counts, blocks):
        """Warn about modalities observed in no more training rows than ``latent_dim_`` [design 2.4]."""
        warn_few_rows(counts, [name for name, _ in blocks], self.latent_dim_)

    # ------------------------------------------------------------------ the hooks of the subclasses
    @abstractmethod
    def _fit(self, prep, incremental):
        """Fit on the prepared rows ``prep`` (:class:`Prepared`), or (``incremental``) take one step on a chunk of
        them [design 3.2]: the one fit path of ``fit``, ``partial_fit`` and
        :func:`~sklearn_calmrl.distributed.fit_dask`. Sets every fitted attribute; returns False, leaving them as
        they were, when a chunk is rejected."""

    @abstractmethod
    def _output_parts(self):
        """The parts of the output, in column order (``'blocks'``, ``'latent'``, ``'indicator'``, ...) [design 5]:
        the one definition that :meth:`transform`, :meth:`get_feature_names_out` and
        :func:`~sklearn_calmrl.distributed.transform_dask` read."""

    @abstractmethod
    def _inference_state(self, parts):
        """What every chunk of one inference call of ``parts`` reads, prepared once per call."""

    @abstractmethod
    def _output_piece(self, part, B, observed, state, done):
        """The columns of ``part`` for a chunk of standardized blocks ``B`` and its mask; ``done`` holds what the
        chunk's parts share."""

    @abstractmethod
    def _block_model(self):
        """The fitted closed-form model of the standardized blocks (a ``ClosedFormModel``), which :meth:`impute`
        completes with."""

    @abstractmethod
    def _scored_model(self):
        """``(params, represent)``: the float64 latent model :meth:`score_samples` evaluates and the map from a
        chunk's standardized blocks and mask to what it models."""

    @abstractmethod
    def _to_device(self, device):
        """Move the fitted model to ``device``."""

    # ------------------------------------------------------------------ fit
    @_all_or_nothing
    @_fit_context(prefer_skip_nested_validation=True)
    @threaded
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
        prep = self._prepare(X, first=True, caller="fit")
        self._fit(prep, incremental=False)
        self._warn_few_rows(prep.observed.sum(dim=0).tolist(), prep.blocks)
        return self

    @_all_or_nothing
    @_fit_context(prefer_skip_nested_validation=True)
    @threaded
    def partial_fit(self, X, y=None, *, n_linking_rows=None):
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
        standardization, ``latent_dim='auto'`` (from ``n_linking_rows``, or the
        first chunk's linking rows, so a small first chunk gives a small
        latent), the output's width, ``n_components='auto'``, the local
        correction's first stored rows and the cross-fitted weights of the
        imputed blocks (design 2.11). After ``fit``, ``partial_fit`` continues
        from the fitted model with empty running totals.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or list of arrays
            One chunk, same layout on every call. The first chunk must observe
            every modality.
        y : None
            Ignored.
        n_linking_rows : int or None, default=None
            Only read at the first call, as a classifier's ``partial_fit`` reads
            ``classes``: the number of rows of all the chunks to come that
            observe at least two modalities (all rows for one modality).
            ``latent_dim='auto'`` is then resolved from it as ``fit`` resolves
            it on all rows [design 2.10], so the output has ``fit``'s columns
            whatever the chunking
            (:func:`~sklearn_calmrl.distributed.partial_fit_dask` counts it).
            None: the first chunk's.

        Returns
        -------
        self : object
            The updated estimator.
        """
        first = not hasattr(self, "modalities_")
        prep = self._prepare(X, first=first, caller="partial_fit")
        if first:
            prep = prep._replace(n_linking=n_linking_rows)
        if prep.n_rows and self._fit(prep, incremental=True) and first:
            self._warn_few_rows(prep.observed.sum(dim=0).tolist(), prep.blocks)
        return self

    # ------------------------------------------------------------------ inference
    def _inference_input(self, X):
        """Validate ``X`` against the fitted model. Rows that observe nothing get the prior, without a warning: a fit
        warns once about its own such rows, and a pipeline transforms the same rows again."""
        check_is_fitted(self)
        return self._validate_input(X, reset=False)

    def _standardized_chunks(self, X, blocks, observed):
        """``(observed, blocks)`` per chunk of rows (:func:`~sklearn_calmrl._chunks.chunk_rows`): the mask and the
        standardized float64 blocks on the device, so that the working set beyond the input and the output is a
        few chunks."""
        standardization = (self.feature_mean_, self.feature_scale_, self._feature_fill_)
        step = chunk_rows(self.device_, X.shape[1])
        for s in range(0, X.shape[0], step):
            Xs = standardized_blocks(X[s : s + step], blocks, observed[s : s + step], *standardization)
            yield torch.as_tensor(observed[s : s + step], device=self.device_), [torch.as_tensor(b, dtype=torch.float64, device=self.device_) for b in Xs]

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

    @threaded
    def _transform(self, X, state=None):
        """:meth:`transform`, with the inference state prepared by the caller (``None``: afresh)."""
        dtype = _output_dtype(X)
        parts = self._output_parts()
        state = self._inference_state(parts) if state is None else state
        result, start = None, 0
        with torch.no_grad():
            for observed, B in self._standardized_chunks(*self._inference_input(X)):
                done = {}  # what several parts of this chunk share
                out = torch.cat([observed.to(torch.float64) if p == "indicator" else self._output_piece(p, B, observed, state, done) for p in parts], dim=1)
                if result is None:  # written chunk by chunk into one preallocated output
                    result = np.empty((_n_rows(X), out.shape[1]), dtype=dtype)
                result[start : start + out.shape[0]] = out.cpu().numpy()
                start += out.shape[0]
        return result

    def _by_modality(self, X, blocks, observed, compute):
        """``compute(B, observed) -> (values, variances)``, per-modality lists for a chunk of standardized blocks,
        over every chunk of validated ``X``, as two lists of per-modality arrays."""
        parts = []
        with torch.no_grad():
            for obs, B in self._standardized_chunks(X, blocks, observed):
                parts.append([[t.cpu().numpy() for t in group] for group in compute(B, obs)])
        return tuple([np.concatenate([p[g][m] for p in parts]) for m in range(len(blocks))] for g in range(2))

    def _completed_blocks(self, X, blocks, observed, model):
        """Standardized blocks of validated ``X`` completed by the closed-form ``model`` [design 2.3, 2.9, 2.11], and
        their predictive variances (0 where observed), as per-modality arrays."""
        state = model.completion(self.device_)
        return self._by_modality(X, blocks, observed, lambda B, obs: model.complete(B, obs, state, return_variance=True)[::2])

    @threaded
    def impute(self, X, *, return_std=False):
        """``X`` with its missing blocks filled in, in the caller's units [design 2.3].

        Each missing block gets its conditional mean given the sample's observed
        blocks under the closed-form model of the standardized blocks (``W_m
        E[b | observed] + mu_m``, with the local correction and the
        cross-fitted weights, un-standardized); observed values are returned as
        they are, and NaNs inside an observed block get the feature's training
        mean (as in :meth:`transform`). The model is :class:`MultiViewPPCA`'s
        whole model, and the ``block_model_`` of :class:`CalMRLTransformer`
        (``impute_representations`` imputes its representations).

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
        reps, variances = self._completed_blocks(X_checked, blocks, observed, self._block_model())
        filled = np.array(X_checked, dtype=np.float64)
        std = np.zeros_like(filled)
        for m, (name, idx) in enumerate(blocks):
            rows = ~observed[:, m]
            scale = self.feature_scale_[idx]
            filled[np.ix_(rows, idx)] = reps[m][rows] * scale + self.feature_mean_[idx]  # un-standardized W_m m_i + mu_m
            std[np.ix_(rows, idx)] = np.sqrt(variances[m][rows]) * scale
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

    @threaded
    def score_samples(self, X):
        """Observed-data log-likelihood of each sample under the latent model [design 2.5]: of its standardized
        blocks (:class:`MultiViewPPCA`) or of its representations (:class:`CalMRLTransformer`).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or list of arrays

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        X, blocks, observed = self._inference_input(X)
        params, represent = self._scored_model()
        with torch.no_grad():
            return np.concatenate([log_likelihood(represent(B, obs), obs, params).cpu().numpy() for obs, B in self._standardized_chunks(X, blocks, observed)])

    def score(self, X, y=None):
        """Mean observed-data log-likelihood of the samples [design 2.5].

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
        ``<modality>_emb<j>``, the latent ``latent<j>`` and the indicators
        ``observed_<modality>``.

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
        return np.asarray([n for p in parts for n in self._part_names(p, inputs)], dtype=object)

    def _part_names(self, part, inputs):
        """The output column names of ``part`` (``inputs``: the input's feature names), for the parts both estimators
        have; :class:`CalMRLTransformer` adds its embeddings."""
        if part == "blocks":  # the calibrated blocks, a wide one as its principal scores [design 5.1]
            axes = self._block_model().axes or [None] * len(self.modalities_)
            return [
                n
                for (name, idx), a in zip(self.modalities_.items(), axes)
                for n in ([inputs[j] for j in idx] if a is None else [f"{name}_pc{j}" for j in range(a.shape[1])])
            ]
        if part == "latent":
            return [f"latent{j}" for j in range(self.latent_dim_ * self.n_components_)]
        return [f"observed_{name}" for name in self.modalities_]  # "indicator"

    # ------------------------------------------------------------------ persistence
    def _place(self, device):
        """Compute on ``device`` from now on: move the fitted model there."""
        self.device_ = device
        self._to_device(device)

    def __setstate__(self, state):
        """Re-resolve the device: a model fitted on a GPU loads and computes on a machine without one."""
        super().__setstate__(state)
        if "device_" in state:
            self._place("cuda" if self.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
