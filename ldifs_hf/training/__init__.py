"""Training: the method registry, `LDIFSTrainingArguments`, `LDIFSTrainer`, the objectives, building the
model a method trains, and one fine-tuning run end to end (`run_finetune`)."""

from .arguments import DataArguments, LDIFSArgumentsMixin, LDIFSTrainingArguments, ModelArguments
from .methods import MethodSpec, get_method, list_methods, register_method
from .trainer import LDIFSMixin, LDIFSTrainer
from .run import finetune, run_finetune

__all__ = [
    "DataArguments",
    "LDIFSArgumentsMixin",
    "LDIFSMixin",
    "LDIFSTrainer",
    "LDIFSTrainingArguments",
    "MethodSpec",
    "ModelArguments",
    "finetune",
    "get_method",
    "list_methods",
    "register_method",
    "run_finetune",
]
