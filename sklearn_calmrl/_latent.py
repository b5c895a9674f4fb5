"""Closed-form latent model over modality representations (design 2).

Pure tensor functions, no estimator state. The generative model is

    z^m = W_m b + mu_m + e_m,   b ~ N(0, I_q),   e_m ~ N(0, Psi_m)        [design 2.1]

with ``Psi_m = s_m^2 I`` (isotropic, the paper's model), ``diag(psi_m)`` (factor
analysis) or one ``s^2`` shared by all modalities. Representations are passed as a
list ``Z`` of ``k`` tensors of shape ``(n, d_m)`` plus a boolean ``observed`` of shape
``(n, k)``; entries of unobserved rows are ignored (they may hold anything, NaN too).
The noise is always stored as a per-dimension vector ``psi_m`` so one code path
serves the three noise models.

References ``[design x.y]`` point into ``doc/design.rst``.
"""

import math
import threading
from dataclasses import dataclass
from typing import List, NamedTuple

import torch

from ._modalities import missingness_patterns

__all__ = [
    "LatentParams",
    "Posterior",
    "SufficientStatistics",
    "NOISE_MODELS",
    "posterior",
    "impute",
    "single_modality_maps",
    "predictive_variance",
    "variance_explained",
    "log_likelihood",
    "sufficient_statistics",
    "summed_statistics",
    "chunked_statistics",
    "RunningStatistics",
    "MixturePrior",
    "MixtureParams",
    "MixturePosterior",
    "MixtureStatistics",
    "init_mixture",
    "impute_calibrated",
    "local_corrections",
    "m_step",
    "init_params",
    "run_em",
    "fit_em",
]

NOISE_MODELS = ("isotropic", "diagonal", "shared")


class LatentParams(NamedTuple):
    """Parameters ``theta = {W_m, mu_m, Psi_m}`` of design 2.1, one entry per modality."""

    W: List[torch.Tensor]  # (d_m, q) loadings
    mu: List[torch.Tensor]  # (d_m,) means
    psi: List[torch.Tensor]  # (d_m,) noise variances (constant vector unless diagonal)

    def to(self, *args, **kwargs):
        """Move / cast every tensor (same arguments as ``torch.Tensor.to``)."""
        return LatentParams(*([t.to(*args, **kwargs) for t in group] for group in self))


class Posterior(NamedTuple):
    """Posterior ``N(mean_i, V_{O_i})`` of the shared latent [design 2.2]."""

    mean: torch.Tensor  # (n, q) posterior means m_i
    cov: torch.Tensor  # (P, q, q) V_O, one per distinct missingness pattern
    chol: torch.Tensor  # (P, q, q) Cholesky factor of the precision V_O^-1
    pattern_index: torch.Tensor  # (n,) row -> pattern
    patterns: torch.Tensor  # (P, k) bool, the distinct patterns
    h: torch.Tensor  # (n, q) sum_{m in O_i} W_m^T Psi_m^-1 (z_i^m - mu_m)
    quad: torch.Tensor  # (n,) sum_{m in O_i} (z_i^m - mu_m)^T Psi_m^-1 (z_i^m - mu_m), for the log-likelihood


def _masked_residuals(Z, observed, params):
    """``r_i^m = z_i^m - mu_m`` on observed rows, zero elsewhere."""
    return [
        torch.where(observed[:, m, None], Z[m] - params.mu[m], torch.zeros((), dtype=Z[m].dtype, device=Z[m].device))
        for m in range(len(Z))
    ]


def posterior(Z, observed, params):
    """E-step: posterior of the shared latent given the observed modalities [design 2.2].

    One Cholesky factorisation of ``V_O^-1`` per distinct missingness pattern ``O``,
    then a matrix product per row. A row with no observed modality gets ``m = 0, V = I``.

    Parameters
    ----------
    Z : list of Tensor of shape (n, d_m)
    observed : bool Tensor of shape (n, k)
    params : LatentParams

    Returns
    -------
    Posterior
    """
    if isinstance(params, MixtureParams):
        return _mixture_posterior(Z, observed, params)
    q = params.W[0].shape[1]
    dtype, device = params.W[0].dtype, params.W[0].device
    patterns, pattern_index = missingness_patterns(observed)
    # W_m^T Psi_m^-1 W_m, the precision each modality contributes [design 2.2]
    lam = torch.stack([W.T @ (W / psi[:, None]) for W, psi in zip(params.W, params.psi)])
    # V_O^-1 = I_q + sum_{m in O} W_m^T W_m / s_m^2  [design 2.2], one per pattern
    precision = torch.eye(q, dtype=dtype, device=device) + torch.einsum("pk,kab->pab", patterns.to(dtype), lam)
    chol = torch.linalg.cholesky(precision)
    cov = torch.cholesky_inverse(chol)
    residuals = _masked_residuals(Z, observed, params)
    scaled = [r / psi for r, psi in zip(residuals, params.psi)]
    # h_i = sum_{m in O_i} W_m^T (z_i^m - mu_m) / s_m^2  [design 2.2]
    h = sum(r @ W for r, W in zip(scaled, params.W))
    # sum_{m in O} ||r_m||^2 / s_m^2  [design 2.5]
    quad = sum((r * r_).sum(dim=1) for r, r_ in zip(residuals, scaled))
    # m_i = V_{O_i} h_i  [design 2.2]: one product per pattern (no (n, q, q) gather) unless patterns are many
    if patterns.shape[0] * 8 <= h.shape[0]:
        mean = torch.empty_like(h)
        for p in range(patterns.shape[0]):
            rows = pattern_index == p
            mean[rows] = h[rows] @ cov[p]
    else:
        mean = torch.bmm(cov[pattern_index], h[:, :, None])[:, :, 0]
    return Posterior(mean, cov, chol, pattern_index, patterns, h, quad)


