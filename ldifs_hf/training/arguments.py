"""The arguments of a fine-tuning run: `ModelArguments` (which model, which head fit), `DataArguments`
(which benchmark, where its data is, forgetting tracking) and `LDIFSTrainingArguments` (the Trainer's
arguments plus the method and its regularizer settings). The regularizer fields alone are
`LDIFSArgumentsMixin`, to combine with another trainer's config (trl's `SFTConfig`, ...)."""

from __future__ import annotations

import copy
import dataclasses
import json
import types
from dataclasses import dataclass, field
from typing import Any, Mapping

from transformers import TrainingArguments

from ..benchmarks import parse_dataset_paths
from ..benchmarks.registry import VALIDATION_FRACTION, VALIDATION_SEED
from ..evaluation.settings import EvaluatorSettings, check_every_percent, setting_field
from ..heads import LP_SOLVERS, check_lp_solver
from ..options import check_numbers
from .methods import get_method, list_methods
from .terms import get_regularizer, list_regularizers
from .terms.kl import KLSettings
from .terms.l2sp import L2SPSettings
from .terms.ldifs import LDIFSSettings

# The pretrained CLIP a run starts from unless told otherwise (the paper's ViT-B/32).
DEFAULT_MODEL = "openai/clip-vit-base-patch32"


@dataclass
class LDIFSArgumentsMixin(LDIFSSettings, L2SPSettings, KLSettings):
    """The regularizer fields, to combine with any `TrainingArguments` subclass (e.g. trl's `SFTConfig`):

        @dataclass
        class LDIFSSFTConfig(LDIFSArgumentsMixin, SFTConfig):
            pass

    The built-in regularizers' settings are inherited from their settings dataclasses (`LDIFSSettings`:
    ldifs_lambda, ldifs_layers, ldifs_normalization, ldifs_tap; `L2SPSettings`: l2sp_lambda, l2sp_scope;
    `KLSettings`: kl_lambda, kl_temperature; the teacher's of LDIFS and KL, `TeacherSettings`: teacher_dtype,
    keep_student_dropout), which document and validate them. A plug-in regularizer's settings come from
    `regularizer_options`.

    Parameters:
        method (`str`, *optional*, defaults to `None`):
            One of `ldifs_hf.list_methods()` (e.g. "lp-init-ldifs"), or "METHOD+REGULARIZER". Sets the
            regularizer; scripts also use it for the head initialisation and objective.
        regularizer (`str`, *optional*, defaults to `None`):
            A registered regularizer (`list_regularizers()`: "none", "l2sp", "ldifs", "kl", ...). Overrides the
            method's regularizer; with neither set, "ldifs".
        regularizer_options (`dict` or `str`, *optional*, defaults to `None`):
            The settings of a plug-in regularizer that has no flag of its own, by its settings' field
            names (a JSON object on the command line, e.g. '{"l1_lambda": 0.1}'); validated into its
            settings dataclass. The built-ins' settings are set with their own flags.
    """

    method: str | None = field(
        default=None,
        metadata={"help": "Fine-tuning method: one of " + ", ".join(list_methods()) + ", or METHOD+REGULARIZER (e.g. flyp+ldifs)."},
    )
    regularizer: str | None = field(
        default=None, metadata={"help": f"Regularizer overriding the method's: one of {tuple(list_regularizers())}."}
    )
    regularizer_options: dict | str | None = field(
        default=None,
        metadata={"help": "Settings of a plug-in regularizer, as a JSON object of its settings' fields (e.g. '{\"l1_lambda\": 0.1}')."},
    )

    def __post_init__(self):
        # Before any check written as a comparison (which NaN passes) or the TrainingArguments' own.
        check_numbers(self, hints=_FINITE_HINTS)
        super().__post_init__()  # the settings' checks, then the TrainingArguments' own
        spec = self.method_spec
        if self.regularizer is None:
            self.regularizer = spec.regularizer if spec is not None else "ldifs"
        if self.regularizer not in list_regularizers():
            raise ValueError(f"regularizer must be one of {tuple(list_regularizers())}, got {self.regularizer!r}")
        self.regularizer_options = _options_dict(self.regularizer_options)
        _check_options(self, get_regularizer(self.regularizer))

    @property
    def method_spec(self):
        """The `MethodSpec` that `method` names (None without one), looked up once per value of `method`."""
        if self.method is None:
            return None
        cached = self.__dict__.get("_method_spec")
        if cached is None or cached[0] != self.method:
            cached = self.__dict__["_method_spec"] = (self.method, get_method(self.method))
        return cached[1]

    @property
    def regularizer_settings(self):
        """The chosen regularizer's settings (its `settings_class`, built from these arguments), or None."""
        return get_regularizer(self.regularizer).settings(self)

    def with_weight(self, value: float):
        """A shallow copy of these arguments whose regularizer has weight λ = `value` (its flag, or its entry of
        `regularizer_options`), checked by its settings dataclass."""
        copied = copy.copy(self)
        for name, new in weight_arguments(self.regularizer, value, {"regularizer_options": self.regularizer_options}).items():
            setattr(copied, name, new)
        copied.regularizer_settings  # noqa: B018 (the settings dataclass validates the value)
        return copied


