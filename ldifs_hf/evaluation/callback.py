"""`ConceptForgettingCallback`: measure forgetting on other benchmarks at fixed fractions of training.

    evaluator = ConceptForgettingEvaluator.from_pretrained(pretrained_dir, EvaluatorSettings(dataset_paths=...))
    callback = ConceptForgettingCallback(evaluator, ["cifar10", "mnist"], finetune_benchmark="eurosat")
    trainer = LDIFSTrainer(..., callbacks=[callback]); callback.set_trainer(trainer); trainer.train()

At 0, 20, ..., 100 % of the optimisation steps (every `every_percent`), the model being trained is
scored (ZS/LP accuracy and their Δ against the pretrained model, A_FT, distances to the weights at the
start of training), with the evaluator's `EvaluatorSettings` (`finetune --forgetting_*` builds them
with `DataArguments.forgetting_settings`). Each row goes to the Trainer's loggers (TensorBoard, W&B, ... and
`state.log_history`) and to `forgetting_log.jsonl` in the output directory; `forgetting_log.json`
and the plots are written when training ends.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from torch import nn
from transformers import Trainer, TrainerCallback

from ..modeling import VisionSnapshot
from .evaluator import ConceptForgettingEvaluator
from .settings import check_every_percent

LOG_FILE = "forgetting_log.jsonl"
SUMMARY_FILE = "forgetting_log.json"
REFERENCES = ("initial", "pretrained")


def evaluation_schedule(max_steps: int, every_percent: float) -> dict[int, list[float]]:
    """Optimisation step -> the percentages of training evaluated there (0 and 100 % always included)."""
    check_every_percent(every_percent)
    if max_steps < 1:
        raise ValueError(f"the concept-forgetting callback needs a known number of training steps, got max_steps={max_steps}")
    percents, p = [], 0.0
    while p < 100 - 1e-9:
        percents.append(round(p, 6))
        p += every_percent
    percents.append(100.0)
    schedule: dict[int, list[float]] = {}
    for percent in percents:
        schedule.setdefault(int(round(max_steps * percent / 100)), []).append(percent)
    return schedule


def flatten_record(record: dict, prefix: str = "forgetting") -> dict[str, float]:
    """A record as flat scalar metrics for the Trainer's loggers: `forgetting/<bench>/delta_lp`, ..."""
    flat = {}
    for name, values in record.get("eval", {}).items():
        for metric, value in values.items():
            flat[f"{prefix}/{name}/{metric}"] = value
    for metric in ("percent", "a_ft", "param_distance", "feature_distance"):
        if record.get(metric) is not None:
            flat[f"{prefix}/{metric}"] = record[metric]
    return flat


