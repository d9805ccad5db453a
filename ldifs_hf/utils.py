"""Small shared helpers."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def torch_threads(num_threads: int | None = 1):
    """Run with `num_threads` intra-op CPU threads, restoring the caller's setting afterwards.

    Tiny models gain little from a second thread, while OpenMP threads that share their cores with
    another busy process spin against it (measured here: steps up to 40x slower on 2 loaded cores).
    One thread also makes CPU results independent of the machine's core count. None leaves it as is.
    """
    if num_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
