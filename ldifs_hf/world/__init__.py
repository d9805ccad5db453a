"""The embedded "concept world": images with independent concepts, a tiny CLIP pre-trained on their
captions, and one benchmark per concept, so concept forgetting can be shown offline on a laptop CPU.

    world = prepare_world()                  # pre-trains (minutes, once) or loads the cached model
    load_benchmark("world-digit")            # then any world task loads like the real benchmarks
"""

from .._lazy import lazy_exports
# Registers the world's tasks as a benchmark family; `datasets` is imported when a task is built.
from . import tasks  # noqa: F401

# Each public name and its module, imported on first use: the pre-training (torch, the tiny CLIP) stays
# unimported until it is asked for.
_EXPORTS = {
    "CONCEPTS": ".concepts",
    "Concept": ".concepts",
    "get_concept": ".concepts",
    "ConceptWorld": ".generator",
    "WorldSamples": ".generator",
    "describe": ".generator",
    "render": ".generator",
    "PreparedWorld": ".prepare",
    "prepare_world": ".prepare",
    "pixel_values": ".pretrain",
    "pretrain_world_clip": ".pretrain",
    "pretrained_world_clip": ".pretrain",
    "CACHE_ENV": ".settings",
    "WORLD_SIZES": ".settings",
    "WorldSettings": ".settings",
    "cache_root": ".settings",
    "world_cache_dir": ".settings",
    "world_settings": ".settings",
    "build_world_tasks": ".tasks",
    "register_world_benchmarks": ".tasks",
    "task_name": ".tasks",
    "world_benchmark_spec": ".tasks",
    "world_task_names": ".tasks",
    "world_tasks": ".tasks",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
