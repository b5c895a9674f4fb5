"""Alignment objectives on calibrated representations [design 4].

A batch of calibrated representations is a tensor ``Z`` of shape ``(B, k, d)``:
batch, modality, embedding dimension, with every ``Z[i, m]`` of unit norm.
An optional boolean mask ``observed`` of shape ``(B, k)`` marks the real
columns; when it is given, every quantity is computed on the observed columns
of each missingness pattern only (the uncalibrated "observed-only" ablation,
[design 4.4]: zero-filled columns make ``eigh`` fail).

Two objectives are provided:

* PMRL: a softmax over the singular values of each sample's modality matrix
  (intra-sample alignment) plus a contrastive loss on the leading left
  singular vectors (inter-sample alignment).
* GRAM: a contrastive loss on the volume spanned by an anchor modality of one
  sample and the other modalities of another sample.

References ``[design x.y]`` point into ``doc/design.rst``.
"""

import math
import numbers

import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, clone
from sklearn.utils._param_validation import Interval

from ._latent import missingness_patterns

__all__ = [
    "GRAM",
    "PMRL",
    "GRAMLoss",
    "PMRLLoss",
    "gram_loss",
    "gram_volume",
    "leading_direction",
    "make_alignment_loss",
    "pair_infonce",
    "pmrl_loss",
    "pmrl_terms",
    "resolve_alignment",
]


def _check_Z(Z):
    """Validate a batch of representations of shape ``(B, k, d)``."""
    if not isinstance(Z, torch.Tensor) or Z.ndim != 3:
        raise ValueError(
            "Z must be a torch tensor of shape (batch, modalities, dim); got "
            f"{type(Z).__name__} with shape {tuple(getattr(Z, 'shape', ()))}."
        )
    if min(Z.shape) == 0:
        raise ValueError(f"Z must have no empty axis; got shape {tuple(Z.shape)}.")
    if not Z.is_floating_point():
        raise ValueError(f"Z must be a floating point tensor; got {Z.dtype}.")
    return Z


def _check_observed(observed, Z):
    """Validate and convert an observation mask of shape ``(B, k)``."""
    observed = torch.as_tensor(observed, device=Z.device)
    if observed.dtype != torch.bool:
        raise ValueError(f"observed must be a boolean mask; got dtype {observed.dtype}.")
    if tuple(observed.shape) != tuple(Z.shape[:2]):
        raise ValueError(
            f"observed must have shape {tuple(Z.shape[:2])} (batch, modalities); "
            f"got {tuple(observed.shape)}."
        )
    return observed


def _pattern_groups(observed):
    """Yield ``(rows, cols)`` index tensors, one pair per distinct missingness pattern.

    Parameters
    ----------
    observed : torch.Tensor of shape (B, k), dtype bool
        Observation mask.

    Yields
    ------
    rows : torch.Tensor of int64
        Indices of the samples sharing the pattern.
    cols : torch.Tensor of int64
        Indices of the modalities observed in that pattern (possibly empty).
    """
    patterns, inverse = missingness_patterns(observed)
    for p in range(patterns.shape[0]):
        yield torch.nonzero(inverse == p).flatten(), torch.nonzero(patterns[p]).flatten()


def _leading_direction_full(Z, eps):
    """Leading left singular vector and singular values of every ``Z[i]^T`` (all columns)."""
    gram = Z @ Z.transpose(-1, -2)  # [design 4.1] k x k Gram matrix Z_i^T Z_i of the d x k stack
    evals, evecs = torch.linalg.eigh(gram)  # [design 4.1] eigendecomposition of the Gram matrix
    s = torch.sqrt(evals.flip(-1).clamp(min=0) + eps)  # [design 4.1] s_i1 >= ... >= s_ik, eps keeps sqrt' finite
    v1 = _sign_fixed(evecs[..., -1].detach())  # [design 4.1, 4.2] detached (no 1/(lambda_a - lambda_b) backward terms), sign-fixed
    u = torch.einsum("nkd,nk->nd", Z, v1) / s[..., :1]  # [design 4.1] u_i = Z_i v_i1 / s_i1 (left singular vector)
    return F.normalize(u, dim=-1), s  # [design 4.1] unit u_i (the eps in s shrinks its norm slightly)


