"""Which checkpoints to evaluate, what their runs recorded, and loading them: the one place that
turns a path, a `method=path` or a Hub id into a model and a `CheckpointEntry`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Sequence

from torch import nn

from ..model_folder import ModelFolderError, load_clip_or_classifier, looks_like_hub_id, not_a_hub_id, read_model_config
from ..run_folder import CHECKPOINT_DIR, RunRecord, RunRecordError, checkpoint_problem, foreign_checkpoint


class CheckpointError(ValueError):
    """A checkpoint path or object that cannot be evaluated; the message says what would be accepted."""


# -- checkpoints ----------------------------------------------------------------------------------


def load_checkpoint(checkpoint, *, device=None, cache_dir: str | None = None, what: str = "checkpoint") -> nn.Module:
    """A model to evaluate: an in-memory model as is, or one loaded from a directory or Hub id.

    A folder (or Hub id) loads by its config.json's model_type, read first: "ldifs_clip_classifier" as a
    `CLIPVisionClassifier`, "clip" as a `CLIPModel`; any other is refused, and no code saved in the folder
    runs (`model_folder.load_clip_or_classifier`). `what` names the model in errors ("checkpoint",
    "pretrained model"), so that they point at the argument that gave it.
    """
    if isinstance(checkpoint, nn.Module):
        model = checkpoint
    else:
        path = os.fspath(checkpoint)
        check_model_path(path, what)
        try:
            model = load_clip_or_classifier(path, what=what, cache_dir=cache_dir)
        except ModelFolderError as err:
            raise CheckpointError(str(err)) from err
        except OSError as err:
            where = "a local directory" if os.path.isdir(path) else "a Hub model id (no local directory has that name)"
            raise CheckpointError(
                f"could not load {what} {path!r} as {where} ({err}). Without network, download a Hub model once "
                "elsewhere (`hf download <id>`) and pass its local directory"
            ) from err
    for attribute in ("vision_model", "visual_projection"):
        if not hasattr(model, attribute):
            raise CheckpointError(f"a {type(model).__name__} has no `{attribute}`; evaluation needs a CLIP image tower and projection")
    if device is not None:
        model = model.to(device)
    return model.eval()


def check_model_path(path: str, what: str = "checkpoint") -> None:
    """Without loading anything: `path` is a directory, or no such path exists and it has the shape of
    a Hub id ('name' or 'owner/name'). A missing path with './', '../', '~' or more than one '/' is a
    misspelt local path, never a Hub id. `what` names the model in the error."""
    if os.path.isdir(path):
        return
    if os.path.exists(path):
        raise CheckpointError(f"{what} {path!r} is a file, not a model directory; pass the directory that holds its config.json")
    if not looks_like_hub_id(path):
        raise CheckpointError(
            f"{what} {path!r} does not exist (neither a local directory nor a Hub model id: {not_a_hub_id(path)})"
        )


def run_record_of(checkpoint) -> RunRecord | None:
    """The `RunRecord` of the run a checkpoint directory belongs to; None for in-memory models, Hub ids
    and plain CLIP directories."""
    if not isinstance(checkpoint, (str, os.PathLike)) or not os.path.isdir(checkpoint):
        return None
    return RunRecord.find(checkpoint)


def recorded_base_model(path: str) -> str | None:
    """The base model a checkpoint started from: its run record's, else its classifier config's."""
    record = run_record_of(path)
    if record is not None:
        return record.base_model
    if os.path.isfile(os.path.join(path, "config.json")):
        return read_model_config(path, what="checkpoint").get("base_model") or None
    return None


# -- which checkpoints ----------------------------------------------------------------------------


@dataclass
class CheckpointEntry:
    """A checkpoint to evaluate and what is known about the run it belongs to."""

    path: str
    method: str
    finetune_task: str | None = None
    base_model: str | None = None
    step: int | None = None
    percent: float | None = None
    problem: str | None = None  # why it cannot be scored (half-written, another run's), found without loading it
    ldifs_layers: list[int] | None = None  # the run's LDIFS taps, for the feature distance (None: the default)
    ldifs_normalization: str | None = None


def trainer_progress(path: str) -> tuple[int | None, float | None]:
    """(step, % of training) a Trainer folder's trainer_state.json records, or (None, None) without one."""
    state_file = os.path.join(path, "trainer_state.json")
    if not os.path.isfile(state_file):
        return None, None
    try:
        with open(state_file) as f:
            state = json.load(f)
    except (OSError, ValueError):  # a damaged state says nothing about progress; the model itself is checked when loaded
        return None, None
    if not isinstance(state, dict):
        return None, None
    step, max_steps = state.get("global_step"), state.get("max_steps")
    if not isinstance(step, int) or not isinstance(max_steps, (int, type(None))):
        return None, None
    return step, (100.0 * step / max_steps if step is not None and max_steps else None)


