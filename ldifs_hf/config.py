"""`LDIFSTrainingArguments`: the Trainer's arguments plus the method and its regularizer settings."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from transformers import TrainingArguments

from .methods import REGULARIZERS, get_method
from .regularizers import LDIFS_NORMALIZATIONS

TEACHER_SOURCES = ("previous", "pretrained")
TEACHER_DTYPES = ("float32", "bfloat16", "float16")
# Files whose presence means a directory already holds a run (or a model) we must not overwrite.
_RUN_MARKERS = ("config.json", "model.safetensors", "trainer_state.json", "ldifs_run.json", "all_results.json")


@dataclass
class LDIFSTrainingArguments(TrainingArguments):
    """TrainingArguments for LDIFSTrainer, with the paper's fine-tuning defaults (appendix A).

    Parameters:
        method (`str`, *optional*, defaults to `None`):
            One of `ldifs_hf.list_methods()` (e.g. "lp-init-ldifs"), or "METHOD+REGULARIZER". Sets the
            regularizer; scripts also use it for the head initialisation and objective.
        regularizer (`str`, *optional*, defaults to `None`):
            "none", "l2sp" or "ldifs". Overrides the method's regularizer; with neither set, "ldifs".
        ldifs_lambda (`float`, *optional*, defaults to `10.0`):
            Weight of the LDIFS feature distance (the paper's best value in general).
        l2sp_lambda (`float`, *optional*, defaults to `0.5`):
            Weight of the L2SP penalty (official default).
        ldifs_layers (`list[int]`, *optional*, defaults to `None`):
            Indices into the model's `hidden_states` to tap; None means 0 and every L/4 blocks.
        ldifs_normalization (`str`, *optional*, defaults to `"token"`):
            "token" (official code, the default λ was tuned with it) or "flatten" (paper appendix B).
        teacher_dtype (`str`, *optional*, defaults to `None`):
            Cast the frozen teacher to "bfloat16"/"float16" (it never trains, so it needs no float32
            master copy); None keeps the student's dtype.
        overwrite_output_dir (`bool`, *optional*, defaults to `False`):
            Allow a run to write into an output directory that already holds a run.

    Defaults changed from TrainingArguments to the paper's: learning_rate 1e-5, weight_decay 0.1,
    cosine schedule with 500 warm-up steps, batch size 128, remove_unused_columns False.
    """

    method: str | None = field(default=None, metadata={"help": "Fine-tuning method, e.g. lp-init-ldifs."})
    regularizer: str | None = field(
        default=None, metadata={"help": f"Regularizer overriding the method's: one of {REGULARIZERS}."}
    )
    ldifs_lambda: float = field(default=10.0, metadata={"help": "Weight of the LDIFS feature distance."})
    l2sp_lambda: float = field(default=0.5, metadata={"help": "Weight of the L2SP penalty."})
    ldifs_layers: list[int] | None = field(
        default=None, metadata={"help": "hidden_states indices to tap (default: 0 and every L/4 blocks)."}
    )
    ldifs_normalization: str = field(
        default="token", metadata={"help": f"LDIFS feature normalisation: one of {LDIFS_NORMALIZATIONS}."}
    )
    teacher_dtype: str | None = field(
        default=None, metadata={"help": f"dtype of the frozen teacher: one of {TEACHER_DTYPES} (default: the student's)."}
    )
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

    def __post_init__(self):
        super().__post_init__()
        spec = get_method(self.method) if self.method is not None else None
        if self.regularizer is None:
            self.regularizer = spec.regularizer if spec is not None else "ldifs"
        if self.regularizer not in REGULARIZERS:
            raise ValueError(f"regularizer must be one of {REGULARIZERS}, got {self.regularizer!r}")
        for name in ("ldifs_lambda", "l2sp_lambda"):
            value = getattr(self, name)
            if not value >= 0:  # also rejects NaN
                raise ValueError(f"{name} must be a number >= 0, got {value}")
        if self.ldifs_normalization not in LDIFS_NORMALIZATIONS:
            raise ValueError(f"ldifs_normalization must be one of {LDIFS_NORMALIZATIONS}, got {self.ldifs_normalization!r}")
        if self.ldifs_layers is not None:
            if not self.ldifs_layers:
                raise ValueError("ldifs_layers must name at least one hidden-state index, got an empty list")
            bad = [i for i in self.ldifs_layers if not isinstance(i, int) or i < 0]
            if bad:
                raise ValueError(f"ldifs_layers must be hidden-state indices >= 0, got {bad[0]!r}")
        if self.teacher_dtype is not None and self.teacher_dtype not in TEACHER_DTYPES:
            raise ValueError(f"teacher_dtype must be one of {TEACHER_DTYPES} or None, got {self.teacher_dtype!r}")

    @property
    def method_spec(self):
        return get_method(self.method) if self.method is not None else None


def check_output_dir(output_dir: str, overwrite: bool) -> None:
    """Refuse to write into a directory that already holds a run unless overwriting was asked for."""
    if overwrite or not os.path.isdir(output_dir):
        return
    entries = os.listdir(output_dir)
    if any(e in _RUN_MARKERS or e.startswith("checkpoint-") for e in entries):
        raise ValueError(
            f"output_dir {output_dir!r} already holds a run ({', '.join(sorted(entries)[:4])}...); "
            "choose another --output_dir or pass --overwrite_output_dir"
        )
