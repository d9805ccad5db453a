"""Load a benchmark through `datasets` as train / validation / test splits of RGB images and ClassLabel labels.

The data comes from the Hugging Face Hub (or its cache, also with ``HF_DATASETS_OFFLINE=1``), or from a
local copy: a `save_to_disk` folder, parquet files (a folder or a glob) or an image folder, given as
`data_path`, as the spec's `data_path`, or found at ``$LDIFS_DATA_DIR/<name>``.
"""

from __future__ import annotations

import dataclasses
import glob
import io
import json
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import numpy as np
import pyarrow as pa
from PIL import Image

from .catalog import CUSTOM
from .registry import VALIDATION_FRACTION, BenchmarkError, BenchmarkSpec, fill_templates, get_benchmark, list_benchmarks, register_benchmark
from .transforms import SUPPORTED_IMAGE_MODES, rgb_images

DATA_DIR_ENV = "LDIFS_DATA_DIR"

logger = logging.getLogger(__name__)

_LOCAL_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow"}
_VERIFY_BATCH_SIZE = 1024


class BenchmarkDataNotFoundError(BenchmarkError):
    """Neither the hub nor a local copy of the benchmark's data could be read."""


@dataclass
class LoadedBenchmark:
    """A benchmark ready for fine-tuning and evaluation.

    `splits` has the keys "train", "validation" (a seeded share of the source's train split, disjoint
    from "train") and "test"; each has exactly the columns "image" (PIL, RGB) and "label" (ClassLabel
    whose names are `class_names`).
    """

    spec: BenchmarkSpec
    splits: datasets.DatasetDict
    class_names: list[str]
    templates: list[str]

    def prompts(self, class_index: int) -> list[str]:
        """Every template filled with the name of class `class_index`."""
        return fill_templates(self.class_names[class_index], self.templates)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.class_names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.class_names)}


def load_benchmark(
    name: str | BenchmarkSpec = "custom",
    *,
    data_path: str | os.PathLike | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    class_names: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    validation_fraction: float = VALIDATION_FRACTION,
    seed: int = 0,
    validation_seed: int | None = None,
    cache_dir: str | None = None,
    verify_images: bool = True,
) -> LoadedBenchmark:
    """Load benchmark `name` (a registered name, ``"custom"`` or a `BenchmarkSpec`).

    Args:
        data_path: local copy to read instead of the hub (see the module docstring); required for "custom".
        image_column / label_column: override the spec's source column names.
        class_names: prompt-ready names, label i -> name i; default: the spec's, else the ClassLabel names.
        templates: prompt templates with "{}" for the class name; default: the spec's.
        max_train_samples: keep a random subset of this many training rows (quick runs).
        max_eval_samples: keep a random subset of this many rows in validation and in test.
        validation_fraction: share of the source's train split held out as "validation" (seeded by `seed`).
        validation_seed: seed of the validation hold-out when it is not `seed` (e.g. the fine-tuning runs'
            hold-out, seed 0, while `seed` draws the subsamples); the training rows kept by
            `max_train_samples` are then drawn with `seed` from the rest. Default: `seed`.
        cache_dir: `datasets` cache folder.
        verify_images: open every kept image once, so that a corrupted one fails here, naming its row,
            rather than in the middle of a run.
    """
    spec = resolve_benchmark(name)
    image_column = image_column or spec.image_column
    label_column = label_column or spec.label_column
    _check_fraction(validation_fraction)
    raw = load_raw_splits(spec, data_path=data_path, cache_dir=cache_dir)
    train = _get_split(raw, spec.train_split, spec.name)
    test = _get_split(raw, spec.test_split, spec.name)
    for split, dataset in ((spec.train_split, train), (spec.test_split, test)):
        _check_columns(dataset, (image_column, label_column), split, spec.name)
    names = _resolve_class_names(train, test, label_column, class_names or spec.class_names, spec)
    spec = dataclasses.replace(
        spec, class_names=tuple(names), num_classes=len(names), templates=tuple(templates or spec.templates)
    )

    train_rows, validation_rows = split_validation_rows(len(train), validation_fraction, seed if validation_seed is None else validation_seed)
    if validation_seed is not None and validation_seed != seed:
        train_rows = train_rows[np.random.default_rng(seed).permutation(len(train_rows))]  # `seed` draws the subsample below
    test_rows = np.arange(len(test))
    if max_train_samples is not None:
        train_rows = train_rows[:max_train_samples]
    if max_eval_samples is not None:
        validation_rows = validation_rows[:max_eval_samples]
        test_rows = np.random.default_rng(seed).permutation(len(test))[:max_eval_samples]

    def prepare(dataset, rows, split):
        return _prepare_split(
            dataset, np.sort(rows), image_column, label_column, names, split, spec.name, verify_images,
            _label_order(dataset.features[label_column], names),  # each split's own labels
        )

    splits = datasets.DatasetDict(
        {
            "train": prepare(train, train_rows, spec.train_split),
            "validation": prepare(train, validation_rows, spec.train_split),
            "test": prepare(test, test_rows, spec.test_split),
        }
    )
    return LoadedBenchmark(spec=spec, splits=splits, class_names=list(names), templates=list(spec.templates))


