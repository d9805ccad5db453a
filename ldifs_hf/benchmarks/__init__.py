"""Registry of the image-classification benchmarks: hub ids, columns, class names, prompt templates."""

from .catalog import CUSTOM, NINE
from . import registry
from .registry import BenchmarkError, BenchmarkSpec, get_benchmark, list_benchmarks, register_benchmark

__all__ = ["BenchmarkError", "BenchmarkSpec", "CUSTOM", "NINE", "get_benchmark", "list_benchmarks", "register_benchmark"]
