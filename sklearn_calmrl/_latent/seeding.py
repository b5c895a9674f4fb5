"""k-means++ seeding (D^2 sampling, Arthur & Vassilvitskii 2007), shared by the mixture's start [design 2.8] and the
representative rows of the local correction [design 2.9]."""

import torch


def seed_rows(X, K, generator, weights=None):
    """Indices of ``K`` rows of ``X`` (n, D) drawn by D^2 sampling: the first with probability proportional to
    ``weights``, each next one proportional to ``weights`` times its squared distance to the nearest row drawn
    (uniformly over the weights when every row coincides with a drawn one). ``generator`` is a CPU generator.
    Returns the indices (K,).
    """
    n = X.shape[0]
    if weights is None:
        w, first = torch.ones(n, dtype=X.dtype, device=X.device), int(torch.randint(n, (1,), generator=generator))
    else:
        w = weights.to(X.dtype)
        first = int(torch.multinomial((w / w.sum()).cpu(), 1, generator=generator))
    chosen = [first]
    d2 = ((X - X[first]) ** 2).sum(dim=1)
    for _ in range(1, K):
        p = w * d2
        p = p / p.sum() if float(p.sum()) > 0 else w / w.sum()
        j = int(torch.multinomial(p.cpu(), 1, generator=generator))
        chosen.append(j)
        d2 = torch.minimum(d2, ((X - X[j]) ** 2).sum(dim=1))
    return torch.tensor(chosen, device=X.device)
