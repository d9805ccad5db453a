"""Loading benchmarks through `datasets`: local copies in each hub schema, the hub path, splits, errors."""

import glob
import os

import datasets
import numpy as np
import pytest
import torch

from ldifs_hf.benchmarks import loading as data
from ldifs_hf.benchmarks import BenchmarkError, BenchmarkSpec, get_benchmark, list_benchmarks, register_benchmark
from ldifs_hf.benchmarks import registry
from ldifs_hf.benchmarks import BenchmarkDataNotFoundError, LoadedBenchmark, image_transform, load_benchmark
from ldifs_hf.benchmarks.loading import split_validation_rows
from ldifs_hf.testing import corrupt_image, make_benchmark_like_dataset, save_benchmark_like_dataset

NUM_TRAIN, NUM_TEST = 20, 10
SOURCE_MODES = ["L", "RGBA", "P", "RGB"]  # the source images' modes cycle through these

datasets.disable_progress_bars()


@pytest.fixture
def scratch_registry(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def pixels(dataset):
    """Each row's image as bytes: rows are told apart by their (random) content."""
    return [np.asarray(image).tobytes() for image in dataset["image"]]


def source_pixels(dataset, image_column):
    return [np.asarray(image.convert("RGB")).tobytes() for image in dataset[image_column]]


@pytest.mark.parametrize("index, name", list(enumerate(list_benchmarks())))
def test_load_every_benchmark_from_a_local_copy_in_its_hub_schema(tmp_path, index, name):
    spec = get_benchmark(name)
    mode = SOURCE_MODES[index % len(SOURCE_MODES)]
    path = save_benchmark_like_dataset(name, tmp_path / name, num_train=NUM_TRAIN, num_test=NUM_TEST, image_mode=mode)

    loaded = load_benchmark(name, data_path=path)

    assert isinstance(loaded, LoadedBenchmark)
    assert list(loaded.splits) == ["train", "validation", "test"]
    for split in loaded.splits.values():
        assert split.column_names == ["image", "label"]
        assert split.features["label"].names == list(spec.class_names)
        assert split[0]["image"].mode == "RGB"
    assert loaded.class_names == list(spec.class_names) and loaded.num_classes == spec.num_classes
    assert loaded.templates == list(spec.templates)
    assert loaded.prompts(0) == [template.format(spec.class_names[0]) for template in spec.templates]
    assert loaded.id2label[1] == spec.class_names[1] and loaded.label2id[spec.class_names[1]] == 1

    # 10 % of train is validation: disjoint from the rest of train, together exactly the source train split.
    assert (len(loaded.splits["train"]), len(loaded.splits["validation"]), len(loaded.splits["test"])) == (18, 2, 10)
    source = make_benchmark_like_dataset(name, num_train=NUM_TRAIN, num_test=NUM_TEST, image_mode=mode)
    train, validation = pixels(loaded.splits["train"]), pixels(loaded.splits["validation"])
    assert not set(train) & set(validation)
    assert sorted(train + validation) == sorted(source_pixels(source["train"], spec.image_column))
    assert sorted(pixels(loaded.splits["test"])) == sorted(source_pixels(source["test"], spec.image_column))
    # labels travel with their images
    source_labels = dict(zip(source_pixels(source["train"], spec.image_column), source["train"][spec.label_column]))
    assert [source_labels[key] for key in train] == loaded.splits["train"]["label"]


def test_validation_split_is_reproducible_and_seeded(tmp_path):
    path = save_benchmark_like_dataset("eurosat", tmp_path / "eurosat", num_train=30, num_test=4)
    first = pixels(load_benchmark("eurosat", data_path=path).splits["validation"])
    again = pixels(load_benchmark("eurosat", data_path=path).splits["validation"])
    other_seed = pixels(load_benchmark("eurosat", data_path=path, seed=1).splits["validation"])
    assert first == again and len(first) == 3
    assert set(first) != set(other_seed)


def test_split_validation_rows():
    train, validation = split_validation_rows(100, 0.1, seed=0)
    assert len(validation) == 10 and len(train) == 90
    assert sorted(np.concatenate([train, validation]).tolist()) == list(range(100))
    again_train, again_validation = split_validation_rows(100, 0.1, seed=0)
    assert np.array_equal(validation, again_validation) and np.array_equal(train, again_train)
    assert len(split_validation_rows(5, 0.1, seed=0)[1]) == 1  # never empty when asked for
    assert len(split_validation_rows(5, 0.0, seed=0)[1]) == 0


def test_max_samples(tmp_path):
    path = save_benchmark_like_dataset("dtd", tmp_path / "dtd", num_train=40, num_test=30)
    loaded = load_benchmark("dtd", data_path=path, max_train_samples=7, max_eval_samples=3)
    assert [len(split) for split in loaded.splits.values()] == [7, 3, 3]
    full = load_benchmark("dtd", data_path=path)
    assert set(pixels(loaded.splits["train"])) <= set(pixels(full.splits["train"]))
    assert set(pixels(loaded.splits["validation"])) <= set(pixels(full.splits["validation"]))


@pytest.mark.parametrize("layout", ["folder", "glob"])
def test_parquet_copies(tmp_path, layout):
    path = save_benchmark_like_dataset("cifar100", tmp_path / "cifar100", format="parquet", num_train=10, num_test=5)
    data_path = path if layout == "folder" else os.path.join(path, "*.parquet")
    loaded = load_benchmark("cifar100", data_path=data_path, cache_dir=str(tmp_path / "cache"))
    assert [len(split) for split in loaded.splits.values()] == [9, 1, 5]
    assert loaded.splits["test"].features["label"].names[26] == "crab"


def test_image_folder_as_a_custom_benchmark(tmp_path):
    source = make_benchmark_like_dataset("mnist", num_train=10, num_test=4)
    names = source["train"].features["label"].names
    for split, dataset in source.items():
        for row, example in enumerate(dataset):
            folder = tmp_path / "digits" / split / names[example["label"]]
            folder.mkdir(parents=True, exist_ok=True)
            example["image"].save(folder / f"{row}.png")
    loaded = load_benchmark("custom", data_path=tmp_path / "digits", cache_dir=str(tmp_path / "cache"))
    assert loaded.templates == ["a photo of a {}."]
    assert loaded.prompts(3) == ["a photo of a 3."]
    assert len(loaded.splits["train"]) + len(loaded.splits["validation"]) == 10
    assert len(loaded.splits["test"]) == 4


def test_custom_dataset_with_own_columns_and_class_names(tmp_path):
    spec = get_benchmark("cifar10")
    dataset = make_benchmark_like_dataset("cifar10", num_train=10, num_test=4)
    dataset = dataset.rename_columns({"img": "picture", "label": "target"}).cast_column("target", datasets.Value("int64"))
    dataset.save_to_disk(tmp_path / "mine")
    names = [f"thing {index}" for index in range(10)]
    loaded = load_benchmark(
        "custom", data_path=tmp_path / "mine", image_column="picture", label_column="target", class_names=names,
        templates=["an image of {}."],
    )
    assert loaded.class_names == names and loaded.prompts(2) == ["an image of thing 2."]
    assert loaded.splits["test"].features["label"].names == names
    assert loaded.spec.num_classes == 10 and spec.class_names[0] == "airplane"


def test_string_labels_are_mapped_through_class_names(tmp_path):
    images = make_benchmark_like_dataset("mnist", num_train=6, num_test=2)
    dataset = datasets.DatasetDict(
        {
            split: split_data.cast_column("label", datasets.Value("string")).map(
                lambda example: {"label": ["zero", "one"][int(example["label"]) % 2]}
            )
            for split, split_data in images.items()
        }
    )
    dataset.save_to_disk(tmp_path / "words")
    loaded = load_benchmark("custom", data_path=tmp_path / "words", class_names=["zero", "one"])
    assert set(loaded.splits["train"]["label"]) <= {0, 1}
    with pytest.raises(BenchmarkError, match="'zero' at row"):
        load_benchmark("custom", data_path=tmp_path / "words", class_names=["one", "two"])


def test_spec_data_path_and_data_dir_env(tmp_path, monkeypatch, scratch_registry):
    path = save_benchmark_like_dataset("gtsrb", tmp_path / "copies" / "gtsrb", num_train=10, num_test=3)
    register_benchmark(BenchmarkSpec("signs", None, class_names=get_benchmark("gtsrb").class_names, data_path=path))
    assert len(load_benchmark("signs").splits["test"]) == 3

    def no_hub(*args, **kwargs):
        raise AssertionError("the hub must not be tried when a local copy exists")

    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "copies"))
    assert len(load_benchmark("gtsrb").splits["test"]) == 3


