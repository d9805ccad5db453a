"""Small, deterministic stand-ins for the benchmarks, in each hub copy's exact schema, for offline tests.

`make_benchmark_like_dataset("cifar100")` has the hub's split names, its columns ("img", "fine_label",
"coarse_label"), its ClassLabel names ("cra" typo included) and an Image feature, so that loading it
with `load_benchmark(name, data_path=...)` exercises the code path a real download takes.
"""

from __future__ import annotations

import os

import datasets
import numpy as np
from PIL import Image

from .benchmarks import BenchmarkSpec, HubSchema, get_benchmark

# Images are a per-class colour plus noise, so a model can learn something from them.
_NOISE_AMPLITUDE = 40


def make_benchmark_like_dataset(
    name_or_spec: str | BenchmarkSpec,
    *,
    num_train: int = 20,
    num_test: int = 10,
    image_size: int = 32,
    seed: int = 0,
    image_mode: str = "RGB",
) -> datasets.DatasetDict:
    """A tiny `DatasetDict` laid out like the benchmark's hub copy (extra splits get `num_test` rows).

    Images are `image_mode` PIL images ("RGB", "L", "RGBA", "P", ...) of `image_size` x `image_size`
    pixels whose content depends only on `seed`, the split and the row.
    """
    spec = name_or_spec if isinstance(name_or_spec, BenchmarkSpec) else get_benchmark(name_or_spec)
    schema = spec.hub_schema or _generic_schema(spec)
    label_names = schema.label_names or spec.class_names or _placeholder_names(spec)
    features = datasets.Features(
        {
            spec.image_column: datasets.Image(),
            spec.label_column: datasets.ClassLabel(names=list(label_names)),
            **{column: datasets.ClassLabel(names=list(names)) for column, names in schema.extra_label_columns},
        }
    )
    class_colours = np.random.default_rng([seed, 0]).integers(0, 256, size=(len(label_names), 3))
    splits = {}
    for split_index, split in enumerate(schema.splits, start=1):
        size = num_train if split == spec.train_split else num_test
        rng = np.random.default_rng([seed, split_index])
        labels = rng.permutation(np.arange(size) % len(label_names))
        columns = {
            spec.image_column: [_make_image(class_colours[label], rng, image_size, image_mode) for label in labels],
            spec.label_column: labels.tolist(),
        }
        for column, names in schema.extra_label_columns:
            columns[column] = rng.integers(0, len(names), size=size).tolist()
        splits[split] = datasets.Dataset.from_dict(columns, features=features)
    return datasets.DatasetDict(splits)


def save_benchmark_like_dataset(name_or_spec: str | BenchmarkSpec, path: str | os.PathLike, *, format: str = "disk", **kwargs) -> str:
    """Write `make_benchmark_like_dataset(name_or_spec, **kwargs)` to `path` and return `path` as a string.

    `format="disk"` uses `save_to_disk` (reload with `load_from_disk`); `format="parquet"` writes one
    `{split}-00000-of-00001.parquet` file per split, the hub's own layout.
    """
    dataset_dict = make_benchmark_like_dataset(name_or_spec, **kwargs)
    path = os.fspath(path)
    if format == "disk":
        dataset_dict.save_to_disk(path)
    elif format == "parquet":
        os.makedirs(path, exist_ok=True)
        for split, dataset in dataset_dict.items():
            dataset.to_parquet(os.path.join(path, f"{split}-00000-of-00001.parquet"))
    else:
        raise ValueError(f"format must be 'disk' or 'parquet', got {format!r}")
    return path


def _generic_schema(spec: BenchmarkSpec) -> HubSchema:
    return HubSchema(splits=(spec.train_split, spec.test_split))


def _placeholder_names(spec: BenchmarkSpec) -> tuple[str, ...]:
    return tuple(f"class {index}" for index in range(spec.num_classes or 3))


def _make_image(colour: np.ndarray, rng: np.random.Generator, size: int, mode: str) -> Image.Image:
    noise = rng.integers(-_NOISE_AMPLITUDE, _NOISE_AMPLITUDE + 1, size=(size, size, 3))
    pixels = np.clip(colour[None, None, :] + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, mode="RGB")
    return image if mode == "RGB" else image.convert(mode)


def corrupt_image(dataset: datasets.Dataset, index: int, column: str = "image") -> datasets.Dataset:
    """A copy of `dataset` whose image at row `index` is bytes no image library can read."""
    raw = dataset.cast_column(column, datasets.Image(decode=False))

    def replace(example, row):
        if row == index:
            example[column] = {"bytes": b"this is not an image", "path": None}
        return example

    return raw.map(replace, with_indices=True).cast_column(column, datasets.Image())
