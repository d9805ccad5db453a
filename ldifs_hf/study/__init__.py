"""Studies composed of library calls: sequences of tasks (eq. 5, Table 2) and the resumable grid of
methods x fine-tune tasks x seeds (Table 3, figures), run locally or through submitit."""

from .runner import Cell, StudyArguments, StudyPlan, StudyResult, describe_plan, plan_study, run_cell, run_study
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
from .tables import StudyTables, assemble_tables

__all__ = [
    "REFERENCES",
    "Cell",
    "SequenceArguments",
    "SequenceResult",
    "StudyArguments",
    "StudyPlan",
    "StudyResult",
    "StudyTables",
    "assemble_tables",
    "describe_plan",
    "evaluate_sequence_run",
    "plan_study",
    "run_cell",
    "run_sequence",
    "run_study",
    "sequence",
    "sequence_table",
    "write_sequence_report",
]
