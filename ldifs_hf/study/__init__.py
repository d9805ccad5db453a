"""Studies composed of library calls: sequences of tasks (eq. 5, Table 2; the sequence itself is
`training.sequences`), λ selection on the
validation split (Trainer.hyperparameter_search), and the resumable grid of methods x fine-tune tasks
x seeds (Table 3, figures), run locally or through submitit; the embedded demo is a preset of that grid
on the concept world (`demo.py`)."""

from .._lazy import lazy_exports

# Each public name and its module, imported on first use: importing the package stays cheap.
_EXPORTS = {
    # Sequences of tasks are a training concept (training/sequences.py); the study composes them.
    "REFERENCES": "..training.sequences",
    "SequenceArguments": "..training.sequences",
    "SequenceResult": "..training.sequences",
    "evaluate_sequence_run": "..training.sequences",
    "run_sequence": "..training.sequences",
    "sequence": "..training.sequences",
    "sequence_table": "..training.sequences",
    "write_sequence_report": "..training.sequences",
    "DEFAULT_LAMBDA_GRID": ".lambda_search",
    "LambdaSearchResult": ".lambda_search",
    "run_lambda_search": ".lambda_search",
    "search_lambda": ".lambda_search",
    "DemoArguments": ".demo",
    "DemoResult": ".demo",
    "run_demo": ".demo",
    "Cell": ".arguments",
    "StudyArguments": ".arguments",
    "StudyPlan": ".runner",
    "StudyResult": ".runner",
    "StudyRun": ".runner",
    "describe_plan": ".runner",
    "plan_study": ".runner",
    "run_cell": ".runner",
    "run_study": ".runner",
    "StudyTables": ".tables",
    "assemble_tables": ".tables",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "DEFAULT_LAMBDA_GRID",
    "LambdaSearchResult",
    "REFERENCES",
    "Cell",
    "DemoArguments",
    "DemoResult",
    "SequenceArguments",
    "SequenceResult",
    "StudyArguments",
    "StudyPlan",
    "StudyResult",
    "StudyRun",
    "StudyTables",
    "assemble_tables",
    "describe_plan",
    "evaluate_sequence_run",
    "plan_study",
    "run_cell",
    "run_demo",
    "run_lambda_search",
    "run_sequence",
    "run_study",
    "search_lambda",
    "sequence",
    "sequence_table",
    "write_sequence_report",
]
