"""`ldifs_hf.records`: the import path `RunRecord` had before it moved to `ldifs_hf.run_folder`."""

# Kept because user scripts import `from ldifs_hf.records import RunRecord` (the public path of earlier releases).
from .run_folder.record import RUN_RECORD_FILE, RunRecord  # noqa: F401
