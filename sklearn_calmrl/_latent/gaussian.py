"""The linear-Gaussian latent model of design 2.1-2.6: one kind behind the latent-model protocol.

    z^m = W_m b + mu_m + e_m,   b ~ N(0, I_q),   e_m ~ N(0, Psi_m)        [design 2.1]

with ``Psi_m = s_m^2 I`` (isotropic, the paper's model) or ``diag(psi_m)`` (factor
analysis). The noise is always stored as a per-dimension vector ``psi_m`` so one
code path serves both noise models.
"""

import math
from dataclasses import dataclass
from typing import List, NamedTuple

import torch

NOISE_MODELS = ("isotropic", "diagonal")
NOISE_FLOOR = 1e-6  # the smallest noise variance of a fitted model: keeps Psi_m invertible [design 2.4]
RIDGE = 1e-8  # the ridge on the loading block of the M-step's solve, relative to its mean diagonal [design 2.4]


def missingness_patterns(observed):
    """Distinct rows of a boolean mask and each row's index among them [design 2.2].

    Equal to ``torch.unique(observed, dim=0, return_inverse=True)`` (same order:
    lexicographic, the first modality most significant) but computed from one
    integer code per row, ``sum_m observed[:, m] 2^(k-1-m)``, and a 1-D unique,
    which is several times faster. Masks of more than 62 modalities fall back to
    the row-wise unique.

    Parameters
    ----------
    observed : bool Tensor of shape (n, k)

    Returns
    -------
    patterns : bool Tensor of shape (P, k)
    inverse : int64 Tensor of shape (n,)
    """
    k = observed.shape[1]
    if k > 62:
        return torch.unique(observed, dim=0, return_inverse=True)
    bits = torch.arange(k - 1, -1, -1, device=observed.device)
    codes = (observed.to(torch.int64) << bits).sum(dim=1)
    unique_codes, inverse = torch.unique(codes, return_inverse=True)
    return ((unique_codes[:, None] >> bits) & 1).bool(), inverse


class Posterior(NamedTuple):
    """Posterior ``N(mean_i, V_{O_i})`` of the shared latent [design 2.2]."""

    mean: torch.Tensor  # (n, q) posterior means m_i
    cov: torch.Tensor  # (P, q, q) V_O, one per distinct missingness pattern
    chol: torch.Tensor  # (P, q, q) Cholesky factor of the precision V_O^-1
    pattern_index: torch.Tensor  # (n,) row -> pattern
    patterns: torch.Tensor  # (P, k) bool, the distinct patterns
    h: torch.Tensor  # (n, q) sum_{m in O_i} W_m^T Psi_m^-1 (z_i^m - mu_m)
    quad: torch.Tensor  # (n,) sum_{m in O_i} (z_i^m - mu_m)^T Psi_m^-1 (z_i^m - mu_m), for the log-likelihood

    def keep_dims(self, keep):
        """The posterior with its means multiplied by the 0/1 vector ``keep`` (q,) [design 2.12]."""
        return self._replace(mean=self.mean * keep)


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


def _masked_residuals(Z, observed, params):
    """``r_i^m = z_i^m - mu_m`` on observed rows, zero elsewhere."""
    return [
        torch.where(observed[:, m, None], Z[m] - params.mu[m], torch.zeros((), dtype=Z[m].dtype, device=Z[m].device))
        for m in range(len(Z))
    ]


