"""`EvaluatorSettings`, the one declaration of how concept forgetting is measured: each setting's
default, help and check live here, and every argument object that exposes some of them refers to it.

    batch_size: int = setting_field("batch_size")                        # `ldifs-hf evaluate`
    eval_batch_size: int = setting_field("batch_size")                   # `ldifs-hf study`
    EvaluatorSettings.from_arguments(args, {"batch_size": "eval_batch_size"})   # checks; errors name the flag

Light on purpose (no model code): the argument dataclasses import it before anything heavy is loaded.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field

from ..heads import LP_ITERATIONS, LP_SOLVERS, check_lp_solver
from ..options import check_value, field_from

TEXT_TOWERS = ("pretrained", "checkpoint")
DEVICE_FORMS = "cpu, cuda, cuda:N (a GPU index), mps or xpu"

# The least value of each count; a cap (max_*) may also be None: no cap.
_LEAST = {"max_train_samples": 1, "max_eval_samples": 1, "batch_size": 1, "num_workers": 0, "lp_iterations": 1,
          "feature_distance_samples": 1, "max_cached_models": 0}


@dataclass
class EvaluatorSettings:
    """How the evaluator reads data and scores models (`ConceptForgettingEvaluator`). Every field's
    help is in its metadata; all values are checked here, in one place.

    `argument_names` (not a setting) maps a setting to the argument a user gave it as (e.g.
    {"batch_size": "eval_batch_size"}), so that errors name what the user typed; see `from_arguments`.
    """

    dataset_paths: dict[str, str] = field(
        default_factory=dict, metadata={"help": "Benchmark name -> local copy of its data (save_to_disk folder or parquet files)."}
    )
    image_columns: dict[str, str] = field(
        default_factory=dict, metadata={"help": "Benchmark name -> its image column, for local data whose column is not 'image'."}
    )
    label_columns: dict[str, str] = field(
        default_factory=dict, metadata={"help": "Benchmark name -> its label column, for local data whose column is not 'label'."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Cap on each benchmark's linear-probe training set."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap on each benchmark's test set."})
    batch_size: int = field(default=256, metadata={"help": "Feature-extraction batch size."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers decoding and preprocessing images."})
    device: str | None = field(default=None, metadata={"help": "Device (default: cuda when available)."})
    lp_solver: str = field(
        default="adamw", metadata={"help": f"Linear-probe solver: one of {', '.join(LP_SOLVERS)} (adamw is the official protocol)."}
    )
    lp_iterations: int = field(default=LP_ITERATIONS, metadata={"help": "Full-batch iterations of the linear probe."})
    text_tower: str = field(
        default="pretrained",
        metadata={"help": f"Zero-shot heads from the text tower: one of {', '.join(TEXT_TOWERS)} ('pretrained' is official, "
                  "'checkpoint' is FLYP's: a CLIPModel's own; a classifier without one falls back to the pretrained tower)."},
    )
    feature_distance_samples: int = field(default=256, metadata={"help": "Test examples per benchmark for the feature distance."})
    max_cached_models: int = field(default=2, metadata={"help": "How many models' features stay in memory (the pretrained model's always do)."})
    seed: int = field(default=0, metadata={"help": "Seed of the subsampling and the linear probe."})
    validation: bool = field(
        default=False,
        metadata={"help": "Also score every model on each benchmark's validation split (a tenth of its training data, seed 0: a "
                  "fine-tuning run's own hold-out), with the same zero-shot heads and linear probes, these fitted on the rest "
                  "of the training data: the scores λ and α are chosen on (a record's \"validation\")."},
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Cache folder for models and datasets."})
    feature_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Folder where the pretrained model's features and accuracies are kept and reused by every "
                  "evaluation pointed at it (off when unset)."},
    )
    argument_names: InitVar[Mapping[str, str] | None] = None

    def __post_init__(self, argument_names: Mapping[str, str] | None):
        names = dict(argument_names or {})

        def name(setting: str) -> str:
            return names.get(setting, setting)

        for setting in ("cache_dir", "feature_cache_dir"):
            if isinstance(getattr(self, setting), os.PathLike):
                setattr(self, setting, os.fspath(getattr(self, setting)))
        if self.device is not None and not isinstance(self.device, str) and hasattr(self.device, "type"):
            self.device = str(self.device)  # a torch.device
        for setting in ("dataset_paths", "image_columns", "label_columns"):
            value = getattr(self, setting)
            if value is None:
                setattr(self, setting, {})
            elif isinstance(value, Mapping):
                setattr(self, setting, {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in value.items()})
        for f in dataclasses.fields(self):
            check_value(name(f.name), getattr(self, f.name), _HINTS[f.name])
        for setting, least in _LEAST.items():
            value = getattr(self, setting)
            if value is None:
                continue  # only the caps are optional (the type check above)
            if value < least:
                cap = " (leave it unset for no cap)" if setting.startswith("max_") and setting != "max_cached_models" else ""
                raise ValueError(f"{name(setting)} must be >= {least}, got {value}{cap}")
        if self.text_tower not in TEXT_TOWERS:
            raise ValueError(f"{name('text_tower')} must be one of {TEXT_TOWERS}, got {self.text_tower!r}")
        check_lp_solver(self.lp_solver)
        check_device(self.device)

    @classmethod
    def from_arguments(cls, arguments, names: Mapping[str, str], **values) -> "EvaluatorSettings":
        """The settings held by an argument object: `names` maps each setting to the attribute of
        `arguments` that holds it (and errors name that attribute); `values` gives the others."""
        return cls(**{setting: getattr(arguments, attribute) for setting, attribute in names.items()}, **values, argument_names=names)

    @property
    def torch_device(self):
        import torch

        if self.device is not None:
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


_HINTS = typing.get_type_hints(EvaluatorSettings)


def setting_field(name: str, *, default=dataclasses.MISSING, help: str | None = None):
    """A field of an argument dataclass that holds the setting `name`: its default and help are the
    setting's unless given. The argument's `__post_init__` checks it through `from_arguments`."""
    if EvaluatorSettings.__dataclass_fields__[name].default is dataclasses.MISSING:
        raise ValueError(f"setting {name!r} has no plain default; declare it as the argument's own field")
    return field_from(EvaluatorSettings, name, default=default, help=help)


def check_device(device) -> None:
    """`device` (a string, a `torch.device` or None: CUDA when available) names a device that torch
    parses and this machine has; raises a one-line ValueError otherwise, before anything is loaded."""
    if device is None:
        return
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a device: use {DEVICE_FORMS}, or leave it unset (cuda when available)") from err
    kind = parsed.type
    if kind == "cpu":
        return
    if kind not in ("cuda", "mps", "xpu"):
        raise ValueError(f"device {device!r} cannot run an evaluation: use {DEVICE_FORMS}, or leave it unset (cuda when available)")
    backend = torch.backends.mps if kind == "mps" else getattr(torch, kind, None)
    if backend is None or not backend.is_available():
        raise ValueError(
            f"device {device!r}: this machine has no {kind} device (torch {torch.__version__}: torch.{'backends.mps' if kind == 'mps' else kind}"
            ".is_available() is False); use --device cpu, or leave it unset (cuda when available)"
        )
    if parsed.index is not None and kind in ("cuda", "xpu") and parsed.index >= backend.device_count():
        raise ValueError(f"device {device!r}: this machine has {backend.device_count()} {kind} device(s), numbered from 0")


def check_every_percent(value, name: str = "every_percent") -> None:
    """The spacing of evaluations during training, in percent of the run: in (0, 100]."""
    if not 0 < value <= 100:
        raise ValueError(f"{name} must be in (0, 100], got {value}")