def check_benchmark_data(
    name: str | BenchmarkSpec, *, data_path: str | os.PathLike | None = None, image_column: str | None = None,
    label_column: str | None = None, cache_dir: str | None = None,
) -> None:
    """That `load_benchmark` will find the data: its source opens and has the train and test splits and
    columns; the images themselves are checked when it is loaded. For what runs later (a sequence's
    later tasks), so that missing data is named before the first task trains."""
    spec = resolve_benchmark(name)
    raw = load_raw_splits(spec, data_path=data_path, cache_dir=cache_dir)
    for split in (spec.train_split, spec.test_split):
        _check_columns(_get_split(raw, split, spec.name), (image_column or spec.image_column, label_column or spec.label_column), split, spec.name)


def resolve_benchmark(name: str | BenchmarkSpec) -> BenchmarkSpec:
    """The spec for a registered name, ``"custom"`` or a spec given as is."""
    if isinstance(name, BenchmarkSpec):
        return name
    if str(name).strip().lower() == CUSTOM.name:
        return CUSTOM
    return get_benchmark(name)


def split_validation_rows(num_rows: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows): a seeded permutation of ``range(num_rows)`` cut at `validation_fraction`."""
    permutation = np.random.default_rng(seed).permutation(num_rows)
    num_validation = int(round(num_rows * validation_fraction))
    if validation_fraction > 0 and num_rows > 1:
        num_validation = min(max(num_validation, 1), num_rows - 1)
    return permutation[num_validation:], permutation[:num_validation]


def load_raw_splits(
    spec: BenchmarkSpec, *, data_path: str | os.PathLike | None = None, cache_dir: str | None = None
) -> datasets.DatasetDict:
    """The benchmark's source splits as stored: from `data_path`, the spec's local copy, or the hub."""
    path = data_path or spec.data_path or _copy_in_data_dir(spec.name)
    if path is not None:
        return _load_local(os.path.expanduser(os.fspath(path)), spec, cache_dir)
    if spec.hub_id is None:
        raise BenchmarkDataNotFoundError(
            f"Benchmark {spec.name!r} has no hub id: pass data_path= (--dataset_path) pointing at a save_to_disk "
            "folder, parquet files or an image folder with train/ and test/ splits."
        )
    return _load_from_hub(spec, cache_dir)


# Naming the files of the splits a run reads (train and test, in the spec's `hub_schema.parquet_folder`) keeps
# `datasets` from downloading and preparing the others: tanganke's 7 corrupted copies of the test set (cars, eurosat,
# gtsrb, resisc45) and SVHN's 531k-image "extra" split. The Hub cannot be reached from the tests: they lay out local
# folders this way. Should a repository move its files, the pattern matches nothing and the whole dataset is loaded,
# with a warning.
def hub_split_files(spec: BenchmarkSpec) -> dict[str, str] | None:
    """The parquet files of the splits `load_benchmark` reads (train and test) in the spec's Hub repository, as
    `data_files` patterns; None for a repository whose layout is not known here (all of it is loaded)."""
    folder = spec.hub_schema.parquet_folder if spec.hub_schema is not None else None
    if folder is None:
        return None
    return {split: f"{folder}/{split}-*.parquet" for split in dict.fromkeys((spec.train_split, spec.test_split))}


def _load_from_hub(spec: BenchmarkSpec, cache_dir: str | None) -> datasets.DatasetDict:
    check_datasets_cache(cache_dir)
    files = hub_split_files(spec)
    if files is not None:
        try:
            return _as_dataset_dict(datasets.load_dataset(spec.hub_id, data_files=files, cache_dir=cache_dir))
        except Exception as error:  # e.g. a repository that moved its files, or a cache made of the whole dataset
            logger.warning(
                "could not read only the %s splits of %s (%s: %s); loading the whole dataset instead",
                " and ".join(files), spec.hub_id, type(error).__name__, error,
            )
    try:
        loaded = datasets.load_dataset(spec.hub_id, spec.config_name, cache_dir=cache_dir)
    except Exception as error:
        raise BenchmarkDataNotFoundError(_download_hint(spec, error)) from error
    return _as_dataset_dict(loaded)


def check_datasets_cache(cache_dir: str | None = None) -> None:
    """The `datasets` cache, where `load_dataset` writes what it reads (also from local parquet files or an
    image folder), is a folder that takes files; otherwise its own error blames the data."""
    from ..run_folder import folder_problem

    path = cache_dir or datasets.config.HF_DATASETS_CACHE
    problem = folder_problem(path)
    if problem is None:
        return
    setting = "--cache_dir" if cache_dir else next((f"${v}" for v in ("HF_DATASETS_CACHE", "HF_HOME") if os.environ.get(v)), "the default")
    raise BenchmarkError(
        f"the datasets cache {os.fspath(path)!r} (from {setting}) cannot hold files: {problem}; set HF_HOME (or HF_DATASETS_CACHE, "
        "or --cache_dir) to a writable folder"
    )


def _download_hint(spec: BenchmarkSpec, error: Exception) -> str:
    config = f", {spec.config_name!r}" if spec.config_name else ""
    files = hub_split_files(spec)
    source = f"{spec.hub_id!r}, data_files={files!r}" if files else f"{spec.hub_id!r}{config}"
    return (
        f"Could not load benchmark {spec.name!r} from the Hugging Face Hub dataset {spec.hub_id!r}{config} "
        f"({type(error).__name__}: {error}). Without network here, download it once elsewhere: "
        f"python -c \"import datasets; datasets.load_dataset({source}).save_to_disk('{spec.name}')\", "
        f"copy the folder over and point at it with --dataset_path {spec.name} (load_benchmark(..., data_path=...)) "
        f"or put it at ${DATA_DIR_ENV}/{spec.name}; parquet files or an image folder work too. "
        "A copied Hugging Face cache also works: set HF_HOME (or HF_DATASETS_CACHE) to it and HF_DATASETS_OFFLINE=1."
    )


def _copy_in_data_dir(name: str) -> str | None:
    root = os.environ.get(DATA_DIR_ENV)
    if root and not os.path.isdir(root):
        raise BenchmarkDataNotFoundError(f"${DATA_DIR_ENV} is {root!r}, which is not a folder; point it at the folder that holds <name>/ copies, or unset it")
    if root and os.path.exists(os.path.join(root, name)):
        return os.path.join(root, name)
    return None


def _load_local(path: str, spec: BenchmarkSpec, cache_dir: str | None) -> datasets.DatasetDict:
    if glob.has_magic(path) or os.path.isfile(path):
        return _load_files(path, spec, cache_dir)
    if not os.path.isdir(path):
        raise BenchmarkDataNotFoundError(
            f"Data path {path!r} for benchmark {spec.name!r} does not exist; expected a save_to_disk folder, "
            "a folder or glob of parquet files, or an image folder."
        )
    try:
        if any(os.path.exists(os.path.join(path, marker)) for marker in ("dataset_dict.json", "state.json")):
            return _load_saved(path)
        check_datasets_cache(cache_dir)
        return _as_dataset_dict(datasets.load_dataset(path, cache_dir=cache_dir))
    except BenchmarkError:
        raise
    except Exception as error:
        raise BenchmarkDataNotFoundError(
            f"Could not read the local copy of {spec.name!r} at {path!r} ({type(error).__name__}: {error})"
        ) from error


def _load_saved(path: str) -> datasets.DatasetDict:
    """A `save_to_disk` folder. A split saved with no rows has no data file, which `load_from_disk`
    cannot read (an IndexError); it loads here as an empty split with its saved columns, so that the
    checks on the splits name it as empty."""
    if not os.path.isfile(os.path.join(path, "dataset_dict.json")):
        return _as_dataset_dict(_load_saved_split(path))
    names = _saved_json(os.path.join(path, "dataset_dict.json"), "splits")
    return datasets.DatasetDict({name: _load_saved_split(os.path.join(path, name)) for name in names})


def _load_saved_split(path: str) -> datasets.Dataset:
    files = _saved_json(os.path.join(path, "state.json"), "_data_files")
    if files == []:
        features = datasets.DatasetInfo.from_directory(path).features
        return datasets.Dataset.from_dict({name: [] for name in features}, features=features)
    return datasets.load_from_disk(path)


def _saved_json(file: str, key: str):
    """`key` of a JSON file `save_to_disk` wrote, or a BenchmarkError naming the file."""
    try:
        with open(file) as f:
            return json.load(f)[key]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise BenchmarkDataNotFoundError(f"{file} is damaged or missing ({type(err).__name__}: {err}); save the dataset again with save_to_disk") from None


def _load_files(pattern: str, spec: BenchmarkSpec, cache_dir: str | None) -> datasets.DatasetDict:
    """Parquet/arrow files named like the hub's ``{split}-00000-of-00001.parquet``, one split per name."""
    files = sorted(glob.glob(pattern))
    if not files:
        raise BenchmarkDataNotFoundError(f"No files match data path {pattern!r} for benchmark {spec.name!r}")
    extensions = {os.path.splitext(file)[1] for file in files}
    if len(extensions) != 1 or not extensions <= _LOCAL_FILE_BUILDERS.keys():
        raise BenchmarkDataNotFoundError(
            f"Data path {pattern!r} matches files of type {sorted(extensions)}; "
            f"expected all {' or all '.join(_LOCAL_FILE_BUILDERS)}"
        )
    data_files = defaultdict(list)
    for file in files:
        data_files[os.path.basename(file).split(".")[0].split("-")[0]].append(file)
    builder = _LOCAL_FILE_BUILDERS[extensions.pop()]
    check_datasets_cache(cache_dir)
    return _as_dataset_dict(datasets.load_dataset(builder, data_files=dict(data_files), cache_dir=cache_dir))