class LatentParams(NamedTuple):
    """Parameters ``theta = {W_m, mu_m, Psi_m}`` of design 2.1, one entry per modality.

    Implements the latent-model protocol (design 2.13) that the EM driver, the
    local correction and the estimators call: ``posterior``, ``impute``,
    ``predictive_variance``, ``log_likelihood``, ``statistics``, ``m_step``,
    ``flat`` / ``unflat``, ``members``, ``kernel_metric`` and ``tensors``.
    """

    W: List[torch.Tensor]  # (d_m, q) loadings
    mu: List[torch.Tensor]  # (d_m,) means
    psi: List[torch.Tensor]  # (d_m,) noise variances (constant vector unless diagonal)

    def to(self, *args, **kwargs):
        """Move / cast every tensor (same arguments as ``torch.Tensor.to``)."""
        return LatentParams(*([t.to(*args, **kwargs) for t in group] for group in self))

    @property
    def latent_dim(self):
        """``q``."""
        return self.W[0].shape[1]

    def tensors(self):
        """Every parameter tensor (for finiteness checks)."""
        return [t for group in self for t in group]

    def members(self):
        """The single models this model is made of and their log mixing weights: ``[self]`` and ``[0]``."""
        return [self], torch.zeros(1, dtype=self.W[0].dtype, device=self.W[0].device)

    def kernel_metric(self):
        """The single model whose ``W W^T + Psi`` is this model's marginal covariance: itself [design 2.9]."""
        return self

    def posterior(self, Z, observed):
        """E-step: posterior of the shared latent given the observed modalities [design 2.2].

        One Cholesky factorisation of ``V_O^-1`` per distinct missingness pattern ``O``,
        then a matrix product per row. A row with no observed modality gets ``m = 0, V = I``.

        Parameters
        ----------
        Z : list of Tensor of shape (n, d_m)
        observed : bool Tensor of shape (n, k)

        Returns
        -------
        Posterior
        """
        q = self.latent_dim
        dtype, device = self.W[0].dtype, self.W[0].device
        patterns, pattern_index = missingness_patterns(observed)
        # W_m^T Psi_m^-1 W_m, the precision each modality contributes [design 2.2]
        lam = torch.stack([W.T @ (W / psi[:, None]) for W, psi in zip(self.W, self.psi)])
        # V_O^-1 = I_q + sum_{m in O} W_m^T W_m / s_m^2  [design 2.2], one per pattern
        precision = torch.eye(q, dtype=dtype, device=device) + torch.einsum("pk,kab->pab", patterns.to(dtype), lam)
        chol = torch.linalg.cholesky(precision)
        cov = torch.cholesky_inverse(chol)
        residuals = _masked_residuals(Z, observed, self)
        scaled = [r / psi for r, psi in zip(residuals, self.psi)]
        # h_i = sum_{m in O_i} W_m^T (z_i^m - mu_m) / s_m^2  [design 2.2]
        h = sum(r @ W for r, W in zip(scaled, self.W))
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

    def impute(self, post):
        """Representation-level imputation ``zhat^m = W_m m_i + mu_m`` for every modality [design 2.3]."""
        return [post.mean @ W.T + mu for W, mu in zip(self.W, self.mu)]

    def predictive_variance(self, post):
        """Diagonal of the predictive covariance ``W_m V_O W_m^T + Psi_m`` per row and modality [design 2.3]."""
        out = []
        for W, psi in zip(self.W, self.psi):
            per_pattern = torch.einsum("dq,pqr,dr->pd", W, post.cov, W) + psi
            out.append(per_pattern[post.pattern_index])
        return out

    def log_likelihood(self, Z, observed, post=None):
        """Observed-data log-likelihood ``log p(z_i^O)`` of every row [design 2.5]; a Tensor (n,)."""
        post = self.posterior(Z, observed) if post is None else post
        obs = observed.to(self.W[0].dtype)
        # sum_{m in O} (d_m log 2pi + sum_j log psi_mj)  [design 2.5]
        const = obs @ torch.stack([psi.numel() * math.log(2 * math.pi) + torch.log(psi).sum() for psi in self.psi])
        quad = post.quad  # sum_{m in O} ||r_m||^2 / s_m^2  [design 2.5]
        # log det P with P = V_O^-1 = L L^T  [design 2.5]
        logdet = 2 * torch.log(torch.diagonal(post.chol, dim1=-2, dim2=-1)).sum(-1)
        # c^T V_O c = c^T m  (design 2.5, c = h)
        cvc = (post.h * post.mean).sum(dim=1)
        return -0.5 * (const + logdet[post.pattern_index] + quad - cvc)

    def statistics(self, Z, observed, post=None, weights=None):
        """E-step statistics for the M-step [design 2.4] and the log-likelihood [design 2.5] of a chunk.

        ``weights`` (n,) weighs every row's contribution to ``A``, ``C``, ``S`` and
        the counts (a mixture component's responsibilities); the log-likelihood is
        then left to the caller (0).
        """
        post = self.posterior(Z, observed) if post is None else post
        dtype = self.W[0].dtype
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
        loglik = self.log_likelihood(Z, observed, post).sum() if weights is None else torch.zeros((), dtype=dtype, device=obs.device)
        return SufficientStatistics(obs.sum(dim=0), A, C, S, loglik, int(observed.shape[0]))

    def m_step(self, stats, *, noise, noise_floor=NOISE_FLOOR, ridge=RIDGE, prior=None):
        """M-step: exact maximiser of the expected complete-data log-likelihood [design 2.4].

        ``W~_m = [W_m, mu_m] = C_m A_m^-1`` (solved with a small ridge on the loading
        block), then the noise update. A modality with no observed row keeps its
        previous parameters.

        ``prior`` (a :class:`~sklearn_calmrl._latent.mixture.MixturePrior`, used
        for mixture components) adds ``prior.mu`` pseudo-rows at the modality's
        mean ``mu_target`` (with ``b = 0``) and ``prior.noise`` pseudo-rows of
        noise ``noise_target`` per dimension: the maximum a posteriori update,
        which keeps a component's rarely observed blocks near the population's
        instead of arbitrary.
        """
        if noise not in NOISE_MODELS:
            raise ValueError(f"noise must be one of {NOISE_MODELS}, got {noise!r}.")
        q = self.latent_dim
        pseudo = 0.0 if prior is None else prior.mu
        W_new, mu_new, resid = [], [], []
        for m, (A, C, S) in enumerate(zip(stats.A, stats.C, stats.S)):
            n_m = stats.count[m]
            if n_m <= 0 and pseudo <= 0:
                W_new.append(self.W[m])
                mu_new.append(self.mu[m])
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
        psi_new = []
        for m, r in enumerate(resid):
            if r is None:
                psi_new.append(self.psi[m])
            elif noise == "isotropic":
                # s_m^2 <- 1/(|I_m| d) sum_{i in I_m} E||z_i^m - W_m b - mu_m||^2  [design 2.4]
                psi_new.append((torch.zeros_like(r) + r.mean()).clamp_min(noise_floor))
            else:  # "diagonal"
                psi_new.append(r.clamp_min(noise_floor))
        return LatentParams(W_new, mu_new, psi_new)

    def flat(self):
        """``theta`` as one vector: loadings, means and log noise variances (so extrapolation keeps them positive) [design 2.7]."""
        return torch.cat([t.reshape(-1) for t in self.W] + [t.reshape(-1) for t in self.mu] + [torch.log(t).reshape(-1) for t in self.psi])

    def unflat(self, vec, noise_floor):
        """Inverse of :meth:`flat` (parameters shaped as ``self``), with the noise floored as in the M-step."""
        out, pos = [], 0
        for group in self:
            parts = []
            for t in group:
                parts.append(vec[pos : pos + t.numel()].reshape(t.shape))
                pos += t.numel()
            out.append(parts)
        return LatentParams(out[0], out[1], [torch.exp(p).clamp_min(noise_floor) for p in out[2]])


def single_modality_maps(params):
    """Affine maps ``x^m -> E[b | x^m] = A_m x^m + c_m`` of the posterior mean from modality m alone.

    [design 2.2] with ``O = {m}``: ``A_m = V_m W_m^T Psi_m^-1``, ``c_m = -A_m mu_m``.

    Returns
    -------
    list of (Tensor (q, d_m), Tensor (q,))
    """
    eye = torch.eye(params.latent_dim, dtype=params.W[0].dtype, device=params.W[0].device)
    maps = []
    for W, mu, psi in zip(*params):
        Wp = W / psi[:, None]
        # V_{m} = (I + W_m^T Psi_m^-1 W_m)^-1 ; A_m = V_m W_m^T Psi_m^-1  [design 2.2]
        A = torch.linalg.solve(eye + W.T @ Wp, Wp.T)
        maps.append((A, -(A @ mu)))
    return maps


def init_params(Z, observed, latent_dim, *, generator=None, noise_floor=NOISE_FLOOR):
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