def single_modality_maps(params):
    """Affine maps ``x^m -> E[b | x^m] = A_m x^m + c_m`` of the posterior mean from modality m alone.

    [design 2.2] with ``O = {m}``: ``A_m = V_m W_m^T Psi_m^-1``, ``c_m = -A_m mu_m``.

    Returns
    -------
    list of (Tensor (q, d_m), Tensor (q,))
    """
    q = params.W[0].shape[1]
    eye = torch.eye(q, dtype=params.W[0].dtype, device=params.W[0].device)
    maps = []
    for W, mu, psi in zip(*params):
        Wp = W / psi[:, None]
        # V_{m} = (I + W_m^T Psi_m^-1 W_m)^-1 ; A_m = V_m W_m^T Psi_m^-1  [design 2.2]
        A = torch.linalg.solve(eye + W.T @ Wp, Wp.T)
        maps.append((A, -(A @ mu)))
    return maps


def impute(post, params):
    """Representation-level imputation ``zhat^m = W_m m_i + mu_m`` for every modality [design 2.3].

    For a mixture, the responsibility-weighted mean of the components' imputations [design 2.8].
    """
    if isinstance(params, MixtureParams):
        parts = [impute(p, c) for p, c in zip(post.components, params.components)]
        return [sum(post.resp[:, c, None] * parts[c][m] for c in range(len(parts))) for m in range(len(parts[0]))]
    return [post.mean @ W.T + mu for W, mu in zip(params.W, params.mu)]


def predictive_variance(post, params):
    """Diagonal of the predictive covariance ``W_m V_O W_m^T + Psi_m`` per row and modality [design 2.3].

    For a mixture, the law of total variance over the components [design 2.8]:
    ``sum_c r_c (var_c + mean_c^2) - (sum_c r_c mean_c)^2``.
    """
    if isinstance(params, MixtureParams):
        means = [impute(p, c) for p, c in zip(post.components, params.components)]
        variances = [predictive_variance(p, c) for p, c in zip(post.components, params.components)]
        out = []
        for m in range(len(means[0])):
            first = sum(post.resp[:, c, None] * means[c][m] for c in range(len(means)))
            second = sum(post.resp[:, c, None] * (variances[c][m] + means[c][m] ** 2) for c in range(len(means)))
            out.append((second - first**2).clamp_min(0.0))
        return out
    out = []
    for W, psi in zip(params.W, params.psi):
        per_pattern = torch.einsum("dq,pqr,dr->pd", W, post.cov, W) + psi
        out.append(per_pattern[post.pattern_index])
    return out


def _latent_dims_kept(post, keep):
    """``post`` with the posterior means multiplied by the 0/1 vector ``keep`` (each component's, for a mixture)."""
    if hasattr(post, "components"):
        return post._replace(components=[p._replace(mean=p.mean * keep) for p in post.components])
    return post._replace(mean=post.mean * keep)


def variance_explained(Z, observed, params, post=None):
    """Share of each block's variance explained by the latent, per latent dimension, as MOFA+ defines it [design 2.12].

    With ``y_i^m`` a row's block minus the model's mean for it and ``c_ij^m`` the
    part of its reconstruction ``W_m m_i`` that comes from latent dimension
    ``j`` (responsibility-weighted over the components of a mixture)::

        R2[m, j] = 1 - sum_i ||y_i^m - c_ij^m||^2 / sum_i ||y_i^m||^2
        R2_total[m] = 1 - sum_i ||y_i^m - sum_j c_ij^m||^2 / sum_i ||y_i^m||^2

    over the rows that observe ``m``, with ``m_i`` the posterior mean given all
    of the row's observed blocks (the block itself included). Returns the
    ``(k, q)`` and ``(k,)`` tensors; a block without variance gets 0.
    """
    post = posterior(Z, observed, params) if post is None else post
    q = post.components[0].mean.shape[1] if hasattr(post, "components") else post.mean.shape[1]
    eye = torch.eye(q, dtype=Z[0].dtype, device=Z[0].device)
    base = impute(_latent_dims_kept(post, torch.zeros_like(eye[0])), params)  # the means mu_m (per row, for a mixture)
    full = impute(post, params)
    k = len(Z)
    r2, total = torch.zeros(k, q, dtype=Z[0].dtype), torch.zeros(k, dtype=Z[0].dtype)
    parts = [impute(_latent_dims_kept(post, eye[j]), params) for j in range(q)]
    for m in range(k):
        rows = observed[:, m]
        y = Z[m][rows] - base[m][rows]
        ss = float((y**2).sum())
        if ss <= 0:
            continue
        total[m] = 1 - float(((y - (full[m][rows] - base[m][rows])) ** 2).sum()) / ss
        for j in range(q):
            r2[m, j] = 1 - float(((y - (parts[j][m][rows] - base[m][rows])) ** 2).sum()) / ss
    return r2, total


def log_likelihood(Z, observed, params, post=None):
    """Observed-data log-likelihood ``log p(z_i^O)`` of every row [design 2.5].

    Returns
    -------
    Tensor of shape (n,)
    """
    if post is None:
        post = posterior(Z, observed, params)
    if isinstance(params, MixtureParams):
        return post.loglik
    obs = observed.to(params.W[0].dtype)
    # sum_{m in O} (d_m log 2pi + sum_j log psi_mj)  [design 2.5]
    const = obs @ torch.stack([psi.numel() * math.log(2 * math.pi) + torch.log(psi).sum() for psi in params.psi])
    quad = post.quad  # sum_{m in O} ||r_m||^2 / s_m^2  [design 2.5]
    # log det P with P = V_O^-1 = L L^T  [design 2.5]
    logdet = 2 * torch.log(torch.diagonal(post.chol, dim1=-2, dim2=-1)).sum(-1)
    # c^T V_O c = c^T m  (design 2.5, c = h)
    cvc = (post.h * post.mean).sum(dim=1)
    return -0.5 * (const + logdet[post.pattern_index] + quad - cvc)


