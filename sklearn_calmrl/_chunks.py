"""How many rows one no-grad pass holds at a time [design 3.7]: a bounded working set on the CPU, large batches on an
accelerator."""

import torch

__all__ = ["CHUNK", "DEVICE_CHUNK", "INFERENCE_BYTES", "chunk_rows"]

CHUNK = 4096  # rows per chunk of the EM and encoding passes on the CPU: bounds the working set
INFERENCE_BYTES = 32 << 20  # the standardized float64 rows one chunk of an inference call holds on the CPU [design 3.7]
DEVICE_CHUNK = 1 << 17  # the same on an accelerator: fewer, larger kernels and host synchronisations [design 3.7]


def chunk_rows(device, width=None):
    """Rows per chunk of a no-grad pass on ``device`` (a ``torch.device`` or its name) [design 3.7]: ``DEVICE_CHUNK``
    on an accelerator; on the CPU ``CHUNK``, or for an inference call over ``width`` columns as many rows as
    ``INFERENCE_BYTES`` of float64 hold (256 to ``DEVICE_CHUNK``), so that narrow data is imputed in few, large
    batches and wide data in a bounded working set."""
    if torch.device(device).type != "cpu":
        return DEVICE_CHUNK
    return CHUNK if width is None else int(min(DEVICE_CHUNK, max(256, INFERENCE_BYTES // (8 * max(width, 1)))))