def weight_arguments(regularizer: str, value: float, arguments: Mapping | None = None) -> dict:
    """The fine-tuning arguments that set `regularizer`'s weight λ to `value`: its own flag (a built-in's), else its
    entry of `regularizer_options` (a plug-in's), kept beside the other entries of `arguments`' options."""
    term = get_regularizer(regularizer)
    if term.weight_field is None:
        raise ValueError(f"regularizer {regularizer!r} declares no weight_field: it has no λ to set")
    if term.weight_field in {f.name for f in dataclasses.fields(LDIFSArgumentsMixin)}:
        return {term.weight_field: value}
    return {"regularizer_options": {**_options_dict((arguments or {}).get("regularizer_options")), term.weight_field: value}}


def weight_of(regularizer: str, arguments: Mapping) -> float:
    """λ of `regularizer` under fine-tuning arguments given as `arguments` (names -> values; the others at their
    defaults), e.g. a study's `finetune_options`."""
    term = get_regularizer(regularizer)
    values = {**arguments, "regularizer_options": _options_dict(arguments.get("regularizer_options"))}
    return term.weight(term.settings(types.SimpleNamespace(**values)))


# The way out of a non-finite value, where the field has one.
_FINITE_HINTS = {"max_grad_norm": "0 turns gradient clipping off"}


def _options_dict(options: Any) -> dict:
    if options is None or options == "":
        return {}
    if isinstance(options, str):
        try:
            options = json.loads(options)
        except json.JSONDecodeError as err:
            raise ValueError(f"regularizer_options must be a JSON object, got {options!r} ({err.msg})") from None
    if not isinstance(options, dict):
        raise ValueError(f"regularizer_options must be a JSON object (a dict), got {options!r}")
    return options


def _check_options(args, regularizer) -> None:
    """`args.regularizer_options` name only the chosen regularizer's settings that have no flag, and its
    settings dataclass accepts them (one-line errors)."""
    settings_fields = [f.name for f in dataclasses.fields(regularizer.settings_class)] if regularizer.settings_class else []
    flags = {f.name for f in dataclasses.fields(args)}
    own = [n for n in settings_fields if n not in flags]
    for key in args.regularizer_options:
        if key in flags:
            raise ValueError(f"regularizer_options: {key!r} has its own flag; set it with --{key}")
        if key not in own:
            accepted = ", ".join(own) if own else "none"
            raise ValueError(
                f"regularizer_options: unknown setting {key!r} for regularizer {regularizer.name!r}; accepted: {accepted}"
            )
    try:
        regularizer.settings(args)  # the settings dataclass validates the values
    except TypeError as err:
        raise ValueError(f"regularizer_options for {regularizer.name!r}: {err}") from None


