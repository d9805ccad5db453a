"""One classification task per world concept, saved in the benchmark schema and registered as a benchmark.

Each task is a `DatasetDict` with "train" and "test" splits, an "image" column and a "label" `ClassLabel`
named by the concept's values, written with `save_to_disk`; `load_benchmark("world-digit")` then reads
it through the same code path as the nine real benchmarks. All tasks share the same images (each
labels its own concept), and test images use handwriting never seen in training or pre-training.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..benchmarks import BenchmarkSpec, register_benchmark, register_benchmark_family
from .concepts import CONCEPTS, Concept, get_concept
from .settings import WorldSettings, world_cache_dir, write_atomically

if TYPE_CHECKING:
    import datasets

TASK_PREFIX = "world-"
TASKS_FOLDER = "tasks"
# Pre-training draws stream 0 of the train split; the tasks draw their own images.
_TASK_TRAIN_STREAM = 1
_TASK_TEST_STREAM = 0
_NOISE_STREAM = 7
# Fine-tuning epochs of a world task: with batch 64 about 200 steps on the 1,800 rows left after the
# validation hold-out, enough for the classifier to improve and the other concepts to be forgotten.
TASK_EPOCHS = 7


def task_name(concept: Concept | str) -> str:
    """The benchmark name of a concept's task: "world-<concept>"."""
    return TASK_PREFIX + (concept if isinstance(concept, str) else concept.name)


def world_task_names() -> list[str]:
    return [task_name(concept) for concept in CONCEPTS]


def build_world_tasks(settings: WorldSettings, output_dir: str | os.PathLike) -> dict[str, Path]:
    """Draw the task images once and save one `DatasetDict` per concept under `output_dir/<concept>`."""
    import datasets  # here, not at the top: registering the world's tasks must stay cheap

    world = settings.world()
    draws = {
        "train": world.sample(settings.task_train_size, split="train", stream=_TASK_TRAIN_STREAM),
        "test": world.sample(settings.task_test_size, split="test", stream=_TASK_TEST_STREAM),
    }
    if settings.task_noise > 0:
        for index, draw in enumerate(draws.values()):
            rng = np.random.default_rng([settings.seed, index, _NOISE_STREAM])
            noisy = draw.images.astype(np.float32) + rng.normal(0.0, 255.0 * settings.task_noise, draw.images.shape)
            draw.images[...] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    features = datasets.Features({"image": datasets.Image(), **{c.name: datasets.Value("int64") for c in CONCEPTS}})
    shared = {
        split: datasets.Dataset.from_dict({"image": draw.pil_images(), **draw.labels}, features=features)
        for split, draw in draws.items()
    }
    paths = {}
    with _no_progress_bars():
        for concept in CONCEPTS:
            task = datasets.DatasetDict({split: _label_by(dataset, concept) for split, dataset in shared.items()})
            paths[task_name(concept)] = Path(output_dir) / concept.name
            task.save_to_disk(str(paths[task_name(concept)]))
    return paths


@contextlib.contextmanager
def _no_progress_bars():
    """Hide `datasets`' casting/saving bars (a dozen for a second's work), restoring the user's setting."""
    import datasets

    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()


def _label_by(dataset: datasets.Dataset, concept: Concept) -> datasets.Dataset:
    """The benchmark schema for one concept: columns "image" and "label" (a ClassLabel of its values)."""
    import datasets

    labelled = dataset.select_columns(["image", concept.name]).rename_column(concept.name, "label")
    return labelled.cast_column("label", datasets.ClassLabel(names=list(concept.values)))


def world_tasks(
    settings: WorldSettings | None = None, cache_dir: str | os.PathLike | None = None, *, force: bool = False
) -> dict[str, Path]:
    """Benchmark name -> folder of every concept task for `settings`, built and cached on first use."""
    settings = settings or WorldSettings()
    target = world_cache_dir(settings, cache_dir) / f"{TASKS_FOLDER}-{settings.task_fingerprint()}"
    if force or not all((target / concept.name).is_dir() for concept in CONCEPTS):
        write_atomically(target, lambda tmp: build_world_tasks(settings, tmp))
    return {task_name(concept): target / concept.name for concept in CONCEPTS}


def world_benchmark_spec(concept: Concept | str, data_path: str | os.PathLike) -> BenchmarkSpec:
    """The registry entry of a concept's task, reading the local copy at `data_path`."""
    concept = get_concept(concept) if isinstance(concept, str) else concept
    return BenchmarkSpec(
        name=task_name(concept),
        hub_id=None,
        class_names=concept.values,
        templates=concept.templates,
        epochs=TASK_EPOCHS,
        data_path=str(data_path),
    )


def register_world_benchmarks(
    settings: WorldSettings | None = None, cache_dir: str | os.PathLike | None = None
) -> list[str]:
    """Build (if needed) and register the world tasks as benchmarks; returns their names.

    Registering again replaces earlier entries, so the names always point at the current settings.
    """
    names = []
    for name, path in world_tasks(settings, cache_dir).items():
        register_benchmark(world_benchmark_spec(name[len(TASK_PREFIX) :], path), overwrite=True)
        names.append(name)
    return names


register_benchmark_family(TASK_PREFIX, register_world_benchmarks)
