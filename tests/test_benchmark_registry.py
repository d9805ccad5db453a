"""The benchmark registry (names, hub facts, class names, templates) and the schema-exact test datasets."""

import datasets
import numpy as np
import pytest

from ldifs_hf.benchmarks import (
    NINE,
    BenchmarkError,
    BenchmarkSpec,
    get_benchmark,
    list_benchmarks,
    register_benchmark,
    registry,
)
from ldifs_hf.benchmarks.catalog import CORRUPTION_SPLITS
from ldifs_hf.testing import make_benchmark_like_dataset, save_benchmark_like_dataset

NINE_NAMES = ["cars", "cifar10", "cifar100", "dtd", "eurosat", "gtsrb", "mnist", "resisc45", "svhn"]

# docs/PROTOCOL.md sections 4 and 5 (hyperparameters, benchmarks): hub id, config, image column, label column, classes, templates, epochs.
EXPECTED = {
    "cars": ("tanganke/stanford_cars", None, "image", "label", 196, 8, 35),
    "cifar10": ("uoft-cs/cifar10", None, "img", "label", 10, 18, 10),
    "cifar100": ("uoft-cs/cifar100", None, "img", "fine_label", 100, 18, 10),
    "dtd": ("tanganke/dtd", None, "image", "label", 47, 8, 76),
    "eurosat": ("tanganke/eurosat", None, "image", "label", 10, 3, 12),
    "gtsrb": ("tanganke/gtsrb", None, "image", "label", 43, 3, 11),
    "mnist": ("ylecun/mnist", None, "image", "label", 10, 1, 10),
    "resisc45": ("tanganke/resisc45", None, "image", "label", 45, 18, 15),
    "svhn": ("ufldl-stanford/svhn", "cropped_digits", "image", "label", 10, 1, 10),
}


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made in a test disappear after it."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_the_nine_are_registered_in_order():
    assert [spec.name for spec in NINE] == NINE_NAMES
    assert set(NINE_NAMES) <= set(list_benchmarks())
    assert list_benchmarks() == sorted(list_benchmarks())


@pytest.mark.parametrize("name", NINE_NAMES)
def test_spec_matches_design(name):
    hub_id, config, image_column, label_column, num_classes, num_templates, epochs = EXPECTED[name]
    spec = get_benchmark(name)
    assert (spec.hub_id, spec.config_name, spec.image_column, spec.label_column) == (
        hub_id,
        config,
        image_column,
        label_column,
    )
    assert (spec.train_split, spec.test_split) == ("train", "test")
    assert len(spec.class_names) == spec.num_classes == num_classes
    assert len(set(spec.class_names)) == num_classes
    assert len(spec.templates) == num_templates
    assert spec.epochs == epochs


@pytest.mark.parametrize("name", NINE_NAMES)
def test_prompts_are_built_from_class_names(name):
    spec = get_benchmark(name)
    for class_name in (spec.class_names[0], spec.class_names[-1]):
        prompts = spec.prompts(class_name)
        assert len(prompts) == len(spec.templates)
        assert all(class_name in prompt and "{}" not in prompt for prompt in prompts)
    if name != "cifar100":  # CIFAR-100 keeps torchvision's underscores, as the official code does
        assert all("_" not in class_name for class_name in spec.class_names)


def test_clip_style_class_names():
    cifar100 = get_benchmark("cifar100").class_names
    assert "crab" in cifar100 and "cra" not in cifar100
    assert cifar100[26] == "crab" and cifar100[1] == "aquarium_fish"
    # The official code's (torchvision's) names: underscores in exactly these 9 classes.
    assert [name for name in cifar100 if "_" in name] == [
        "aquarium_fish", "lawn_mower", "maple_tree", "oak_tree", "palm_tree", "pickup_truck", "pine_tree", "sweet_pepper", "willow_tree",
    ]
    assert not any(" " in name for name in cifar100)
    eurosat = get_benchmark("eurosat").class_names
    assert eurosat[0] == "annual crop land" and eurosat[2] == "brushland or shrubland"
    assert eurosat[3] == "highway or road" and eurosat[9] == "lake or sea"
    gtsrb = get_benchmark("gtsrb").class_names
    assert gtsrb[0] == "red and white circle 20 kph speed limit" and gtsrb[14] == "stop"
    assert get_benchmark("mnist").class_names == get_benchmark("svhn").class_names == tuple("0123456789")
    assert get_benchmark("cars").class_names[0] == "AM General Hummer SUV 2000"
    assert get_benchmark("cars").class_names[-1] == "smart fortwo Convertible 2012"
    assert get_benchmark("dtd").class_names[-1] == "zigzagged"
    assert get_benchmark("resisc45").class_names[2] == "baseball diamond"


def test_clip_templates():
    assert get_benchmark("eurosat").templates[0] == "a centered satellite photo of {}."
    assert get_benchmark("gtsrb").prompts("stop")[0] == 'a zoomed in photo of a "stop" traffic sign.'
    assert get_benchmark("mnist").prompts("7") == ['a photo of the number: "7".']
    assert get_benchmark("resisc45").templates[0] == "satellite imagery of {}."
    assert get_benchmark("cars").templates[3] == "i love my {}!"
    assert get_benchmark("cifar10").templates == get_benchmark("cifar100").templates


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown benchmark 'imagenet'") as caught:
        get_benchmark("imagenet")
    assert isinstance(caught.value, BenchmarkError)
    for name in NINE_NAMES:
        assert name in str(caught.value)