def _as_dataset_dict(loaded) -> datasets.DatasetDict:
    if isinstance(loaded, datasets.Dataset):
        return datasets.DatasetDict({"train": loaded})
    return loaded


def _check_fraction(validation_fraction: float) -> None:
    if not 0 <= validation_fraction < 1:
        raise BenchmarkError(f"validation_fraction must be in [0, 1), got {validation_fraction}")


def _get_split(raw: datasets.DatasetDict, split: str, name: str) -> datasets.Dataset:
    if split not in raw:
        raise BenchmarkError(f"Benchmark {name!r} has no split {split!r}; available splits: {', '.join(raw)}")
    return raw[split]


def _check_columns(dataset: datasets.Dataset, columns: Sequence[str], split: str, name: str) -> None:
    for column in columns:
        if column not in dataset.column_names:
            raise BenchmarkError(
                f"Benchmark {name!r}: no column {column!r} in split {split!r}; "
                f"columns: {', '.join(dataset.column_names)} (set image_column= / label_column=)"
            )
    if columns[0] == columns[1]:
        raise BenchmarkError(f"Benchmark {name!r}: image and label column are both {columns[0]!r}")


def _resolve_class_names(
    train: datasets.Dataset,
    test: datasets.Dataset,
    label_column: str,
    given: Sequence[str] | None,
    spec: BenchmarkSpec,
) -> list[str]:
    feature = train.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        test_feature = test.features[label_column]
        if isinstance(test_feature, datasets.ClassLabel) and test_feature.names != feature.names:
            raise BenchmarkError(
                f"Benchmark {spec.name!r}: {spec.train_split!r} and {spec.test_split!r} label different classes "
                f"({feature.num_classes} vs {test_feature.num_classes} names)"
            )
        if given is not None and len(given) != feature.num_classes:
            raise BenchmarkError(
                f"Benchmark {spec.name!r}: {len(given)} class names given but the label column {label_column!r} "
                f"has {feature.num_classes} classes ({', '.join(feature.names[:5])}, ...)"
            )
        return list(given or feature.names)
    if given is None:
        raise BenchmarkError(
            f"Benchmark {spec.name!r}: label column {label_column!r} is {feature!r}, not a ClassLabel, so the class "
            "names are unknown; pass class_names=[...] (label i -> name i) or cast the column to ClassLabel"
        )
    return list(given)