def checkpoint_spec(spec: str) -> tuple[str, str, bool]:
    """(method or "", path, whether it is a Hub id) of a `--checkpoint` value "path" or "method=path";
    a local path must be a directory (CheckpointError otherwise)."""
    method, _, path = spec.partition("=") if "=" in spec and not os.path.exists(spec) else ("", "", spec)
    if not os.path.exists(path):
        if looks_like_hub_id(path):  # a model on the Hub (or in its offline cache)
            return method, path, True
        raise CheckpointError(f"checkpoint {path!r} does not exist (and is not a Hub id: {not_a_hub_id(path)})")
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path!r} is a file, not a model directory")
    return method, path, False


def resolve_checkpoints(specs: Sequence[str], *, include_intermediate: bool = True) -> list[CheckpointEntry]:
    """Checkpoint entries from `--checkpoint` values: "path" or "method=path".

    The method and fine-tuning task come from the run's `ldifs_run.json` when present (else the folder
    name and None). A run directory's `checkpoint-N` folders become points along training when
    `include_intermediate` (their % of training from `trainer_state.json`); the run directory itself
    is the final model (100 %). A `checkpoint-N` that is half-written, carries another run's record,
    or is past the run's final step (another run's) is listed with its `problem`, so that the report
    shows it as failed.
    """
    entries = []
    for spec in specs:
        method, path, on_hub = checkpoint_spec(spec)
        if on_hub:
            entries.append(CheckpointEntry(path, method or path, percent=100.0))
            continue
        try:
            record = run_record_of(path)
        except RunRecordError as err:  # that run is reported as failed; the other checkpoints are still scored
            entries.append(CheckpointEntry(path, method or os.path.basename(os.path.normpath(path)), problem=str(err)))
            continue
        method = method or (record.method if record else None) or os.path.basename(os.path.normpath(path))
        run_entries = []
        final_step = trainer_progress(path)[0] if os.path.isfile(os.path.join(path, "config.json")) else None
        if include_intermediate:
            for name in sorted(os.listdir(path), key=lambda n: int(m.group(1)) if (m := CHECKPOINT_DIR.match(n)) else -1):
                match = CHECKPOINT_DIR.match(name)
                if not (match and os.path.isdir(os.path.join(path, name))):
                    continue
                checkpoint = os.path.join(path, name)
                problem = checkpoint_problem(checkpoint)
                step, percent = trainer_progress(checkpoint) if problem is None else (None, None)
                step = step if step is not None else int(match.group(1))
                if problem is None:
                    problem = foreign_checkpoint(checkpoint, record)
                if problem is None and final_step is not None and step > final_step:
                    # A later step than the run's final model: left by an earlier run in this directory.
                    problem = f"its step {step} is past the run's final step {final_step}, so an earlier run in {path!r} wrote it"
                run_entries.append(CheckpointEntry(checkpoint, method, step=step, percent=percent, problem=problem))
        if os.path.isfile(os.path.join(path, "config.json")):
            step, percent = final_step, trainer_progress(path)[1]
            if not any(e.step is not None and e.step == step and e.problem is None for e in run_entries):
                # A model directory is a run's final model: 100 % of its training.
                run_entries.append(CheckpointEntry(path, method, step=step, percent=percent if percent is not None else 100.0))
        if not run_entries:
            raise CheckpointError(f"{path!r} is not a model directory (no config.json) and holds no checkpoint-N model folders")
        for entry in run_entries:
            entry.finetune_task, entry.base_model = (record.dataset if record else None), recorded_base_model(path)
            if record is not None and record.regularizer == "ldifs":  # the distance the run itself regularised
                taps = record.regularizer_settings
                entry.ldifs_layers, entry.ldifs_normalization = taps.get("ldifs_layers"), taps.get("ldifs_normalization")
        entries += run_entries
    return entries


