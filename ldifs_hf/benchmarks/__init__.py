"""Benchmarks: the registry (hub ids, columns, class names, prompt templates), the nine of the study
(`catalog.py`, registered on import), loading them through `datasets` as train/validation/test splits,
and the image transforms."""

from .._lazy import lazy_exports
from . import catalog  # noqa: F401  (registers the nine benchmarks)

# Each public name and its module, imported on first use: importing the package stays cheap.
_EXPORTS = {
    "CUSTOM": ".catalog",
    "NINE": ".catalog",
    "BenchmarkDataNotFoundError": ".loading",
    "LoadedBenchmark": ".loading",
    "load_benchmark": ".loading",
    "parse_benchmark_list": ".loading",
    "BenchmarkError": ".registry",
    "BenchmarkSpec": ".registry",
    "HubSchema": ".registry",
    "fill_template": ".registry",
    "fill_templates": ".registry",
    "get_benchmark": ".registry",
    "list_benchmarks": ".registry",
    "parse_dataset_paths": ".registry",
    "register_benchmark": ".registry",
    "register_benchmark_family": ".registry",
    "collate_images": ".transforms",
    "image_transform": ".transforms",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