def _sign_fixed(v1):
    """Orient each leading eigenvector ``v_i1`` so that ``sum_m <u_i, z_i^m> > 0`` [design 4.2].

    ``Z_i^T u_i = s_i1 v_i1``, so the sign test is the sign of ``sum_m v_i1m``. That sum is
    exactly 0 whenever two unit columns have a negative cosine (``v_i1 = (1, -1) / sqrt 2``),
    and rounding would then pick the sign; a sum within ``1000 eps`` of 0 counts as a tie,
    broken by the first modality with a non-negligible weight (``<u_i, z_i^m> > 0`` for it).
    """
    tol = 1e3 * torch.finfo(v1.dtype).eps * v1.shape[-1]
    total = v1.sum(dim=-1)
    first = torch.argmax((v1.abs() > tol).to(torch.int8), dim=-1, keepdim=True)
    tie_sign = torch.sign(torch.gather(v1, -1, first)).squeeze(-1)
    sign = torch.where(total.abs() > tol, torch.sign(total), tie_sign)
    return v1 * torch.where(sign == 0, torch.ones_like(sign), sign).unsqueeze(-1)


def leading_direction(Z, observed=None, *, eps=1e-6):
    """Leading left singular vector and singular values of each sample's modality matrix.

    For sample ``i`` the ``k`` unit vectors ``Z[i, m]`` are stacked as the
    columns of a ``d x k`` matrix [design 4.1]; its singular values come
    from the eigendecomposition of the ``k x k`` Gram matrix and its leading
    left singular vector is ``u_i = Z_i v_i1 / s_i1``, with the eigenvector
    ``v_i1`` detached from the autograd graph (gradients still flow through
    ``Z``), the sign chosen so that ``sum_m <u_i, z_i^m> > 0``, and ``u_i``
    re-normalized to unit length.

    This is also the "anchor" of design 4.5: the anchor shift of a sample is the
    distance between ``leading_direction(Z, observed)[0]`` and
    ``leading_direction(Z)[0]``.

    Parameters
    ----------
    Z : torch.Tensor of shape (B, k, d)
        Unit-norm representations of ``B`` samples in ``k`` modalities.
    observed : torch.Tensor of shape (B, k), dtype bool, default=None
        If given, each sample uses only its observed columns; samples are
        grouped by missingness pattern so no zero column reaches ``eigh``.
    eps : float, default=1e-6
        Added to the clamped eigenvalues before the square root, which keeps
        the gradient finite when singular values are 0.

    Returns
    -------
    u : torch.Tensor of shape (B, d)
        Unit leading left singular vectors (all zeros for a sample with no
        observed column).
    s : torch.Tensor of shape (B, k)
        Singular values ``sqrt(max(lambda, 0) + eps)`` in descending order. With
        ``observed``, sample ``i`` fills the first ``observed[i].sum()`` entries
        and the rest are 0 (padding).
    """
    Z = _check_Z(Z)
    if observed is None:
        return _leading_direction_full(Z, eps)
    observed = _check_observed(observed, Z)
    n_samples, k, d = Z.shape
    rows_parts, u_parts, s_parts = [], [], []
    for rows, cols in _pattern_groups(observed):
        if cols.numel() == 0:
            u_p, s_p = Z.new_zeros(rows.numel(), d), Z.new_zeros(rows.numel(), k)
        else:
            u_p, s_p = _leading_direction_full(Z[rows][:, cols], eps)
            s_p = F.pad(s_p, (0, k - cols.numel()))  # zero padding past the |O| observed singular values
        rows_parts.append(rows)
        u_parts.append(u_p)
        s_parts.append(s_p)
    order = torch.argsort(torch.cat(rows_parts))
    return torch.cat(u_parts)[order], torch.cat(s_parts)[order]


