"""The nine benchmarks of the LDIFS study (docs/PROTOCOL.md sections 4 and 5), registered on import."""

from . import class_names as names
from . import templates
from .registry import BenchmarkSpec, register_benchmark

NINE = (
    BenchmarkSpec("cars", "tanganke/stanford_cars", class_names=names.CARS, templates=templates.CARS, epochs=35),
    BenchmarkSpec(
        "cifar10", "uoft-cs/cifar10", image_column="img", class_names=names.CIFAR10, templates=templates.CIFAR
    ),
    BenchmarkSpec(
        "cifar100",
        "uoft-cs/cifar100",
        image_column="img",
        label_column="fine_label",
        class_names=names.CIFAR100,
        templates=templates.CIFAR,
    ),
    BenchmarkSpec(
        "dtd", "tanganke/dtd", class_names=names.DTD, templates=templates.DTD, epochs=76,
        split_note="tanganke/dtd's train split is DTD's train and val merged (3,760 images); the paper trained on 1,880",
    ),
    BenchmarkSpec(
        "eurosat", "tanganke/eurosat", class_names=names.EUROSAT, templates=templates.EUROSAT, epochs=12,
        split_note="tanganke/eurosat has 21,600 train / 2,700 test images; the paper used 19,600 / 5,400, with "
        "EuroSAT's own train/val split rather than 90 % of train",
    ),
    BenchmarkSpec("gtsrb", "tanganke/gtsrb", class_names=names.GTSRB, templates=templates.GTSRB, epochs=11),
    BenchmarkSpec("mnist", "ylecun/mnist", class_names=names.DIGITS, templates=templates.DIGITS),
    BenchmarkSpec("resisc45", "tanganke/resisc45", class_names=names.RESISC45, templates=templates.RESISC45, epochs=15),
    BenchmarkSpec(
        "svhn",
        "ufldl-stanford/svhn",
        config_name="cropped_digits",
        class_names=names.DIGITS,
        templates=templates.DIGITS,
    ),
)

# Any image/label dataset given by a data path; class names come from its ClassLabel feature.
CUSTOM = BenchmarkSpec("custom", None)

for _spec in NINE:
    register_benchmark(_spec, overwrite=True)
