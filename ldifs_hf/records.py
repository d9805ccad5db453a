"""The public import path of `RunRecord` (`from ldifs_hf.records import RunRecord`); it lives in
`ldifs_hf.run_folder`, with everything else about a run's folder."""

from .run_folder.record import RUN_RECORD_FILE, RunRecord

__all__ = ["RUN_RECORD_FILE", "RunRecord"]