def _name_key(name: str) -> str:
    return "".join(character for character in name.lower() if character.isalnum())


def _label_order(feature, class_names: list[str]) -> np.ndarray | None:
    """Where a ClassLabel's names are the class names in another order (an image folder's classes are its
    sorted folder names), the index in `class_names` of each source label; `None` where the order agrees
    or the names are not the same set (e.g. the Hub's raw names, which pair with the spec's by index).
    Without it, label i would silently get the prompt of the spec's class i."""
    if not isinstance(feature, datasets.ClassLabel):
        return None
    position = {_name_key(name): index for index, name in enumerate(class_names)}
    source = [_name_key(name) for name in feature.names]
    if len(position) != len(class_names) or sorted(source) != sorted(position) or source == list(position):
        return None
    return np.asarray([position[key] for key in source], dtype=np.int64)


def _prepare_split(
    dataset: datasets.Dataset,
    rows: np.ndarray,
    image_column: str,
    label_column: str,
    class_names: list[str],
    split: str,
    name: str,
    verify_images: bool,
    label_order: np.ndarray | None = None,
) -> datasets.Dataset:
    """The split's `rows` as columns "image" and "label" (ClassLabel of `class_names`), checked.

    Nothing is written to disk: `datasets` writes the result of a `map` or of a `cast` to a ClassLabel
    as a `cache-*.arrow` copy beside the source (inside the user's dataset folder, and it fails on a
    read-only one). So the label column is built in memory (one integer per row), joined to the
    untouched image column, and the rows are picked by an in-memory index. Images decode in their own
    mode and a format transform (`to_rgb`) makes them RGB: `datasets`' own RGB decoding is PIL's
    `convert("RGB")`, which turns 16-bit images white. Consumers that attach their own transform
    (`image_transform`, `TrainImageTransform`) call `to_rgb` themselves.
    """
    labels = _label_ids(dataset, label_column, rows, class_names, split, name)
    if label_order is not None:
        labels = np.where(labels >= 0, label_order[np.maximum(labels, 0)], -1)
    if verify_images:
        _verify_images(dataset.select(rows) if len(rows) != len(dataset) else dataset, image_column, rows, split, name)
    label_table = datasets.Dataset.from_dict({"label": labels}, features=datasets.Features({"label": datasets.ClassLabel(names=class_names)}))
    images = dataset.select_columns([image_column])
    if image_column != "image":
        images = images.rename_column(image_column, "image")
    joined = datasets.concatenate_datasets([images, label_table], axis=1)
    if len(rows) != len(dataset):
        joined = joined.select(rows)
    return joined.cast_column("image", datasets.Image()).with_transform(rgb_images)


