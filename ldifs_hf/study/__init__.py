"""Studies composed of library calls: sequences of tasks (eq. 5, Table 2)."""

from .sequence import (
    REFERENCES,
    SequenceArguments,
    SequenceResult,
    evaluate_sequence_run,
    run_sequence,
    sequence,
    sequence_table,
    write_sequence_report,
)

__all__ = [
    "REFERENCES",
    "SequenceArguments",
    "SequenceResult",
    "evaluate_sequence_run",
    "run_sequence",
    "sequence",
    "sequence_table",
    "write_sequence_report",
]
