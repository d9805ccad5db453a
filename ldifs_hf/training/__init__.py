"""Training: the method registry, `LDIFSTrainingArguments`, `LDIFSTrainer`, the objectives, building the
model a method trains, and one fine-tuning run end to end (`run_finetune`)."""

from .arguments import DataArguments, LDIFSTrainingArguments, ModelArguments
from .methods import MethodSpec, get_method, list_methods, register_method
from .trainer import LDIFSTrainer
from .run import finetune, run_finetune

__all__ = [
    "DataArguments",
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
