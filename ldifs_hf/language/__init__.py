"""Forgetting in causal language models: a checkpoint's lm-evaluation-harness scores against its base
model's (Δ per task), its fine-tuning task's score (A_FT) and its held-out loss on a retain set, as
`evaluate_language_model(...)`; SFT under a regularizer in a run folder (`finetune_language_model`); and the
embedded skills world (`language.skills`) to show it offline.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "LanguageEvaluationArguments": ".run",
    "LanguageEvaluationResult": ".run",
    "evaluate_language_model": ".run",
    "run_language_evaluation": ".run",
    "finetune_language_model": ".finetune",
    "sft_method": ".finetune",
    "RetainLoss": ".retain",
    "held_out_loss": ".retain",
    "load_retain_texts": ".retain",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)

