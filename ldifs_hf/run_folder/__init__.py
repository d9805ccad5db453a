"""Everything about a run's folder, at the bottom layer: training, evaluation and the study use it.

- `record.py`: `RunRecord`, the one reader and writer of `ldifs_run.json`;
- `checkpoints.py`: complete, damaged and foreign `checkpoint-N` folders; the last complete one;
- `plan.py`: the markers of a run, `check_output_dir` (writable, room) and `plan_output_dir`
  (resume / reuse / refuse / overwrite, never deleting an input or a file no run recorded);
- `lock.py`: `FolderLock`, one writer per folder.
"""

from .checkpoints import (
    CHECKPOINT_DIR, TRAINER_STATE, WEIGHT_FILES, checkpoint_folders, checkpoint_problem, damaged_file, foreign_checkpoint,
    last_complete_checkpoint,
)
from .lock import FolderBusyError, FolderLock, describe_holder, read_holder
from .plan import (
    CHECKPOINT_SIZE_FACTOR, EXPORT_FOLDER, RUN_MARKERS, RUN_OUTPUTS, START_HEAD_FILE, OutputPlan, changed_settings, check_output_dir, plan_output_dir,
    remove_earlier_run,
)
from .record import RUN_RECORD_FILE, RunRecord

__all__ = [
    "CHECKPOINT_DIR", "CHECKPOINT_SIZE_FACTOR", "EXPORT_FOLDER", "RUN_MARKERS", "RUN_OUTPUTS", "RUN_RECORD_FILE", "START_HEAD_FILE", "TRAINER_STATE",
    "WEIGHT_FILES", "FolderBusyError", "FolderLock", "OutputPlan", "RunRecord", "changed_settings", "check_output_dir",
    "checkpoint_folders", "checkpoint_problem", "damaged_file", "describe_holder", "foreign_checkpoint", "last_complete_checkpoint",
    "plan_output_dir", "read_holder", "remove_earlier_run",
]
