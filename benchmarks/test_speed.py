"""The timing script's modes (benchmarks/speed.py): the E-step comparison is of equal outputs."""

import numpy as np
import torch

from benchmarks import speed
from sklearn_calmrl._latent import posterior


def test_per_pattern_estep_matches_per_row():
    Z, observed, params = speed.make_problem(300, k=4, q=5, d=7, seed=1)
    post = posterior(Z, observed, params)
    mean, cov = speed.naive_posterior(Z, observed, params, chunk_size=128, return_cov=True)
    np.testing.assert_allclose(post.mean.numpy(), mean.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(post.cov[post.pattern_index].numpy(), cov.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(speed.naive_posterior_loop(Z, observed, params).numpy(), mean.numpy(), rtol=1e-10, atol=1e-12)
    assert post.cov.shape[0] == torch.unique(observed, dim=0).shape[0] < observed.shape[0]