@dataclass
class SufficientStatistics:
    """Expected complete-data statistics of design 2.4, additive over row chunks.

    Attributes
    ----------
    count : Tensor of shape (k,)
        ``|I_m|``, rows observing modality m.
    A : list of Tensor (q+1, q+1)
        ``sum_{i in I_m} E[b~ b~^T]`` with ``b~ = [b; 1]``.
    C : list of Tensor (d_m, q+1)
        ``sum_{i in I_m} z_i^m E[b~]^T``.
    S : list of Tensor (d_m,)
        ``sum_{i in I_m} (z_i^m)^2`` element-wise.
    loglik : Tensor
        Sum of the observed-data log-likelihood of the rows (under the parameters used).
    n_rows : int
        Number of rows summed.
    """

    count: torch.Tensor
    A: List[torch.Tensor]
    C: List[torch.Tensor]
    S: List[torch.Tensor]
    loglik: torch.Tensor
    n_rows: int

    def __add__(self, other):
        return SufficientStatistics(
            self.count + other.count,
            [a + b for a, b in zip(self.A, other.A)],
            [a + b for a, b in zip(self.C, other.C)],
            [a + b for a, b in zip(self.S, other.S)],
            self.loglik + other.loglik,
            self.n_rows + other.n_rows,
        )

    def __neg__(self):
        return SufficientStatistics(-self.count, [-a for a in self.A], [-c for c in self.C], [-s for s in self.S], -self.loglik, -self.n_rows)

    def __sub__(self, other):
        return self + (-other)

    def to(self, device):
        """The same statistics with every tensor on ``device``."""
        move = lambda t: t.to(device)  # noqa: E731
        return SufficientStatistics(move(self.count), [move(a) for a in self.A], [move(c) for c in self.C], [move(s) for s in self.S], move(self.loglik), self.n_rows)


def sufficient_statistics(Z, observed, params, post=None, weights=None):
    """E-step statistics for the M-step [design 2.4] and the log-likelihood [design 2.5] of a chunk.

    ``post`` may pass the chunk's already computed :func:`posterior` under
    ``params``. For a :class:`MixtureParams` the statistics are those of every
    component, weighted by the responsibilities [design 2.8]. ``weights`` (n,)
    weighs every row's contribution to a single model's ``A``, ``C``, ``S`` and
    counts (a mixture component's responsibilities); the log-likelihood is then
    left to the caller (0).
    """
    if isinstance(params, MixtureParams):
        return _mixture_statistics(Z, observed, params, post)
    if post is None:
        post = posterior(Z, observed, params)
    dtype = params.W[0].dtype
    obs = observed.to(dtype)
    if weights is None:
        pattern_counts = torch.bincount(post.pattern_index, minlength=post.patterns.shape[0]).to(dtype)
    else:
        obs = obs * weights[:, None]
        pattern_counts = torch.zeros(post.patterns.shape[0], dtype=dtype, device=weights.device).index_add_(0, post.pattern_index, weights)
    ones = torch.ones(post.mean.shape[0], 1, dtype=dtype, device=post.mean.device)
    b_aug = torch.cat([post.mean, ones], dim=1)  # E[b~_i] = [m_i; 1]
    A, C, S = [], [], []
    for m, z in enumerate(Z):
        w = obs[:, m]
        z = torch.where(observed[:, m, None], z, torch.zeros((), dtype=z.dtype, device=z.device))
        # sum_{i in I_m} V_i, grouped by pattern [design 2.4]
        v_sum = torch.einsum("p,pab->ab", pattern_counts * post.patterns[:, m].to(dtype), post.cov)
        # A_m = sum_{i in I_m} [[V_i + m_i m_i^T, m_i], [m_i^T, 1]]  [design 2.4]
        a = (b_aug * w[:, None]).T @ b_aug
        a[:-1, :-1] += v_sum
        A.append(a)
        # C_m = sum_{i in I_m} z_i^m [m_i^T, 1]  [design 2.4]
        C.append(z.T @ (b_aug * w[:, None]))
        S.append((z * z).sum(dim=0) if weights is None else (z * z * weights[:, None]).sum(dim=0))
    loglik = log_likelihood(Z, observed, params, post).sum() if weights is None else torch.zeros((), dtype=dtype, device=obs.device)
    return SufficientStatistics(obs.sum(dim=0), A, C, S, loglik, int(observed.shape[0]))


# ----------------------------------------------------------------------------- mixture [design 2.8]
class MixturePrior(NamedTuple):
    """Regularisation of a mixture's components [design 2.8] (pseudo-rows; all 0 is maximum likelihood).

    ``mu`` pseudo-rows pull each component's means towards ``mu_target`` (the
    modality's observed mean), ``noise`` pseudo-rows its noise towards
    ``noise_target`` (the modality's per-dimension variance), and ``weights`` is
    a symmetric Dirichlet pseudo-count of the mixing weights. Without them a
    component defined by rows that miss a modality keeps arbitrary parameters for
    that modality, and its imputations are worse than one Gaussian's.
    """

    mu: float
    noise: float
    weights: float
    mu_target: List[torch.Tensor]
    noise_target: List[torch.Tensor]

    def to(self, *args, **kwargs):
        move = [[t.to(*args, **kwargs) for t in group] for group in (self.mu_target, self.noise_target)]
        return MixturePrior(self.mu, self.noise, self.weights, *move)


class MixtureParams(NamedTuple):
    """A mixture of ``K`` latent models [design 2.8]: ``c ~ Cat(exp(log_weights))``, then component ``c``'s model."""

    components: List[LatentParams]
    log_weights: torch.Tensor  # (K,) log mixing weights
    prior: MixturePrior

    def to(self, *args, **kwargs):
        """Move / cast every tensor (same arguments as ``torch.Tensor.to``)."""
        return MixtureParams([c.to(*args, **kwargs) for c in self.components], self.log_weights.to(*args, **kwargs), self.prior.to(*args, **kwargs))


class MixturePosterior(NamedTuple):
    """Per-component posteriors and the responsibilities ``r_ic = p(c | z_i^O)`` [design 2.8]."""

    components: List[Posterior]
    resp: torch.Tensor  # (n, K)
    loglik: torch.Tensor  # (n,) log p(z_i^O) = logsumexp_c (log pi_c + log N_c)

    @property
    def mean(self):
        """``[r_i1 m_i1, ..., r_iK m_iK]`` (n, K q): each component's latent coordinates, weighted by membership."""
        return torch.cat([self.resp[:, c, None] * p.mean for c, p in enumerate(self.components)], dim=1)


