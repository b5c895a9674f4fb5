"""The alignment losses on calibrated representations [design 4]: their maths and their torch modules.

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

Two terms on observed modality pairs go beside them: a pairwise InfoNCE
(``pair_infonce``) and the paper's matching loss (``matching_loss``, a learned
head telling true pairs from in-batch hard negatives).

The objectives' parameter objects (:class:`~sklearn_calmrl.PMRL`,
:class:`~sklearn_calmrl.GRAM`) live in :mod:`sklearn_calmrl._alignment` and build
the modules here.

References ``[design x.y]`` point into ``doc/design.rst``.
"""

import math

import torch
import torch.nn.functional as F

from ._encoders import _reset_
from ._latent import missingness_patterns

__all__ = [
    "GRAMLoss", "MatchingHead", "MatchingLoss", "Objective", "PMRLLoss",
    "gram_loss", "gram_volume", "leading_direction", "matching_loss", "pair_infonce", "pmrl_terms",
]

EPS = 1e-6  # added to the eigenvalues before their square root, and under the volume's: finite gradients at 0 [design 4.1, 4.3]
PAIR_TAU = 0.1  # temperature of the pairwise InfoNCE and of the matching loss's sampling of negatives [design 4.6, 4.7]
MATCHING_HIDDEN = 64  # width of the matching head's hidden layer [design 4.7]


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


def leading_direction(Z, observed=None, *, eps=EPS):
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
    eps : float, default=EPS
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


def pmrl_terms(Z, *, tau_intra, tau_inter, observed=None, eps=EPS):
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
    tau_intra : float
        Temperature of the softmax over the normalized singular values
        (:class:`~sklearn_calmrl.PMRL` holds the default).
    tau_inter : float
        Temperature of the contrastive term on leading directions.
    observed : torch.Tensor of shape (B, k), dtype bool, default=None
        If given, singular values and directions use each sample's observed
        columns only (grouped by missingness pattern; the uncalibrated ablation,
        [design 4.4]). ``L_intra`` averages over samples with at least two
        observed columns; ``L_inter`` contrasts all samples with at least one.
    eps : float, default=EPS
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


def _co_observed_mean(Z, observed, pair_loss):
    """Mean of ``pair_loss`` over the modality pairs observed together on at least 2 rows [design 4.6, 4.7].

    For modalities ``a < b`` and the ``n_ab >= 2`` rows observing both,
    ``pair_loss(z^a, z^b)`` gets those rows' representations; the results are
    averaged with weights ``n_ab``. Unobserved entries are never read.

    Parameters
    ----------
    Z : list of torch.Tensor of shape (B, d), or torch.Tensor of shape (B, k, d)
    observed : torch.Tensor of shape (B, k), dtype bool
    pair_loss : callable
        ``(z^a, z^b) -> loss`` on two ``(n_ab, d)`` tensors of matched rows.

    Returns
    -------
    loss : torch.Tensor of shape ()
        A zero with a ``grad_fn`` (read from no entry, so NaN fillers stay out)
        when no pair is observed on two rows.
    """
    if isinstance(Z, torch.Tensor):
        Z = Z.unbind(1)
    total, weight = Z[0][:0].sum(), 0
    for a in range(len(Z)):
        for b in range(a + 1, len(Z)):
            rows = observed[:, a] & observed[:, b]
            n = int(rows.sum())
            if n < 2:
                continue
            total = total + n * pair_loss(Z[a][rows], Z[b][rows])
            weight += n
    return total / max(weight, 1)


def pair_infonce(Z, observed, *, tau=PAIR_TAU):
    """Symmetric InfoNCE over every pair of modalities, on the rows that observe both [design 4.6].

    For modalities ``a < b`` and the ``n_ab`` rows observing both, the logits
    are ``<z_i^a, z_j^b> / tau`` and the loss is the cross-entropy towards
    ``j = i`` along rows and columns (CLIP); pairs are averaged with weights
    ``n_ab``. Only observed representations enter (the tabular stand-in for the
    paper's matching loss on observed modalities, which is :func:`matching_loss`).

    Parameters
    ----------
    Z : list of torch.Tensor of shape (B, d), or torch.Tensor of shape (B, k, d)
        Unit representations per modality (anything where unobserved).
    observed : torch.Tensor of shape (B, k), dtype bool
    tau : float, default=PAIR_TAU

    Returns
    -------
    loss : torch.Tensor of shape ()
        A zero with a ``grad_fn`` when no pair is observed on two rows.
    """

    def clip(za, zb):
        logits = za @ zb.T / tau  # [design 4.6] <z_i^a, z_j^b> / tau
        target = torch.arange(za.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))

    return _co_observed_mean(Z, observed, clip)


def _generator_or_default(generator):
    """``generator``, or a CPU generator seeded with 0 when it is None (the global RNG is never drawn from)."""
    return torch.Generator().manual_seed(0) if generator is None else generator


