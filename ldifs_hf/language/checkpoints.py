"""Which causal-LM checkpoints to evaluate, what their runs recorded, and loading them: a full model
folder (config.json and weights) or a PEFT adapter folder (adapter_config.json and adapter weights),
by path, `method=path` or Hub id; a run directory's `checkpoint-N` folders are its points along training.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Sequence

from ..evaluation.checkpoints import CheckpointError, check_model_path, checkpoint_spec, run_record_of, trainer_progress
from ..evaluation.run import run_facts
from ..model_folder import CONFIG_FILE, ModelFolderError, is_adapter_folder, load_causal_lm, load_tokenizer, read_adapter_config
from ..run_folder import TRAINER_STATE, checkpoint_folders, checkpoint_problem, foreign_checkpoint

logger = logging.getLogger(__name__)

ADAPTER_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_EXTRA = 'pip install "ldifs_hf[peft]"'
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


@dataclass
class LanguageCheckpoint:
    """A checkpoint to evaluate: "model" (a full causal LM) or "adapter" (PEFT weights over a base), and
    what is known about its run (`facts`: "regularizer", "lambda", "seed" from its run record)."""

    path: str
    method: str
    kind: str = "model"
    base_model: str | None = None  # an adapter's base (adapter_config.json), or the run record's
    finetune_task: str | None = None
    step: int | None = None
    percent: float | None = None
    problem: str | None = None  # why it cannot be scored, found without loading it
    facts: dict = field(default_factory=dict)


def _is_model_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, CONFIG_FILE)) or is_adapter_folder(path)


def _folder_problem(path: str) -> str | None:
    """Why a `checkpoint-N` folder cannot be scored (half-written), or None."""
    if not is_adapter_folder(path):
        return checkpoint_problem(path)
    if not any(os.path.isfile(os.path.join(path, f)) for f in ADAPTER_WEIGHT_FILES):
        return f"it has no adapter weights ({' or '.join(ADAPTER_WEIGHT_FILES)}; a save was interrupted)"
    if not os.path.isfile(os.path.join(path, TRAINER_STATE)):
        return f"it has no {TRAINER_STATE}, which the Trainer writes last (a save was interrupted)"
    return None


def _entry(path: str, method: str, **kwargs) -> LanguageCheckpoint:
    kind = "adapter" if is_adapter_folder(path) else "model"
    base = None
    if kind == "adapter" and kwargs.get("problem") is None:
        base = read_adapter_config(path, what="adapter checkpoint").get("base_model_name_or_path") or None
    return LanguageCheckpoint(path=path, method=method, kind=kind, base_model=base, **kwargs)


def resolve_language_checkpoints(specs: Sequence[str], *, include_intermediate: bool = True) -> list[LanguageCheckpoint]:
    """Checkpoint entries from "path" or "method=path" values (method default: the run record's, else
    the folder's name). A run directory gives its `checkpoint-N` folders (with `include_intermediate`,
    their % of training from trainer_state.json) and, when it holds a model or adapter itself, that
    final model (100 %); half-written or another run's checkpoints carry their `problem`."""
    entries = []
    for spec in specs:
        method, path, on_hub = checkpoint_spec(spec)
        if on_hub:
            entries.append(LanguageCheckpoint(path=path, method=method or path, percent=100.0))
            continue
        record = run_record_of(path)
        method = method or (record.method if record else None) or os.path.basename(os.path.normpath(path))
        run_entries = []
        final_step = trainer_progress(path)[0] if _is_model_folder(path) else None
        for step, checkpoint in checkpoint_folders(path) if include_intermediate else []:
            problem = _folder_problem(checkpoint) or foreign_checkpoint(checkpoint, record)
            recorded_step, percent = trainer_progress(checkpoint) if problem is None else (None, None)
            step = recorded_step if recorded_step is not None else step
            if problem is None and final_step is not None and step > final_step:
                problem = f"its step {step} is past the run's final step {final_step}, so an earlier run in {path!r} wrote it"
            run_entries.append(_entry(checkpoint, method, step=step, percent=percent, problem=problem))
        if _is_model_folder(path) and not any(e.step is not None and e.step == final_step and e.problem is None for e in run_entries):
            percent = trainer_progress(path)[1]
            run_entries.append(_entry(path, method, step=final_step, percent=percent if percent is not None else 100.0))
        if not run_entries:
            raise CheckpointError(f"{path!r} is not a model or adapter directory (no config.json or adapter_config.json) and holds "
                                  "no checkpoint-N folders")
        facts = {"regularizer": record.regularizer, **run_facts(path)} if record else {}
        for entry in run_entries:
            entry.finetune_task, entry.facts = (record.dataset if record else None), facts
            entry.base_model = entry.base_model or (record.base_model if record else None)
        entries += run_entries
    return entries


def load_language_model(entry: LanguageCheckpoint | str, *, base_model: str | None = None, device=None):
    """The model a checkpoint holds, in evaluation mode: a full causal LM, or a PEFT adapter applied to
    a fresh copy of its base loaded from `base_model` (an adapter changes the model it is applied to)."""
    path = entry.path if isinstance(entry, LanguageCheckpoint) else os.fspath(entry)
    try:
        if os.path.isdir(path) and is_adapter_folder(path):
            try:
                from peft import PeftModel
            except ImportError:
                raise ImportError(f"{path!r} is a PEFT adapter; loading it needs peft: {PEFT_EXTRA}") from None
            if base_model is None:
                raise CheckpointError(f"adapter {path!r} names no base model it can be loaded on; pass pretrained")
            model = PeftModel.from_pretrained(load_causal_lm(base_model, what="the adapter's base model"), path)
        else:
            check_model_path(path)
            model = load_causal_lm(path, what="checkpoint")
    except ModelFolderError as err:
        raise CheckpointError(str(err)) from err
    if device is not None:
        model = model.to(device)
    return model.eval()


def tokenizer_folder(path: str, base_model: str | None) -> str:
    """Where a checkpoint's tokenizer is: the checkpoint itself when it saved one, else its base model."""
    if os.path.isdir(path) and any(os.path.isfile(os.path.join(path, f)) for f in _TOKENIZER_FILES):
        return path
    if base_model is None:
        raise CheckpointError(f"{path!r} holds no tokenizer and no base model is known to take it from; pass pretrained")
    return base_model


def load_language_tokenizer(path: str, base_model: str | None = None):
    return load_tokenizer(tokenizer_folder(path, base_model))
