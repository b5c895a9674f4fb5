"""The alignment objectives as parameters (``_alignment``): the loss modules they build, their validation and their
parameters reached through the estimator (issue 18)."""

import math

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from sklearn_calmrl import GRAM, PMRL, CalMRLTransformer
from sklearn_calmrl._alignment import resolve_alignment
from sklearn_calmrl._losses import GRAMLoss, MatchingLoss, PMRLLoss
from sklearn_calmrl.datasets import ampute_modalities, load_image_segmentation

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

FAST = dict(latent_dim=8, embed_dim=16, max_epochs=3, add_indicator=False, device="cpu", random_state=0)


def test_each_objective_builds_its_loss_module():
    pmrl = PMRL(tau_intra=0.01).make_loss(4, None)
    assert isinstance(pmrl.main, PMRLLoss) and pmrl.main.tau_intra == 0.01 and pmrl.matching is None
    assert len(list(pmrl.parameters())) == 0  # PMRL learns nothing besides the encoders
    gram = GRAM().make_loss(4, None)
    assert isinstance(gram.main, GRAMLoss)
    torch.testing.assert_close(gram.main.log_tau.detach(), torch.tensor(math.log(0.07)))  # GRAM's learned temperature
    matched = PMRL(matching_weight=0.1).make_loss(4, torch.Generator().manual_seed(0))
    assert isinstance(matched.matching, MatchingLoss)


def test_resolve_alignment_gives_a_validated_copy():
    assert isinstance(resolve_alignment("pmrl"), PMRL) and isinstance(resolve_alignment("gram"), GRAM)
    given = PMRL(tau_inter=0.2)
    resolved = resolve_alignment(given)
    assert resolved is not given and resolved.get_params() == given.get_params()
    with pytest.raises(ValueError, match="modality_dropout"):
        resolve_alignment(GRAM(modality_dropout=1.0))


def test_alignment_parameters_are_reachable_through_set_params():
    """A structured alignment parameter (issue 18): PMRL's temperatures through set_params and a grid search."""
    data = load_image_segmentation()
    X = ampute_modalities(data.data, data.modalities, rate=0.5, random_state=0)
    mods = data.modalities
    est = CalMRLTransformer(mods, alignment=PMRL(tau_intra=0.2), **FAST)
    assert est.get_params()["alignment__tau_intra"] == 0.2
    est.set_params(alignment__tau_inter=0.05)
    assert est.alignment.tau_inter == 0.05 and clone(est).alignment.tau_inter == 0.05
    search = GridSearchCV(est, {"alignment__tau_intra": [0.1, 0.3]}, cv=2).fit(X[:200])
    assert search.best_params_["alignment__tau_intra"] in (0.1, 0.3)
    with pytest.raises(ValueError, match="tau_intra"):
        CalMRLTransformer(mods, alignment=PMRL(tau_intra=-1.0), **FAST).fit(X[:100])
    fitted = CalMRLTransformer(mods, alignment=GRAM(pair_weight=0.0), **FAST).fit(X[:200])
    assert set(fitted.loss_terms_curve_) == {"gram"}  # no pair term at weight 0
    assert "pair" in CalMRLTransformer(mods, alignment="gram", **FAST).fit(X[:200]).loss_terms_curve_
    assert np.isfinite(fitted.transform(X[:50])).all()
