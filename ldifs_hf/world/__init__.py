"""The embedded "concept world": images with independent concepts, a tiny CLIP pre-trained on their
captions, and one benchmark per concept, so concept forgetting can be shown offline on a laptop CPU.

    world = prepare_world()                  # pre-trains (minutes, once) or loads the cached model
    load_benchmark("world-digit")            # then any world task loads like the real benchmarks
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .._lazy import lazy_exports
from .concepts import CONCEPTS, Concept, get_concept
from .generator import ConceptWorld, WorldSamples, describe, render
from .settings import CACHE_ENV, WORLD_SIZES, WorldSettings, cache_root, world_cache_dir, world_settings
# Registers the world's tasks as a benchmark family; `datasets` is imported when a task is built.
from .tasks import build_world_tasks, register_world_benchmarks, task_name, world_benchmark_spec, world_task_names, world_tasks

# The pre-training (torch, the tiny CLIP) is imported on first use: importing the world stays cheap.
_EXPORTS = {name: ".pretrain" for name in ("pixel_values", "pretrain_world_clip", "pretrained_world_clip")}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


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


__all__ = [
    "CACHE_ENV",
    "CONCEPTS",
    "Concept",
    "ConceptWorld",
    "PreparedWorld",
    "WorldSamples",
    "WORLD_SIZES",
    "WorldSettings",
    "build_world_tasks",
    "cache_root",
    "describe",
    "get_concept",
    "pixel_values",
    "prepare_world",
    "pretrain_world_clip",
    "pretrained_world_clip",
    "register_world_benchmarks",
    "render",
    "task_name",
    "world_benchmark_spec",
    "world_cache_dir",
    "world_settings",
    "world_task_names",
    "world_tasks",
]