def pmrl_terms(Z, *, tau_intra=0.3, tau_inter=0.1, observed=None, eps=1e-6):
    """The two PMRL terms ``{'intra': L_intra, 'inter': L_inter}`` [design 4.1].

    ``L_intra = mean_i CE(shat_i / tau_intra, target=0)`` with the singular
    values normalized by the sample's column energy,
    ``shat_i = s_i / sqrt(sum_j s_ij^2)``, pushes the top singular value of each
    sample's modality matrix up (all modalities coinciding);
    ``L_inter = mean_i CE(u_i . u_j / tau_inter over j, target=i)`` makes the
    leading directions ``u_i`` of different samples distinguishable. ``shat``
    lies in ``[0, 1]`` whatever the number of modalities and the norms of the
    columns, so one temperature keeps ``L_intra`` carrying gradient (at
    ``tau_intra=0.05`` on raw unit-column singular values the softmax is one-hot
    and ``L_intra`` has no gradient).

    Parameters
    ----------
    Z : torch.Tensor of shape (B, k, d)
        Calibrated representations (observed columns of unit norm, imputed ones
        of norm at most 1).
    tau_intra : float, default=0.3
        Temperature of the softmax over the normalized singular values.
    tau_inter : float, default=0.1
        Temperature of the contrastive term on leading directions.
    observed : torch.Tensor of shape (B, k), dtype bool, default=None
        If given, singular values and directions use each sample's observed
        columns only (grouped by missingness pattern; the uncalibrated ablation,
        [design 4.4]). ``L_intra`` averages over samples with at least two
        observed columns; ``L_inter`` contrasts all samples with at least one.
    eps : float, default=1e-6
        See :func:`leading_direction`.

    Returns
    -------
    dict of str to torch.Tensor of shape ()
        Zeros with a ``grad_fn`` where no sample qualifies.
    """
    u, s = leading_direction(Z, observed, eps=eps)
    n_real = torch.full((Z.shape[0],), Z.shape[1], device=Z.device)
    if observed is not None:
        n_real = _check_observed(observed, Z).sum(dim=1)
    mask = torch.arange(Z.shape[1], device=Z.device) < n_real.unsqueeze(1)  # real (unpadded) singular values
    s = torch.where(mask, s, torch.zeros((), dtype=s.dtype, device=s.device))
    s_hat = s / torch.sqrt((s * s).sum(dim=1, keepdim=True)).clamp_min(1e-12)  # [design 4.1] shat = s / sqrt(sum_j s_j^2)
    zero = Z.sum() * 0
    several, some = n_real > 1, n_real > 0
    l_intra, l_inter = zero, zero
    if bool(several.any()):
        logits_intra = (s_hat[several] / tau_intra).masked_fill(~mask[several], float("-inf"))  # [design 4.1] shat_i / tau1
        target_intra = torch.zeros(int(several.sum()), dtype=torch.long, device=Z.device)
        l_intra = F.cross_entropy(logits_intra, target_intra)  # [design 4.1] L_intra = mean_i CE(shat_i/tau1, 0)
    if bool(some.any()):
        u = u[some]
        logits_inter = u @ u.T / tau_inter  # [design 4.1] u_i^T u_j / tau2
        l_inter = F.cross_entropy(logits_inter, torch.arange(u.shape[0], device=Z.device))  # [design 4.1] L_inter
    return {"intra": l_intra, "inter": l_inter}


def pmrl_loss(Z, *, tau_intra=0.3, tau_inter=0.1, observed=None, eps=1e-6):
    """PMRL alignment loss ``L_intra + L_inter`` [design 4.1]; see :func:`pmrl_terms`.

    Returns
    -------
    loss : torch.Tensor of shape ()
    """
    terms = pmrl_terms(Z, tau_intra=tau_intra, tau_inter=tau_inter, observed=observed, eps=eps)
    return terms["intra"] + terms["inter"]  # [design 4.1] L = L_intra + L_inter


