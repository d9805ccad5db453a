"""`prepare_world`: the world's pre-trained CLIP (pre-trained once, then read from the cache) and its
tasks registered as benchmarks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .settings import WorldSettings
from .tasks import register_world_benchmarks


@dataclass(frozen=True)
class PreparedWorld:
    """What `prepare_world` made ready: the pre-trained model folder and the registered task names."""

    settings: WorldSettings
    model_dir: Path
    benchmarks: tuple[str, ...]


def prepare_world(
    settings: WorldSettings | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    progress: bool = True,
) -> PreparedWorld:
    """Pre-train (or load from the cache) the world CLIP and register its tasks as benchmarks."""
    from .pretrain import pretrained_world_clip

    settings = settings or WorldSettings()
    model_dir = pretrained_world_clip(settings, cache_dir, progress=progress)
    names = register_world_benchmarks(settings, cache_dir)
    return PreparedWorld(settings=settings, model_dir=model_dir, benchmarks=tuple(names))
