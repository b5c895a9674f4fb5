"""A mixture of linear-Gaussian latent models [design 2.8]: the second kind behind the latent-model protocol."""

from dataclasses import dataclass
from typing import List, NamedTuple

import torch

from .gaussian import NOISE_FLOOR, RIDGE, LatentParams, Posterior, SufficientStatistics
from .protocol import impute_calibrated
from .seeding import seed_rows

MIXTURE_NOISE_FLOOR = 1e-3  # a component's noise floor: 1e-6 lets components collapse on collinear features [design 2.8]


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


class MixturePosterior(NamedTuple):
    """Per-component posteriors and the responsibilities ``r_ic = p(c | z_i^O)`` [design 2.8]."""

    components: List[Posterior]
    resp: torch.Tensor  # (n, K)
    loglik: torch.Tensor  # (n,) log p(z_i^O) = logsumexp_c (log pi_c + log N_c)

    @property
    def mean(self):
        """``[r_i1 m_i1, ..., r_iK m_iK]`` (n, K q): each component's latent coordinates, weighted by membership."""
        return torch.cat([self.resp[:, c, None] * p.mean for c, p in enumerate(self.components)], dim=1)

    def keep_dims(self, keep):
        """Every component's posterior means multiplied by the 0/1 vector ``keep`` (q,) [design 2.12]."""
        return self._replace(components=[p.keep_dims(keep) for p in self.components])


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


