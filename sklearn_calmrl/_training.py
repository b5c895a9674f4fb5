"""The bi-step training loop of the encoders [design 3], shared by ``fit`` and ``partial_fit``.

Closed-form steps (E/M on the latent model of the representations, a
:class:`~sklearn_calmrl._closed_form.ClosedFormModel`) alternate with gradient steps
of the alignment loss (:mod:`sklearn_calmrl._losses`) on the calibrated
representations: observed columns from the encoders, missing columns imputed from
the posterior of the shared latent. The encoders start from the closed-form model
of the blocks that :class:`~sklearn_calmrl.CalMRLTransformer` fitted first
[design 7.1].

:class:`Trainer` holds what the loop carries (encoders, loss, optimizer, the model
of the representations, curves and timings) and reads the training parameters from
the estimator it is given (``batch_size``, ``learning_rate``, ...), as
scikit-learn's MLP reads its own. ``fit`` and ``partial_fit`` take one path,
:meth:`Trainer._fit` (``incremental``, as scikit-learn's MLP ``_fit``); the
divergence guard, early stopping and the progress lines are the callbacks of its
epoch loop (:mod:`sklearn_calmrl._callbacks`) [design 3.3]. Optimizers are
constructed here and nowhere else.

References ``[design x.y]`` point into ``doc/design.rst``.
"""

import copy
import functools
import time
from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F

from ._alignment import ALIGNMENTS
from ._callbacks import DivergenceGuard, Progress, Run
from ._chunks import chunk_rows
from ._closed_form import ClosedFormModel, finite
from ._encoders import ENCODERS, make_encoders
from ._latent import calibrated, imputation_confidence, posterior, single_modality_maps
from ._losses import pair_infonce
from ._modalities import drop_modalities
from ._persistence import plain, register_record, unplain
from ._streams import INIT_ROWS, Seeded, init_rows, random_stream

__all__ = ["History", "Trainer", "encode", "encode_all", "represent", "hold_out"]

EPOCH_ROWS = 2048  # rows an epoch passes over at most (drawn afresh each epoch): a budget in samples seen [design 3.1]
EM_EVERY = 2  # epochs between refreshes of the model of the representations [design 3.1]
EM_REFRESH_ITER = 3  # EM iterations of each refresh [design 3.1]
REPRESENTATION_START_ITER = 20  # EM steps of the first model of the representations: the encoders move next [design 3.1]


@register_record
@dataclass
class History:
    """What training recorded: curves, counts and the time spent in each kind of step."""

    loss_curve: List[float] = field(default_factory=list)
    loss_terms: Dict[str, List[float]] = field(default_factory=dict)  # per-epoch mean of each loss term
    validation_scores: List[float] = field(default_factory=list)
    best_validation_score: float = float("nan")
    loglik_curve: List[float] = field(default_factory=list)
    n_iter: int = 0  # epochs (fit), calls (partial_fit)
    time_em: float = 0.0
    time_gradient: float = 0.0


def encode(encoders, X, observed):
    """``z_i^m = normalize(f_m(x_i^m))`` for every modality; rows that miss ``m`` get zeros [design 2].

    Training runs float32 encoders; ``transform`` runs a float64 copy so that a
    row's output does not depend on which other rows share its batch.
    """
    zero = torch.zeros((), dtype=X[0].dtype, device=X[0].device)
    return [
        torch.where(observed[:, m, None], F.normalize(enc(x), dim=1), zero)
        for m, (enc, x) in enumerate(zip(encoders, X))
    ]


@torch.no_grad()
def encode_all(encoders, X, observed, *, dtype=torch.float64):
    """Encode every row without gradients, in chunks (bounded working set, :func:`~sklearn_calmrl._chunks.chunk_rows`)."""
    chunk_size = chunk_rows(observed.device)
    parts = [
        encode(encoders, [x[s : s + chunk_size] for x in X], observed[s : s + chunk_size])
        for s in range(0, observed.shape[0], chunk_size)
    ]
    return [torch.cat([p[m] for p in parts]).to(dtype) for m in range(len(X))]


def represent(B, observed, params, encoders):
    """Calibrated representations of standardized blocks and their posterior under ``params`` [design 2.3]."""
    return calibrated(encode(encoders, B, observed), observed, params, max_norm=1.0)


