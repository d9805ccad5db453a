"""Concept-forgetting measurement: checkpoints, the evaluator (ZS/LP accuracy, Δ, A_FT), distances,
task sequences (eq. 5), the training callback, reports, and one evaluation end to end (`run_evaluation`)."""

from .callback import ConceptForgettingCallback
from .checkpoints import CheckpointEntry, CheckpointError, load_checkpoint, resolve_checkpoints
from .continual import evaluate_sequence, sequence_deltas
from .distances import feature_distance, parameter_distance
from .evaluator import ConceptForgettingEvaluator, EvaluatorSettings
from .report import write_report
from .run import EvaluationArguments, EvaluationResult, evaluate, evaluate_checkpoints, run_evaluation

__all__ = [
    "CheckpointEntry",
    "CheckpointError",
    "ConceptForgettingCallback",
    "ConceptForgettingEvaluator",
    "EvaluationArguments",
    "EvaluationResult",
    "EvaluatorSettings",
    "evaluate",
    "evaluate_checkpoints",
    "evaluate_sequence",
    "feature_distance",
    "load_checkpoint",
    "parameter_distance",
    "resolve_checkpoints",
    "run_evaluation",
    "sequence_deltas",
    "write_report",
]
