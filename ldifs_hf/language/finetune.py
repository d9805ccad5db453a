"""One language-model fine-tuning run as a library call: SFT of a causal LM with trl's `SFTTrainer` and
`LDIFSMixin` (regularizer none, L2SP, LDIFS, KL or a plug-in, at its λ), in a run folder with the same
rules as a CLIP run, so that the language evaluation reads its method, regularizer, λ and seed.

    record = finetune_language_model("skills/model", "skills/sft", "runs/sft-kl", finetune_task="skills_shift",
                                     regularizer="kl", kl_lambda=0.3, max_steps=200, seed=0)

The folder holds the final model and tokenizer, `checkpoint-N` folders when asked (`save_strategy`), the
Trainer's state and `ldifs_run.json` (`RunRecord`: method "sft" or "sft+<regularizer>", the fine-tuning
task as its dataset, the regularizer's settings and λ, `run_settings`). Its rules are `run_folder`'s: a
rerun with the same settings returns the finished run, an unfinished one continues from its last complete
checkpoint, one with other settings is refused naming them (`overwrite_output_dir` replaces it), and one
command writes the folder at a time (`FolderLock`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import types

from ..evaluation.checkpoints import check_model_path
from ..model_folder import load_causal_lm, load_tokenizer
from ..run_folder import FolderLock, RunRecord, check_output_dir, plan_output_dir
from ..training.guards import NonFiniteGuard, RunIdentityCallback
from ..training.run import run_settings, train_or_resume

logger = logging.getLogger(__name__)

SFT_METHOD = "sft"
TRL_EXTRA = 'pip install "ldifs_hf[trl]"'
# What a language run sets unless asked otherwise: no reporting integrations, no progress bars (and bf16
# only where the device supports it, `bf16_supported`).
RUN_DEFAULTS = {"report_to": [], "disable_tqdm": True}
# The fine-tuning arguments the call itself owns.
OWNED = ("output_dir", "regularizer", "method", "overwrite_output_dir")


def sft_method(regularizer: str) -> str:
    """The method name of SFT under `regularizer`: "sft" (none) or "sft+<regularizer>"."""
    return SFT_METHOD if regularizer == "none" else f"{SFT_METHOD}+{regularizer}"


def regularizer_of(method: str) -> str:
    """The regularizer of an SFT method name ("sft" -> "none", "sft+ldifs" -> "ldifs"); refused otherwise."""
    from ..training.terms import get_regularizer

    head, sep, regularizer = method.strip().partition("+")
    if head != SFT_METHOD or (sep and not regularizer):
        raise ValueError(f"a language-model method is 'sft' or 'sft+REGULARIZER' (e.g. sft+ldifs), got {method!r}")
    return get_regularizer(regularizer).name if sep else "none"


def sft_classes() -> tuple[type, type]:
    """(config, trainer): trl's `SFTConfig` with the regularizers' fields, and `SFTTrainer` with `LDIFSMixin`."""
    try:
        import trl  # noqa: F401
    except ImportError:
        raise ImportError(f"language-model fine-tuning runs trl's SFTTrainer: {TRL_EXTRA}") from None
    from .sft import LanguageSFTConfig, LanguageSFTTrainer

    return LanguageSFTConfig, LanguageSFTTrainer


def sft_config(output_dir: str, regularizer: str = "none", **training):
    """The run's SFT arguments (`sft_classes`' config) from keyword arguments; refused in one line when trl
    or the regularizer refuses them, or when they set what the call owns."""
    owned = sorted(set(training) & set(OWNED))
    if owned:
        raise ValueError(f"fine-tuning arguments may not set {owned}: finetune_language_model takes them as its own arguments")
    config_class, _ = sft_classes()
    names = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(training) - names)
    if unknown:
        raise ValueError(f"unknown fine-tuning argument(s) {unknown}: not fields of trl's SFTConfig or of the regularizers")
    defaults, training = {**RUN_DEFAULTS, "bf16": bf16_supported()}, dict(training)
    # Gradient checkpointing (trl's default: on) under transformers' new name where it has one: the old name warns on every config.
    if "activation_checkpointing" in names and "activation_checkpointing" not in training:
        trl_default = next(f.default for f in dataclasses.fields(config_class) if f.name == "gradient_checkpointing")
        training["activation_checkpointing"] = training.pop("gradient_checkpointing", trl_default)
    return config_class(output_dir=output_dir, regularizer=regularizer, **{**defaults, **training})


def bf16_supported() -> bool:
    """trl's SFTConfig trains in bf16 by default, which a CPU (or an older GPU) refuses: bf16 only where the device has it."""
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def load_sft_data(dataset_path: str):
    """The SFT rows of a `save_to_disk` folder (a Dataset, or a DatasetDict's "train" split): prompt/completion
    or text columns, as trl reads them."""
    import datasets

    if not os.path.isdir(dataset_path):
        raise FileNotFoundError(f"dataset_path {dataset_path!r} is not a folder; pass a `datasets` save_to_disk folder of SFT rows")
    try:
        data = datasets.load_from_disk(dataset_path)
    except (FileNotFoundError, ValueError) as err:
        raise ValueError(f"dataset_path {dataset_path!r} is not a `datasets` save_to_disk folder ({' '.join(str(err).split())})") from None
    if isinstance(data, datasets.DatasetDict):
        if "train" not in data:
            raise ValueError(f"dataset_path {dataset_path!r} holds splits {sorted(data)}, none of them 'train'")
        data = data["train"]
    columns = set(data.column_names)
    if not ({"prompt", "completion"} <= columns or "text" in columns or "messages" in columns):
        raise ValueError(f"dataset_path {dataset_path!r} has columns {sorted(columns)}; SFT reads prompt/completion, text or messages")
    return data


