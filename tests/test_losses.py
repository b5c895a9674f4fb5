"""Exact checks of the alignment losses (design 4, ``_losses``) against slow references."""

import math

import pytest
import torch

from sklearn_calmrl import PMRL
from sklearn_calmrl._losses import (
    GRAMLoss,
    MatchingHead,
    MatchingLoss,
    PMRLLoss,
    _hard_negatives,
    gram_loss,
    gram_volume,
    leading_direction,
    matching_loss,
    pair_infonce,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small tensors: extra threads only contend for the shared cores


def pmrl_loss(Z, observed=None, **params):
    """The loss of ``PMRL(**params)`` on ``Z``: the sum of the terms of the module it builds."""
    return sum(PMRL(**params).make_loss(Z.shape[-1], None).terms(Z, observed).values())


def _gram(Z, **kw):
    """:func:`gram_loss` with GRAM's anchor and label smoothing (those of ``GRAMLoss()``)."""
    return gram_loss(Z, **{"anchor": 0, "label_smoothing": 0.1, **kw})


def _unit(shape, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


def _smoothed_ce(logits, target, smoothing):
    """Cross-entropy with label smoothing, written out (independent of F.cross_entropy)."""
    logp = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    n_classes = logits.shape[-1]
    losses = [
        -(1 - smoothing) * logp[i, target[i]] - smoothing * logp[i].sum() / n_classes
        for i in range(logits.shape[0])
    ]
    return torch.stack(losses).mean()


def _svd_direction(Zi):
    """Leading left singular vector (sign-fixed) and singular values of the d x |O| stack Zi^T, via SVD.

    Sign: sum_m <u, z_m> > 0; when that sum is a tie (within 1e3 eps |O|), the first column with a
    non-negligible projection gets <u, z_m> > 0 [design 4.2].
    """
    U, S, _ = torch.linalg.svd(Zi.T, full_matrices=False)
    u = U[:, 0]
    proj = (Zi @ u) / S[0]  # = v_1, the leading right singular vector
    tol = 1e3 * torch.finfo(Zi.dtype).eps * Zi.shape[0]
    decider = proj.sum() if abs(proj.sum()) > tol else proj[torch.nonzero(proj.abs() > tol)[0, 0]]
    return (-u if decider < 0 else u), S


def _pmrl_reference(Z, observed=None, tau_intra=0.3, tau_inter=0.1, eps=1e-6):
    """Per-sample loop reference of PMRL with torch.linalg.svd [design 4.1].

    L_intra on the singular values over their energy, shat = s / sqrt(sum s^2), averaged over samples with at
    least two columns; L_inter over samples with at least one.
    """
    if observed is None:
        observed = torch.ones(Z.shape[:2], dtype=torch.bool)
    intra, us = [], []
    for i in range(Z.shape[0]):
        cols = torch.nonzero(observed[i]).flatten()
        if cols.numel() == 0:
            continue
        u, S = _svd_direction(Z[i, cols])
        s = torch.sqrt(S**2 + eps)
        if cols.numel() > 1:
            intra.append(-torch.log_softmax(s / s.norm() / tau_intra, dim=0)[0])
        us.append(u)
    U = torch.stack(us)
    logits = U @ U.T / tau_inter
    inter = torch.stack([-torch.log_softmax(logits[i], dim=0)[i] for i in range(len(us))])
    return (torch.stack(intra).mean() if intra else torch.zeros((), dtype=Z.dtype)), inter.mean()


def _det_volume(A, eps=1e-6):
    return torch.sqrt(torch.abs(torch.det(A @ A.T)) + eps)


def _gram_reference(Z, tau, anchor=0, smoothing=0.1, eps=1e-6):
    """Loop over pairs (i, j) of Vol(a_i, v_2j, ..., v_kj) with torch.det."""
    B, k, _ = Z.shape
    others = [m for m in range(k) if m != anchor]
    logits = torch.empty(B, B, dtype=Z.dtype)
    for i in range(B):
        for j in range(B):
            A = torch.stack([Z[i, anchor]] + [Z[j, m] for m in others])
            logits[i, j] = -_det_volume(A, eps) / tau
    target = torch.arange(B)
    return (_smoothed_ce(logits, target, smoothing) + _smoothed_ce(logits.T, target, smoothing)) / 2


MASK = torch.tensor(
    [
        [True, True, True],
        [True, False, True],
        [False, True, False],
        [True, True, True],
        [True, False, True],
        [False, True, False],
        [True, False, True],
        [False, False, False],
    ]
)


# ----------------------------------------------------------------------------- leading_direction


def test_leading_direction_matches_svd():
    Z = _unit((6, 3, 5), seed=0)
    u, s = leading_direction(Z, eps=0.0)
    assert u.shape == (6, 5) and s.shape == (6, 3)
    for i in range(6):
        u_ref, S = _svd_direction(Z[i])
        torch.testing.assert_close(s[i], torch.linalg.svdvals(Z[i].T), atol=1e-8, rtol=0)
        torch.testing.assert_close(s[i], S, atol=1e-8, rtol=0)
        torch.testing.assert_close(u[i], u_ref, atol=1e-8, rtol=0)
    assert torch.all((Z @ u.unsqueeze(-1)).squeeze(-1).sum(1) > 0)  # sign convention
    torch.testing.assert_close(u.norm(dim=1), torch.ones(6, dtype=Z.dtype))


def _negative_cosine_pairs(n, d, seed, dtype=torch.float64):
    """Two unit columns per sample with a negative cosine: sum_m <u, z_m> is exactly 0 for both signs of u."""
    Z = _unit((n, 2, d), seed=seed, dtype=dtype)
    flip = (Z[:, 0] * Z[:, 1]).sum(-1) > 0
    Z[flip, 1] = -Z[flip, 1]
    return Z


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_two_modality_sign_tie_is_broken_by_the_first_modality(dtype):
    Z = _negative_cosine_pairs(200, 5, seed=21, dtype=dtype)
    u, _ = leading_direction(Z, eps=0.0)
    proj = torch.einsum("nkd,nd->nk", Z, u)
    assert torch.all(proj.sum(1).abs() < 1e-4)  # the sign test alone is a tie on every row
    assert torch.all(proj[:, 0] > 0) and torch.all(proj[:, 1] < 0)  # first modality decides: u ~ z_0 - z_1
    expected = torch.nn.functional.normalize(Z[:, 0] - Z[:, 1], dim=1)
    torch.testing.assert_close(u, expected, atol=1e-5 if dtype == torch.float32 else 1e-10, rtol=0)
    # the same rows in another batch order and batch size give the same directions (no rounding-picked signs)
    perm = torch.randperm(200, generator=torch.Generator().manual_seed(0))
    u_perm = torch.cat([leading_direction(Z[perm[s : s + 7]], eps=0.0)[0] for s in range(0, 200, 7)])
    torch.testing.assert_close(u_perm, u[perm], atol=1e-5 if dtype == torch.float32 else 1e-10, rtol=0)


def test_two_modality_tie_in_masked_patterns_matches_svd_reference():
    Z = _negative_cosine_pairs(6, 4, seed=22)
    Z = torch.cat([Z, _unit((6, 1, 4), seed=23)], dim=1)  # a third column, masked out on half the rows
    observed = torch.ones(6, 3, dtype=torch.bool)
    observed[::2, 2] = False
    u, _ = leading_direction(Z, observed, eps=0.0)
    for i in range(6):
        u_ref, _ = _svd_direction(Z[i, observed[i]])
        torch.testing.assert_close(u[i], u_ref, atol=1e-10, rtol=0)


def test_leading_direction_eps_and_ordering():
    Z = _unit((4, 4, 6), seed=1)
    eps = 1e-3
    _, s = leading_direction(Z, eps=eps)
    S = torch.linalg.svdvals(Z.transpose(1, 2))
    torch.testing.assert_close(s, torch.sqrt(S**2 + eps), atol=1e-8, rtol=0)
    assert torch.all(s[:, :-1] >= s[:, 1:])
    # unit columns: sum_j s_ij^2 = k [design 4]
    torch.testing.assert_close((s**2).sum(1), torch.full((4,), 4 + 4 * eps, dtype=Z.dtype))


def test_leading_direction_observed_uses_observed_columns_only():
    Z = _unit((8, 3, 5), seed=2)
    Z_poisoned = Z.clone()
    Z_poisoned[~MASK] = float("nan")  # missing columns must never be read
    u, s = leading_direction(Z_poisoned, MASK, eps=0.0)
    assert torch.isfinite(u).all() and torch.isfinite(s).all()
    for i in range(8):
        cols = torch.nonzero(MASK[i]).flatten()
        if cols.numel() == 0:
            assert torch.all(u[i] == 0) and torch.all(s[i] == 0)
            continue
        u_ref, S = _svd_direction(Z[i, cols])
        torch.testing.assert_close(u[i], u_ref, atol=1e-8, rtol=0)
        torch.testing.assert_close(s[i, : cols.numel()], S, atol=1e-8, rtol=0)
        assert torch.all(s[i, cols.numel():] == 0)
    # an all-true mask is the unmasked computation
    u_all, s_all = leading_direction(Z, torch.ones(8, 3, dtype=torch.bool))
    u_full, s_full = leading_direction(Z)
    torch.testing.assert_close(u_all, u_full)
    torch.testing.assert_close(s_all, s_full)


def test_anchor_shift_is_zero_for_aligned_and_positive_otherwise():
    z = _unit((1, 5), seed=3)
    Z_aligned = z.expand(3, 5).unsqueeze(0)
    mask = torch.tensor([[True, False, True]])
    u_obs, _ = leading_direction(Z_aligned, mask)
    u_full, _ = leading_direction(Z_aligned)
    torch.testing.assert_close(u_obs, u_full)
    Z = _unit((1, 3, 5), seed=4)
    assert (leading_direction(Z, mask)[0] - leading_direction(Z)[0]).norm() > 1e-3


# ----------------------------------------------------------------------------- PMRL


@pytest.mark.parametrize("tau_intra,tau_inter", [(0.05, 0.1), (0.5, 0.3)])
def test_pmrl_matches_loop_reference(tau_intra, tau_inter):
    Z = _unit((7, 3, 6), seed=5)
    intra, inter = _pmrl_reference(Z, tau_intra=tau_intra, tau_inter=tau_inter)
    loss = pmrl_loss(Z, tau_intra=tau_intra, tau_inter=tau_inter)
    torch.testing.assert_close(loss, intra + inter, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(PMRLLoss(tau_intra=tau_intra, tau_inter=tau_inter)(Z), loss)


def test_pmrl_single_sample_is_intra_and_aligned_is_lower():
    # with one sample L_inter = CE over a single logit = 0, so the loss is L_intra
    Z = _unit((1, 3, 6), seed=6)
    intra, inter = _pmrl_reference(Z)
    assert inter.item() == 0
    torch.testing.assert_close(pmrl_loss(Z), intra)
    aligned = _unit((1, 1, 6), seed=7).expand(1, 3, 6)
    assert pmrl_loss(aligned) < 0.2 * pmrl_loss(Z)
    # perfect alignment: s = (sqrt(k + eps), sqrt(eps), sqrt(eps)), normalized by its energy, at tau 0.3:
    # the minimum of L_intra, about log(1 + (k - 1) exp(-1 / tau))
    s = torch.tensor([math.sqrt(3 + 1e-6), 1e-3, 1e-3], dtype=torch.float64)
    torch.testing.assert_close(pmrl_loss(aligned), -torch.log_softmax(s / s.norm() / 0.3, 0)[0])
    assert abs(pmrl_loss(aligned).item() - math.log(1 + 2 * math.exp(-1 / 0.3))) < 1e-3


def test_pmrl_observed_matches_reference_by_pattern():
    Z = _unit((8, 3, 5), seed=8)
    intra, inter = _pmrl_reference(Z, MASK)
    loss = pmrl_loss(Z, MASK)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, intra + inter, atol=1e-10, rtol=1e-10)
    Z_poisoned = Z.clone().requires_grad_(True)
    with torch.no_grad():
        Z_poisoned[~MASK] = float("nan")
    loss_p = pmrl_loss(Z_poisoned, MASK)
    loss_p.backward()
    torch.testing.assert_close(loss_p, loss)
    assert torch.isfinite(Z_poisoned.grad[MASK]).all()
    assert torch.all(Z_poisoned.grad[~MASK] == 0)
    torch.testing.assert_close(pmrl_loss(Z, torch.ones(8, 3, dtype=torch.bool)), pmrl_loss(Z))


def test_pmrl_observed_single_modality_rows_and_empty():
    Z = _unit((4, 3, 5), seed=9, dtype=torch.float32).requires_grad_(True)
    single = torch.tensor([[True, False, False], [False, True, False], [False, False, True], [True, False, False]])
    loss = pmrl_loss(Z, single)
    _, inter = _pmrl_reference(Z.detach().double(), single)
    torch.testing.assert_close(loss.double(), inter, atol=1e-5, rtol=1e-5)  # intra is 0
    loss.backward()
    assert torch.isfinite(Z.grad).all()
    empty = pmrl_loss(Z, torch.zeros(4, 3, dtype=torch.bool))
    assert empty.item() == 0 and empty.grad_fn is not None


def _orthonormal_case():
    e = torch.eye(4, dtype=torch.float64)
    return torch.stack([e[:3], e[[0, 0, 1]], e[[1, 2, 2]]])  # equal singular values in each sample


def test_pmrl_gradients_finite_on_degenerate_spectra():
    e = torch.eye(4, dtype=torch.float64)
    cases = {
        "orthonormal": _orthonormal_case(),
        "two_equal_top": torch.stack([e[[0, 0, 1, 1]], e[[2, 2, 3, 3]]]),
        "identical": _unit((3, 1, 4), seed=10).expand(3, 4, 4).contiguous(),
    }
    for name, base in cases.items():
        for dtype in (torch.float64, torch.float32):
            Z = base.to(dtype).clone().requires_grad_(True)
            loss = pmrl_loss(Z)
            loss.backward()
            assert torch.isfinite(loss), name
            assert torch.isfinite(Z.grad).all(), name
            assert Z.grad.abs().sum() > 0, name


def test_pmrl_gradcheck_intra():
    # one sample: L_inter is identically 0 and L_intra depends on eigenvalues only, whose gradient is exact
    X = torch.randn(1, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(11))

    def f(x):
        return pmrl_loss(torch.nn.functional.normalize(x, dim=-1), tau_intra=0.5)

    assert torch.autograd.gradcheck(f, (X.requires_grad_(True),))
    X4 = torch.randn(1, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    mask = torch.tensor([[True, False, True, True]])

    def g(x):
        return pmrl_loss(torch.nn.functional.normalize(x, dim=-1), mask, tau_intra=0.5)

    assert torch.autograd.gradcheck(g, (X4.requires_grad_(True),))


def _pmrl_frozen_eigvec(Z, V1, signs, observed, tau_intra=0.5, tau_inter=0.5, eps=1e-6):
    """PMRL with the eigenvectors v_i1 and signs frozen (the surrogate the detach implements), via SVD."""
    intra, us = [], []
    for i in range(Z.shape[0]):
        cols = torch.nonzero(observed[i]).flatten()
        s = torch.sqrt(torch.linalg.svdvals(Z[i, cols].T) ** 2 + eps)
        if cols.numel() > 1:
            intra.append(-torch.log_softmax(s / s.norm() / tau_intra, dim=0)[0])
        us.append(torch.nn.functional.normalize(signs[i] * Z[i, cols].T @ V1[i], dim=0))
    U = torch.stack(us)
    logits = U @ U.T / tau_inter
    inter = torch.stack([-torch.log_softmax(logits[i], dim=0)[i] for i in range(len(us))])
    return torch.stack(intra).mean() + inter.mean()


@pytest.mark.parametrize("masked", [False, True])
def test_pmrl_gradient_is_frozen_eigenvector_gradient(masked):
    # the gradient reaches Z through s and through u = Z^T v1 / s1, but not through v1 itself (detached):
    # it equals the finite-difference gradient of the loss with v1 held fixed
    Z = _unit((3, 3, 4), seed=13)
    observed = MASK[[0, 1, 4]] if masked else torch.ones(3, 3, dtype=torch.bool)
    V1, signs = [], []
    for i in range(3):
        cols = torch.nonzero(observed[i]).flatten()
        _, _, Vh = torch.linalg.svd(Z[i, cols].T, full_matrices=False)
        u_ref, _ = _svd_direction(Z[i, cols])
        V1.append(Vh[0])
        signs.append(torch.sign(u_ref @ (Z[i, cols].T @ Vh[0])))
    Zg = Z.clone().requires_grad_(True)
    pmrl_loss(Zg, observed if masked else None, tau_intra=0.5, tau_inter=0.5).backward()
    h = 1e-6
    numeric = torch.zeros_like(Z)
    for idx in torch.nonzero(observed.unsqueeze(-1).expand_as(Z)):
        idx = tuple(idx.tolist())
        Zp, Zm = Z.clone(), Z.clone()
        Zp[idx] += h
        Zm[idx] -= h
        f_p = _pmrl_frozen_eigvec(Zp, V1, signs, observed)
        f_m = _pmrl_frozen_eigvec(Zm, V1, signs, observed)
        numeric[idx] = (f_p - f_m) / (2 * h)
    torch.testing.assert_close(Zg.grad, numeric, atol=1e-7, rtol=1e-6)


# ----------------------------------------------------------------------------- GRAM


def test_gram_volume_matches_det_reference():
    A = _unit((2, 3, 3, 5), seed=12)
    vol = gram_volume(A)
    assert vol.shape == (2, 3)
    for idx in [(0, 0), (0, 2), (1, 1)]:
        torch.testing.assert_close(vol[idx], _det_volume(A[idx]), atol=1e-12, rtol=1e-12)
    e = torch.eye(5, dtype=torch.float64)
    torch.testing.assert_close(gram_volume(e[:3], eps=0.0), torch.tensor(1.0, dtype=torch.float64))
    same = _unit((1, 5), seed=13).expand(3, 5)
    assert gram_volume(same, eps=0.0) < 1e-6
    torch.testing.assert_close(gram_volume(same), torch.tensor(1e-3, dtype=torch.float64), atol=1e-6, rtol=0)


def test_gram_volume_gradcheck_and_degenerate_grad():
    X = torch.randn(2, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(14))
    assert torch.autograd.gradcheck(
        lambda x: gram_volume(torch.nn.functional.normalize(x, dim=-1)), (X.requires_grad_(True),)
    )
    same = _unit((1, 5), seed=15).expand(3, 5).clone().requires_grad_(True)
    gram_volume(same).backward()
    assert torch.isfinite(same.grad).all()


@pytest.mark.parametrize("anchor", [0, 2])
def test_gram_loss_matches_pair_loop_reference(anchor):
    Z = _unit((5, 3, 4), seed=16)
    log_tau = math.log(0.07)
    loss = _gram(Z, log_tau=log_tau, anchor=anchor)
    torch.testing.assert_close(loss, _gram_reference(Z, 0.07, anchor=anchor), atol=1e-10, rtol=1e-10)
    module = GRAMLoss(anchor=anchor).double()
    torch.testing.assert_close(module.log_tau.detach(), torch.tensor(log_tau, dtype=torch.float64))
    torch.testing.assert_close(module(Z), loss)


def test_gram_loss_gradients_reach_tau_and_gradcheck():
    module = GRAMLoss()
    Z = _unit((4, 3, 5), seed=17, dtype=torch.float32).requires_grad_(True)
    module(Z).backward()
    assert module.log_tau.grad is not None and torch.isfinite(module.log_tau.grad)
    assert torch.isfinite(Z.grad).all()
    X = torch.randn(3, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(18))
    log_tau = torch.tensor(math.log(0.5), dtype=torch.float64)

    def f(x, lt):
        return _gram(torch.nn.functional.normalize(x, dim=-1), log_tau=lt)

    assert torch.autograd.gradcheck(f, (X.requires_grad_(True), log_tau.requires_grad_(True)))


def test_gram_loss_observed_matches_groups_by_hand():
    Z = _unit((8, 3, 4), seed=19)
    loss = _gram(Z, log_tau=math.log(0.1), observed=MASK)
    # qualifying groups: rows {0, 3} with columns {0, 1, 2}; rows {1, 4, 6} with columns {0, 2}
    ref = (
        2 * _gram_reference(Z[[0, 3]], 0.1) + 3 * _gram_reference(Z[[1, 4, 6]][:, [0, 2]], 0.1)
    ) / 5
    torch.testing.assert_close(loss, ref, atol=1e-10, rtol=1e-10)
    # with anchor 1, the full group anchors on modality 1, the {0, 2} group on its first observed (0)
    loss_a = _gram(Z, log_tau=math.log(0.1), observed=MASK, anchor=1)
    ref_a = (
        2 * _gram_reference(Z[[0, 3]], 0.1, anchor=1) + 3 * _gram_reference(Z[[1, 4, 6]][:, [0, 2]], 0.1)
    ) / 5
    torch.testing.assert_close(loss_a, ref_a, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(
        _gram(Z, log_tau=0.0, observed=torch.ones(8, 3, dtype=torch.bool)), _gram(Z, log_tau=0.0)
    )


def test_gram_loss_observed_no_qualifying_group():
    Z = _unit((3, 3, 4), seed=20).requires_grad_(True)
    mask = torch.tensor([[True, False, False], [False, True, True], [True, True, False]])
    loss = _gram(Z, log_tau=0.0, observed=mask)
    assert loss.item() == 0 and loss.grad_fn is not None
    loss.backward()
    assert torch.isfinite(Z.grad).all()


# ----------------------------------------------------------------------------- input checks


def test_input_validation():
    with pytest.raises(ValueError, match="shape"):
        pmrl_loss(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="observed"):
        pmrl_loss(_unit((2, 3, 4), seed=21), torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="anchor"):
        _gram(_unit((2, 3, 4), seed=22), log_tau=0.0, anchor=3)


# ----------------------------------------------------------------------------- observed pairs [design 4.6, 4.7]


def _co_observed(observed):
    """(a, b, rows) of every modality pair observed together on at least 2 rows, in the order a < b."""
    k = observed.shape[1]
    for a in range(k):
        for b in range(a + 1, k):
            rows = torch.nonzero(observed[:, a] & observed[:, b]).flatten()
            if rows.numel() >= 2:
                yield a, b, rows


def test_pair_infonce_matches_pair_loop_reference():
    Z = list(_unit((8, 3, 5), seed=30).unbind(1))
    total, weight = 0.0, 0
    for a, b, rows in _co_observed(MASK):
        logits = Z[a][rows] @ Z[b][rows].T / 0.1
        n = rows.numel()
        row_ce = -torch.stack([torch.log_softmax(logits[i], 0)[i] for i in range(n)]).mean()
        col_ce = -torch.stack([torch.log_softmax(logits[:, i], 0)[i] for i in range(n)]).mean()
        total, weight = total + n * (row_ce + col_ce) / 2, weight + n
    torch.testing.assert_close(pair_infonce(Z, MASK), total / weight, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(pair_infonce(torch.stack(Z, dim=1), MASK), pair_infonce(Z, MASK))


def _softplus_reference(Z, observed, head, generator, tau=0.1):
    """Matching loss written out: the negatives of _hard_negatives pair by pair, BCE as softplus [design 4.7]."""
    total, weight = 0.0, 0
    for a, b, rows in _co_observed(observed):
        za, zb = Z[a][rows], Z[b][rows]
        j_b, j_a = _hard_negatives(za, zb, tau, generator)
        n = rows.numel()
        pair = (
            torch.nn.functional.softplus(-head(za, zb)).sum()
            + torch.nn.functional.softplus(head(za, zb[j_b])).sum()
            + torch.nn.functional.softplus(head(za[j_a], zb)).sum()
        ) / (3 * n)
        total, weight = total + n * pair, weight + n
    return total / weight


def test_matching_loss_matches_softplus_reference_and_takes_a_stack():
    Z = list(_unit((8, 3, 5), seed=31).unbind(1))
    head = MatchingHead(5, hidden_dim=7, generator=torch.Generator().manual_seed(1)).double()
    assert head(Z[0], Z[1]).shape == (8,)
    loss = matching_loss(Z, MASK, head, generator=torch.Generator().manual_seed(2))
    assert loss.shape == ()
    ref = _softplus_reference(Z, MASK, head, torch.Generator().manual_seed(2))
    torch.testing.assert_close(loss, ref, atol=1e-12, rtol=1e-12)
    stacked = matching_loss(torch.stack(Z, dim=1), MASK, head, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(stacked, loss, atol=0, rtol=0)


def test_hard_negatives_follow_the_softmax_without_the_positive():
    za, zb = _unit((4, 3), seed=32), _unit((4, 3), seed=33)
    s = za @ zb.T / 0.5
    generator = torch.Generator().manual_seed(3)
    draws = [_hard_negatives(za, zb, 0.5, generator) for _ in range(3000)]
    for direction, scores in ((0, s), (1, s.T)):
        picks = torch.stack([d[direction] for d in draws])  # (draws, n)
        for i in range(4):
            others = [j for j in range(4) if j != i]
            counts = torch.bincount(picks[:, i], minlength=4).double() / len(draws)
            assert counts[i] == 0  # never the positive itself
            torch.testing.assert_close(counts[others], torch.softmax(scores[i, others], 0), atol=0.03, rtol=0)


def _zero_fillers(Z, observed, fill):
    """Z with ``fill`` in every unobserved entry."""
    return [torch.where(observed[:, m, None], z, torch.full_like(z, fill)) for m, z in enumerate(Z)]


def test_matching_loss_is_zero_without_a_qualifying_pair():
    Z = _unit((3, 3, 4), seed=34)
    mask = torch.tensor([[True, False, False], [False, True, True], [True, True, False]])  # each pair on < 2 rows
    for fill in (0.0, float("nan")):
        Zf = [z.requires_grad_(True) for z in _zero_fillers(list(Z.unbind(1)), mask, fill)]
        loss = matching_loss(Zf, mask, MatchingHead(4).double())
        assert loss.item() == 0 and loss.grad_fn is not None
        loss.backward()
        assert all(z.grad is None or torch.equal(z.grad, torch.zeros_like(z)) for z in Zf)  # no NaN filler read
        assert pair_infonce(Zf, mask).item() == 0


def test_matching_loss_reads_observed_entries_only():
    Z = list(_unit((8, 3, 5), seed=35).unbind(1))
    head = MatchingHead(5).double()
    loss = matching_loss(Z, MASK, head, generator=torch.Generator().manual_seed(4))
    poisoned = matching_loss(_zero_fillers(Z, MASK, float("nan")), MASK, head, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(poisoned, loss, atol=0, rtol=0)


def test_matching_loss_is_deterministic_and_leaves_the_global_rng_alone():
    Z = list(_unit((8, 3, 5), seed=36).unbind(1))
    state = torch.get_rng_state()
    loss_module = MatchingLoss(5, generator=torch.Generator().manual_seed(5)).double()
    again = MatchingLoss(5, generator=torch.Generator().manual_seed(5)).double()
    assert all(torch.equal(p, q) for p, q in zip(loss_module.parameters(), again.parameters()))
    first = loss_module(Z, MASK, torch.Generator().manual_seed(6))
    second = loss_module(Z, MASK, torch.Generator().manual_seed(6))
    torch.testing.assert_close(first, second, atol=0, rtol=0)
    torch.testing.assert_close(first, matching_loss(Z, MASK, loss_module.head, generator=torch.Generator().manual_seed(6)))
    generator = torch.Generator().manual_seed(6)
    draws = {loss_module(Z, MASK, generator).item() for _ in range(5)}
    assert len(draws) > 1  # the same generator draws new negatives on every call
    assert torch.equal(state, torch.get_rng_state())


def test_matching_loss_is_symmetric_in_the_two_modalities():
    za, zb = _unit((10, 6), seed=37), _unit((10, 6), seed=38)
    observed = torch.tensor([[True, True]] * 7 + [[True, False], [False, True], [True, True]])
    head = MatchingHead(6).double()
    torch.testing.assert_close(head(za, zb), head(zb, za), atol=0, rtol=0)
    forward = matching_loss([za, zb], observed, head, generator=torch.Generator().manual_seed(7))
    swapped = matching_loss([zb, za], observed.flip(1), head, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(forward, swapped, atol=1e-15, rtol=1e-15)
    # the two directions of one draw are each other's after the swap
    j_b, j_a = _hard_negatives(za, zb, 0.1, torch.Generator().manual_seed(8))
    j_b_swapped, j_a_swapped = _hard_negatives(zb, za, 0.1, torch.Generator().manual_seed(8))
    assert torch.equal(j_b, j_a_swapped) and torch.equal(j_a, j_b_swapped)


def test_matching_loss_gradcheck_in_z_and_head_parameters():
    head = MatchingHead(3, hidden_dim=4, generator=torch.Generator().manual_seed(9)).double()
    names = [name for name, _ in head.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in head.parameters())
    X = torch.randn(6, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(10)).requires_grad_(True)
    mask = torch.tensor([[True, True, True]] * 4 + [[True, False, True], [False, True, True]])

    def f(x, *weights):
        def scored(za, zb):
            return torch.func.functional_call(head, dict(zip(names, weights)), (za, zb))

        Z = torch.nn.functional.normalize(x, dim=-1)
        return matching_loss(Z, mask, scored, generator=torch.Generator().manual_seed(11))  # the same negatives every call

    assert torch.autograd.gradcheck(f, (X,) + params)


def test_matching_head_trained_on_aligned_pairs_tells_them_from_shuffled_ones():
    # trained on shuffled pairs instead, the head would learn the reverse rule: there the hard negatives (most
    # similar rows) are the true partners, so only a head trained on aligned pairs is a meaningful check
    za = _unit((64, 8), seed=39, dtype=torch.float32)
    noise = torch.randn(64, 8, generator=torch.Generator().manual_seed(40))
    zb = torch.nn.functional.normalize(za + 0.3 * noise, dim=1)
    shuffled = zb[torch.randperm(64, generator=torch.Generator().manual_seed(41))]
    observed = torch.ones(64, 2, dtype=torch.bool)
    loss_module = MatchingLoss(8, hidden_dim=16, generator=torch.Generator().manual_seed(12))
    optimizer = torch.optim.Adam(loss_module.parameters(), lr=3e-2)
    generator = torch.Generator().manual_seed(13)
    with torch.no_grad():
        start = loss_module([za, zb], observed, torch.Generator().manual_seed(14)).item()
    for _ in range(40):
        optimizer.zero_grad()
        loss_module([za, zb], observed, generator).backward()
        optimizer.step()
    with torch.no_grad():
        aligned = loss_module([za, zb], observed, torch.Generator().manual_seed(14)).item()
        mismatched = loss_module([za, shuffled], observed, torch.Generator().manual_seed(14)).item()
    assert aligned < 0.8 * start
    assert aligned < 0.5 * mismatched
