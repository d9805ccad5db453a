"""Studies composed of library calls: λ selection on the validation split (Trainer.hyperparameter_search),
and the resumable grid of methods x fine-tune tasks (or sequences of tasks, `training.sequences`) x seeds
(Table 3, Table 2, figures), run locally or through submitit; the embedded demo is a preset of that grid
on the concept world (`demo.py`)."""

from .._lazy import lazy_exports

# Each public name and its module, imported on first use: importing the package stays cheap.
_EXPORTS = {
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
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
