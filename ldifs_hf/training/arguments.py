"""The arguments of a fine-tuning run: `ModelArguments` (which model, which head fit), `DataArguments`
(which benchmark, where its data is, forgetting tracking) and `LDIFSTrainingArguments` (the Trainer's
arguments plus the method and its regularizer settings). The regularizer fields alone are
`LDIFSArgumentsMixin`, to combine with another trainer's config (trl's `SFTConfig`, ...)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..benchmarks import parse_dataset_paths
from ..evaluation.settings import EvaluatorSettings, check_every_percent, setting_field
from ..heads import LP_SOLVERS, check_lp_solver
from ..regularizers import LDIFS_NORMALIZATIONS
from .methods import get_method, list_methods
from .terms import list_regularizers

TEACHER_DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class LDIFSArgumentsMixin:
    """The LDIFS/L2SP fields, to combine with any `TrainingArguments` subclass (e.g. trl's `SFTConfig`):

        @dataclass
        class LDIFSSFTConfig(LDIFSArgumentsMixin, SFTConfig):
            pass

    Parameters:
        method (`str`, *optional*, defaults to `None`):
            One of `ldifs_hf.list_methods()` (e.g. "lp-init-ldifs"), or "METHOD+REGULARIZER". Sets the
            regularizer; scripts also use it for the head initialisation and objective.
        regularizer (`str`, *optional*, defaults to `None`):
            A registered regularizer (`list_regularizers()`: "none", "l2sp", "ldifs", ...). Overrides the
            method's regularizer; with neither set, "ldifs".
        ldifs_lambda (`float`, *optional*, defaults to `10.0`):
            Weight of the LDIFS feature distance (the paper's best value in general).
        l2sp_lambda (`float`, *optional*, defaults to `0.5`):
            Weight of the L2SP penalty (official default).
        ldifs_layers (`list[int]`, *optional*, defaults to `None`):
            Indices into the model's `hidden_states` to tap; None means 0 and every L/4 blocks.
        ldifs_normalization (`str`, *optional*, defaults to `"token"`):
            "token" (official code, the default λ was tuned with it) or "flatten" (paper appendix B).
        teacher_dtype (`str`, *optional*, defaults to `None`):
            Cast the frozen teacher to "bfloat16"/"float16"/"float32" (it never trains, so it needs no
            float32 master copy). None means the compute precision: bfloat16 under `bf16`, float16
            under `fp16`, else the student's dtype.
        keep_student_dropout (`bool`, *optional*, defaults to `False`):
            Keep the student's dropout while the LDIFS term is on (ldifs_lambda > 0). By default it is
            switched off, as trl's `disable_dropout`, so student and teacher features agree at step 0.
    """

    method: str | None = field(
        default=None,
        metadata={"help": "Fine-tuning method: one of " + ", ".join(list_methods()) + ", or METHOD+REGULARIZER (e.g. flyp+ldifs)."},
    )
    regularizer: str | None = field(
        default=None, metadata={"help": f"Regularizer overriding the method's: one of {tuple(list_regularizers())}."}
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
        default=None,
        metadata={"help": f"dtype of the frozen teacher: one of {TEACHER_DTYPES} (default: bfloat16 under --bf16, float16 under --fp16, else the student's)."},
    )
    keep_student_dropout: bool = field(
        default=False, metadata={"help": "Keep the student's dropout while LDIFS is on (default: switched off)."}
    )

    def __post_init__(self):
        super().__post_init__()
        spec = get_method(self.method) if self.method is not None else None
        if self.regularizer is None:
            self.regularizer = spec.regularizer if spec is not None else "ldifs"
        if self.regularizer not in list_regularizers():
            raise ValueError(f"regularizer must be one of {tuple(list_regularizers())}, got {self.regularizer!r}")
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

    model_name_or_path: str = field(
        default="openai/clip-vit-base-patch32", metadata={"help": "CLIP model id on the Hub or a local directory."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where to cache downloaded models and data."})
    lp_solver: str = field(default="adamw", metadata={"help": f"Linear-probe solver for LP-init: one of {', '.join(LP_SOLVERS)} (adamw is the official protocol)."})
    lp_iterations: int = field(default=1000, metadata={"help": "Full-batch iterations of the linear probe."})
    model_license: str = field(default="other", metadata={"help": "License in the model cards (default 'other': the base model's)."})
    reference_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "CLIP whose image encoder is the LDIFS teacher and the L2SP anchor (default: the model the run "
                  "starts from; in a sequence of tasks that is the previous task's, so pass the pretrained one to anchor there)."},
    )

    def __post_init__(self):
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
    validation_fraction: float = field(default=0.1, metadata={"help": "Fraction of train held out for validation."})
    validation_seed: int = field(default=0, metadata={"help": "Seed of the validation split (paper protocol: 0)."})
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