def test_lookup_is_case_insensitive_and_accepts_hub_ids():
    assert get_benchmark("EuroSAT").name == "eurosat"
    assert get_benchmark("uoft-cs/cifar100").name == "cifar100"


def test_list_benchmarks_pattern():
    assert list_benchmarks("cifar*") == ["cifar10", "cifar100"]
    assert list_benchmarks("nothing*") == []


def test_register_benchmark(scratch_registry):
    spec = BenchmarkSpec("toy", None, class_names=("a", "b"), data_path="/somewhere")
    assert register_benchmark(spec) is spec
    assert get_benchmark("toy") is spec and "toy" in list_benchmarks()
    with pytest.raises(ValueError, match="already registered"):
        register_benchmark(BenchmarkSpec("toy", None))
    replacement = register_benchmark(BenchmarkSpec("toy", None), overwrite=True)
    assert get_benchmark("toy") is replacement


def test_register_rejects_non_specs():
    with pytest.raises(TypeError):
        register_benchmark("eurosat")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"templates": ("a photo of a thing.",)}, "placeholder"),
        ({"templates": ()}, "templates is empty"),
        ({"class_names": ("a", "b"), "num_classes": 3}, "num_classes=3"),
        ({"class_names": ()}, "class_names is empty"),
        ({"epochs": 0}, "epochs"),
    ],
)
def test_spec_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BenchmarkSpec("bad", None, **kwargs)


@pytest.mark.parametrize("name", NINE_NAMES)
def test_benchmark_like_dataset_has_the_hub_schema(name):
    spec = get_benchmark(name)
    schema = spec.hub_schema
    dataset_dict = make_benchmark_like_dataset(name, num_train=6, num_test=3)
    assert list(dataset_dict) == list(schema.splits)
    for split, dataset in dataset_dict.items():
        extra_columns = [column for column, _ in schema.extra_label_columns]
        assert dataset.column_names == [spec.image_column, spec.label_column, *extra_columns]
        assert isinstance(dataset.features[spec.image_column], datasets.Image)
        label = dataset.features[spec.label_column]
        assert isinstance(label, datasets.ClassLabel)
        assert label.names == list(schema.label_names or spec.class_names)
        assert len(dataset) == (6 if split == "train" else 3)
        assert dataset[0][spec.image_column].size == (32, 32)


def test_hub_schema_quirks():
    cifar100 = make_benchmark_like_dataset("cifar100", num_train=2, num_test=2)
    fine_names = cifar100["train"].features["fine_label"].names
    assert "cra" in fine_names and "crab" not in fine_names and "aquarium_fish" in fine_names
    assert cifar100["train"].features["coarse_label"].num_classes == 20
    assert list(make_benchmark_like_dataset("svhn", num_train=2, num_test=2)) == ["train", "test", "extra"]
    assert set(CORRUPTION_SPLITS) <= set(make_benchmark_like_dataset("gtsrb", num_train=2, num_test=1))


def test_benchmark_like_dataset_is_deterministic():
    first = make_benchmark_like_dataset("eurosat", num_train=4, num_test=2, seed=3)["train"]
    again = make_benchmark_like_dataset("eurosat", num_train=4, num_test=2, seed=3)["train"]
    other = make_benchmark_like_dataset("eurosat", num_train=4, num_test=2, seed=4)["train"]
    pixels = [np.asarray(image) for image in first["image"]]
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(pixels, again["image"]))
    assert first["label"] == again["label"]
    assert not all(np.array_equal(a, np.asarray(b)) for a, b in zip(pixels, other["image"]))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_benchmark_like_dataset_image_modes(mode):
    dataset = make_benchmark_like_dataset("mnist", num_train=2, num_test=1, image_size=8, image_mode=mode)
    assert dataset["train"][0]["image"].mode == mode
    assert dataset["train"][0]["image"].size == (8, 8)


def test_benchmark_like_dataset_for_a_registered_local_spec():
    spec = BenchmarkSpec("toy", None, train_split="fit", test_split="holdout", label_column="y", class_names=("a", "b"))
    dataset_dict = make_benchmark_like_dataset(spec, num_train=4, num_test=2)
    assert list(dataset_dict) == ["fit", "holdout"]
    assert dataset_dict["fit"].features["y"].names == ["a", "b"]


@pytest.mark.parametrize("format", ["disk", "parquet"])
def test_save_benchmark_like_dataset(tmp_path, format):
    path = save_benchmark_like_dataset("cifar10", tmp_path / "cifar10", format=format, num_train=4, num_test=2)
    if format == "disk":
        reloaded = datasets.load_from_disk(path)
    else:
        reloaded = datasets.load_dataset(path, cache_dir=str(tmp_path / "cache"))
    assert reloaded["train"].column_names == ["img", "label"]
    assert reloaded["test"].features["label"].names[0] == "airplane"
    assert len(reloaded["train"]) == 4


def test_save_benchmark_like_dataset_rejects_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="'disk' or 'parquet'"):
        save_benchmark_like_dataset("mnist", tmp_path, format="csv")