def hold_out(prep, fraction):
    """Early stopping's held-out rows, drawn before anything is fitted [design 3.3]: the prepared rows left to train
    on, and the held-out float32 blocks and mask."""
    n = prep.n_rows
    n_val = max(1, int(round(fraction * n)))
    if n - n_val < 2:
        raise ValueError(f"early_stopping needs more rows: {n} rows leave {n - n_val} for training.")
    perm = torch.randperm(n, generator=random_stream(prep.seed, "validation split")).to(prep.device)
    rows, held = perm[n_val:], perm[:n_val]
    train = prep._replace(X=[b[rows] for b in prep.X], observed=prep.observed[rows], n_rows=n - n_val)
    return train, ([b[held].float() for b in prep.X], prep.observed[held])


def alignment_score(Z, observed, min_rows=3):
    """Mean symmetric cross-modal Recall@1 over the modality pairs observed together on ``min_rows`` rows [design 3.3].

    ``Z`` are unit representations per modality; None when no pair qualifies.
    """
    scores = []
    for a in range(len(Z)):
        for b in range(a + 1, len(Z)):
            rows = observed[:, a] & observed[:, b]
            if int(rows.sum()) < min_rows:
                continue
            S = Z[a][rows] @ Z[b][rows].T
            hit = torch.diagonal(S)
            recall = 0.5 * ((S.max(dim=1).values <= hit).double().mean() + (S.max(dim=0).values <= hit).double().mean())
            scores.append(float(recall))
    return float(np.mean(scores)) if scores else None


