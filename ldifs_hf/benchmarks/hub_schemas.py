"""How each benchmark's hub copy is laid out (split names, label names, extra columns), for schema-exact
test data. Facts read off the hub dataset cards; data only."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import class_names

# tanganke's copies carry corrupted versions of the test set as extra splits.
CORRUPTION_SPLITS = (
    "contrast", "gaussian_noise", "impulse_noise", "jpeg_compression", "motion_blur", "pixelate", "spatter",
)

# The hub's CIFAR-100 names: underscores, and "cra" where "crab" is meant.
CIFAR100_HUB_FINE = tuple("cra" if name == "crab" else name.replace(" ", "_") for name in class_names.CIFAR100)
CIFAR100_HUB_COARSE = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
)


@dataclass(frozen=True)
class HubSchema:
    """splits: split names in hub order; label_names: the label ClassLabel's names (`None`: the spec's
    class names); extra_label_columns: other ClassLabel columns as (column, names) pairs, in column order."""

    splits: tuple[str, ...] = ("train", "test")
    label_names: tuple[str, ...] | None = None
    extra_label_columns: tuple[tuple[str, tuple[str, ...]], ...] = field(default_factory=tuple)


HUB_SCHEMAS = {
    "cars": HubSchema(splits=("train", "test") + CORRUPTION_SPLITS),
    "cifar10": HubSchema(),
    "cifar100": HubSchema(label_names=CIFAR100_HUB_FINE, extra_label_columns=(("coarse_label", CIFAR100_HUB_COARSE),)),
    "dtd": HubSchema(),
    "eurosat": HubSchema(splits=("train", "test") + CORRUPTION_SPLITS),
    "gtsrb": HubSchema(splits=("train", "test") + CORRUPTION_SPLITS),
    "mnist": HubSchema(),
    "resisc45": HubSchema(splits=("train", "test") + CORRUPTION_SPLITS),
    "svhn": HubSchema(splits=("train", "test", "extra")),
}