@dataclass
class LDIFSTrainingArguments(LDIFSArgumentsMixin, TrainingArguments):
    """TrainingArguments for LDIFSTrainer with the LDIFS fields (`LDIFSArgumentsMixin`) and the paper's
    fine-tuning defaults (appendix A).

    Parameters:
        overwrite_output_dir (`bool`, *optional*, defaults to `False`):
            Allow a run to write into an output directory that already holds a run.

    Defaults changed from TrainingArguments to the paper's: learning_rate 1e-5, weight_decay 0.1,
    cosine schedule with 500 warm-up steps, batch size 128, remove_unused_columns False.
    """

    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Write into an output_dir that already holds a run."}
    )
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate (paper: 1e-5)."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay (paper: 0.1)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Scheduler (paper: cosine)."})
    warmup_steps: float = field(default=500, metadata={"help": "Warm-up steps (paper: 500)."})
    per_device_train_batch_size: int = field(default=128, metadata={"help": "Batch size per device (paper: 128)."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep the image column: transforms run lazily in the collator."}
    )


@dataclass
class ModelArguments:
    """Which pretrained CLIP a run starts from, and how an LP-init head is fitted."""

    model_name_or_path: str = field(default=DEFAULT_MODEL, metadata={"help": "CLIP model id on the Hub or a local directory."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where to cache downloaded models and data."})
    lp_solver: str = setting_field(
        "lp_solver", help=f"Linear-probe solver for LP-init: one of {', '.join(LP_SOLVERS)} (adamw is the official protocol)."
    )
    lp_iterations: int = setting_field("lp_iterations")
    model_license: str = field(default="other", metadata={"help": "License in the model cards (default 'other': the base model's)."})
    reference_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "CLIP whose image encoder is the LDIFS teacher and the L2SP anchor (default: the model the run "
                  "starts from; in a sequence of tasks that is the previous task's, so pass the pretrained one to anchor there)."},
    )

    def __post_init__(self):
        check_numbers(self)
        check_lp_solver(self.lp_solver)
        if self.lp_iterations < 1:
            raise ValueError(f"lp_iterations must be >= 1, got {self.lp_iterations}")


@dataclass
class DataArguments:
    """Which benchmark a run fine-tunes on, where its data is, and which benchmarks to watch for forgetting."""

    dataset: str = field(default="eurosat", metadata={"help": "A registered benchmark (see --help's list) or 'custom' with --dataset_path."})
    dataset_path: str | None = field(
        default=None,
        metadata={"help": "Local copy of the data: a save_to_disk folder, parquet files/glob or an image folder "
                  "(also found as $LDIFS_DATA_DIR/<name>)."},
    )
    image_column: str | None = field(default=None, metadata={"help": "Image column (default: the benchmark's)."})
    label_column: str | None = field(default=None, metadata={"help": "Label column (default: the benchmark's)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep at most this many training images."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep at most this many validation/test images."})
    validation_fraction: float = field(default=VALIDATION_FRACTION, metadata={"help": "Fraction of train held out for validation."})
    validation_seed: int = field(default=VALIDATION_SEED, metadata={"help": "Seed of the validation split (paper protocol: 0)."})
    forgetting_benchmarks: str | None = field(
        default=None,
        metadata={"help": "Track concept forgetting during training on these benchmarks ('all' or 'a,b'): ZS/LP "
                  "accuracy, deltas and distances every --forgetting_every_percent of training."},
    )
    forgetting_every_percent: float = field(default=20.0, metadata={"help": "Spacing of the forgetting evaluations."})
    forgetting_dataset_paths: list[str] = field(
        default_factory=list, metadata={"help": "Local copies of the forgetting benchmarks: name=path entries."}
    )
    forgetting_max_samples: int | None = setting_field(
        "max_train_samples", help="Cap on each forgetting benchmark's LP-train and test sets."
    )
    train_augmentation: bool = field(
        default=True,
        metadata={"help": "Augment training images as the official code does (open_clip's train preprocess: random resized "
                  "crop, scale 0.9-1.0, bicubic); --train_augmentation false trains on the evaluation transform."},
    )
    epochs_from_benchmark: bool = field(
        default=True, metadata={"help": "Use the benchmark's epoch count (paper) unless --num_train_epochs or --max_steps is given."}
    )

    def __post_init__(self):
        check_numbers(self)
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        check_every_percent(self.forgetting_every_percent, "forgetting_every_percent")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (or unset), got {value}")
        self.forgetting_settings()  # a bad cap or name=path entry fails here, before anything is loaded

    def forgetting_settings(self, finetune_name: str | None = None, **values) -> EvaluatorSettings:
        """The settings of the evaluator that tracks forgetting during training (`values`: the others,
        e.g. the run's linear probe). The fine-tuning data, named `finetune_name` (default: `dataset`),
        is read from the run's own path and columns when they are given."""
        finetune_name = finetune_name or self.dataset
        dataset_paths, image_columns, label_columns = parse_dataset_paths(self.forgetting_dataset_paths), {}, {}
        if self.dataset_path:
            dataset_paths[finetune_name] = self.dataset_path
        if self.image_column:
            image_columns[finetune_name] = self.image_column
        if self.label_column:
            label_columns[finetune_name] = self.label_column
        return EvaluatorSettings.from_arguments(
            self, {"max_train_samples": "forgetting_max_samples", "max_eval_samples": "forgetting_max_samples"},
            dataset_paths=dataset_paths, image_columns=image_columns, label_columns=label_columns, **values,
        )


# A fine-tuning run's argument dataclasses, in the order `finetune`'s parser takes them.
FINETUNE_ARGUMENTS = (ModelArguments, DataArguments, LDIFSTrainingArguments)
