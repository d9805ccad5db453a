"""What a fine-tuning run may do with its output folder: start, continue, reuse, replace, or refuse.

Everything here is decided before anything expensive: `check_output_dir` (writable, room on disk),
`plan_output_dir` (resume / refuse / overwrite, from the folder's `RunRecord` and markers).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Mapping

from .checkpoints import checkpoint_problem, last_complete_checkpoint
from .lock import HOLDER_FILE, LOCK_FILE
from .record import RUN_RECORD_FILE, RunRecord

EXPORT_FOLDER = "clip"
# The classifier a run started from (its initial ZS or LP head), which weight interpolation goes back to.
START_HEAD_FILE = "start_head.safetensors"
# What a Trainer run leaves in its output directory: a directory holding any of these without our run
# record was written by something else, and we do not write into it.
RUN_MARKERS = ("config.json", "model.safetensors", "trainer_state.json", "all_results.json")
# What else a run writes whose stale copy a new run could be mistaken for (a crashed new run would
# otherwise leave the earlier run's final model and state beside its own record).
RUN_OUTPUTS = RUN_MARKERS + (
    "model.safetensors.index.json", "train_results.json", "eval_results.json", "training_args.bin",
    "forgetting_log.json", "forgetting_log.jsonl", START_HEAD_FILE,
)
# A checkpoint holds the weights, AdamW's two moments (float32) and the final model and export come on
# top: about six copies of the base model's weight file is the least the output directory must hold.
CHECKPOINT_SIZE_FACTOR = 6


@dataclass
class OutputPlan:
    """What to do with the output directory: start afresh, continue from a checkpoint, or nothing."""

    resume_from: str | None = None
    finished: RunRecord | None = None


def plan_output_dir(
    output_dir: str, method: str, dataset: str, *, overwrite: bool = False, resume_from_checkpoint=None,
    settings: dict | None = None, inputs: Mapping[str, str | None] | None = None,
) -> OutputPlan:
    """Decide, before anything expensive, how a run uses `output_dir`.

    - `output_dir` is, or holds, one of the run's `inputs` ({flag: path}: the model, the reference
      model, the dataset): refused, as the run would write over it or `overwrite` delete it;
    - empty or missing: a fresh run;
    - our own finished run of the same method, dataset and `settings`: nothing to do (returned as `finished`);
    - our own unfinished run: continue from its last complete `checkpoint-N` (half-written and damaged
      ones are skipped with a warning; another run's is refused, by name), or start again if it has none;
    - `overwrite`: the earlier ldifs_hf run's checkpoints, export, record, final model, state and results
      are removed first (a folder of model files that no ldifs_hf run recorded is refused, not emptied);
    - files of another run or another program, or our run with other `settings`: refused, naming them.
    """
    _check_inputs_outside(output_dir, inputs or {})
    if resume_from_checkpoint not in (None, False, True):
        if not os.path.isdir(str(resume_from_checkpoint)):
            raise ValueError(f"resume_from_checkpoint {resume_from_checkpoint!r} is not a checkpoint directory")
        problem = checkpoint_problem(str(resume_from_checkpoint), check_files=True)
        if problem:
            raise ValueError(f"resume_from_checkpoint {resume_from_checkpoint!r} cannot be resumed from: {problem}")
    entries = [e for e in os.listdir(output_dir) if e not in (LOCK_FILE, HOLDER_FILE)] if os.path.isdir(output_dir) else []
    if not entries:  # missing, or empty but for the lock this command holds
        return OutputPlan(resume_from=None if resume_from_checkpoint in (None, False) else resume_from_checkpoint)
    if RUN_RECORD_FILE not in entries:
        ours = [e for e in entries if e in RUN_MARKERS or e.startswith("checkpoint-")]
        if ours and overwrite:
            raise ValueError(
                f"output_dir {output_dir!r} holds a model or run that ldifs_hf did not record ({', '.join(sorted(ours)[:4])}), and "
                "--overwrite_output_dir deletes only an earlier ldifs_hf run's files; choose another --output_dir, or remove them yourself"
            )
        if ours:
            raise ValueError(
                f"output_dir {output_dir!r} already holds a model or run that ldifs_hf did not record ({', '.join(sorted(ours)[:4])}); "
                "choose another --output_dir"
            )
        return OutputPlan()
    if overwrite:
        remove_earlier_run(output_dir)
        return OutputPlan(resume_from=resume_from_checkpoint if isinstance(resume_from_checkpoint, str) else None)
    earlier = RunRecord.load(output_dir)
    if earlier.alpha is not None:
        raise ValueError(
            f"output_dir {output_dir!r} holds a weight interpolation (alpha {earlier.alpha:g}) of {earlier.source_run!r}, not a run; "
            "choose another --output_dir or pass --overwrite_output_dir"
        )
    if (earlier.method, earlier.dataset) != (method, dataset):
        raise ValueError(
            f"output_dir {output_dir!r} holds a {earlier.method} run on {earlier.dataset}, not {method} on {dataset}; "
            "choose another --output_dir or pass --overwrite_output_dir"
        )
    changed = changed_settings(earlier.settings, settings)
    if changed:
        raise ValueError(
            f"output_dir {output_dir!r} holds a {'finished' if earlier.completed else 'started'} {method} run with other settings "
            f"({changed}); rerun with the same settings to {'reuse' if earlier.completed else 'continue'} it, choose another "
            "--output_dir, or pass --overwrite_output_dir to replace it"
        )
    if earlier.completed:
        return OutputPlan(finished=earlier)
    if isinstance(resume_from_checkpoint, str):
        return OutputPlan(resume_from=resume_from_checkpoint)
    return OutputPlan(resume_from=last_complete_checkpoint(output_dir, earlier, check_files=True))


def _check_inputs_outside(output_dir: str, inputs: Mapping[str, str | None]) -> None:
    """No input of the run is `output_dir` or inside it: the run writes its model there, and
    `--overwrite_output_dir` deletes what an earlier run wrote."""
    out = os.path.realpath(output_dir)
    for flag, path in inputs.items():
        if path is None or not os.path.exists(path):
            continue  # a Hub id, or nothing
        real = os.path.realpath(path)
        if real == out or real.startswith(out.rstrip(os.sep) + os.sep):
            raise ValueError(
                f"output_dir {output_dir!r} {'is' if real == out else 'holds'} the run's input {flag} {path!r}; the run would write "
                "over it (and --overwrite_output_dir delete it): choose another --output_dir"
            )


def changed_settings(earlier: dict | None, now: dict | None) -> str:
    """'max_steps 3 -> 6, learning_rate ...' for the settings that differ; '' when they agree or are unknown."""
    if not earlier or not now:
        return ""
    changed = [f"{key} {earlier.get(key)!r} -> {now[key]!r}" for key in now if key in earlier and earlier[key] != now[key]]
    return ", ".join(changed)


def remove_earlier_run(output_dir: str) -> None:
    """Remove what an earlier run wrote that a new run would otherwise mix with its own: checkpoints,
    the export, the run record, and the final model, state and results the Trainer wrote. Other
    files (a user's README.md, notes) and the folder's lock are left alone."""
    for entry in os.listdir(output_dir):
        path = os.path.join(output_dir, entry)
        if entry in (LOCK_FILE, HOLDER_FILE):
            continue
        if entry.startswith("checkpoint-") and os.path.isdir(path):
            shutil.rmtree(path)
        elif entry == EXPORT_FOLDER and os.path.isdir(path):
            shutil.rmtree(path)
        elif entry in (RUN_RECORD_FILE, *RUN_OUTPUTS) or (entry.startswith("model-") and entry.endswith(".safetensors")):
            os.remove(path)


def check_output_dir(output_dir: str, model_bytes: int | None = None) -> None:
    """`output_dir` (or its nearest existing parent, when it does not exist yet) accepts a new file, and
    its disk has room for about `CHECKPOINT_SIZE_FACTOR` copies of a `model_bytes` weight file.

    The check writes and removes a probe file, because permission bits say nothing for root or on
    read-only mounts; it creates nothing that stays.
    """
    existing = os.path.abspath(output_dir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OSError(f"output_dir {output_dir!r} cannot be created: {existing!r} is a file, not a directory")
    try:
        handle, probe = tempfile.mkstemp(prefix=".ldifs_write_probe_", dir=existing)
        os.close(handle)
        os.remove(probe)
    except OSError as err:
        raise OSError(f"output_dir {output_dir!r} is not writable ({existing!r}: {err.strerror or err}); choose another --output_dir") from err
    if model_bytes:
        free = shutil.disk_usage(existing).free
        needed = CHECKPOINT_SIZE_FACTOR * model_bytes
        if free < needed:
            raise OSError(
                f"output_dir {output_dir!r} has {free / 2**20:.0f} MiB free, but a run of this model needs about {needed / 2**20:.0f} MiB "
                f"({CHECKPOINT_SIZE_FACTOR} x its {model_bytes / 2**20:.0f} MiB of weights: checkpoint with optimizer state, final model, export); "
                "free some space or choose another --output_dir"
            )
