"""What a fine-tuning run may do with its output folder: start, continue, reuse, replace, or refuse.

Everything here is decided before anything expensive: `check_output_dir` (writable, room on disk),
`plan_output_dir` (resume / refuse / overwrite, from the folder's `RunRecord` and markers).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from typing import Mapping

from .checkpoints import WEIGHT_FILES, checkpoint_problem, last_complete_checkpoint
from .lock import HOLDER_FILE, LOCK_FILE
from .record import RUN_RECORD_FILE, RunRecord, RunRecordError

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
# What the Trainer saves beside the model (the processor, the classifier's source files): rewritten by
# every run, so nothing of an earlier run lives on in them.
SAVED_BESIDE = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "processor_config.json",
    "preprocessor_config.json", "configuration_ldifs_clip.py", "modeling_ldifs_clip.py",
)
# A checkpoint holds the weights, AdamW's two moments (float32) and the final model and export come on
# top: about six copies of the base model's weight file is the least the output directory must hold.
CHECKPOINT_SIZE_FACTOR = 6
# What a sequence of tasks (`training.sequences`) writes in its folder beside its task folders.
SEQUENCE_FILE = "sequence.json"


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
        if SEQUENCE_FILE in entries:
            raise ValueError(
                f"output_dir {output_dir!r} holds a sequence of tasks ({SEQUENCE_FILE}), whose runs are in its task folders; a single run "
                "does not go beside them: choose another --output_dir"
            )
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
    try:
        earlier = RunRecord.load(output_dir)
    except RunRecordError as err:
        raise ValueError(f"{err}: output_dir {output_dir!r} cannot be continued; pass --overwrite_output_dir to start afresh, or choose another --output_dir") from None
    if earlier.alpha is not None:
        raise ValueError(
            f"output_dir {output_dir!r} holds a weight interpolation (alpha {earlier.alpha:g}) of {earlier.source_run!r}, not a run; "
            "choose another --output_dir or pass --overwrite_output_dir"
        )
    # A moved or copied run is read as where it is now (a sequence's task: with its siblings).
    in_sequence = os.path.isfile(os.path.join(os.path.dirname(os.path.abspath(output_dir)), SEQUENCE_FILE))
    recorded, earlier = earlier, earlier.moved_to(output_dir, with_siblings=in_sequence)
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
        _check_finished_files(output_dir, earlier)
        if earlier is not recorded:  # a moved or copied run: its record names where it is now
            earlier.save(output_dir)
        return OutputPlan(finished=earlier)
    if isinstance(resume_from_checkpoint, str):
        return OutputPlan(resume_from=resume_from_checkpoint)
    return OutputPlan(resume_from=last_complete_checkpoint(output_dir, earlier, check_files=True))


def _check_finished_files(output_dir: str, record: RunRecord) -> None:
    """A run recorded finished still holds its model and export: one deleted since is not returned as done."""
    export = os.path.join(output_dir, EXPORT_FOLDER) if record.export_dir is not None else None
    needed = [(output_dir, "config.json"), *((export, "config.json"),) * (export is not None)]
    missing = [os.path.join(folder, name) for folder, name in needed if not os.path.isfile(os.path.join(folder, name))]
    missing += [f"{folder}/ weights" for folder in (output_dir, export) if folder and not any(os.path.isfile(os.path.join(folder, w)) for w in WEIGHT_FILES)]
    if missing:
        raise ValueError(
            f"output_dir {output_dir!r} holds a run recorded as finished whose files are gone ({', '.join(missing[:3])}); restore them, "
            "or pass --overwrite_output_dir to train it again"
        )


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
    the export, the final model, state and results the Trainer wrote, and last the run record. Other
    files (a user's README.md, notes) and the folder's lock are left alone.

    A symbolic link among them is removed as a link: what it points to is never touched. The record
    goes last, so a removal that fails half-way (named in one line, with its path) leaves a folder that
    is still this run's, and the same command removes the rest."""
    entries = sorted(os.listdir(output_dir), key=lambda entry: entry == RUN_RECORD_FILE)
    for entry in entries:
        path = os.path.join(output_dir, entry)
        is_folder = os.path.isdir(path) and not os.path.islink(path)
        if entry in (LOCK_FILE, HOLDER_FILE):
            continue
        if (entry.startswith("checkpoint-") or entry == EXPORT_FOLDER) and (is_folder or os.path.islink(path)):
            _remove(path, is_folder)
        elif entry in (RUN_RECORD_FILE, *RUN_OUTPUTS) or (entry.startswith("model-") and entry.endswith(".safetensors")):
            _remove(path, is_folder)