def pair_infonce(Z, observed, *, tau=0.1):
    """Symmetric InfoNCE over every pair of modalities, on the rows that observe both [design 4.6].

    For modalities ``a < b`` and the ``n_ab`` rows observing both, the logits
    are ``<z_i^a, z_j^b> / tau`` and the loss is the cross-entropy towards
    ``j = i`` along rows and columns (CLIP); pairs are averaged with weights
    ``n_ab``. Only observed representations enter (the tabular stand-in for the
    paper's matching loss on observed modalities).

    Parameters
    ----------
    Z : list of torch.Tensor of shape (B, d)
        Unit representations per modality (anything where unobserved).
    observed : torch.Tensor of shape (B, k), dtype bool
    tau : float, default=0.1

    Returns
    -------
    loss : torch.Tensor of shape ()
        A zero with a ``grad_fn`` when no pair is observed on two rows.
    """
    total, weight = Z[0].sum() * 0, 0
    for a in range(len(Z)):
        for b in range(a + 1, len(Z)):
            rows = observed[:, a] & observed[:, b]
            n = int(rows.sum())
            if n < 2:
                continue
            logits = Z[a][rows] @ Z[b][rows].T / tau  # [design 4.6] <z_i^a, z_j^b> / tau
            target = torch.arange(n, device=logits.device)
            total = total + n * 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
            weight += n
    return total / max(weight, 1)


def _volume_from_gram(G, eps):
    """Volume ``sqrt(|det G| + eps)`` from Gram matrices ``G`` of shape (..., k, k)."""
    return torch.sqrt(torch.abs(torch.linalg.det(G)) + eps)  # [design 4.3] Vol = sqrt(|det(A^T A)|)


def gram_volume(A, *, eps=1e-6):
    """Volume of the parallelotope spanned by ``k`` vectors [design 4.3].

    Parameters
    ----------
    A : torch.Tensor of shape (..., k, d)
        ``k`` (unit) vectors per matrix, as rows.
    eps : float, default=1e-6
        Added under the square root so the gradient stays finite at volume 0.

    Returns
    -------
    vol : torch.Tensor of shape (...)
        ``sqrt(|det(A A^T)| + eps)``: about 1 for orthonormal vectors, about
        ``sqrt(eps)`` for identical ones; smaller means better aligned.
    """
    return _volume_from_gram(A @ A.transpose(-1, -2), eps)  # [design 4.3] Gram matrix of the k vectors


def _gram_loss_full(Z, anchor, tau, label_smoothing, eps):
    """Two-way GRAM contrastive loss on a batch with every column observed."""
    n = Z.shape[0]
    a = Z[:, anchor]  # [design 4.3] anchor modality a_i, (B, d)
    others = torch.cat([Z[:, :anchor], Z[:, anchor + 1:]], dim=1)  # [design 4.3] v_2j..v_kj, (B, k-1, d)
    aa = torch.einsum("id,id->i", a, a)  # <a_i, a_i>, (B,)
    ao = torch.einsum("id,jmd->ijm", a, others)  # <a_i, v_mj>, (B, B, k-1)
    oo = torch.einsum("jmd,jnd->jmn", others, others)  # <v_mj, v_nj>, (B, k-1, k-1)
    top = torch.cat([aa[:, None, None].expand(n, n, 1), ao], dim=-1)  # Gram row of a_i, (B, B, k)
    bottom = torch.cat([ao.unsqueeze(-1), oo.unsqueeze(0).expand(n, -1, -1, -1)], dim=-1)  # (B, B, k-1, k)
    gram = torch.cat([top.unsqueeze(-2), bottom], dim=-2)  # [design 4.3] Gram of [a_i, v_2j..v_kj], (B, B, k, k)
    logits = -_volume_from_gram(gram, eps) / tau  # [design 4.3] logits -Vol(a_i, v_2j, ..., v_kj) / tau
    target = torch.arange(n, device=Z.device)
    l_rows = F.cross_entropy(logits, target, label_smoothing=label_smoothing)  # [design 4.3] anchor -> others
    l_cols = F.cross_entropy(logits.T, target, label_smoothing=label_smoothing)  # [design 4.3] others -> anchor
    return (l_rows + l_cols) / 2  # [design 4.3] both directions averaged


