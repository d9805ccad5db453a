"""Benchmarks: the registry (hub ids, columns, class names, prompt templates), loading them through
`datasets` as train/validation/test splits, and the image transforms."""

from .catalog import CUSTOM, NINE
from .registry import (
    BenchmarkError,
    BenchmarkSpec,
    fill_template,
    fill_templates,
    get_benchmark,
    list_benchmarks,
    register_benchmark,
    register_benchmark_family,
)
from .loading import (
    BenchmarkDataNotFoundError,
    LoadedBenchmark,
    load_benchmark,
    parse_benchmark_list,
    parse_dataset_paths,
)
from .transforms import collate_images, image_transform

__all__ = [
    "BenchmarkDataNotFoundError",
    "BenchmarkError",
    "BenchmarkSpec",
    "CUSTOM",
    "LoadedBenchmark",
    "NINE",
    "collate_images",
    "fill_template",
    "fill_templates",
    "get_benchmark",
    "image_transform",
    "list_benchmarks",
    "load_benchmark",
    "parse_benchmark_list",
    "parse_dataset_paths",
    "register_benchmark",
    "register_benchmark_family",
]
