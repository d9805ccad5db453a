"""The benchmark registry: a `BenchmarkSpec` per dataset name, with lookup that names what exists."""

from __future__ import annotations

import difflib

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

# The validation split: this share of a benchmark's train split, seeded (the paper's protocol: 10 %, seed 0).
# The fine-tuning runs hold it out by default; the evaluation scores it when asked (`EvaluatorSettings.validation`).
VALIDATION_FRACTION, VALIDATION_SEED = 0.1, 0

# The zero-shot prompt of a benchmark that names none.
DEFAULT_TEMPLATES = ("a photo of a {}.",)


@dataclass(frozen=True)
class HubSchema:
    """How a benchmark's Hub copy is laid out, for schema-exact test data (`ldifs_hf.testing`).

    splits: split names in Hub order; label_names: the label ClassLabel's names (`None`: the spec's
    class names); extra_label_columns: other ClassLabel columns as (column, names) pairs, in column order;
    parquet_folder: the repository folder holding each split's files as `{folder}/{split}-*.parquet`, so a run
    downloads only the splits it reads (`None`: not known, the whole dataset is loaded).
    """

    splits: tuple[str, ...] = ("train", "test")
    label_names: tuple[str, ...] | None = None
    extra_label_columns: tuple[tuple[str, tuple[str, ...]], ...] = field(default_factory=tuple)
    parquet_folder: str | None = None


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark's data lives and how to read and prompt it.

    Args:
        name (`str`): registry key, e.g. ``"eurosat"``.
        hub_id (`str` or `None`): dataset id on the Hugging Face Hub; `None` for local-only benchmarks.
        config_name (`str` or `None`, defaults to `None`): hub configuration, e.g. ``"cropped_digits"``.
        train_split (`str`, defaults to ``"train"``) / test_split (`str`, defaults to ``"test"``): split names.
        image_column (`str`, defaults to ``"image"``) / label_column (`str`, defaults to ``"label"``).
        class_names (`tuple[str, ...]` or `None`, defaults to `None`): prompt-ready names, label i -> name i;
            `None` takes the names of the dataset's `ClassLabel` feature.
        templates (`tuple[str, ...]`, defaults to ``("a photo of a {}.",)``): zero-shot prompts, "{}" is the class.
        epochs (`int`, defaults to 10): default fine-tuning epochs.
        num_classes (`int` or `None`, defaults to `None`): filled in from `class_names` when those are given.
        data_path (`str` or `None`, defaults to `None`): default local copy (a `save_to_disk` folder, parquet
            files or an image folder), used instead of the hub.
        split_note (`str` or `None`, defaults to `None`): how the hub copy's splits differ from the paper's;
            recorded with every run on the benchmark.
        hub_schema (`HubSchema` or `None`, defaults to `None`): how the hub copy is laid out (split names,
            label names, other label columns), for schema-exact test data; `None`: the train and test
            splits, labelled with the class names.
    """

    name: str
    hub_id: str | None
    config_name: str | None = None
    train_split: str = "train"
    test_split: str = "test"
    image_column: str = "image"
    label_column: str = "label"
    class_names: tuple[str, ...] | None = None
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    epochs: int = 10
    num_classes: int | None = None
    data_path: str | None = None
    split_note: str | None = None
    hub_schema: HubSchema | None = None

    def __post_init__(self):
        if not self.name or self.name != self.name.strip():
            raise ValueError(f"BenchmarkSpec.name must be a non-empty name without surrounding spaces, got {self.name!r}")
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(self.class_names))
            if len(self.class_names) == 0:
                raise ValueError(f"BenchmarkSpec {self.name!r}: class_names is empty")
            if self.num_classes is None:
                object.__setattr__(self, "num_classes", len(self.class_names))
            elif self.num_classes != len(self.class_names):
                raise ValueError(
                    f"BenchmarkSpec {self.name!r}: num_classes={self.num_classes} but {len(self.class_names)} class_names"
                )
        object.__setattr__(self, "templates", tuple(self.templates))
        if not self.templates:
            raise ValueError(f"BenchmarkSpec {self.name!r}: templates is empty")
        for template in self.templates:
            if template.count("{}") != 1:
                raise ValueError(
                    f"BenchmarkSpec {self.name!r}: template {template!r} must contain exactly one '{{}}' placeholder"
                )
        if self.epochs <= 0:
            raise ValueError(f"BenchmarkSpec {self.name!r}: epochs must be > 0, got {self.epochs}")

    def prompts(self, class_name: str) -> list[str]:
        """Every template filled with `class_name`."""
        return fill_templates(class_name, self.templates)


def fill_template(template: str, class_name: str) -> str:
    """The prompt `template` with its "{}" replaced by `class_name`; any other brace is kept as written."""
    if "{}" not in template:
        raise ValueError(f"prompt template {template!r} must contain '{{}}' for the class name")
    return template.replace("{}", class_name)


def fill_templates(class_name: str, templates) -> list[str]:
    """Every template filled with `class_name` (`fill_template` for each)."""
    return [fill_template(template, class_name) for template in templates]


class BenchmarkError(ValueError):
    """A benchmark name, its data or its labels cannot be used; the message says what would be accepted."""


_REGISTRY: dict[str, BenchmarkSpec] = {}


def register_benchmark(spec: BenchmarkSpec, overwrite: bool = False) -> BenchmarkSpec:
    """Add `spec` under `spec.name`; an existing name is replaced only with `overwrite=True`."""
    if not isinstance(spec, BenchmarkSpec):
        raise TypeError(f"register_benchmark expects a BenchmarkSpec, got {type(spec).__name__}")
    if spec.name in _REGISTRY and not overwrite:
        raise ValueError(f"Benchmark {spec.name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[spec.name] = spec
    return spec


def list_benchmarks(pattern: str | None = None) -> list[str]:
    """Registered names, sorted; `pattern` is a shell-style filter such as ``"cifar*"``."""
    names = sorted(_REGISTRY)
    if pattern is not None:
        names = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
    return names


# Families of benchmarks registered on first use: name prefix -> a function that registers them
# (the embedded world's tasks are built from its generator, so a fresh process can name them directly).
_LAZY_FAMILIES: dict[str, Callable[[], object]] = {}


def register_benchmark_family(prefix: str, register: Callable[[], object]) -> None:
    """Benchmarks named `prefix*` are registered by calling `register()` the first time one is looked up."""
    if not prefix:
        raise ValueError("a benchmark family needs a non-empty name prefix")
    _LAZY_FAMILIES[prefix.lower()] = register


def _find(name: str) -> BenchmarkSpec | None:
    if name in _REGISTRY:
        return _REGISTRY[name]
    key = str(name).strip().lower()
    for spec in _REGISTRY.values():
        if key in (spec.name.lower(), (spec.hub_id or "").lower()):
            return spec
    return None


def get_benchmark(name: str) -> BenchmarkSpec:
    """The spec registered as `name` (case-insensitive; a registered hub id also works)."""
    if isinstance(name, BenchmarkSpec):
        return name
    spec = _find(name)
    for prefix, register in _LAZY_FAMILIES.items():
        if spec is None and str(name).strip().lower().startswith(prefix):
            register()
            spec = _find(name)
    if spec is not None:
        return spec
    lazy = "".join(f", {prefix}*" for prefix in _LAZY_FAMILIES if not list_benchmarks(prefix + "*"))
    close = difflib.get_close_matches(str(name).strip().lower(), list_benchmarks(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise BenchmarkError(
        f"Unknown benchmark {name!r}{hint}. Valid names: {', '.join(list_benchmarks())}{lazy}. "
        "For any other image/label dataset use 'custom' with a data path, or register_benchmark(BenchmarkSpec(...))."
    )


def parse_dataset_paths(values) -> dict[str, str]:
    """`["name=path", ...]` (command-line form) -> {name: path}."""
    paths = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"dataset paths take 'name=path' entries, got {value!r}")
        paths[name] = path
    return paths