def _hard_negatives(za, zb, tau, generator):
    """In-batch hard negatives of every positive pair ``(z_i^a, z_i^b)``, in both directions [design 4.7].

    ``j_b(i) ~ softmax_{j != i}(s_ij)`` (replace ``b``) and
    ``j_a(i) ~ softmax_{j != i}(s_ji)`` (replace ``a``) with the detached
    similarities ``s_ij = <z_i^a, z_j^b> / tau``, drawn by the Gumbel-max trick
    with one symmetric noise matrix ``g_ij = g_ji``, so that swapping ``a`` and
    ``b`` swaps the two directions exactly. The noise is drawn on the CPU from
    ``generator`` and moved (the same draws on every device).

    Returns
    -------
    j_b, j_a : torch.Tensor of int64, shape (n,)
    """
    n = za.shape[0]
    with torch.no_grad():
        s = (za @ zb.T).double() / tau  # [design 4.7] s_ij = <z_i^a, z_j^b> / tau, detached
        gumbel = -torch.log(torch.empty(n, n, dtype=torch.float64).exponential_(generator=generator))
        gumbel = torch.triu(gumbel, diagonal=1)
        scores = s + (gumbel + gumbel.T).to(s.device)  # [design 4.7] g_ij = g_ji ~ Gumbel(0, 1)
        scores.fill_diagonal_(float("-inf"))  # [design 4.7] j != i: never the positive itself
        return scores.argmax(dim=1), scores.argmax(dim=0)


def matching_loss(Z, observed, head, *, generator=None, tau=PAIR_TAU):
    """Binary matching loss on observed modality pairs with in-batch hard negatives [design 4.7, paper Eq. 9].

    For modalities ``a < b`` and the ``n_ab >= 2`` rows observing both, the
    head scores the true pairs ``(z_i^a, z_i^b)`` and, for every ``i``, one
    mismatched pair per direction, ``(z_i^a, z_{j_b(i)}^b)`` and
    ``(z_{j_a(i)}^a, z_i^b)``, whose rows ``j != i`` are drawn with probability
    ``softmax_j(<z_i^a, z_j^b> / tau)`` (ALBEF's hard negatives; the draw is
    detached). The loss is the binary cross-entropy with logits of the
    ``3 n_ab`` scores (labels 1, 0, 0), averaged over pairs with weights
    ``n_ab`` as in :func:`pair_infonce`. With a head symmetric in its two
    inputs (:class:`MatchingHead`) and two modalities, swapping them gives the
    same loss for the same generator state.

    Parameters
    ----------
    Z : list of torch.Tensor of shape (B, d), or torch.Tensor of shape (B, k, d)
        Unit representations per modality (anything, zeros or NaN, where unobserved).
    observed : torch.Tensor of shape (B, k), dtype bool
    head : callable
        ``(z^a, z^b) -> logits`` on two ``(n, d)`` tensors, one logit per row
        (a :class:`MatchingHead`, shared by every pair of modalities).
    generator : torch.Generator, default=None
        CPU generator of the negatives (the global RNG is not touched); None
        uses one seeded with 0, so every call draws the same noise.
    tau : float, default=PAIR_TAU
        Temperature of the sampling softmax (that of :func:`pair_infonce`).

    Returns
    -------
    loss : torch.Tensor of shape ()
        A zero with a ``grad_fn`` when no pair is observed on two rows.
    """
    generator = _generator_or_default(generator)

    def match(za, zb):
        j_b, j_a = _hard_negatives(za, zb, tau, generator)
        logits = torch.cat([head(za, zb), head(za, zb[j_b]), head(za[j_a], zb)])  # [design 4.7] f(pos), f(neg_b), f(neg_a)
        labels = torch.zeros_like(logits)
        labels[: za.shape[0]] = 1.0
        return F.binary_cross_entropy_with_logits(logits, labels)  # [design 4.7] mean over the 3 n_ab scores

    return _co_observed_mean(Z, observed, match)


