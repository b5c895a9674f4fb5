"""The named random streams of a fit [design 3.5] and the bounded row samples drawn from them [design 2.6].

Every random choice of a fit draws from its own CPU generator, derived from the
fit's seed and the stream's name, so that the choices are independent, the same
on every device, and never touch the caller's global RNG.
"""

import numpy as np
import torch

__all__ = ["INIT_ROWS", "STREAMS", "Seeded", "init_rows", "random_stream"]

INIT_ROWS = 20000  # rows that initialise a latent model of representations, or estimate the variance explained [design 2.6]

# the named random streams of a fit's seed [design 3.5]; append new names at the end (the order is the spawn key)
STREAMS = ("latent start", "mixture start", "component selection", "stored rows", "cross-fitting", "variance explained", "encoders", "training", "partial_fit", "validation split", "matching head", "block axes")


def random_stream(seed, name, *key):
    """The CPU generator of the random stream ``name`` (and ``key``) of ``seed`` [design 3.5].

    ``np.random.SeedSequence(seed, spawn_key=(STREAMS.index(name), *key))``: the
    streams of one seed are independent and never coincide (unlike seed offsets),
    and a CPU generator gives the same draws on every device.
    """
    state = np.random.SeedSequence(seed, spawn_key=(STREAMS.index(name), *key)).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def init_rows(n, generator, size=INIT_ROWS):
    """Indices of at most ``size`` of ``n`` rows, in increasing order [design 2.6].

    All ``n`` rows when ``n <= size`` (``generator`` is then not used), else ``size``
    rows drawn without replacement by ``generator``.
    """
    return torch.randperm(n, generator=generator)[:size].sort().values if n > size else torch.arange(n)


class Seeded:
    """What a fitted object with a ``seed`` draws and prints: its named random streams [design 3.5] and progress lines."""

    def random(self, name, *key):
        """The CPU generator of the named random stream ``name`` of this object's seed (:func:`random_stream`)."""
        return random_stream(self.seed, name, *key)

    def log(self, message):
        print(f"[CalMRL] {message}", flush=True)
