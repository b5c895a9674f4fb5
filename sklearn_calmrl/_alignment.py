"""The alignment objectives as parameters of :class:`~sklearn_calmrl.CalMRLTransformer` [design 4]: :class:`PMRL` and
:class:`GRAM`, with the optional terms both share; each builds its loss module (:mod:`sklearn_calmrl._losses`).

References ``[design x.y]`` point into ``doc/design.rst``.
"""

import numbers

from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval

from ._losses import GRAMLoss, MatchingLoss, Objective, PMRLLoss
from ._utils import resolved

__all__ = ["ALIGNMENTS", "GRAM", "PMRL", "resolve_alignment"]


# the parameters every objective adds to its own [design 3.6, 4.6, 4.7, 2.14]
_SHARED_CONSTRAINTS = {
    "pair_weight": [Interval(numbers.Real, 0, None, closed="left")],
    "matching_weight": [Interval(numbers.Real, 0, None, closed="left")],
    "modality_dropout": [Interval(numbers.Real, 0, 1, closed="left")],
    "weight_imputations": ["boolean"],
}


class _Alignment(BaseEstimator):
    """What both objectives share: the optional terms and what the loss sees of the imputations."""

    def make_loss(self, embed_dim, generator):
        """A fresh loss module: the objective's terms, and the matching head when ``matching_weight > 0`` (its initial
        weights drawn from the CPU ``generator``)."""
        matching = MatchingLoss(embed_dim, generator=generator) if self.matching_weight > 0 else None
        return Objective(self._main_loss(), matching)


_SHARED_DOCS = """pair_weight : float, default={pair_weight}
        Weight of a symmetric InfoNCE term over every pair of modalities
        observed together [design 4.6].{pair_note}
    matching_weight : float, default=0.0
        Weight of the paper's matching loss: a learned head tells a row's true
        pair of observed modalities from a mismatched one (hard in-batch
        negatives) [design 4.7]. The paper uses 0.1.
    modality_dropout : float in [0, 1), default=0.0
        Share of the observed modalities hidden in every mini-batch, in rows
        that observe at least two (never all of a row's): the loss then sees
        calibrated imputations where the truth is known [design 3.6].
    weight_imputations : bool, default=False
        Scale each imputed representation by the share of its signal that the
        row's observed modalities determine, so that poorly determined
        imputations weigh less in the loss [design 2.14]."""


class PMRL(_Alignment):
    """The PMRL objective [design 4.1], as a value of ``CalMRLTransformer(alignment=...)``.

    Read more in the :ref:`User Guide <user_guide>`.

    ``alignment='pmrl'`` is ``PMRL()``. Its parameters are reachable through the
    estimator's ``set_params`` (``alignment__tau_intra=0.2``) and a grid search
    once ``alignment`` holds an instance.

    Parameters
    ----------
    tau_intra : float, default=0.3
        Temperature of the softmax over the singular values normalized to
        ``[0, 1]`` (the intra-sample term).
    tau_inter : float, default=0.1
        Temperature of the contrastive term on the leading directions (the
        inter-sample term).
    {shared}
    """

    _parameter_constraints: dict = {
        "tau_intra": [Interval(numbers.Real, 0, None, closed="neither")],
        "tau_inter": [Interval(numbers.Real, 0, None, closed="neither")],
        **_SHARED_CONSTRAINTS,
    }

    def __init__(self, *, tau_intra=0.3, tau_inter=0.1, pair_weight=0.0, matching_weight=0.0, modality_dropout=0.0, weight_imputations=False):
        self.tau_intra = tau_intra
        self.tau_inter = tau_inter
        self.pair_weight = pair_weight
        self.matching_weight = matching_weight
        self.modality_dropout = modality_dropout
        self.weight_imputations = weight_imputations

    def _main_loss(self):
        return PMRLLoss(tau_intra=self.tau_intra, tau_inter=self.tau_inter)


class GRAM(_Alignment):
    """The GRAM objective [design 4.3], as a value of ``CalMRLTransformer(alignment=...)``.

    Read more in the :ref:`User Guide <user_guide>`.

    ``alignment='gram'`` is ``GRAM()``; GRAM learns its own temperature.

    Parameters
    ----------
    {shared}
    """

    _parameter_constraints: dict = dict(_SHARED_CONSTRAINTS)

    def __init__(self, *, pair_weight=1.0, matching_weight=0.0, modality_dropout=0.0, weight_imputations=False):
        self.pair_weight = pair_weight
        self.matching_weight = matching_weight
        self.modality_dropout = modality_dropout
        self.weight_imputations = weight_imputations

    def _main_loss(self):
        return GRAMLoss()


PMRL.__doc__ = PMRL.__doc__.replace("{shared}", _SHARED_DOCS.format(pair_weight="0.0", pair_note=""))
GRAM.__doc__ = GRAM.__doc__.replace(
    "{shared}",
    _SHARED_DOCS.format(pair_weight="1.0", pair_note=" GRAM's volume cannot tell a vector\n        from its opposite, so it needs this partner."),
)


ALIGNMENTS = {"pmrl": PMRL, "gram": GRAM}


def resolve_alignment(alignment):
    """``'pmrl'`` / ``'gram'`` as the default instance, an instance as a validated copy [design 4]."""
    return resolved(alignment, ALIGNMENTS)