def sft_method_spec(regularizer: str) -> dict:
    """The facts the claims pair methods by (as a CLIP run records them): every SFT run trains all of the model
    with the causal-LM loss from the model itself, so two SFT methods differ only in the regularizer."""
    return {"head_init": "pretrained", "objective": "sft", "regularizer": regularizer, "trained": "all"}


def finetune_language_model(model_name_or_path: str, dataset_path: str, output_dir: str, *, finetune_task: str | None = None,
                            regularizer: str = "none", overwrite_output_dir: bool = False, **training) -> RunRecord:
    """SFT of `model_name_or_path` on `dataset_path` into `output_dir` under `regularizer` (its λ and the other
    SFT arguments as keyword arguments, e.g. `kl_lambda=0.3, max_steps=200, seed=0`); returns the completed
    `RunRecord`. `finetune_task` (the lm-eval task that scores the new skill) is recorded as the run's dataset."""
    # 1. Everything checked before a model or the data is loaded.
    output_dir, model_name_or_path, dataset_path = map(os.fspath, (output_dir, model_name_or_path, dataset_path))
    config = sft_config(output_dir, regularizer, **training)
    check_model_path(model_name_or_path, "model_name_or_path")
    data = load_sft_data(dataset_path)
    check_output_dir(output_dir)
    method, task = sft_method(config.regularizer), finetune_task or os.path.basename(os.path.normpath(dataset_path))
    settings = run_settings(types.SimpleNamespace(model_name_or_path=model_name_or_path), types.SimpleNamespace(dataset_path=dataset_path), config)
    settings = {k: v for k, v in settings.items() if v is not None or hasattr(config, k)}  # the CLIP run's model and data fields: absent
    settings["max_length"] = config.max_length
    # 2. The folder: held, then started, continued, reused or refused.
    with FolderLock(output_dir):
        plan = plan_output_dir(output_dir, method, task, overwrite=overwrite_output_dir, resume_from_checkpoint=config.resume_from_checkpoint,
                               settings=settings, inputs={"--model_name_or_path": model_name_or_path, "--dataset_path": dataset_path})
        if plan.finished is not None:
            logger.warning("%s already holds this finished run (same method, data and settings): nothing was trained", output_dir)
            return plan.finished
        return _train(config, model_name_or_path, data, method, task, settings, plan.resume_from)


def _train(config, model_name_or_path: str, data, method: str, task: str, settings: dict, resume_from: str | None) -> RunRecord:
    """3. Load, train (or continue), save; the record written before the first step and completed at the end."""
    _, trainer_class = sft_classes()
    model = load_causal_lm(model_name_or_path, what="model_name_or_path")
    tokenizer = load_tokenizer(model_name_or_path)
    trainer = trainer_class(model=model, args=config, train_dataset=data, processing_class=tokenizer)
    record = RunRecord(method=method, dataset=task, base_model=model_name_or_path, **trainer.regularizer_record(), output_dir=config.output_dir,
                       dataset_splits=f"{len(data)} SFT rows of {settings['dataset_path']}", settings=settings,
                       method_spec=sft_method_spec(config.regularizer))
    trainer.add_callback(NonFiniteGuard(trainer))
    trainer.add_callback(RunIdentityCallback(record))
    os.makedirs(config.output_dir, exist_ok=True)
    record.save(config.output_dir)
    logger.info("%s on %s: %s", method, task, record.regularizer_text)
    train_or_resume(trainer, resume_from, config.output_dir)
    losses = [entry["train_loss"] for entry in trainer.state.log_history if "train_loss" in entry]
    record = dataclasses.replace(record, completed=True, results={"train_loss": losses[-1]} if losses else {})
    record.save(config.output_dir)
    return record


__all__ = ["SFT_METHOD", "finetune_language_model", "load_sft_data", "regularizer_of", "sft_classes", "sft_config", "sft_method", "sft_method_spec"]