class MatchingHead(torch.nn.Module):
    """Logit that two unit representations come from the same sample [design 4.7].

    ``f(x, y) = w_2^T GELU(W_1 [x * y, (x - y)^2] + c_1) + c_2``, element-wise
    products and squares. Its inputs are the ones interaction heads of sentence
    pairs use (``x * y`` and a difference), without ``x`` and ``y`` themselves:

    - symmetric, ``f(x, y) = f(y, x)`` exactly, so one head serves every pair of
      modalities in either order (the calibrated representations of all
      modalities live in one coordinate system, design 7.1) and the two
      directions of negatives of :func:`matching_loss` are scored alike;
    - ``sum_j x_j y_j`` is the cosine, so a linear head can already match by
      similarity; the hidden layer weighs the coordinates;
    - squared rather than absolute differences: ``|x - y|`` has a kink at
      ``x = y``, where the matched pairs converge.

    Parameters
    ----------
    embed_dim : int
        ``d`` of the representations.
    hidden_dim : int, default=MATCHING_HIDDEN
        Width of the hidden layer.
    generator : torch.Generator, default=None
        CPU generator of the initial weights (PyTorch's default ``nn.Linear``
        initialisation); None uses one seeded with 0. The global RNG is not touched.
    """

    def __init__(self, embed_dim, *, hidden_dim=MATCHING_HIDDEN, generator=None):
        super().__init__()
        with torch.device("meta"):
            self.mlp = torch.nn.Sequential(
                torch.nn.Linear(2 * embed_dim, hidden_dim), torch.nn.GELU(), torch.nn.Linear(hidden_dim, 1)
            )
        self.to_empty(device="cpu")
        with torch.no_grad():
            _reset_(self, _generator_or_default(generator))  # PyTorch's nn.Linear initialisation, from the generator

    def forward(self, z_a, z_b):
        """Logits ``f(z_a[i], z_b[i])`` of shape ``(n,)`` from two ``(n, d)`` tensors."""
        return self.mlp(torch.cat([z_a * z_b, (z_a - z_b) ** 2], dim=-1)).squeeze(-1)  # [design 4.7] f(x, y)


class MatchingLoss(torch.nn.Module):
    """The matching loss of :func:`matching_loss` with its :class:`MatchingHead` [design 4.7].

    The trainer adds ``weight * matching`` (the paper weighs it 0.1) to the
    alignment terms; the head's parameters train with the encoders.

    Parameters
    ----------
    embed_dim : int
        ``d`` of the representations.
    hidden_dim : int, default=MATCHING_HIDDEN
        Width of the head's hidden layer.
    tau : float, default=PAIR_TAU
        Temperature of the negatives' sampling softmax.
    generator : torch.Generator, default=None
        CPU generator of the head's initial weights.

    Attributes
    ----------
    head : MatchingHead
    """

    def __init__(self, embed_dim, *, hidden_dim=MATCHING_HIDDEN, tau=PAIR_TAU, generator=None):
        super().__init__()
        self.head = MatchingHead(embed_dim, hidden_dim=hidden_dim, generator=generator)
        self.tau = tau

    def forward(self, Z, observed, generator=None):
        """:func:`matching_loss` of ``Z`` (list of ``(B, d)`` or ``(B, k, d)``) on the ``observed`` pairs."""
        return matching_loss(Z, observed, self.head, generator=generator, tau=self.tau)


def _volume_from_gram(G, eps):
    """Volume ``sqrt(|det G| + eps)`` from Gram matrices ``G`` of shape (..., k, k)."""
    return torch.sqrt(torch.abs(torch.linalg.det(G)) + eps)  # [design 4.3] Vol = sqrt(|det(A^T A)|)


def gram_volume(A, *, eps=EPS):
    """Volume of the parallelotope spanned by ``k`` vectors [design 4.3].

    Parameters
    ----------
    A : torch.Tensor of shape (..., k, d)
        ``k`` (unit) vectors per matrix, as rows.
    eps : float, default=EPS
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


def gram_loss(Z, *, log_tau, anchor, label_smoothing, observed=None, eps=EPS):
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
    anchor : int
        Index of the anchor modality (:class:`GRAMLoss` holds the default).
    label_smoothing : float
        Label smoothing of both cross-entropies.
    observed : torch.Tensor of shape (B, k), dtype bool, default=None
        If given, the loss is computed separately on each missingness pattern
        shared by at least 2 samples and observing at least 2 modalities, on
        its observed columns, with ``anchor`` as anchor when it is observed and
        the first observed modality otherwise; the results are averaged with
        weights equal to the group sizes.
    eps : float, default=EPS
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
    tau_intra : float
        Temperature of the softmax over the normalized singular values
        (:class:`~sklearn_calmrl.PMRL` holds the default).
    tau_inter : float
        Temperature of the contrastive term on leading directions.
    eps : float, default=EPS
        Added to the eigenvalues before the square root.
    """

    def __init__(self, *, tau_intra, tau_inter, eps=EPS):
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
    eps : float, default=EPS
        Added under the square root of the volume.

    Attributes
    ----------
    log_tau : torch.nn.Parameter of shape ()
        Learnable log temperature.
    """

    def __init__(self, *, tau_init=0.07, anchor=0, label_smoothing=0.1, eps=EPS):
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


class Objective(torch.nn.Module):
    """The loss module of an alignment objective: its main terms and, with a matching weight, the matching head."""

    def __init__(self, main, matching=None):
        super().__init__()
        self.main = main
        self.matching = matching

    def terms(self, Z, observed=None):
        """The main terms of ``Z`` (shape ``(B, k, d)``) and the optional mask."""
        return self.main.terms(Z, observed)
