"""A run folder's `checkpoint-N` folders: which are complete, which are damaged, which another run wrote.

Resume (`last_complete_checkpoint`) and evaluation (`checkpoint_problem`, `foreign_checkpoint`) ask
the same questions here, without loading a model.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import zipfile

from .record import RUN_RECORD_FILE, RunRecord

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
# Any of these makes a directory hold model weights (single file or sharded, safetensors or torch).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TRAINER_STATE = "trainer_state.json"
# What makes two runs the same run, as far as a checkpoint's numbers are concerned (and the regularizer's
# settings and `settings`, those both records have).
IDENTITY_FIELDS = ("method", "dataset", "base_model", "regularizer")


def checkpoint_problem(path: str, *, check_files: bool = False) -> str | None:
    """Why a Trainer `checkpoint-N` folder cannot be used, or None when it is complete.

    The Trainer writes a checkpoint's weights and config, then the optimizer, scheduler and RNG state,
    and `trainer_state.json` last; so a folder whose trainer state is missing or unreadable was left
    half-written (a kill or a full disk during the save). With `check_files` (resume, which reads them
    all), every file the Trainer wrote is also checked for damage (`damaged_file`).
    """
    if not os.path.isfile(os.path.join(path, "config.json")):
        return "it has no config.json (a save was interrupted)"
    if not any(os.path.isfile(os.path.join(path, f)) for f in WEIGHT_FILES):
        return f"it has no model weights ({' or '.join(WEIGHT_FILES[::2])}; a save was interrupted)"
    try:
        with open(os.path.join(path, TRAINER_STATE)) as f:
            state = json.load(f)
    except FileNotFoundError:
        return f"it has no {TRAINER_STATE}, which the Trainer writes last (a save was interrupted)"
    except (OSError, ValueError) as err:
        return f"its {TRAINER_STATE} is unreadable ({err}; a save was interrupted)"
    problem = _state_problem(path, state) or _record_problem(path)
    if problem is not None:
        return problem
    return damaged_file(path) if check_files else None


def _state_problem(path: str, state) -> str | None:
    """Why a parsed `trainer_state.json` cannot be trusted: not the Trainer's (no whole-number
    `global_step`), or a step that is not the folder's own `checkpoint-N` (an edited or copied state,
    which would make the Trainer resume at the wrong step or take a short run for a finished one)."""
    step = state.get("global_step") if isinstance(state, dict) else None
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return f"its {TRAINER_STATE} is not a Trainer state (no whole-number global_step; got {json.dumps(state)[:80]})"
    match = CHECKPOINT_DIR.match(os.path.basename(os.path.normpath(path)))
    if match and int(match.group(1)) != step:
        return f"its {TRAINER_STATE} says global_step {step}, not the folder's step {match.group(1)} (edited or copied from another checkpoint)"
    return None


def _record_problem(path: str) -> str | None:
    """Why the run record a checkpoint carries (`training.guards.RunIdentityCallback`) cannot be read, or None."""
    if not os.path.isfile(os.path.join(path, RUN_RECORD_FILE)):
        return None
    try:
        RunRecord.load(path)
    except (OSError, ValueError) as err:
        return str(err)
    return None


def damaged_file(path: str) -> str | None:
    """'<file> is damaged (why)' for the first damaged file of a checkpoint folder, or None.

    Checked without loading: JSON files parse; a safetensors file's header parses and its size is what
    the header promises (a truncated copy is not); a torch file (`torch.save`'s zip) has an intact
    directory and matching CRCs.
    """
    for name in sorted(os.listdir(path)):
        file = os.path.join(path, name)
        if os.path.isfile(file) and (problem := file_damage(file)) is not None:
            return problem
    return None


def file_damage(file: str) -> str | None:
    """'<file> is damaged (why)' when a JSON, safetensors or torch file fails the checks of `damaged_file`
    (other files are not checked), else None."""
    try:
        if file.endswith(".json"):
            with open(file) as f:
                json.load(f)
        elif file.endswith(".safetensors"):
            _check_safetensors(file)
        elif file.endswith((".pt", ".pth", ".bin")):
            with zipfile.ZipFile(file) as archive:
                bad = archive.testzip()
            if bad is not None:
                raise ValueError(f"its entry {bad} fails its CRC check")
    except (OSError, ValueError, zipfile.BadZipFile, struct.error) as err:
        return f"{file} is damaged ({' '.join(str(err).split())[:200]})"
    return None


def _check_safetensors(file: str) -> None:
    size = os.path.getsize(file)
    with open(file, "rb") as f:
        (header_bytes,) = struct.unpack("<Q", f.read(8))
        if header_bytes > size - 8:
            raise ValueError(f"its header claims {header_bytes} bytes but the file has {size}")
        header = json.loads(f.read(header_bytes))
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if size != 8 + header_bytes + end:
        raise ValueError(f"it has {size} bytes, its header describes {8 + header_bytes + end} (truncated or padded)")


def checkpoint_folders(run_dir: str) -> list[tuple[int, str]]:
    """(step, path) of the run directory's `checkpoint-N` folders, by step."""
    return sorted(
        (int(m.group(1)), os.path.join(run_dir, name)) for name in os.listdir(run_dir)
        if (m := CHECKPOINT_DIR.match(name)) and os.path.isdir(os.path.join(run_dir, name))
    )


def foreign_checkpoint(checkpoint: str, run: RunRecord | None) -> str | None:
    """Why a `checkpoint-N` belongs to another run than `run` (its directory's record), or None. A
    checkpoint carries the record of the run that saved it (`training.guards.RunIdentityCallback`);
    one without a record is taken as its directory's."""
    if run is None or not os.path.isfile(os.path.join(checkpoint, RUN_RECORD_FILE)):
        return None
    own = RunRecord.load(checkpoint)
    differ = [f"{n} {getattr(own, n)!r} vs {getattr(run, n)!r}" for n in IDENTITY_FIELDS if getattr(own, n) != getattr(run, n)]
    # The regularizer's settings, those both records have (a record of the earlier format has fewer).
    differ += [
        f"{key} {own.regularizer_settings[key]!r} vs {run.regularizer_settings[key]!r}"
        for key in run.regularizer_settings if key in own.regularizer_settings and own.regularizer_settings[key] != run.regularizer_settings[key]
    ]
    if own.settings and run.settings:
        differ += [
            f"{key} {own.settings[key]!r} vs {run.settings[key]!r}"
            for key in run.settings if key in own.settings and own.settings[key] != run.settings[key]
        ]
    if not differ:
        return None
    return f"another run wrote it ({own.method} on {own.dataset}, not {run.method} on {run.dataset}; {', '.join(differ[:3])})"


def last_complete_checkpoint(run_dir: str, run: RunRecord | None = None, *, check_files: bool = False) -> str | None:
    """The run directory's usable `checkpoint-N` with the highest N, or None.

    Half-written and (with `check_files`) damaged ones are skipped with a one-line warning each, so
    that resume falls back to the one before. A checkpoint written by another run than `run` is
    refused (ValueError naming it): resuming from it would credit that run's training to this one.
    """
    for _, path in reversed(checkpoint_folders(run_dir)):
        problem = checkpoint_problem(path, check_files=check_files)
        if problem is None:
            foreign = foreign_checkpoint(path, run)
            if foreign:
                raise ValueError(
                    f"{path} cannot be resumed from: {foreign}; move it out of {run_dir!r}, or pass --overwrite_output_dir "
                    "to start this run afresh"
                )
            return path
        logger.warning("skipping %s: %s", path, problem)
    return None