class ConceptForgettingCallback(TrainerCallback):
    """Evaluate concept forgetting every `every_percent` % of training (0 % and 100 % included).

    Args:
        evaluator: a `ConceptForgettingEvaluator` (pretrained model, data, LP settings).
        benchmarks: the benchmarks to score the model on.
        every_percent: spacing of the evaluation points in percent of `state.max_steps` (default 20).
        finetune_benchmark: the task being fine-tuned on; its A_FT is logged when given.
        trainer: the Trainer, whose `log` sends the rows to its loggers; also settable with
            `set_trainer`. Without it rows still reach `state.log_history` and the files. Giving it
            before `train()` also fixes θ0 ("initial") as the weights at that moment, which a resumed
            run needs: by `on_train_begin` the checkpoint's weights have been loaded.
        output_dir: where the log files go (default: `args.output_dir`).
        distances: also log ‖θ−θ0‖² and the feature distance.
        reference: θ0 of the distances: "initial" (the weights when training starts; for a sequence of
            tasks, the previous task's model) or "pretrained" (the evaluator's pretrained model).
        method: a name for the run in the rows and plots (default: `args.method` when present).
        plot: write the PNG plots at the end of training.
    """

    def __init__(
        self,
        evaluator: ConceptForgettingEvaluator,
        benchmarks: Sequence[str],
        *,
        every_percent: float = 20.0,
        finetune_benchmark: str | None = None,
        trainer: Trainer | None = None,
        output_dir: str | None = None,
        distances: bool = True,
        reference: str = "initial",
        method: str | None = None,
        plot: bool = True,
    ):
        if reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
        if not benchmarks:
            raise ValueError("the concept-forgetting callback needs at least one benchmark to evaluate on")
        evaluation_schedule(1, every_percent)  # validates every_percent now rather than at train time
        self.evaluator, self.benchmarks = evaluator, list(benchmarks)
        self.every_percent, self.finetune_benchmark = every_percent, finetune_benchmark
        self.trainer, self.output_dir = trainer, output_dir
        self.distances, self.reference, self.method, self.plot = distances, reference, method, plot
        self.rows: list[dict] = []
        self._schedule: dict[int, list[float]] = {}
        self._reference_model: nn.Module | None = None
        if trainer is not None:
            self.set_trainer(trainer)

    def set_trainer(self, trainer: Trainer) -> None:
        self.trainer = trainer
        if self.distances and self.reference == "initial" and self._reference_model is None:
            self._reference_model = VisionSnapshot(trainer.model)

    # -- events --------------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._schedule = evaluation_schedule(state.max_steps, self.every_percent)
        self.method = self.method or getattr(args, "method", None) or "finetuned"
        if self.distances and self.reference == "initial" and self._reference_model is None and model is not None:
            if state.global_step > 0:
                raise ValueError(
                    f"training resumed at step {state.global_step}, so the weights at the start of training are gone: "
                    "create ConceptForgettingCallback with trainer= (or call set_trainer) before train() to fix θ0"
                )
            self._reference_model = VisionSnapshot(model)
        if state.global_step == 0:
            self._maybe_evaluate(args, state, model)
        return control

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._maybe_evaluate(args, state, model)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.rows:
            output_dir = self._output_dir(args)
            with open(os.path.join(output_dir, SUMMARY_FILE), "w") as f:
                json.dump(self.rows, f, indent=2)
            if self.plot:
                from .report import plot_deltas, plot_distances

                plot_deltas(self.rows, os.path.join(output_dir, "forgetting_deltas.png"))
                if self.distances:
                    plot_distances(self.rows, os.path.join(output_dir, "forgetting_distances.png"))
        return control

    # -- work ---------------------------------------------------------------------------------

    def _maybe_evaluate(self, args, state, model) -> None:
        percents = self._schedule.pop(state.global_step, None)
        # Only the main process evaluates; the others wait for it at their next collective.
        if not percents or model is None or not state.is_world_process_zero:
            return
        reference = self._reference_model if self.reference == "initial" else None
        record = self.evaluator.evaluate(
            model,
            self.benchmarks,
            key=f"training-step-{state.global_step}",
            finetune_benchmark=self.finetune_benchmark,
            reference=reference,
            distances=self.distances,
        )
        self.evaluator.clear_cache()  # the weights move on: these features are never reused
        for percent in percents:
            row = {
                "method": self.method,
                "finetune_task": self.finetune_benchmark,
                "percent": percent,
                "step": state.global_step,
                "epoch": state.epoch,
                **record,
            }
            self.rows.append(row)
            self._write(args, row)
            self._log(state, row)

    def _output_dir(self, args) -> str:
        output_dir = self.output_dir or args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        return output_dir

    def _write(self, args, row: dict) -> None:
        with open(os.path.join(self._output_dir(args), LOG_FILE), "a") as f:
            f.write(json.dumps(row) + "\n")

    def _log(self, state, row: dict) -> None:
        metrics = flatten_record(row)
        if self.trainer is not None:
            # The base Trainer.log: a subclass's override (e.g. LDIFSTrainer merging its running loss
            # terms) must not have its averages consumed by a forgetting row. Logging clears the step's
            # `should_log` (the callbacks' on_log), which would drop the step's own loss entry: kept as it was.
            control = self.trainer.control
            should_log = control.should_log
            Trainer.log(self.trainer, metrics)
            self.trainer.control.should_log = should_log
        else:
            state.log_history.append({**metrics, "step": state.global_step})
