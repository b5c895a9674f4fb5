"""The named random streams of a fit (design 3.5) and the bounded row samples drawn from them (design 2.6)."""

import pytest
import torch

from sklearn_calmrl._streams import STREAMS, init_rows, random_stream


def test_random_streams_are_distinct_and_reproducible():
    """Every named stream of a seed draws its own numbers, the same on every call (design 3.5, issue 18)."""
    draws = {(name, key): torch.rand(8, generator=random_stream(7, name, *key)) for name in STREAMS for key in ((), (1,), (2,))}
    flat = torch.stack(list(draws.values()))
    assert torch.unique(flat, dim=0).shape[0] == len(draws)  # no two streams (or keys) coincide
    torch.testing.assert_close(torch.rand(8, generator=random_stream(7, "encoders")), draws["encoders", ()], rtol=0, atol=0)
    assert not torch.equal(torch.rand(8, generator=random_stream(8, "encoders")), draws["encoders", ()])
    with pytest.raises(ValueError):
        random_stream(7, "no such stream")


def test_init_rows_is_every_row_up_to_its_size_then_a_sorted_sample():
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    torch.testing.assert_close(init_rows(5, generator, 10), torch.arange(5))
    assert torch.equal(generator.get_state(), state)  # not drawn from when every row is kept
    rows = init_rows(100, generator, 10)
    assert rows.numel() == 10 and torch.equal(rows, rows.sort().values) and rows.unique().numel() == 10