def gram_loss(Z, *, log_tau, anchor=0, label_smoothing=0.1, observed=None, eps=1e-6):
    """GRAM contrastive volume loss [design 4.3].

    For every pair ``(i, j)`` of the batch the logit is
    ``-Vol(a_i, v_2j, ..., v_kj) / tau``, the volume spanned by the anchor
    modality of sample ``i`` and the other modalities of sample ``j``; the
    loss is the label-smoothed cross-entropy towards the diagonal along rows
    and along columns, averaged. The ``B x B`` Gram matrices are built with
    einsum (cost ``O(B^2 k d + B^2 k^3)``).

    Parameters
    ----------
    Z : torch.Tensor of shape (B, k, d)
        Unit-norm (calibrated) representations.
    log_tau : float or torch.Tensor of shape ()
        Log temperature (``tau = exp(log_tau)``); a tensor lets it be learned.
    anchor : int, default=0
        Index of the anchor modality.
    label_smoothing : float, default=0.1
        Label smoothing of both cross-entropies.
    observed : torch.Tensor of shape (B, k), dtype bool, default=None
        If given, the loss is computed separately on each missingness pattern
        shared by at least 2 samples and observing at least 2 modalities, on
        its observed columns, with ``anchor`` as anchor when it is observed and
        the first observed modality otherwise; the results are averaged with
        weights equal to the group sizes.
    eps : float, default=1e-6
        See :func:`gram_volume`.

    Returns
    -------
    loss : torch.Tensor of shape ()
        Scalar loss; a zero with a ``grad_fn`` when no pattern qualifies.
    """
    Z = _check_Z(Z)
    k = Z.shape[1]
    if isinstance(anchor, bool) or not isinstance(anchor, int) or not -k <= anchor < k:
        raise ValueError(f"anchor must be an integer modality index in [0, {k}); got {anchor!r}.")
    anchor %= k
    if not isinstance(log_tau, torch.Tensor):
        log_tau = torch.tensor(float(log_tau), dtype=Z.dtype, device=Z.device)
    tau = torch.exp(log_tau)  # [design 4.3] learnable temperature tau = exp(log_tau)
    if observed is None:
        return _gram_loss_full(Z, anchor, tau, label_smoothing, eps)
    observed = _check_observed(observed, Z)
    total, weight = Z.sum() * 0, 0
    for rows, cols in _pattern_groups(observed):
        if rows.numel() < 2 or cols.numel() < 2:
            continue
        group_anchor = int(torch.nonzero(cols == anchor).flatten()[0]) if bool(observed[rows[0], anchor]) else 0
        loss_p = _gram_loss_full(Z[rows][:, cols], group_anchor, tau, label_smoothing, eps)
        total = total + rows.numel() * loss_p  # weighted by group size
        weight += rows.numel()
    return total / max(weight, 1)


class PMRLLoss(torch.nn.Module):
    """PMRL alignment loss as a module (no parameters); see :func:`pmrl_terms`.

    Parameters
    ----------
    tau_intra : float, default=0.3
        Temperature of the softmax over the normalized singular values.
    tau_inter : float, default=0.1
        Temperature of the contrastive term on leading directions.
    eps : float, default=1e-6
        Added to the eigenvalues before the square root.
    """

    def __init__(self, *, tau_intra=0.3, tau_inter=0.1, eps=1e-6):
        super().__init__()
        self.tau_intra = tau_intra
        self.tau_inter = tau_inter
        self.eps = eps

    def terms(self, Z, observed=None):
        """``{'intra': ..., 'inter': ...}`` of ``Z`` (shape ``(B, k, d)``) and the optional mask."""
        return pmrl_terms(Z, tau_intra=self.tau_intra, tau_inter=self.tau_inter, observed=observed, eps=self.eps)

    def forward(self, Z, observed=None):
        """The sum of :meth:`terms`."""
        return sum(self.terms(Z, observed).values())


