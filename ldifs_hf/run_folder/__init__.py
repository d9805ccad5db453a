"""Everything about a run's folder, at the bottom layer: training, evaluation and the study use it.

- `record.py`: `RunRecord`, the one reader and writer of `ldifs_run.json`;
- `checkpoints.py`: complete, damaged and foreign `checkpoint-N` folders; the last complete one;
- `plan.py`: the markers of a run, `check_output_dir` (writable, room) and `plan_output_dir`
  (resume / reuse / refuse / overwrite, never deleting an input or a file no run recorded);
- `lock.py`: `FolderLock`, one writer per folder.
"""

from .._lazy import lazy_exports

# Each public name and its module, imported on first use.
_EXPORTS = {
    "CHECKPOINT_DIR": ".checkpoints",
    "TRAINER_STATE": ".checkpoints",
    "WEIGHT_FILES": ".checkpoints",
    "checkpoint_folders": ".checkpoints",
    "checkpoint_problem": ".checkpoints",
    "damaged_file": ".checkpoints",
    "file_damage": ".checkpoints",
    "foreign_checkpoint": ".checkpoints",
    "last_complete_checkpoint": ".checkpoints",
    "FolderBusyError": ".lock",
    "FolderLock": ".lock",
    "describe_holder": ".lock",
    "read_holder": ".lock",
    "CHECKPOINT_SIZE_FACTOR": ".plan",
    "EXPORT_FOLDER": ".plan",
    "RUN_MARKERS": ".plan",
    "RUN_OUTPUTS": ".plan",
    "SAVED_BESIDE": ".plan",
    "SEQUENCE_FILE": ".plan",
    "START_HEAD_FILE": ".plan",
    "OutputPlan": ".plan",
    "changed_settings": ".plan",
    "check_output_dir": ".plan",
    "explain_write_failure": ".plan",
    "folder_problem": ".plan",
    "plan_output_dir": ".plan",
    "remove_earlier_run": ".plan",
    "write_failures_explained": ".plan",
    "RUN_RECORD_FILE": ".record",
    "RunRecord": ".record",
    "RunRecordError": ".record",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
