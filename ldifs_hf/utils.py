"""Small shared helpers."""

from __future__ import annotations

import contextlib
import math

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


def parse_seeds(value: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]: at least one seed, each an integer, each once."""
    try:
        seeds = [int(s) for s in value.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"seeds must be comma-separated integers, got {value!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct comma-separated integers (at least one), got {value!r}")
    return seeds


def machine_metadata(device: torch.device) -> dict:
    """When, how and where a measurement ran: the header every benchmark script writes with its numbers."""
    import datetime
    import os
    import platform
    import sys

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "device": f"{device.type}: {name}",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def parse_lambdas(value: str, flag: str) -> list[float]:
    """'1,10,100' -> [1.0, 10.0, 100.0]: at least one weight, each a finite number >= 0, each once."""
    try:
        lambdas = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        lambdas = []
    if not lambdas or any(not math.isfinite(v) or v < 0 for v in lambdas) or len({lambda_folder(v) for v in lambdas}) != len(lambdas):
        raise ValueError(f"{flag} must be distinct comma-separated numbers >= 0 (regularizer weights, e.g. '1,10,100'), got {value!r}")
    return lambdas


def lambda_folder(lam: float) -> str:
    """The folder of a λ's cells: 'lambda-10', 'lambda-0.05' (the shortest text that reads back as λ)."""
    text = f"{lam:g}"
    return f"lambda-{text if float(text) == lam else repr(lam)}"