def _label_ids(
    dataset: datasets.Dataset, column: str, rows: np.ndarray, class_names: list[str], split: str, name: str
) -> np.ndarray:
    """Class ids of every row of the source split (rows outside `rows` that hold no valid label get -1,
    "no label", and are never used); a used row with a label outside the classes is an error."""
    labels = dataset.with_format("arrow")[column]
    if pa.types.is_string(labels.type) or pa.types.is_large_string(labels.type):
        lookup = {label: index for index, label in enumerate(class_names)}
        values = np.asarray(labels.to_pylist(), dtype=object)
        ids = np.asarray([lookup.get(v, -1) for v in values], dtype=np.int64)
        accepted = "one of the class names"
    elif pa.types.is_integer(labels.type):
        values = labels.to_numpy(zero_copy_only=False)
        ids = np.where((values >= 0) & (values < len(class_names)), values, -1).astype(np.int64)
        accepted = f"in 0..{len(class_names) - 1}"
    else:
        raise BenchmarkError(
            f"Benchmark {name!r}: label column {column!r} holds {labels.type} values; expected integers or strings"
        )
    bad = rows[ids[rows] < 0]
    if len(bad):
        value = values[bad[0]]
        raise BenchmarkError(
            f"Benchmark {name!r}: label {getattr(value, 'item', lambda: value)()!r} at row {int(bad[0])} of split {split!r} is not "
            f"{accepted} ({len(class_names)} classes); {len(bad)} such rows"
        )
    return ids