class GRAMLoss(torch.nn.Module):
    """GRAM alignment loss with a learnable temperature; see :func:`gram_loss`.

    Parameters
    ----------
    tau_init : float, default=0.07
        Initial temperature; the parameter ``log_tau`` starts at ``log(tau_init)``.
    anchor : int, default=0
        Index of the anchor modality.
    label_smoothing : float, default=0.1
        Label smoothing of both cross-entropies.
    eps : float, default=1e-6
        Added under the square root of the volume.

    Attributes
    ----------
    log_tau : torch.nn.Parameter of shape ()
        Learnable log temperature.
    """

    def __init__(self, *, tau_init=0.07, anchor=0, label_smoothing=0.1, eps=1e-6):
        super().__init__()
        if not tau_init > 0:
            raise ValueError(f"tau_init must be positive; got {tau_init!r}.")
        self.log_tau = torch.nn.Parameter(torch.tensor(math.log(tau_init)))  # [design 4.3] tau init 0.07
        self.anchor = anchor
        self.label_smoothing = label_smoothing
        self.eps = eps

    def terms(self, Z, observed=None):
        """``{'gram': loss}`` of ``Z`` (shape ``(B, k, d)``) and the optional mask."""
        return {
            "gram": gram_loss(
                Z, log_tau=self.log_tau, anchor=self.anchor, label_smoothing=self.label_smoothing, observed=observed, eps=self.eps
            )
        }

    def forward(self, Z, observed=None):
        """Return :func:`gram_loss` of ``Z`` (shape ``(B, k, d)``) and the optional mask."""
        return self.terms(Z, observed)["gram"]


_LOSSES = {"pmrl": PMRLLoss, "gram": GRAMLoss}


def make_alignment_loss(name, **kwargs):
    """Build an alignment loss module by name.

    Parameters
    ----------
    name : {'pmrl', 'gram'}
        Which objective.
    **kwargs
        Keyword arguments of :class:`PMRLLoss` or :class:`GRAMLoss`.

    Returns
    -------
    loss : PMRLLoss or GRAMLoss
        The loss module.

    Raises
    ------
    ValueError
        If ``name`` is not one of the supported objectives.
    """
    if not isinstance(name, str) or name not in _LOSSES:
        raise ValueError(f"alignment must be one of {sorted(_LOSSES)}; got {name!r}.")
    return _LOSSES[name](**kwargs)


class PMRL(BaseEstimator):
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
    pair_weight : float, default=0.0
        Weight of a symmetric InfoNCE term over every pair of modalities
        observed together [design 4.6].
    """

    _parameter_constraints: dict = {
        "tau_intra": [Interval(numbers.Real, 0, None, closed="neither")],
        "tau_inter": [Interval(numbers.Real, 0, None, closed="neither")],
        "pair_weight": [Interval(numbers.Real, 0, None, closed="left")],
    }

    def __init__(self, *, tau_intra=0.3, tau_inter=0.1, pair_weight=0.0):
        self.tau_intra = tau_intra
        self.tau_inter = tau_inter
        self.pair_weight = pair_weight

    def make_loss(self):
        """A fresh loss module of this objective."""
        return PMRLLoss(tau_intra=self.tau_intra, tau_inter=self.tau_inter)


class GRAM(BaseEstimator):
    """The GRAM objective [design 4.3], as a value of ``CalMRLTransformer(alignment=...)``.

    Read more in the :ref:`User Guide <user_guide>`.

    ``alignment='gram'`` is ``GRAM()``; GRAM learns its own temperature.

    Parameters
    ----------
    pair_weight : float, default=1.0
        Weight of the symmetric InfoNCE term over every pair of modalities
        observed together [design 4.6]: GRAM's volume cannot tell a vector
        from its opposite, so it needs this partner.
    """

    _parameter_constraints: dict = {"pair_weight": [Interval(numbers.Real, 0, None, closed="left")]}

    def __init__(self, *, pair_weight=1.0):
        self.pair_weight = pair_weight

    def make_loss(self):
        """A fresh loss module of this objective."""
        return GRAMLoss()


ALIGNMENTS = {"pmrl": PMRL, "gram": GRAM}


def resolve_alignment(alignment):
    """``'pmrl'`` / ``'gram'`` as the default instance, an instance as a validated copy [design 4]."""
    config = ALIGNMENTS[alignment]() if isinstance(alignment, str) else clone(alignment)
    config._validate_params()
    return config
