"""Studies composed of library calls: sequences of tasks (eq. 5, Table 2), λ selection on the
validation split (Trainer.hyperparameter_search), and the resumable grid of methods x fine-tune tasks
x seeds (Table 3, figures), run locally or through submitit."""

from .lambda_search import DEFAULT_LAMBDA_GRID, LambdaSearchResult, run_lambda_search, search_lambda
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
    "DEFAULT_LAMBDA_GRID",
    "LambdaSearchResult",
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
    "run_lambda_search",
    "run_sequence",
    "run_study",
    "search_lambda",
    "sequence",
    "sequence_table",
    "write_sequence_report",
]
