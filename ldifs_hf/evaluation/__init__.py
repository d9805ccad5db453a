"""Concept-forgetting measurement: checkpoints, the evaluator (ZS/LP accuracy, Δ, A_FT), distances,
task sequences (eq. 5), the training callback, reports, and one evaluation end to end (`run_evaluation`)."""

from .._lazy import lazy_exports

# Each public name and its module, imported on first use: importing the package stays cheap.
_EXPORTS = {
    "ConceptForgettingCallback": ".callback",
    "CheckpointEntry": ".checkpoints",
    "CheckpointError": ".checkpoints",
    "load_checkpoint": ".checkpoints",
    "resolve_checkpoints": ".checkpoints",
    "evaluate_sequence": ".continual",
    "sequence_deltas": ".continual",
    "feature_distance": ".distances",
    "parameter_distance": ".distances",
    "ConceptForgettingEvaluator": ".evaluator",
    "EvaluatorSettings": ".settings",
    "evaluate_checkpoints": ".run",
    "write_report": ".report",
    "EvaluationArguments": ".run",
    "EvaluationResult": ".run",
    "evaluate": ".run",
    "run_evaluation": ".run",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