@dataclass
class MixtureStatistics:
    """Every component's responsibility-weighted :class:`SufficientStatistics`, additive over chunks."""

    components: List[SufficientStatistics]
    weights: torch.Tensor  # (K,) sum_i r_ic
    loglik: torch.Tensor
    n_rows: int

    def __add__(self, other):
        return MixtureStatistics([a + b for a, b in zip(self.components, other.components)], self.weights + other.weights, self.loglik + other.loglik, self.n_rows + other.n_rows)

    def __neg__(self):
        return MixtureStatistics([-a for a in self.components], -self.weights, -self.loglik, -self.n_rows)

    def __sub__(self, other):
        return self + (-other)

    def to(self, device):
        return MixtureStatistics([c.to(device) for c in self.components], self.weights.to(device), self.loglik.to(device), self.n_rows)


def _mixture_posterior(Z, observed, params):
    """Component posteriors and responsibilities by Bayes' rule on the components' marginal likelihoods [design 2.8]."""
    posts = [posterior(Z, observed, c) for c in params.components]
    # log pi_c + log N(z_i^O | mu_c^O, W_c^O W_c^O^T + Psi_c^O), per row and component  [design 2.8]
    joint = torch.stack([log_likelihood(Z, observed, c, p) for c, p in zip(params.components, posts)], dim=1) + params.log_weights
    loglik = torch.logsumexp(joint, dim=1)
    return MixturePosterior(posts, torch.exp(joint - loglik[:, None]), loglik)


def _mixture_statistics(Z, observed, params, post=None):
    if post is None:
        post = posterior(Z, observed, params)
    parts = [sufficient_statistics(Z, observed, c, p, weights=post.resp[:, k]) for k, (c, p) in enumerate(zip(params.components, post.components))]
    return MixtureStatistics(parts, post.resp.sum(dim=0), post.loglik.sum(), int(observed.shape[0]))


MIXTURE_NOISE_FLOOR = 1e-3  # a component's noise floor: 1e-6 lets components collapse on collinear features [design 2.8]


def _mixture_m_step(stats, params, *, noise, noise_floor, ridge):
    """Each component's MAP update and ``pi_c = (N_c + a) / (N + K a)`` [design 2.8]."""
    prior = params.prior
    floor = max(noise_floor, MIXTURE_NOISE_FLOOR)
    components = [m_step(s, c, noise=noise, noise_floor=floor, ridge=ridge, prior=prior) for s, c in zip(stats.components, params.components)]
    K = len(components)
    weights = (stats.weights + prior.weights) / (stats.weights.sum() + K * prior.weights)
    return MixtureParams(components, torch.log(weights.clamp_min(1e-300)), prior)


def _kmeans(X, K, generator, n_iter=30):
    """k-means++ seeding and Lloyd iterations (torch; ``generator`` on the CPU); returns labels (n,)."""
    n = X.shape[0]
    centres = [X[int(torch.randint(n, (1,), generator=generator))]]
    d2 = ((X - centres[0]) ** 2).sum(dim=1)
    for _ in range(1, K):
        p = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full_like(d2, 1.0 / n)
        j = int(torch.multinomial(p.cpu(), 1, generator=generator))
        centres.append(X[j])
        d2 = torch.minimum(d2, ((X - X[j]) ** 2).sum(dim=1))
    centres = torch.stack(centres)
    labels = None
    for _ in range(n_iter):
        new = torch.cdist(X, centres).argmin(dim=1)
        if labels is not None and bool((new == labels).all()):
            break
        labels = new
        for c in range(K):
            if bool((labels == c).any()):
                centres[c] = X[labels == c].mean(dim=0)
    return labels


def init_mixture(Z, observed, base, n_components, *, generator, prior_strength=(1.0, 2.0, 1.0), noise_floor=1e-3):
    """Initial mixture from a fitted single model ``base`` [design 2.8].

    The rows, their missing blocks filled by ``base``'s imputation, are
    clustered by k-means++; each cluster gets the closed-form probabilistic PCA
    of its rows (``q`` of ``base``), and the weights are the cluster sizes (plus
    one). ``prior_strength`` = pseudo-rows for (means, noise, weights) of
    :class:`MixturePrior`, whose targets are the modalities' observed means and
    per-dimension variances.
    """
    dtype, device = Z[0].dtype, Z[0].device
    q = base.W[0].shape[1]
    dims = [z.shape[1] for z in Z]
    filled = torch.cat(impute_calibrated(Z, observed, base), dim=1)
    labels = _kmeans(filled, n_components, generator)
    offsets = [0] + torch.cumsum(torch.tensor(dims), 0).tolist()
    mu_target = [z[observed[:, m]].mean(dim=0) for m, z in enumerate(Z)]
    noise_target = [z[observed[:, m]].var(dim=0, unbiased=False).clamp_min(noise_floor) for m, z in enumerate(Z)]
    components = []
    for c in range(n_components):
        rows = filled[labels == c]
        if rows.shape[0] < 2:  # an empty cluster starts as the population
            components.append(LatentParams([torch.zeros(d, q, dtype=dtype, device=device) for d in dims], list(mu_target), list(noise_target)))
            continue
        centre = rows.mean(dim=0)
        _, sing, Vh = torch.linalg.svd(rows - centre, full_matrices=False)
        eig = sing**2 / rows.shape[0]
        r = min(q, eig.numel())
        sigma2 = (eig[r:].sum() / max(sum(dims) - r, 1)).clamp_min(noise_floor)
        # PPCA of the cluster: W = U_q (Lambda_q - sigma^2 I)^{1/2}  (Tipping & Bishop 1999)
        W_full = torch.zeros(sum(dims), q, dtype=dtype, device=device)
        W_full[:, :r] = Vh[:r].T * (eig[:r] - sigma2).clamp_min(0).sqrt()
        components.append(
            LatentParams(
                [W_full[offsets[m] : offsets[m + 1]].contiguous() for m in range(len(dims))],
                [centre[offsets[m] : offsets[m + 1]].contiguous() for m in range(len(dims))],
                [torch.zeros(d, dtype=dtype, device=device) + sigma2 for d in dims],
            )
        )
    counts = torch.bincount(labels, minlength=n_components).to(dtype)
    prior = MixturePrior(*prior_strength, mu_target, noise_target)
    return MixtureParams(components, torch.log((counts + 1.0) / (counts.sum() + n_components)), prior)


