"""Registry of the image-classification benchmarks: hub ids, columns, class names, prompt templates."""

from .catalog import CUSTOM, NINE
from .registry import BenchmarkSpec, get_benchmark, list_benchmarks, register_benchmark

__all__ = ["BenchmarkSpec", "CUSTOM", "NINE", "get_benchmark", "list_benchmarks", "register_benchmark"]