def _verify_images(dataset: datasets.Dataset, column: str, rows: np.ndarray, split: str, name: str) -> None:
    if not isinstance(dataset.features[column], datasets.Image):
        raise BenchmarkError(
            f"Benchmark {name!r}: column {column!r} is {dataset.features[column]!r}, not an Image feature"
        )
    encoded = dataset.cast_column(column, datasets.Image(decode=False)).select_columns([column])
    for start in range(0, len(encoded), _VERIFY_BATCH_SIZE):
        batch = encoded[start : start + _VERIFY_BATCH_SIZE][column]
        for offset, image in enumerate(batch):
            try:
                opened = _open_encoded(image)
                opened.verify()
            except Exception as error:
                raise BenchmarkError(
                    f"Benchmark {name!r}: image at row {int(rows[start + offset])} of split {split!r} cannot be read "
                    f"({type(error).__name__}: {error}); re-download the data or drop that row"
                ) from error
            if opened.mode not in SUPPORTED_IMAGE_MODES:
                raise BenchmarkError(
                    f"Benchmark {name!r}: image at row {int(rows[start + offset])} of split {split!r} has PIL mode "
                    f"{opened.mode!r}, which has no RGB reading; accepted modes: {', '.join(SUPPORTED_IMAGE_MODES)}"
                )


def _open_encoded(image: dict | None) -> Image.Image:
    if image is None:
        raise ValueError("missing image")
    if image.get("bytes") is not None:
        return Image.open(io.BytesIO(image["bytes"]))
    return Image.open(image["path"])


def parse_benchmark_list(value: str, templates: Sequence[str] | None = None) -> list[str]:
    """'all' or 'a,b,c' -> registered benchmark names (an unknown name raises the registry's error).

    An entry 'name=path' is a local image/label dataset that need not be registered: it is registered
    here with its path, class names from its `ClassLabel`, and `templates` (default "a photo of a {}.").
    """
    if value.strip().lower() == "all":
        return list_benchmarks()
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    if not entries:
        raise ValueError(f"benchmarks take 'all' or comma-separated names (or name=path entries), got {value!r}")
    names = []
    for entry in entries:
        name, sep, path = entry.partition("=")
        if sep:
            names.append(register_local_benchmark(name.strip(), path.strip(), templates).name)
        else:
            names.append(get_benchmark(name).name)
    return names


def register_local_benchmark(name: str, path: str, templates: Sequence[str] | None = None) -> BenchmarkSpec:
    """Register a local dataset (a save_to_disk folder, parquet files or an image folder with train and
    test splits, an "image" and a ClassLabel "label" column) under `name`, so it can be evaluated."""
    if not name or not path:
        raise BenchmarkError(f"a local benchmark is 'name=path' with both parts, got {name!r}={path!r}")
    if not glob.has_magic(path) and not os.path.exists(os.path.expanduser(path)):
        raise BenchmarkDataNotFoundError(f"local benchmark {name!r}: {path!r} does not exist")
    fields = {"templates": tuple(templates)} if templates else {}
    known = _registered(name)
    if known is not None and known.class_names:
        # A local copy of a known benchmark (`eurosat=PATH`): its class names, prompts and columns stay
        # the registry's; only where the data is read from changes.
        return register_benchmark(dataclasses.replace(known, data_path=os.path.expanduser(path), **fields), overwrite=True)
    return register_benchmark(BenchmarkSpec(name, None, data_path=os.path.expanduser(path), **fields), overwrite=True)


def _registered(name: str) -> BenchmarkSpec | None:
    try:
        return get_benchmark(name)
    except BenchmarkError:
        return None

