"""The callbacks of the epoch loop [design 3.3], as skorch's: small objects with one hook per moment of training.

The loop of :class:`~sklearn_calmrl._training.Trainer` calls ``on_train_begin``
once, ``on_epoch_end`` after every epoch (any callback returning True stops
training) and ``on_train_end`` once, in the order of its list; the
:class:`DivergenceGuard` comes first and also checks every epoch before the others
see it. :class:`EarlyStopping` is also the public value of
``CalMRLTransformer(early_stopping=...)``.

References ``[design x.y]`` point into ``doc/design.rst``.
"""

import numbers
import time
from typing import NamedTuple

from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval

from ._closed_form import finite
from ._utils import resolved, warn

__all__ = ["Callback", "DivergenceGuard", "EarlyStopping", "Progress", "Run", "resolve_early_stopping"]


class Run(NamedTuple):
    """What one call of the training loop tells its callbacks."""

    max_epochs: int  # epochs of this call (1 for a partial_fit chunk)
    learning_rate: float
    calibrate: bool
    validation: object  # early stopping's held-out (float32 blocks, mask), or None
    incremental: bool  # a partial_fit chunk
    first: bool  # the call that started the encoders


class Callback:
    """One hook per moment of training; a callback overrides those it needs."""

    def on_train_begin(self, trainer, run):
        """Before the first epoch of ``run`` (a :class:`Run`)."""

    def on_epoch_end(self, trainer, epoch, terms):
        """After epoch ``epoch`` (its per-term mean ``terms``); True stops training."""
        return False

    def on_train_end(self, trainer):
        """After the last epoch."""


class DivergenceGuard(Callback):
    """Keeps the state of the last finite epoch; a non-finite loss, log-likelihood or latent model restores it and
    warns (``fit`` stops, ``partial_fit`` rejects the chunk) [design 3.3]. One guard serves both."""

    def on_train_begin(self, trainer, run):
        self.run, self.snapshot = run, trainer.snapshot()

    def diverged(self, trainer, epoch, terms):
        """Whether epoch ``epoch`` left a non-finite state, which is then replaced by the last finite one."""
        if finite(terms["total"], *trainer.history.loglik_curve[-1:], *trainer.model.params.tensors()):
            return False
        trainer.restore(self.snapshot)
        loss = terms["total"]
        if self.run.incremental:
            kept = "kept the initial encoders." if self.run.first else "the model was left as it was."
            what = f"partial_fit diverged on this chunk (loss={loss}); {kept}"
        else:
            what = f"CalMRL training diverged at epoch {epoch} (loss={loss}); kept the parameters of epoch {epoch - 1} and stopped."
        warn(f"{what} Lower learning_rate (now {self.run.learning_rate}).", RuntimeWarning)
        return True

    def on_epoch_end(self, trainer, epoch, terms):
        if epoch < self.run.max_epochs:  # the last epoch's state is never restored: no copy of it
            self.snapshot = trainer.snapshot()
        return False


class EarlyStopping(Callback, BaseEstimator):
    """Early stopping on held-out rows [design 3.3], as a value of ``CalMRLTransformer(early_stopping=...)``.

    Read more in the :ref:`User Guide <user_guide>`.

    ``early_stopping=True`` is ``EarlyStopping()``. ``fit`` holds out
    ``validation_fraction`` of the rows before anything is fitted, measures
    their cross-modal Recall@1 after every epoch, stops after
    ``n_iter_no_change`` epochs without a gain of more than ``tol`` and restores
    the best epoch (the start included); a ConvergenceWarning says when the
    score was still improving at ``max_epochs``. ``partial_fit`` trains on every
    row of its chunks. Its parameters are reachable through the estimator's
    ``set_params`` (``early_stopping__tol=1e-3``) and a grid search once
    ``early_stopping`` holds an instance.

    Parameters
    ----------
    validation_fraction : float, default=0.1
        Share of the rows held out.
    n_iter_no_change : int, default=10
        Epochs without an improvement of the validation score before training
        stops.
    tol : float, default=1e-4
        The gain of the validation score (a Recall@1 in ``[0, 1]``) that counts
        as an improvement.

    See Also
    --------
    sklearn.neural_network.MLPClassifier : Whose ``early_stopping``,
        ``validation_fraction``, ``n_iter_no_change`` and ``tol`` these follow.
    """

    _parameter_constraints: dict = {
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
    }

    def __init__(self, *, validation_fraction=0.1, n_iter_no_change=10, tol=1e-4):
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol

    def on_train_begin(self, trainer, run):
        self._run = run
        self._best = (trainer.validation_score(*run.validation, run.calibrate), trainer.snapshot())
        self._no_improve, self._stopped = 0, False

    def on_epoch_end(self, trainer, epoch, terms):
        score = trainer.validation_score(*self._run.validation, self._run.calibrate)
        trainer.history.validation_scores.append(score)
        if score > self._best[0] + self.tol:
            self._best, self._no_improve = (score, trainer.snapshot()), 0
        else:
            self._no_improve += 1
        self._stopped = self._no_improve >= self.n_iter_no_change
        return self._stopped

    def on_train_end(self, trainer):
        trainer.history.best_validation_score = self._best[0]
        trainer.restore(self._best[1])
        if not self._stopped and self._run.max_epochs > 0:
            warn(
                f"CalMRL's validation score was still improving at max_epochs={self._run.max_epochs} "
                f"(n_iter_no_change={self.n_iter_no_change}); consider raising max_epochs.",
                ConvergenceWarning,
            )


def resolve_early_stopping(early_stopping):
    """``False`` as None, ``True`` as ``EarlyStopping()``, an instance as a validated copy [design 3.3]."""
    return resolved(early_stopping, {True: EarlyStopping}) if early_stopping else None


class Progress(Callback):
    """One line per epoch at verbose 1 or more: the loss and its terms, the validation score, the log-likelihood."""

    def on_train_begin(self, trainer, run):
        self.max_epochs, self.t0 = run.max_epochs, time.perf_counter()

    def on_epoch_end(self, trainer, epoch, terms):
        history = trainer.history
        line = f"epoch {epoch}/{self.max_epochs}: loss {terms['total']:.4f} (" + ", ".join(f"{k} {v:.4f}" for k, v in terms.items() if k != "total") + ")"
        if len(history.validation_scores) == epoch:
            line += f", validation score {history.validation_scores[-1]:.4f}"
        now = time.perf_counter()
        trainer.log(f"{line}, log-likelihood {history.loglik_curve[-1]:.4f}, {now - self.t0:.2f}s")
        self.t0 = now
        return False