@pytest.mark.parametrize("name", ["eurosat", "svhn", "cifar100"])
def test_hub_path_calls_load_dataset_with_the_hub_id_and_the_files_of_the_splits_it_reads(monkeypatch, tmp_path, name):
    calls = []

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        return make_benchmark_like_dataset(spec.name, num_train=10, num_test=3)

    spec = get_benchmark(name)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    loaded = load_benchmark(name, cache_dir=str(tmp_path))
    folder = spec.hub_schema.parquet_folder
    files = {"train": f"{folder}/train-*.parquet", "test": f"{folder}/test-*.parquet"}
    assert calls == [(spec.hub_id, None, {"data_files": files, "cache_dir": str(tmp_path)})]
    assert loaded.class_names == list(spec.class_names)


# The Hub repositories' layouts these tests stand in for (HubSchema.parquet_folder): every split's parquet files under one
# folder, `{folder}/{split}-NNNNN-of-NNNNN.parquet`; SVHN's repository also holds the other config, full_numbers/.
def _fake_hub_repository(root, name):
    """A folder laid out like benchmark `name`'s Hub repository: the splits a run reads as real parquet files, every
    other split (and SVHN's other config) as files that no parquet reader can open."""
    spec = get_benchmark(name)
    folder = root / spec.hub_schema.parquet_folder
    folder.mkdir(parents=True)
    for split, dataset in make_benchmark_like_dataset(name, num_train=10, num_test=4).items():
        path = folder / f"{split}-00000-of-00001.parquet"
        if split in (spec.train_split, spec.test_split):
            dataset.to_parquet(str(path))
        else:
            path.write_bytes(b"never to be read")
    if name == "svhn":
        (root / "full_numbers").mkdir()
        (root / "full_numbers" / "train-00000-of-00001.parquet").write_bytes(b"never to be read")
    return root


