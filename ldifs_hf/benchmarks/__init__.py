"""Benchmarks: the registry (hub ids, columns, class names, prompt templates), the nine of the study
(`catalog.py`, registered on import), loading them through `datasets` as train/validation/test splits,
and the image transforms."""

from .catalog import CUSTOM, NINE
from .registry import (
    BenchmarkError,
    BenchmarkSpec,
    HubSchema,
    fill_template,
    fill_templates,
    get_benchmark,
    list_benchmarks,
    register_benchmark,
    register_benchmark_family,
)
from .._lazy import lazy_exports

# Each public name and its module, imported on first use: importing the package stays cheap.
_EXPORTS = {
    "BenchmarkDataNotFoundError": ".loading",
    "LoadedBenchmark": ".loading",
    "load_benchmark": ".loading",
    "parse_benchmark_list": ".loading",
    "parse_dataset_paths": ".registry",
    "collate_images": ".transforms",
    "image_transform": ".transforms",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "BenchmarkDataNotFoundError",
    "BenchmarkError",
    "BenchmarkSpec",
    "CUSTOM",
    "HubSchema",
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