class MixtureParams(NamedTuple):
    """A mixture of ``K`` latent models [design 2.8]: ``c ~ Cat(exp(log_weights))``, then component ``c``'s model.

    Implements the latent-model protocol of :class:`~sklearn_calmrl._latent.gaussian.LatentParams` (design 2.13)
    by calling it on every component.
    """

    components: List[LatentParams]
    log_weights: torch.Tensor  # (K,) log mixing weights
    prior: MixturePrior

    def to(self, *args, **kwargs):
        """Move / cast every tensor (same arguments as ``torch.Tensor.to``)."""
        return MixtureParams([c.to(*args, **kwargs) for c in self.components], self.log_weights.to(*args, **kwargs), self.prior.to(*args, **kwargs))

    @property
    def latent_dim(self):
        """``q`` of every component."""
        return self.components[0].latent_dim

    def tensors(self):
        """Every parameter tensor (for finiteness checks)."""
        return [self.log_weights] + [t for c in self.components for t in c.tensors()]

    def members(self):
        """The components and their log mixing weights."""
        return list(self.components), self.log_weights

    def kernel_metric(self):
        """The single model with the mixture's marginal mean and covariance (moment matching) [design 2.9].

        ``C_m = sum_c pi_c (W_c W_c^T + Psi_c + (mu_c - mu)(mu_c - mu)^T)`` is
        ``W W^T + Psi`` with ``W_m = [sqrt(pi_c) W_cm, sqrt(pi_c) (mu_cm - mu_m)]_c``
        (``K (q + 1)`` columns), ``mu_m = sum_c pi_c mu_cm`` and ``Psi_m = sum_c pi_c Psi_cm``.
        """
        pi = torch.exp(self.log_weights)
        k = len(self.components[0].W)
        mu = [sum(p * c.mu[m] for p, c in zip(pi, self.components)) for m in range(k)]
        W = [torch.cat([torch.cat([p.sqrt() * c.W[m], p.sqrt() * (c.mu[m] - mu[m])[:, None]], dim=1) for p, c in zip(pi, self.components)], dim=1) for m in range(k)]
        psi = [sum(p * c.psi[m] for p, c in zip(pi, self.components)) for m in range(k)]
        return LatentParams(W, mu, psi)

    def posterior(self, Z, observed):
        """Component posteriors and responsibilities by Bayes' rule on the components' marginal likelihoods [design 2.8]."""
        posts = [c.posterior(Z, observed) for c in self.components]
        # log pi_c + log N(z_i^O | mu_c^O, W_c^O W_c^O^T + Psi_c^O), per row and component  [design 2.8]
        joint = torch.stack([c.log_likelihood(Z, observed, p) for c, p in zip(self.components, posts)], dim=1) + self.log_weights
        loglik = torch.logsumexp(joint, dim=1)
        return MixturePosterior(posts, torch.exp(joint - loglik[:, None]), loglik)

    def impute(self, post):
        """The responsibility-weighted mean of the components' imputations [design 2.8]."""
        parts = [c.impute(p) for p, c in zip(post.components, self.components)]
        return [sum(post.resp[:, c, None] * parts[c][m] for c in range(len(parts))) for m in range(len(parts[0]))]

    def predictive_variance(self, post):
        """The law of total variance over the components [design 2.8]: ``sum_c r_c (var_c + mean_c^2) - (sum_c r_c mean_c)^2``."""
        means = [c.impute(p) for p, c in zip(post.components, self.components)]
        variances = [c.predictive_variance(p) for p, c in zip(post.components, self.components)]
        out = []
        for m in range(len(means[0])):
            first = sum(post.resp[:, c, None] * means[c][m] for c in range(len(means)))
            second = sum(post.resp[:, c, None] * (variances[c][m] + means[c][m] ** 2) for c in range(len(means)))
            out.append((second - first**2).clamp_min(0.0))
        return out

    def log_likelihood(self, Z, observed, post=None):
        """``log p(z_i^O) = logsumexp_c (log pi_c + log N_c)`` of every row [design 2.8]."""
        return (self.posterior(Z, observed) if post is None else post).loglik

    def statistics(self, Z, observed, post=None, weights=None):
        """Every component's statistics weighted by the responsibilities [design 2.8] (``weights`` must be None)."""
        if weights is not None:
            raise ValueError("a mixture's statistics weigh its rows by their responsibilities; weights must be None.")
        post = self.posterior(Z, observed) if post is None else post
        parts = [c.statistics(Z, observed, p, weights=post.resp[:, k]) for k, (c, p) in enumerate(zip(self.components, post.components))]
        return MixtureStatistics(parts, post.resp.sum(dim=0), post.loglik.sum(), int(observed.shape[0]))

    def m_step(self, stats, *, noise, noise_floor=NOISE_FLOOR, ridge=RIDGE):
        """Each component's MAP update under :attr:`prior` and ``pi_c = (N_c + a) / (N + K a)`` [design 2.8]."""
        prior = self.prior
        floor = max(noise_floor, MIXTURE_NOISE_FLOOR)
        components = [c.m_step(s, noise=noise, noise_floor=floor, ridge=ridge, prior=prior) for s, c in zip(stats.components, self.components)]
        K = len(components)
        weights = (stats.weights + prior.weights) / (stats.weights.sum() + K * prior.weights)
        return MixtureParams(components, torch.log(weights.clamp_min(1e-300)), prior)

    def flat(self):
        """Every component's :meth:`~LatentParams.flat` and the log weights, as one vector [design 2.7]."""
        return torch.cat([c.flat() for c in self.components] + [self.log_weights])

    def unflat(self, vec, noise_floor):
        """Inverse of :meth:`flat`, the mixing weights renormalized."""
        components, pos = [], 0
        for c in self.components:
            size = sum(t.numel() for t in c.tensors())
            components.append(c.unflat(vec[pos : pos + size], noise_floor))
            pos += size
        return MixtureParams(components, torch.log_softmax(vec[pos:], dim=0), self.prior)


def _kmeans(X, K, generator, n_iter=30):
    """k-means++ seeding and Lloyd iterations (torch; ``generator`` on the CPU); returns labels (n,)."""
    centres = X[seed_rows(X, K, generator)].clone()
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


def init_mixture(Z, observed, base, n_components, *, generator, prior_strength=(1.0, 2.0, 1.0), noise_floor=MIXTURE_NOISE_FLOOR):
    """Initial mixture from a fitted single model ``base`` [design 2.8].

    The rows, their missing blocks filled by ``base``'s imputation, are
    clustered by k-means++; each cluster gets the closed-form probabilistic PCA
    of its rows (``q`` of ``base``), and the weights are the cluster sizes (plus
    one). ``prior_strength`` = pseudo-rows for (means, noise, weights) of
    :class:`MixturePrior`, whose targets are the modalities' observed means and
    per-dimension variances.
    """
    dtype, device = Z[0].dtype, Z[0].device
    q = base.latent_dim
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