@pytest.mark.parametrize("name", [n for n in list_benchmarks() if get_benchmark(n).hub_id])
def test_a_hub_benchmark_downloads_only_the_splits_it_reads(monkeypatch, tmp_path, name):
    spec = get_benchmark(name)
    repository = _fake_hub_repository(tmp_path / "hub" / spec.hub_id, name)
    extra = [s for s in spec.hub_schema.splits if s not in (spec.train_split, spec.test_split)]
    real_load_dataset = datasets.load_dataset
    calls = []

    def from_the_fake_hub(path, *args, **kwargs):
        calls.append((path, args, kwargs))
        return real_load_dataset(str(repository) if path == spec.hub_id else path, *args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", from_the_fake_hub)
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    loaded = load_benchmark(name, cache_dir=str(tmp_path / "cache"))
    assert len(calls) == 1  # no fallback to the whole repository, whose other files would not even open
    assert (len(loaded.splits["train"]) + len(loaded.splits["validation"]), len(loaded.splits["test"])) == (10, 4)
    assert loaded.splits["test"].features["label"].names == list(spec.class_names)
    prepared = [os.path.basename(f) for f in glob.glob(str(tmp_path / "cache" / "**" / "*.arrow"), recursive=True)]
    assert prepared and not [f for f in prepared if any(f"-{split}" in f for split in extra)], prepared
    # What is skipped: tanganke's 7 corrupted test sets, SVHN's "extra" split.
    assert len(extra) == {"cars": 7, "eurosat": 7, "gtsrb": 7, "resisc45": 7, "svhn": 1}.get(name, 0)


def test_a_hub_repository_laid_out_otherwise_is_loaded_whole_with_a_warning(monkeypatch, tmp_path, caplog):
    spec = get_benchmark("eurosat")
    whole = make_benchmark_like_dataset("eurosat", num_train=10, num_test=4)
    calls = []

    def moved_files(path, name=None, **kwargs):
        calls.append(kwargs.get("data_files"))
        if "data_files" in kwargs:
            raise FileNotFoundError("Unable to find 'hf://datasets/tanganke/eurosat@main/data/train-*.parquet'")
        return whole

    monkeypatch.setattr(datasets, "load_dataset", moved_files)
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    with caplog.at_level("WARNING", logger="ldifs_hf"):
        loaded = load_benchmark("eurosat")
    assert calls == [data.hub_split_files(spec), None] and len(loaded.splits["test"]) == 4
    assert "could not read only the train and test splits of tanganke/eurosat (FileNotFoundError" in caplog.text
    assert "loading the whole dataset instead" in caplog.text


def test_unreachable_hub_says_what_to_download(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'tanganke/eurosat' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    with pytest.raises(BenchmarkDataNotFoundError) as caught:
        load_benchmark("eurosat")
    message = str(caught.value)
    for needle in ("tanganke/eurosat", "--dataset_path", "save_to_disk", data.DATA_DIR_ENV, "HF_DATASETS_OFFLINE"):
        assert needle in message
    assert isinstance(caught.value, ValueError)


@pytest.mark.skipif(not datasets.config.HF_HUB_OFFLINE, reason="needs HF_HUB_OFFLINE=1 before datasets is imported")
def test_unreachable_hub_for_real_offline(tmp_path, monkeypatch):
    """The real `datasets` failure offline with an empty cache becomes the helpful error."""
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    with pytest.raises(BenchmarkDataNotFoundError, match="'ufldl-stanford/svhn', 'cropped_digits'"):
        load_benchmark("svhn", cache_dir=str(tmp_path))


def test_image_transform_gives_pixel_values_and_labels(tmp_path):
    from ldifs_hf.tiny import tiny_image_processor

    path = save_benchmark_like_dataset("mnist", tmp_path / "mnist", num_train=10, num_test=3, image_mode="L")
    test = load_benchmark("mnist", data_path=path).splits["test"]
    test.set_transform(image_transform(tiny_image_processor(32)))
    example = test[0]
    assert isinstance(example["pixel_values"], torch.Tensor) and example["pixel_values"].shape == (3, 32, 32)
    assert isinstance(example["labels"], int)
    batch = test[:2]
    assert len(batch["pixel_values"]) == 2 and batch["labels"] == test.with_format(None)[:2]["label"]


# ---- errors ------------------------------------------------------------------------------------------


def test_unknown_benchmark():
    with pytest.raises(ValueError, match="Unknown benchmark 'eurosatt'.*eurosat"):
        load_benchmark("eurosatt")


def test_missing_split(tmp_path):
    dataset = make_benchmark_like_dataset("mnist", num_train=4, num_test=2)
    datasets.DatasetDict({"train": dataset["train"], "valid": dataset["test"]}).save_to_disk(tmp_path / "m")
    with pytest.raises(BenchmarkError, match="no split 'test'; available splits: train, valid"):
        load_benchmark("mnist", data_path=tmp_path / "m")


def test_missing_column(tmp_path):
    path = save_benchmark_like_dataset("cifar10", tmp_path / "c", num_train=4, num_test=2)
    with pytest.raises(BenchmarkError, match="no column 'pixels' in split 'train'; columns: img, label"):
        load_benchmark("cifar10", data_path=path, image_column="pixels")


def test_label_column_without_class_names(tmp_path):
    dataset = make_benchmark_like_dataset("dtd", num_train=4, num_test=2)
    dataset.cast_column("label", datasets.Value("int64")).save_to_disk(tmp_path / "d")
    with pytest.raises(BenchmarkError, match="not a ClassLabel.*class_names="):
        load_benchmark("custom", data_path=tmp_path / "d")


def test_wrong_number_of_class_names(tmp_path):
    path = save_benchmark_like_dataset("mnist", tmp_path / "m", num_train=4, num_test=2)
    with pytest.raises(BenchmarkError, match="3 class names given.*10 classes"):
        load_benchmark("mnist", data_path=path, class_names=["a", "b", "c"])


def test_label_out_of_range(tmp_path):
    dataset = make_benchmark_like_dataset("eurosat", num_train=6, num_test=2)
    test = dataset["test"].cast_column("label", datasets.Value("int64"))
    test = test.map(lambda example, row: {"label": 12 if row == 1 else example["label"]}, with_indices=True)
    datasets.DatasetDict({"train": dataset["train"], "test": test}).save_to_disk(tmp_path / "e")
    with pytest.raises(BenchmarkError, match="label 12 at row 1 of split 'test' is not in 0..9"):
        load_benchmark("eurosat", data_path=tmp_path / "e")


@pytest.mark.parametrize("split, row", [("train", 13), ("test", 4)])
def test_corrupted_image_names_its_row(tmp_path, split, row):
    dataset = make_benchmark_like_dataset("resisc45", num_train=NUM_TRAIN, num_test=NUM_TEST)
    dataset[split] = corrupt_image(dataset[split], row)
    dataset.save_to_disk(tmp_path / "r")
    with pytest.raises(BenchmarkError, match=f"image at row {row} of split '{split}' cannot be read"):
        load_benchmark("resisc45", data_path=tmp_path / "r")


def test_corrupted_image_outside_the_kept_rows_is_not_read(tmp_path):
    dataset = make_benchmark_like_dataset("resisc45", num_train=4, num_test=NUM_TEST)
    kept = np.random.default_rng(0).permutation(NUM_TEST)[:3]
    dropped = next(row for row in range(NUM_TEST) if row not in kept)
    dataset["test"] = corrupt_image(dataset["test"], dropped)
    dataset.save_to_disk(tmp_path / "r")
    assert len(load_benchmark("resisc45", data_path=tmp_path / "r", max_eval_samples=3).splits["test"]) == 3


def test_missing_local_path(tmp_path):
    with pytest.raises(BenchmarkDataNotFoundError, match="does not exist"):
        load_benchmark("eurosat", data_path=tmp_path / "nowhere")
    with pytest.raises(BenchmarkDataNotFoundError, match="No files match"):
        load_benchmark("eurosat", data_path=str(tmp_path / "*.parquet"))


def test_custom_needs_a_data_path(monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    with pytest.raises(BenchmarkDataNotFoundError, match="no hub id.*data_path"):
        load_benchmark("custom")


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_validation_fraction_range(tmp_path, fraction):
    with pytest.raises(BenchmarkError, match="validation_fraction"):
        load_benchmark("eurosat", data_path=tmp_path, validation_fraction=fraction)


def test_a_local_copy_of_a_known_benchmark_keeps_its_class_names_and_prompts(tmp_path):
    from ldifs_hf.benchmarks import parse_benchmark_list

    spec = get_benchmark("eurosat")
    path = save_benchmark_like_dataset("eurosat", tmp_path / "eurosat", num_train=NUM_TRAIN, num_test=NUM_TEST)
    assert parse_benchmark_list(f"eurosat={path}") == ["eurosat"]
    local = get_benchmark("eurosat")
    assert (local.class_names, local.templates, local.hub_id) == (spec.class_names, spec.templates, spec.hub_id)
    assert local.data_path == str(path)
    assert load_benchmark("eurosat").prompts(0) == [t.format(spec.class_names[0]) for t in spec.templates]
