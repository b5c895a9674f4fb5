"""The bi-step training loop of the encoders [design 3], shared by ``fit`` and ``partial_fit``.

Closed-form steps (E/M on the latent model of the representations, a
:class:`~sklearn_calmrl._closed_form.ClosedFormModel`) alternate with gradient steps
of the alignment loss (:mod:`sklearn_calmrl._alignment`) on the calibrated
representations: observed columns from the encoders, missing columns imputed from
the posterior of the shared latent. The encoders start from the closed-form model
of the blocks that :class:`~sklearn_calmrl.CalMRLTransformer` fitted first
[design 7.1].

:class:`Trainer` holds what the loop carries (encoders, loss, optimizer, the model
of the representations, curves and timings) and reads the training parameters from
the estimator it is given (``batch_size``, ``learning_rate``, ...), as
scikit-learn's MLP reads its own. Early stopping, the divergence guard and the
progress lines are small callbacks the epoch loop calls [design 3.3].
Optimizers are constructed here and nowhere else.

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
from sklearn.exceptions import ConvergenceWarning

from ._alignment import ALIGNMENTS
from ._chunks import chunk_rows
from ._closed_form import ClosedFormModel, finite
from ._encoders import make_encoder, make_encoders
from ._latent import calibrated, imputation_confidence, posterior, single_modality_maps
from ._losses import pair_infonce
from ._modalities import drop_modalities
from ._persistence import plain, register_record, unplain
from ._streams import INIT_ROWS, Seeded, init_rows, random_stream
from ._utils import warn

__all__ = ["History", "Trainer", "encode", "encode_all", "represent", "hold_out"]

EPOCH_ROWS = 2048  # rows an epoch passes over at most (drawn afresh each epoch): a budget in samples seen [design 3.1]
EM_EVERY = 2  # epochs between refreshes of the model of the representations [design 3.1]
EM_REFRESH_ITER = 3  # EM iterations of each refresh [design 3.1]
REPRESENTATION_START_ITER = 20  # EM steps of the first model of the representations: the encoders move next [design 3.1]
VALIDATION_TOL = 1e-4  # improvement of the validation score that counts for early stopping [design 3.3]


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
    """Encode every row without gradients, in chunks (bounded working set, :func:`~sklearn_calmrl._closed_form.chunk_rows`)."""
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


# ---------------------------------------------------------------------- callbacks of the epoch loop [design 3.3]
class DivergenceGuard:
    """Keeps the state of the last finite epoch; a non-finite loss, log-likelihood or latent model restores it,
    warns and stops training."""

    def __init__(self, trainer, learning_rate):
        self.learning_rate = learning_rate
        self.snapshot = trainer.snapshot()

    def diverged(self, trainer, epoch, terms):
        if finite(terms["total"], trainer.history.loglik_curve[-1], *trainer.model.params.tensors()):
            return False
        trainer.restore(self.snapshot)
        warn(
            f"CalMRL training diverged at epoch {epoch} (loss={terms['total']}); kept the parameters of epoch {epoch - 1} "
            f"and stopped. Lower learning_rate (now {self.learning_rate}).",
            RuntimeWarning,
        )
        return True

    def on_epoch_end(self, trainer, epoch, terms):
        self.snapshot = trainer.snapshot()
        return False

    def on_train_end(self, trainer):
        pass


class ValidationStopping:
    """Early stopping on held-out rows [design 3.3]: their cross-modal Recall@1 after every epoch, the best epoch
    (the start included) restored at the end, a stop after ``n_iter_no_change`` epochs without a gain of
    ``VALIDATION_TOL``."""

    def __init__(self, trainer, validation, n_iter_no_change, max_epochs, calibrate):
        self.validation, self.patience, self.max_epochs, self.calibrate = validation, n_iter_no_change, max_epochs, calibrate
        self.best = (trainer.validation_score(*validation, calibrate), trainer.snapshot())
        self.no_improve, self.stopped = 0, False

    def on_epoch_end(self, trainer, epoch, terms):
        score = trainer.validation_score(*self.validation, self.calibrate)
        trainer.history.validation_scores.append(score)
        if score > self.best[0] + VALIDATION_TOL:
            self.best, self.no_improve = (score, trainer.snapshot()), 0
        else:
            self.no_improve += 1
        self.stopped = self.no_improve >= self.patience
        return self.stopped

    def on_train_end(self, trainer):
        trainer.history.best_validation_score = self.best[0]
        trainer.restore(self.best[1])
        if not self.stopped and self.max_epochs > 0:
            warn(
                f"CalMRL's validation score was still improving at max_epochs={self.max_epochs} "
                f"(n_iter_no_change={self.patience}); consider raising max_epochs.",
                ConvergenceWarning,
            )


class Progress:
    """One line per epoch at verbose 1 or more: the loss and its terms, the validation score, the log-likelihood."""

    def __init__(self, max_epochs):
        self.max_epochs, self.t0 = max_epochs, time.perf_counter()

    def on_epoch_end(self, trainer, epoch, terms):
        history = trainer.history
        line = f"epoch {epoch}/{self.max_epochs}: loss {terms['total']:.4f} (" + ", ".join(f"{k} {v:.4f}" for k, v in terms.items() if k != "total") + ")"
        if len(history.validation_scores) == epoch:
            line += f", validation score {history.validation_scores[-1]:.4f}"
        now = time.perf_counter()
        trainer.log(f"{line}, log-likelihood {history.loglik_curve[-1]:.4f}, {now - self.t0:.2f}s")
        self.t0 = now
        return False

    def on_train_end(self, trainer):
        pass


class Trainer(Seeded):
    """State and steps of the bi-step loop of the encoders [design 3].

    Parameters
    ----------
    device : str
    seed : int
        Seeds the encoders' initial weights, the shuffles and the start of the
        model of the representations (named random streams [design 3.5]; never
        the global torch RNG).

    Attributes
    ----------
    encoders : torch.nn.ModuleList
    model : ClosedFormModel
        The latent model of the representations.
    spec : dict
        What rebuilds the encoders and the loss: encoder kind, input widths,
        ``embed_dim``, hidden sizes, alignment objective and its parameters.
    history : History
    """

    def __init__(self, *, device, seed):
        self.device = device
        self.seed = seed
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
        alignment = est._alignment()
        vars(self).pop("objective", None)  # the cached objective of an earlier spec
        self.spec = {
            "encoder": est.encoder,
            "n_features": [x.shape[1] for x in X],
            "embed_dim": embed_dim,
            "hidden_layer_sizes": tuple(est.hidden_layer_sizes),
            "alignment": [next(k for k, c in ALIGNMENTS.items() if isinstance(alignment, c)), alignment.get_params()],
        }
        maps = [(A.float(), c.float()) for A, c in single_modality_maps(block.single)]
        self.encoders = make_encoders(
            est.encoder, X, observed, embed_dim, self.spec["hidden_layer_sizes"], shared_maps=maps,
            generator=self.random("encoders"), device=self.device,
        )
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

        The refresh rows are all rows, or ``INIT_ROWS`` of them drawn at the first
        call and kept for the fit when there are more [design 2.6]: the model of
        the representations has ``k d (q + 2)`` parameters, which 20,000 rows
        estimate, and a refresh then costs the same at 10^5 or 10^6 rows.
        """
        t0 = time.perf_counter()
        first = self.model.params is None
        if first:
            self.refresh_rows = init_rows(observed.shape[0], generator, INIT_ROWS).to(self.device)
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

    # ------------------------------------------------------------------ fit
    def fit(self, est, Xs, observed, block, validation=None):
        """Encoders started from ``block``, then the epochs of the bi-step loop on the standardized blocks [design 3].

        Parameters
        ----------
        est : CalMRLTransformer
            Whose parameters drive the loop.
        Xs : list of Tensor (n, d_in_m)
            Standardized float64 blocks on the device, zeros where a modality is missing.
        observed : bool Tensor (n, k)
        block : ClosedFormModel
            The fitted closed-form model of the blocks.
        validation : (list of Tensor, bool Tensor) or None
            Held-out rows for early stopping [design 3.3], drawn before anything was fitted.

        Training that diverges (non-finite loss or log-likelihood) stops with a
        RuntimeWarning and keeps the last finite state.
        """
        generator = self.random("training")
        self.incremental = False
        X = [x.float() for x in Xs]
        self.start(est, X, observed, block, generator)

        guard = DivergenceGuard(self, est.learning_rate)
        callbacks = []
        if validation is not None:
            callbacks.append(ValidationStopping(self, validation, est.n_iter_no_change, est.max_epochs, est.calibrate))
        if est.verbose >= 1:
            callbacks.append(Progress(est.max_epochs))
        for epoch in range(1, est.max_epochs + 1):
            if epoch > 1 and (epoch - 1) % EM_EVERY == 0:
                self.refresh(X, observed, generator, EM_REFRESH_ITER, f"epoch {epoch} refresh", level=2)
            terms = self.gradient_pass(X, observed, generator, est.batch_size, est.calibrate, rows=EPOCH_ROWS)
            if guard.diverged(self, epoch, terms):
                break
            self._record_terms(terms)
            self.history.n_iter = epoch
            stop = [callback.on_epoch_end(self, epoch, terms) for callback in callbacks]
            guard.on_epoch_end(self, epoch, terms)
            if any(stop):
                break
        for callback in callbacks:
            callback.on_train_end(self)
        self.encoders.eval()
        self.refresh_rows = None  # only the fit's refreshes read them
        return self

    # ------------------------------------------------------------------ partial_fit
    def partial_fit(self, est, Xs, observed, key, block):
        """One incremental step on a chunk [design 3.2]; returns False when the chunk was rejected.

        The first call starts the encoders from ``block`` (the closed-form model of
        the blocks, fitted on this chunk) and the model of the representations.
        Every call then runs one pass of gradient steps over the chunk, recomputes
        the chunk's EM statistics under the current model, replaces its earlier
        contribution (``key``) in the running totals and does one M-step from them.
        """
        if not self.incremental:  # continuing a fitted model: fresh curves
            self.history, self.incremental = History(), True
        generator = self.random("partial_fit", self.history.n_iter)
        X = [x.float() for x in Xs]
        first = self.encoders is None
        if first:
            self.start(est, X, observed, block, generator)
            self.history.loglik_curve, self.history.n_iter = [], 0
        snap = self.snapshot()
        terms = self.gradient_pass(X, observed, generator, est.batch_size, est.calibrate)
        if not (finite(terms["total"]) and finite(*self.model.params.tensors())):
            self.restore(snap)
            warn(
                f"partial_fit diverged on this chunk (loss={terms['total']}); "
                + ("kept the initial encoders." if first else "the model was left as it was.")
                + f" Lower learning_rate (now {est.learning_rate}).",
                RuntimeWarning,
            )
            if not first:
                return False
            self.new_loss(est.learning_rate)
        else:
            self._record_terms(terms)
        t0 = time.perf_counter()
        stats = self.model.incremental_step(encode_all(self.encoders, X, observed), observed, key)
        self.history.time_em += time.perf_counter() - t0
        if stats is None:
            if first:
                raise ValueError("partial_fit's M-step on the first chunk gave non-finite latent parameters; rescale X.")
            warn("partial_fit's M-step gave non-finite parameters; the model was left as it was.", RuntimeWarning)
            return False
        self.history.n_iter += 1
        self.history.loglik_curve.append(float(stats.loglik) / stats.n_rows)
        return True

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
        spec = self.spec
        self.encoders = torch.nn.ModuleList(
            make_encoder(spec["encoder"], d, spec["embed_dim"], spec["hidden_layer_sizes"]) for d in spec["n_features"]
        )
        for module, weights in zip(self.encoders, encoders):
            module.load_state_dict(weights)
        groups = optimizer["param_groups"]
        self.new_loss(groups[0]["lr"])
        self.loss_fn.load_state_dict(loss_state)
        self.optimizer = self._optimizer(groups[0]["lr"], {"state": {int(i): s for i, s in optimizer["state"].items()}, "param_groups": groups})
