"""Training: the method registry, `LDIFSTrainingArguments`, `LDIFSTrainer`, the objectives, building the
model a method trains, one fine-tuning run end to end (`run_finetune`), and a sequence of them
(`run_sequence`, teacher = the previous task's model)."""

from .._lazy import lazy_exports

# Each public name and its module, imported on first use: importing the package stays cheap.
_EXPORTS = {
    "DataArguments": ".arguments",
    "LDIFSArgumentsMixin": ".arguments",
    "LDIFSTrainingArguments": ".arguments",
    "ModelArguments": ".arguments",
    "MethodSpec": ".methods",
    "get_method": ".methods",
    "list_methods": ".methods",
    "register_method": ".methods",
    "LDIFSMixin": ".trainer",
    "LDIFSTrainer": ".trainer",
    "finetune": ".run",
    "run_finetune": ".run",
    "SequenceArguments": ".sequences",
    "run_sequence": ".sequences",
    "sequence": ".sequences",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