def impute_calibrated(Z, observed, params):
    """Observed blocks kept, the others imputed [design 2.3]: the rows as the model completes them."""
    Zhat = impute(posterior(Z, observed, params), params)
    return [torch.where(observed[:, m, None], Z[m], Zhat[m]) for m in range(len(Z))]


# ----------------------------------------------------------------------------- local correction [design 2.9]
class CentreCache:
    """The stored rows' terms of :func:`local_corrections`, kept across the chunks of one inference call.

    A transform walks its rows in chunks and meets the same missingness patterns in every chunk. The stored rows'
    terms that do not depend on the pattern are prepared once per call; those of a pattern are kept while the kept
    terms stay within ``max_bytes`` (later patterns are prepared per chunk, as without a cache).
    """

    def __init__(self, max_bytes=256 << 20):
        self.max_bytes = max_bytes
        self.stored = None
        self.patterns = {}
        self.lock = threading.Lock()  # the chunks of transform_dask may share one cache across threads

    def __getstate__(self):  # sent to dask workers: a lock does not pickle
        state = self.__dict__.copy()
        del state["lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.lock = threading.Lock()

    def keep(self, key, terms):
        size = sum(t.numel() * t.element_size() for t in terms if torch.is_tensor(t))
        with self.lock:
            if size <= self.max_bytes and key not in self.patterns:
                self.patterns[key] = terms
                self.max_bytes -= size
        return terms


def _whitened_blocks(blocks, params, which):
    """Per block ``m`` in ``which``: ``Psi_m^-1/2 (z^m - mu_m)`` and ``(z^m - mu_m)^T Psi_m^-1 W_m`` [design 2.9]."""
    centred = [blocks[m] - params.mu[m] for m in which]
    return [c / params.psi[m].sqrt() for c, m in zip(centred, which)], [(c / params.psi[m]) @ params.W[m] for c, m in zip(centred, which)]


def _stored_terms(params, centres, centres_observed):
    """The stored rows' terms that no pattern changes: completed blocks minus ``mu``, whitened, projected [design 2.9]."""
    filled = impute_calibrated(centres, centres_observed, params)
    every = range(len(filled))
    whitened, projected = _whitened_blocks(filled, params, every)
    return [filled[m] - params.mu[m] for m in every], whitened, projected, torch.stack([(w**2).sum(1) for w in whitened], 1)


def _centre_terms(pattern, params, stored, centres_observed, bandwidth, return_variance):
    """Everything the kernel of one missingness pattern needs from the stored rows [design 2.9]."""
    centred, whitened, projected, square_norms = stored
    seen = [m for m, o in enumerate(pattern) if o]
    q = params.W[0].shape[1]
    eye = torch.eye(q, dtype=params.W[0].dtype, device=params.W[0].device)
    # Cholesky of V_O^-1 = I + sum_{m in O} W_m^T Psi_m^-1 W_m  [design 2.2]
    L = torch.linalg.cholesky(eye + sum(params.W[m].T @ (params.W[m] / params.psi[m][:, None]) for m in seen))
    g_c = torch.linalg.solve_triangular(L, sum(projected[m] for m in seen).T, upper=False)
    m_c = torch.linalg.solve_triangular(L.T, g_c, upper=True).T  # posterior means m_j^(O)
    # ||z - x||^2_{C_OO^-1} = ||Psi^-1/2 (z - x)||^2 - ||L^-1 W^T Psi^-1 (z - x)||^2 (Woodbury); its part that
    # depends on the query alone cancels in the softmax, the rest is one product with [s_c, -g_c]
    centre_terms = torch.cat([whitened[m] for m in seen] + [-g_c.T], dim=1)
    centre_norms = square_norms[:, seen].sum(1) - (g_c**2).sum(0)
    scale = 1.0 / (2 * bandwidth * sum(params.W[m].shape[0] for m in seen))
    # per missing block m that some stored row observes, the residuals r = x^m - mu_m - W_m m_c and a column of
    # ones (and r^2 for the spread), zero in the rows that miss m: one product with the kernel gives every
    # weighted sum
    columns, layout = [], []
    for m in (m for m, o in enumerate(pattern) if not o):
        if bool(centres_observed[:, m].any()):  # no stored row observes m: the model alone
            mask = centres_observed[:, m, None].to(m_c.dtype)
            r = (centred[m] - m_c @ params.W[m].T) * mask
            columns += [r, mask, r**2] if return_variance else [r, mask]
            layout.append(m)
    return L, centre_terms, centre_norms, scale, layout, torch.cat(columns, dim=1) if columns else None


def local_corrections(Z, observed, params, centres, centres_observed, bandwidth, *, chunk_size=512, cache=None, return_variance=True):
    """Kernel correction of the imputations by the stored rows' residuals (the ``K -> n`` limit of the mixture) [design 2.9].

    Every stored row ``j`` (a "centre", completed by the model where it misses a
    block) is a mixture component with the model's covariance scaled by ``h``:
    ``z | j ~ N(x_j, h (W W^T + Psi))``. A query with observed blocks ``O`` then
    imputes block ``m`` as the model's conditional mean plus the responsibility-
    weighted residuals of the centres that observe ``m``::

        zhat^m = (W_m m_i + mu_m) + sum_j r_ij (x_j^m - W_m m_j^(O) - mu_m),
        r_ij  ~ exp(-||z_i^O - x_j^O||^2_{C_OO^-1} / (2 h d_O)),   d_O = sum_{m in O} d_m,

    with the Mahalanobis distance under ``C_OO = W_O W_O^T + Psi_O`` by the
    Woodbury identity (``q x q`` work per pattern). ``h = inf`` is the model
    itself; small ``h`` approaches the nearest stored neighbour.

    Parameters
    ----------
    Z : list of Tensor (n, d_m)
    observed : bool Tensor (n, k)
    params : LatentParams
    centres : list of Tensor (n_c, d_m)
        The stored rows' blocks (anything where unobserved).
    centres_observed : bool Tensor (n_c, k)
    bandwidth : float
        ``h`` (> 0).
    chunk_size : int
        Query rows per kernel matrix (memory ``chunk_size x n_c``).
    cache : CentreCache or None
        Keeps the stored rows' terms across calls with the same parameters and stored rows (the chunks of one
        inference call); None prepares them afresh.
    return_variance : bool
        Also compute the spread (the ``r^2`` columns of the kernel product).

    Returns
    -------
    corrections : list of Tensor (n, d_m)
        The added residual average, zero for observed blocks.
    variances : list of Tensor (n, d_m) or None
        The residuals' weighted variance (the spread between neighbours), zero
        for observed blocks; None unless ``return_variance``.
    """
    cache = CentreCache(0) if cache is None else cache
    if cache.stored is None:
        with cache.lock:  # chunks in other threads wait for the one that prepares them
            if cache.stored is None:
                cache.stored = _stored_terms(params, centres, centres_observed)
    corrections = [torch.zeros_like(z) for z in Z]
    variances = [torch.zeros_like(z) for z in Z] if return_variance else None
    patterns, inverse = missingness_patterns(observed)
    for p, pattern in enumerate(map(tuple, patterns.tolist())):
        if all(pattern) or not any(pattern):
            continue
        terms = cache.patterns.get((pattern, return_variance))
        if terms is None:
            terms = cache.keep((pattern, return_variance), _centre_terms(pattern, params, cache.stored, centres_observed, bandwidth, return_variance))
        L, centre_terms, centre_norms, scale, layout, columns = terms
        if not layout:
            continue
        seen = [m for m, o in enumerate(pattern) if o]
        rows_all = torch.nonzero(inverse == p).flatten()
        for start in range(0, rows_all.numel(), chunk_size):
            rows = rows_all[start : start + chunk_size]
            s_q, proj_q = _whitened_blocks([z[rows] for z in Z], params, seen)
            g_q = torch.linalg.solve_triangular(L, sum(proj_q).T, upper=False).T
            logits = (2 * torch.cat(s_q + [g_q], dim=1) @ centre_terms.T - centre_norms) * scale
            logits = logits - logits.amax(dim=1, keepdim=True)
            sums = torch.exp(logits) @ columns  # one exponential and one product for every missing block
            offset = 0
            for m in layout:
                d_m = params.W[m].shape[0]
                width = 2 * d_m + 1 if return_variance else d_m + 1
                block = sums[:, offset : offset + width]
                low = block[:, d_m] < 1e-250  # the centres observing m all lie far below the nearest one: renormalize
                if bool(low.any()):
                    shifted = logits[low].masked_fill(~centres_observed[:, m][None, :], float("-inf"))
                    block = block.clone()
                    block[low] = torch.exp(shifted - shifted.amax(dim=1, keepdim=True)) @ columns[:, offset : offset + width]
                moments = block / block[:, d_m, None]  # weighted means of r (and r^2)
                corrections[m][rows] = moments[:, :d_m]
                if return_variance:
                    variances[m][rows] = (moments[:, d_m + 1 :] - moments[:, :d_m] ** 2).clamp_min(0)
                offset += width
    return corrections, variances


def summed_statistics(parts):
    """Sum an iterable of :class:`SufficientStatistics` (chunks, mini-batches or workers); None if empty."""
    total = None
    for part in parts:
        total = part if total is None else total + part
    return total


def chunked_statistics(Z, observed, params, chunk_size=None):
    """:func:`sufficient_statistics` of in-memory rows, summed over chunks of ``chunk_size`` rows (all at once when None)."""
    n = observed.shape[0]
    step = max(1, n if chunk_size is None else int(chunk_size))
    return summed_statistics(sufficient_statistics([z[s : s + step] for z in Z], observed[s : s + step], params) for s in range(0, n, step))


class RunningStatistics:
    """Statistics summed over the chunks of incremental EM (Neal & Hinton 1998) [design 3.2].

    Each chunk's contribution is kept under a key; a chunk seen again has its
    old contribution *replaced*, so passing the same chunks repeatedly converges
    to the full-batch EM fixed point, while new chunks add to the totals.
    Memory: one set of statistics per distinct chunk. Statistics are never
    modified in place, so :meth:`copy` is shallow.
    """

    def __init__(self):
        self.total = None
        self.parts = {}

    def update(self, key, stats):
        """Add a chunk's statistics, replacing its earlier contribution when ``key`` was seen before."""
        old = self.parts.get(key)
        if self.total is None:
            self.total = stats
        elif old is None:
            self.total = self.total + stats
        else:
            self.total = self.total - old + stats
        self.parts[key] = stats

    def copy(self):
        new = RunningStatistics()
        new.total, new.parts = self.total, dict(self.parts)
        return new

    def to(self, device):
        """A copy with every tensor on ``device``."""
        new = RunningStatistics()
        new.total = None if self.total is None else self.total.to(device)
        new.parts = {k: s.to(device) for k, s in self.parts.items()}
        return new


def m_step(stats, params, *, noise="isotropic", noise_floor=1e-6, ridge=1e-8, prior=None):
    """M-step: exact maximiser of the expected complete-data log-likelihood [design 2.4].

    ``W~_m = [W_m, mu_m] = C_m A_m^-1`` (solved with a small ridge on the loading
    block), then the noise update. A modality with no observed row keeps its
    previous parameters. For a :class:`MixtureParams`, every component's update
    with the mixture's :class:`MixturePrior` and the mixing weights [design 2.8].

    ``prior`` (a :class:`MixturePrior`, used for mixture components) adds
    ``prior.mu`` pseudo-rows at the modality's mean ``mu_target`` (with ``b = 0``)
    and ``prior.noise`` pseudo-rows of noise ``noise_target`` per dimension: the
    maximum a posteriori update, which keeps a component's rarely observed blocks
    near the population's instead of arbitrary.
    """
    if isinstance(params, MixtureParams):
        return _mixture_m_step(stats, params, noise=noise, noise_floor=noise_floor, ridge=ridge)
    if noise not in NOISE_MODELS:
        raise ValueError(f"noise must be one of {NOISE_MODELS}, got {noise!r}.")
    q = params.W[0].shape[1]
    pseudo = 0.0 if prior is None else prior.mu
    W_new, mu_new, resid = [], [], []
    for m, (A, C, S) in enumerate(zip(stats.A, stats.C, stats.S)):
        n_m = stats.count[m]
        if n_m <= 0 and pseudo <= 0:
            W_new.append(params.W[m])
            mu_new.append(params.mu[m])
            resid.append(None)
            continue
        A_reg = A.clone()
        A_reg[:-1, :-1] += ridge * (1.0 + torch.diagonal(A[:-1, :-1]).mean()) * torch.eye(q, dtype=A.dtype, device=A.device)
        C_reg = C
        if pseudo > 0:  # pseudo-rows z = mu_target with b~ = [0; 1]  [design 2.8]
            A_reg[-1, -1] += pseudo
            C_reg = C.clone()
            C_reg[:, -1] += pseudo * prior.mu_target[m]
        # W~_m <- C_m A_m^-1  (design 2.4; a solve, not an inverse)
        Wt = torch.linalg.solve(A_reg, C_reg.T).T
        W_new.append(Wt[:, :q].contiguous())
        mu_new.append(Wt[:, q].contiguous())
        # E||z - W~ b~||^2 per dimension: S - 2 diag(W~ C^T) + diag(W~ A W~^T)  (design 2.4 noise update)
        sq = S - 2 * (Wt * C).sum(dim=1) + ((Wt @ A) * Wt).sum(dim=1)
        if prior is not None and prior.noise > 0:  # prior.noise pseudo-rows of variance noise_target  [design 2.8]
            resid.append((sq + prior.noise * prior.noise_target[m]) / (n_m + prior.noise))
        else:
            resid.append(sq / n_m.clamp_min(1e-300))
    if noise == "shared":
        # one s^2 for all modalities: the pooled mean over every observed entry
        shared = sum(stats.count[m] * r.sum() for m, r in enumerate(resid) if r is not None) / sum(
            stats.count[m] * r.numel() for m, r in enumerate(resid) if r is not None
        )
    psi_new = []
    for m, r in enumerate(resid):
        if r is None:
            psi_new.append(params.psi[m])
        elif noise == "isotropic":
            # s_m^2 <- 1/(|I_m| d) sum_{i in I_m} E||z_i^m - W_m b - mu_m||^2  [design 2.4]
            psi_new.append((torch.zeros_like(r) + r.mean()).clamp_min(noise_floor))
        elif noise == "diagonal":
            psi_new.append(r.clamp_min(noise_floor))
        else:
            psi_new.append((torch.zeros_like(r) + shared).clamp_min(noise_floor))
    return LatentParams(W_new, mu_new, psi_new)


def init_params(Z, observed, latent_dim, *, generator=None, noise_floor=1e-6):
    """Initial parameters [design 2.6].

    Probabilistic PCA (Tipping & Bishop's closed form) of the concatenated
    representations of complete rows when there are at least ``2 * latent_dim``
    (and 10) of them; otherwise small random loadings. Means are the observed-row
    means (the M-step then moves them to the maximiser) and the noise starts at
    each modality's mean per-dimension variance.
    """
    dtype, device = Z[0].dtype, Z[0].device
    q = latent_dim
    mu, var = [], []
    for m, z in enumerate(Z):
        rows = z[observed[:, m]]
        mu.append(rows.mean(dim=0) if rows.shape[0] else torch.zeros(z.shape[1], dtype=dtype, device=device))
        v = rows.var(dim=0, unbiased=False).mean() if rows.shape[0] > 1 else torch.ones((), dtype=dtype, device=device)
        var.append(v.clamp_min(noise_floor))
    dims = [z.shape[1] for z in Z]
    complete = observed.all(dim=1)
    n_complete = int(complete.sum())
    # drawn on the CPU (``generator`` is a CPU generator) and moved: the same start on every device
    W_full = 0.1 * torch.randn(sum(dims), q, dtype=dtype, generator=generator).to(device)
    W_full *= torch.cat([v.sqrt().expand(d) for v, d in zip(var, dims)])[:, None]
    psi = [torch.zeros(d, dtype=dtype, device=device) + v for d, v in zip(dims, var)]
    if n_complete >= max(2 * q, 10):
        Zc = torch.cat([z[complete] - mu_m for z, mu_m in zip(Z, mu)], dim=1)
        _, sing, Vh = torch.linalg.svd(Zc, full_matrices=False)
        eig = sing**2 / n_complete
        r = min(q, eig.numel())
        rest = eig[r:]
        sigma2 = (rest.mean() if rest.numel() else eig[-1] * 0.01).clamp_min(noise_floor)
        # PPCA: W = U_q (Lambda_q - sigma^2 I)^{1/2}  (Tipping & Bishop 1999)
        W_full[:, :r] = Vh[:r].T * (eig[:r] - sigma2).clamp_min(0).sqrt()
        psi = [torch.zeros(d, dtype=dtype, device=device) + sigma2 for d in dims]
    W = list(torch.split(W_full, dims, dim=0))
    return LatentParams([w.contiguous() for w in W], mu, psi)


def _flat(params):
    """``theta`` as one vector: loadings, means and log noise variances (so extrapolation keeps them positive);
    for a mixture, every component's and the log weights."""
    if isinstance(params, MixtureParams):
        return torch.cat([_flat(c) for c in params.components] + [params.log_weights])
    return torch.cat([t.reshape(-1) for t in params.W] + [t.reshape(-1) for t in params.mu] + [torch.log(t).reshape(-1) for t in params.psi])


def _unflat(vec, like, noise_floor):
    """Inverse of :func:`_flat`, with the noise floored as in the M-step and the mixing weights renormalized."""
    if isinstance(like, MixtureParams):
        components, pos = [], 0
        for c in like.components:
            size = sum(t.numel() for group in c for t in group)
            components.append(_unflat(vec[pos : pos + size], c, noise_floor))
            pos += size
        return MixtureParams(components, torch.log_softmax(vec[pos:], dim=0), like.prior)
    out, pos = [], 0
    for group in like:
        parts = []
        for t in group:
            parts.append(vec[pos : pos + t.numel()].reshape(t.shape))
            pos += t.numel()
        out.append(parts)
    return LatentParams(out[0], out[1], [torch.exp(p).clamp_min(noise_floor) for p in out[2]])


def run_em(statistics, params, *, max_iter=100, tol=1e-4, noise="isotropic", noise_floor=1e-6, accelerate=True, callback=None):
    """EM from a function that sums the statistics of all rows, until the log-likelihood gains less than ``tol`` [design 2.7].

    With ``accelerate`` every two EM steps are followed by a SQUAREM
    extrapolation (Varadhan & Roland 2008, scheme S3) along the EM path; the
    extrapolated point is kept only when its log-likelihood is at least that of
    the second EM step (step length halved towards the plain EM step otherwise),
    so the recorded log-likelihood never decreases and the fixed point is EM's.
    The statistics may come from anywhere: chunks of in-memory rows
    (:func:`fit_em`), a stream, or dask workers
    (:mod:`sklearn_calmrl.distributed`).

    Parameters
    ----------
    statistics : callable
        ``statistics(params) -> SufficientStatistics`` summed over every row under ``params``.
    params : LatentParams
        Starting point (warm start).
    max_iter : int
        Maximum number of E-steps (calls of ``statistics``, accelerated or not).
    tol : float
        Stop when an accepted step gains less than this in mean per-row log-likelihood.
    noise : {'isotropic', 'diagonal', 'shared'}
    noise_floor : float
    accelerate : bool, default=True
        SQUAREM extrapolation between EM steps.
    callback : callable or None
        Called as ``callback(n_iter, loglik)`` after every accepted point (progress).

    Returns
    -------
    params : LatentParams
        One M-step past the last accepted point.
    history : list of float
        Mean log-likelihood of every accepted point (non-decreasing, [design 2.5]).
    n_iter : int
        E-steps run (rejected extrapolations included).
    """

    def e_step(p):
        stats = statistics(p)
        return stats, float(stats.loglik) / max(stats.n_rows, 1)

    def em_map(stats, p):
        return m_step(stats, p, noise=noise, noise_floor=noise_floor)

    def accept(loglik):
        history.append(loglik)
        if callback is not None:
            callback(n_iter, loglik)

    history, n_iter = [], 1
    stats, ll = e_step(params)
    accept(ll)
    while n_iter < max_iter:
        p1 = em_map(stats, params)  # one EM step x -> F(x)
        s1, ll1 = e_step(p1)
        n_iter += 1
        accept(ll1)
        if abs(ll1 - ll) < tol or not accelerate or n_iter >= max_iter:
            params, stats, ll = p1, s1, ll1
            if abs(history[-1] - history[-2]) < tol:
                break
            continue
        # SQUAREM S3: r = F(x) - x, v = F(F(x)) - 2 F(x) + x, x' = x - 2 alpha r + alpha^2 v, alpha <= -1  [design 2.7]
        p2 = em_map(s1, p1)
        x0, x1, x2 = _flat(params), _flat(p1), _flat(p2)
        r, v = x1 - x0, x2 - 2 * x1 + x0
        norm_v = float(torch.linalg.vector_norm(v))
        alpha = min(-float(torch.linalg.vector_norm(r)) / norm_v, -1.0) if norm_v > 0 else -1.0
        best = (p1, s1, ll1)  # fallback: the plain EM step, already evaluated
        while n_iter < max_iter:
            candidate = p2 if alpha == -1.0 else _unflat(x0 - 2 * alpha * r + alpha**2 * v, params, noise_floor)
            s_c, ll_c = e_step(candidate)
            n_iter += 1
            if math.isfinite(ll_c) and ll_c >= ll1:
                best = (candidate, s_c, ll_c)
                accept(ll_c)
                break
            if alpha == -1.0:
                break
            alpha = (alpha - 1.0) / 2.0 if alpha < -2.0 else -1.0  # halve the extrapolation, then plain EM
        params, stats, ll = best
        if ll - ll1 < tol and best[0] is not p1:
            break
    return em_map(stats, params), history, n_iter


def fit_em(Z, observed, params, *, max_iter=100, tol=1e-4, noise="isotropic", noise_floor=1e-6, chunk_size=None, accelerate=True, callback=None):
    """:func:`run_em` on in-memory or streamed representations [design 2.7].

    Parameters
    ----------
    Z : list of Tensor (n, d_m), or callable
        In-memory representations, or a function returning a fresh iterable of
        ``(Z_chunk, observed_chunk)`` pairs over all rows (streaming EM: the
        representations never need to be in memory at once; ``observed`` is then
        ignored).
    observed : bool Tensor (n, k) or None
    params : LatentParams
        Starting point (warm start).
    chunk_size : int, default=None
        Rows per chunk for in-memory ``Z`` (bounded working set); all rows at once when None.
    max_iter, tol, noise, noise_floor, accelerate, callback
        As :func:`run_em`.

    Returns
    -------
    params, history, n_iter
        As :func:`run_em`.
    """
    if callable(Z):

        def statistics(p):
            return summed_statistics(sufficient_statistics(Zc, oc, p) for Zc, oc in Z())

    else:

        def statistics(p):
            return chunked_statistics(Z, observed, p, chunk_size)

    return run_em(statistics, params, max_iter=max_iter, tol=tol, noise=noise, noise_floor=noise_floor, accelerate=accelerate, callback=callback)