def _remove(path: str, is_folder: bool) -> None:
    """Remove a file, a link (not what it points to) or a folder tree whose own links are removed as links."""
    def failed(function, failed_path, error):
        error = error if isinstance(error, BaseException) else error[1]
        raise OSError(
            f"--overwrite_output_dir could not remove {failed_path} ({getattr(error, 'strerror', None) or error}); nothing else of the "
            "earlier run was lost: fix its permissions (or remove it yourself) and rerun the same command"
        ) from None

    if is_folder:
        # rmtree unlinks the links inside the tree, never following them (onexc from Python 3.12, onerror before)
        shutil.rmtree(path, **({"onexc": failed} if sys.version_info >= (3, 12) else {"onerror": failed}))
        return
    try:
        os.remove(path)
    except OSError as err:
        failed(os.remove, path, err)


def check_output_dir(output_dir: str, model_bytes: int | None = None) -> None:
    """`output_dir` (or its nearest existing parent, when it does not exist yet) accepts a new file, and
    its disk has room for about `CHECKPOINT_SIZE_FACTOR` copies of a `model_bytes` weight file.

    The check writes and removes a probe file, because permission bits say nothing for root or on
    read-only mounts; it creates nothing that stays.
    """
    existing = _nearest_existing(output_dir)
    if not os.path.isdir(existing):
        raise OSError(f"output_dir {output_dir!r} cannot be created: {existing!r} is a file, not a directory")
    problem = unwritable(existing)
    if problem:
        raise OSError(f"output_dir {output_dir!r} is not writable ({existing!r}: {problem}); choose another --output_dir")
    if model_bytes:
        free = shutil.disk_usage(existing).free
        needed = CHECKPOINT_SIZE_FACTOR * model_bytes
        if free < needed:
            raise OSError(
                f"output_dir {output_dir!r} has {free / 2**20:.0f} MiB free, but a run of this model needs about {needed / 2**20:.0f} MiB "
                f"({CHECKPOINT_SIZE_FACTOR} x its {model_bytes / 2**20:.0f} MiB of weights: checkpoint with optimizer state, final model, export); "
                "free some space or choose another --output_dir"
            )


def _nearest_existing(path: str) -> str:
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    return existing


def unwritable(directory: str) -> str | None:
    """Why no file can be created in the existing `directory` (a probe file written and removed), or None."""
    try:
        handle, probe = tempfile.mkstemp(prefix=".ldifs_write_probe_", dir=directory)
        os.close(handle)
        os.remove(probe)
    except OSError as err:
        return err.strerror or str(err)
    return None


def folder_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be used as a folder to write into (created if missing): a file where it or a
    parent should be, or a nearest existing parent that takes no new file; None when it can."""
    existing = _nearest_existing(os.fspath(path))
    if not os.path.isdir(existing):
        return f"{existing!r} is a file, not a folder"
    problem = unwritable(existing)
    return f"{existing!r}: {problem}" if problem else None


# What the same command does after a write failed (`explain_write_failure`'s `rerun`).
RUN_RERUN = "it continues from the last complete checkpoint (a half-written one is skipped)"


def explain_write_failure(
    error: BaseException, output_dir: str, model_bytes: int | None = None, *, files: str = "the run's files", rerun: str = RUN_RERUN,
) -> OSError | None:
    """An `OSError` saying the output directory's disk is full when writing `files` failed with (almost)
    no space left there, or that a quota or file-size limit was reached, or None; `rerun` says what the
    same command does next. torch reports a full disk during a checkpoint as a bare RuntimeError ("file
    write failed"); the half-written checkpoint it leaves is skipped when the run resumes."""
    from safetensors import SafetensorError  # what a full disk raises while weights are written

    if not isinstance(error, (OSError, RuntimeError, SafetensorError)) or not os.path.isdir(output_dir):
        return None
    free = shutil.disk_usage(output_dir).free
    if free >= max(model_bytes or 0, 2**20):
        if not _is_a_write_limit(error):
            return None
        return OSError(
            f"writing {files} in output_dir {output_dir!r} failed: a disk quota or file-size limit was reached "
            f"({type(error).__name__}: {' '.join(str(error).split())[:200]}); raise the limit or free some space and rerun the same command: {rerun}"
        )
    return OSError(
        f"the disk of output_dir {output_dir!r} is full ({free / 2**20:.1f} MiB free) and writing {files} failed "
        f"({type(error).__name__}: {' '.join(str(error).split())[:200]}); free some space and rerun the same command: {rerun}"
    )


def _is_a_write_limit(error: BaseException) -> bool:
    """A quota or file-size limit stopped a write although the disk has room: the OS says so by errno;
    torch's checkpoint writer says only that the file ended short ("unexpected pos A vs B")."""
    if isinstance(error, OSError):
        return error.errno in (errno.EDQUOT, errno.EFBIG)
    return "unexpected pos" in str(error) and "inline_container" in str(error)


@contextlib.contextmanager
def write_failures_explained(output_dir: str, **words):
    """A failure while a command writes into `output_dir` (a run's checkpoints, final model or export; a
    report), with the disk full or a quota reached, is reported as that, in one line naming `output_dir`
    (`words`: `explain_write_failure`'s `files` and `rerun`)."""
    try:
        yield
    except Exception as err:
        explained = explain_write_failure(err, output_dir, **words)
        if explained is None:
            raise
        raise explained from err