class Trainer(Seeded):
    """State and steps of the bi-step loop of the encoders [design 3].

    Parameters
    ----------
    device : str
    seed : int
        Seeds the encoders' initial weights, the shuffles and the start of the
        model of the representations (named random streams [design 3.5]; never
        the global torch RNG).
    epoch_rows : int or None, default=None
        Rows an epoch of ``fit`` passes over at most, drawn afresh each epoch
        [design 3.1]; None: ``EPOCH_ROWS`` (read when the trainer is made).
    refresh_size : int, default=INIT_ROWS
        Rows that start and refresh the model of the representations at most
        [design 2.6].

    Attributes
    ----------
    encoders : torch.nn.ModuleList
    model : ClosedFormModel
        The latent model of the representations.
    spec : dict
        What rebuilds the encoders and the loss: the encoder's kind and
        parameters, input widths, ``embed_dim``, the alignment objective and its
        parameters.
    history : History
    """

    def __init__(self, *, device, seed, epoch_rows=None, refresh_size=INIT_ROWS):
        self.device = device
        self.seed = seed
        self.epoch_rows = EPOCH_ROWS if epoch_rows is None else epoch_rows
        self.refresh_size = refresh_size
        self.encoders = self.loss_fn = self.optimizer = self.model = self.spec = self.refresh_rows = None
        self.history = History()
        self.incremental = True  # False after fit: the next partial_fit starts fresh curves

    # ------------------------------------------------------------------ set-up
    def start(self, est, X, observed, block, generator):
        """Encoders started from the closed-form model of the blocks ``block`` [design 7.1], a loss, an optimizer,
        and the model of the representations (at most ``REPRESENTATION_START_ITER`` EM steps) [design 3.1].

        Encoder m's first ``latent_dim`` outputs start as the posterior-mean map
        ``x^m -> E[b | x^m]`` of the single model of the blocks, so all modalities
        start in one latent coordinate system (outputs beyond ``latent_dim``
        project on the block's principal axes). ``X`` are the float32 blocks the
        encoders train on.
        """
        latent_dim = block.latent_dim_
        embed_dim = latent_dim if est.embed_dim is None else est.embed_dim
        if embed_dim < latent_dim:
            raise ValueError(
                f"embed_dim={embed_dim} is smaller than latent_dim={latent_dim}: the encoders start as the "
                "posterior-mean map onto the latent_dim shared coordinates, which needs embed_dim >= latent_dim "
                "(embed_dim=None makes them equal)."
            )
        encoder, alignment = est._encoder(), est._alignment()
        vars(self).pop("objective", None)  # the cached objective of an earlier spec
        self.spec = {
            "encoder": [_kind(encoder, ENCODERS), encoder.get_params()],
            "n_features": [x.shape[1] for x in X],
            "embed_dim": embed_dim,
            "alignment": [_kind(alignment, ALIGNMENTS), alignment.get_params()],
        }
        maps = [(A.float(), c.float()) for A, c in single_modality_maps(block.single)]
        self.encoders = make_encoders(encoder, X, observed, embed_dim, shared_maps=maps, generator=self.random("encoders"), device=self.device)
        self.new_loss(est.learning_rate)
        self.model = ClosedFormModel(
            latent_dim=latent_dim, n_components=block.n_components_, noise=block.noise, max_iter=block.max_iter, tol=block.tol,
            seed=self.seed, verbose=est.verbose, label="latent model of the representations",
        )
        self.refresh(X, observed, generator, REPRESENTATION_START_ITER, "latent model of the representations")

    @functools.cached_property
    def objective(self):
        """The alignment objective and its parameters (:class:`~sklearn_calmrl.PMRL` or :class:`~sklearn_calmrl.GRAM`),
        rebuilt from ``spec`` once (not saved: ``spec`` is)."""
        kind, params = self.spec["alignment"]
        return ALIGNMENTS[kind](**params)

    def new_loss(self, learning_rate):
        """A fresh loss module of the objective (GRAM learns its temperature, the matching head its weights) and a
        fresh optimizer."""
        self.loss_fn = self.objective.make_loss(self.spec["embed_dim"], self.random("matching head")).to(self.device)
        self.optimizer = self._optimizer(learning_rate)

    def _optimizer(self, learning_rate, state=None):
        """Adam over the encoders and the loss module (the only place an optimizer is built), optionally with ``state``."""
        optimizer = torch.optim.Adam(list(self.encoders.parameters()) + list(self.loss_fn.parameters()), lr=learning_rate)
        if state is not None:
            optimizer.load_state_dict(state)  # Adam moves its state to the parameters' device
        return optimizer

    # ------------------------------------------------------------------ closed-form steps on the representations
    def refresh(self, X, observed, generator, max_iter, label, level=1):
        """Encode the refresh rows (no grad), then EM warm-started from the model of the representations [design 3.1].

        The refresh rows are all rows, or ``refresh_size`` of them drawn at the first
        call and kept for the fit when there are more [design 2.6]: the model of
        the representations has ``k d (q + 2)`` parameters, which 20,000 rows
        estimate, and a refresh then costs the same at 10^5 or 10^6 rows.
        """
        t0 = time.perf_counter()
        first = self.model.params is None
        if first:
            self.refresh_rows = init_rows(observed.shape[0], generator, self.refresh_size).to(self.device)
        rows = self.refresh_rows
        Z = encode_all(self.encoders, [x[rows] for x in X], observed[rows])
        if first:
            self.model.initialise(Z, observed[rows], generator)
        self.model.refresh(Z, observed[rows], max_iter, label, level)
        self.history.loglik_curve.append(self.model.loglik_curve[-1])
        self.history.time_em += time.perf_counter() - t0  # the refresh's encoding counts as closed-form time

    # ------------------------------------------------------------------ gradient steps
    def batch_terms(self, xb, ob, calibrate, generator=None):
        """Alignment loss terms of one mini-batch on observed + imputed columns [design 3.1, 4].

        Imputed columns are detached calibrated targets: no gradient flows through
        the imputation into the observed encoders (letting it flow cost 3 to 26
        points of retrieval on the tuning rows, [design 7.2]). With the
        objective's ``modality_dropout`` (and a ``generator``) some observed
        columns are hidden and imputed from the rest [design 3.6]; with
        ``weight_imputations`` imputed columns are scaled by their confidence
        [design 2.14].
        """
        objective, params = self.objective, self.model.params
        Z = encode(self.encoders, xb, ob)
        source = [z.detach().double() for z in Z]
        if calibrate:
            seen = ob
            if objective.modality_dropout > 0 and generator is not None:
                seen = drop_modalities(ob, objective.modality_dropout, generator)  # [design 3.6]
            post = posterior(source, seen, params)  # E-step with theta fixed [design 3.1]
            Zhat, _ = calibrated(source, seen, params, max_norm=1.0, post=post)
            if objective.weight_imputations:  # [design 2.14]
                confidence = imputation_confidence(post, params, seen)
                Zhat = [z * confidence[:, m, None] for m, z in enumerate(Zhat)]
            Zhat = [torch.where(seen[:, m, None], Z[m], Zhat[m].to(Z[m].dtype)) for m in range(len(Z))]  # observed keep their gradient
            terms = self.loss_fn.terms(torch.stack(Zhat, dim=1))
        else:
            terms = self.loss_fn.terms(torch.stack(Z, dim=1), observed=ob)  # the observed-only ablation [design 4.4]
        if objective.pair_weight > 0:
            terms["pair"] = objective.pair_weight * pair_infonce(Z, ob)  # [design 4.6]
        if objective.matching_weight > 0:
            terms["match"] = objective.matching_weight * self.loss_fn.matching(Z, ob, generator)  # [design 4.7]
        return terms

    def gradient_pass(self, X, observed, generator, batch_size, calibrate, rows=None):
        """One shuffled pass of mini-batch steps of the alignment loss, latent parameters fixed [design 3.1].

        The pass covers ``rows`` rows drawn without replacement (all of them when
        None). Returns the per-term mean over those rows; the total is NaN when a
        step made a weight non-finite (the pass then stops early and the caller
        restores a snapshot).
        """
        t0 = time.perf_counter()
        self.encoders.train()
        order = torch.randperm(observed.shape[0], generator=generator).to(observed.device)[:rows]
        n = order.numel()
        sums = {}
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            terms = self.batch_terms([x[idx] for x in X], observed[idx], calibrate, generator)
            loss = sum(terms.values())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            for name, value in {**terms, "total": loss}.items():
                sums[name] = sums.get(name, 0.0) + value.detach() * idx.shape[0]
            if not finite(self.encoders, self.loss_fn):  # an overflowing step: end the pass
                sums["total"] = sums["total"] + float("nan")
                break
        self.encoders.eval()
        self.history.time_gradient += time.perf_counter() - t0
        return {name: float(v) / n for name, v in sums.items()}

    def _record_terms(self, means):
        self.history.loss_curve.append(means["total"])
        for name, value in means.items():
            if name != "total":
                self.history.loss_terms.setdefault(name, []).append(value)

    def validation_score(self, X, observed, calibrate):
        """Alignment of held-out rows [design 3.3]: their cross-modal Recall@1, or minus their loss when no pair is observed."""
        score = alignment_score(encode_all(self.encoders, X, observed), observed)
        if score is not None:
            return score
        with torch.no_grad():
            return -float(sum(self.batch_terms(X, observed, calibrate).values()))

    # ------------------------------------------------------------------ snapshots
    def snapshot(self):
        return copy.deepcopy((self.encoders.state_dict(), self.loss_fn.state_dict(), self.optimizer.state_dict())) + (self.model.params,)

    def restore(self, snap):
        self.encoders.load_state_dict(snap[0])
        self.loss_fn.load_state_dict(snap[1])
        self.optimizer.load_state_dict(snap[2])
        self.model.params = snap[3]

    # ------------------------------------------------------------------ fit and partial_fit
    def _fit(self, est, Xs, observed, block, *, incremental=False, key=None, early_stopping=None, validation=None):
        """The one training path of ``fit`` and ``partial_fit`` [design 3.1, 3.2]; returns False when a
        ``partial_fit`` chunk was rejected.

        ``fit`` starts the encoders from ``block`` and runs ``max_epochs`` epochs of
        the bi-step loop. A ``partial_fit`` chunk (``incremental``) runs one pass of
        gradient steps over the chunk (the first chunk starts the encoders from
        ``block``, fitted on it), then recomputes the chunk's EM statistics under
        the current model, replaces its earlier contribution (``key``) in the
        running totals and does one M-step from them. Training that diverges
        (non-finite loss, log-likelihood or latent model) keeps the last finite
        state with a RuntimeWarning (:class:`~sklearn_calmrl._callbacks.DivergenceGuard`).

        Parameters
        ----------
        est : CalMRLTransformer
            Whose parameters drive the loop.
        Xs : list of Tensor (n, d_in_m)
            Standardized float64 blocks on the device, zeros where a modality is missing.
        observed : bool Tensor (n, k)
        block : ClosedFormModel
            The fitted closed-form model of the blocks.
        incremental : bool, default=False
            A ``partial_fit`` chunk.
        key : str or None
            The chunk's fingerprint (``partial_fit``).
        early_stopping : EarlyStopping or None
            The early-stopping callback of a ``fit`` [design 3.3], with ``validation``.
        validation : (list of Tensor, bool Tensor) or None
            Its held-out rows, drawn before anything was fitted.
        """
        if incremental and not self.incremental:  # continuing a fitted model: fresh curves
            self.history, self.incremental = History(), True
        generator = self.random("partial_fit", self.history.n_iter) if incremental else self.random("training")
        X = [x.float() for x in Xs]
        first = self.encoders is None
        if first or not incremental:
            self.incremental = incremental
            self.start(est, X, observed, block, generator)
            if incremental:  # the curves count the chunks, not the start
                self.history.loglik_curve, self.history.n_iter = [], 0
        run = Run(1 if incremental else est.max_epochs, est.learning_rate, est.calibrate, validation, incremental, first)
        guard = DivergenceGuard()
        callbacks = [guard]
        if early_stopping is not None:
            callbacks.append(early_stopping)
        if est.verbose >= 1 and not incremental:
            callbacks.append(Progress())
        for callback in callbacks:
            callback.on_train_begin(self, run)
        diverged = False
        for epoch in range(1, run.max_epochs + 1):
            if epoch > 1 and (epoch - 1) % EM_EVERY == 0:
                self.refresh(X, observed, generator, EM_REFRESH_ITER, f"epoch {epoch} refresh", level=2)
            terms = self.gradient_pass(X, observed, generator, est.batch_size, est.calibrate, rows=None if incremental else self.epoch_rows)
            diverged = guard.diverged(self, epoch, terms)
            if diverged:
                break
            self._record_terms(terms)
            if not incremental:
                self.history.n_iter = epoch
            if any([callback.on_epoch_end(self, epoch, terms) for callback in callbacks]):
                break
        for callback in callbacks:
            callback.on_train_end(self)
        if not incremental:
            self.encoders.eval()
            self.refresh_rows = None  # only the fit's refreshes read them
            return True
        if diverged and not first:
            return False
        if diverged:  # the first chunk keeps the initial encoders, with a fresh loss and optimizer
            self.new_loss(est.learning_rate)
        t0 = time.perf_counter()
        accepted = self.model.incremental_step(encode_all(self.encoders, X, observed), observed, key, first=first)
        self.history.time_em += time.perf_counter() - t0
        if accepted:
            self.history.n_iter += 1
            self.history.loglik_curve.append(self.model.loglik_curve[-1])
        return accepted

    # ------------------------------------------------------------------ inference
    def inference_state(self, device):
        """The float64 model of the representations and a float64 copy of the encoders, which every chunk of one
        inference call reads (a row's output then does not depend on the rows batched with it)."""
        return self.model.params.to(dtype=torch.float64, device=device), copy.deepcopy(self.encoders).to(device=device, dtype=torch.float64)

    # ------------------------------------------------------------------ copies, devices, persistence
    def clone(self):
        """An independent copy (``partial_fit`` works on one, so a failed call changes nothing)."""
        new = copy.copy(self)
        new.encoders, new.loss_fn = copy.deepcopy((self.encoders, self.loss_fn))
        new.optimizer = new._optimizer(self.optimizer.param_groups[0]["lr"], copy.deepcopy(self.optimizer.state_dict()))
        new.model = self.model.clone()
        new.history = copy.deepcopy(self.history)
        return new

    def to(self, device):
        """Move every tensor the loop carries to ``device`` (after unpickling on another machine)."""
        self.device = device
        self.encoders.to(device)
        self.loss_fn.to(device)
        self.optimizer = self._optimizer(self.optimizer.param_groups[0]["lr"], self.optimizer.state_dict())
        self.model.to(device)
        return self

    def __getstate__(self):
        """The trainer as plain data [design 7.3]: numpy arrays, numbers, strings, lists and dicts only.

        Tensors become CPU numpy arrays, the records their fields, the encoders,
        the loss module and the optimizer their state dicts; :meth:`__setstate__`
        rebuilds the torch objects. Pickle, joblib and ``skops.io`` (which loads
        no code it has not been told to trust) all read this state.
        """
        state = {k: v for k, v in self.__dict__.items() if k not in ("encoders", "loss_fn", "optimizer", "model", "objective")}
        state["model"] = self.model.__getstate__()
        state["encoders"] = [dict(e.state_dict()) for e in self.encoders]
        state["loss_fn"] = dict(self.loss_fn.state_dict())
        optimizer = self.optimizer.state_dict()
        state["optimizer"] = {"state": {str(i): s for i, s in optimizer["state"].items()}, "param_groups": optimizer["param_groups"]}
        return plain(state)

    def __setstate__(self, state):
        state = unplain(state)
        encoders, loss_state, optimizer, model = (state.pop(k) for k in ("encoders", "loss_fn", "optimizer", "model"))
        self.__dict__.update(state)
        self.device = "cpu"
        self.model = ClosedFormModel.__new__(ClosedFormModel)
        self.model.__setstate__(model)
        (kind, params), spec = self.spec["encoder"], self.spec
        encoder = ENCODERS[kind](**params)
        self.encoders = torch.nn.ModuleList(encoder.make(d, spec["embed_dim"]) for d in spec["n_features"])
        for module, weights in zip(self.encoders, encoders):
            module.load_state_dict(weights)
        groups = optimizer["param_groups"]
        self.new_loss(groups[0]["lr"])
        self.loss_fn.load_state_dict(loss_state)
        self.optimizer = self._optimizer(groups[0]["lr"], {"state": {int(i): s for i, s in optimizer["state"].items()}, "param_groups": groups})


def _kind(config, kinds):
    """The name under which ``kinds`` lists the class of the parameter object ``config``."""
    return next(name for name, cls in kinds.items() if isinstance(config, cls))
