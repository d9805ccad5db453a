"""`LDIFSTrainer`: a `transformers.Trainer` whose loss adds an L2SP or LDIFS term to the objective.

Works for any HF model that returns `hidden_states` (CLIP classifiers, FLYP's CLIPModel, a
ViTForImageClassification, ...). The frozen teacher (LDIFS) and the reference weights (L2SP) are
snapshots of the model's image encoder taken when the trainer is built: for a sequence of tasks
that is the model after the previous task, as in the official code; pass `teacher_model=` (e.g. the
pretrained model) to anchor elsewhere. Neither is a submodule of the trained model, so they never
enter the optimizer, the DDP wrapper or a checkpoint.
"""

from __future__ import annotations

import copy
import inspect
from collections import defaultdict

import torch
from torch import nn
from transformers import Trainer

from ..modeling import encoder_parameters, hidden_states_of, image_encoder
from ..regularizers import default_ldifs_layers, l2sp_penalty, ldifs_distance
from .arguments import LDIFSTrainingArguments
from .methods import get_method
from .objectives import OBJECTIVES

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _num_hidden_layers(encoder: nn.Module) -> int | None:
    config = getattr(encoder, "config", None)
    config = getattr(config, "vision_config", config)
    return getattr(config, "num_hidden_layers", None)


def _accepts_hidden_states(module: nn.Module) -> bool:
    params = inspect.signature(module.forward).parameters
    return "output_hidden_states" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


class LDIFSTrainer(Trainer):
    """Trainer for the paper's methods; `args.method`/`args.regularizer` choose objective and term.

    Extra keyword arguments:
        teacher_model: model whose image encoder is the LDIFS teacher and the L2SP anchor
            (default: a frozen copy of `model` as given).
        objective: "ce", "clip-contrastive" or "clip-ce" (default: the method's, else "ce").

    Logged per term: `loss_task` (the objective), `loss_ldifs` (the unweighted feature distance),
    `loss_l2sp` (the unweighted squared parameter distance); prefixed `eval_` in evaluation.
    """

    def __init__(self, model=None, args: LDIFSTrainingArguments | None = None, *trainer_args, teacher_model=None, objective: str | None = None, **kwargs):
        if args is None:
            args = LDIFSTrainingArguments(output_dir="tmp_trainer")
        if not isinstance(args, LDIFSTrainingArguments):
            raise TypeError(f"LDIFSTrainer needs LDIFSTrainingArguments, got {type(args).__name__}")
        spec = get_method(args.method) if args.method else None
        self.objective = objective or (spec.objective if spec else "ce")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {tuple(OBJECTIVES)}, got {self.objective!r}")
        super().__init__(model, args, *trainer_args, **kwargs)
        # compute_loss returns batch means, so let the Trainer divide by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        anchor = image_encoder(teacher_model if teacher_model is not None else self.model)
        self.regularizer = args.regularizer
        self.teacher = None
        if self.regularizer == "ldifs":
            self._setup_ldifs(anchor)
        elif self.regularizer == "l2sp":
            source = teacher_model if teacher_model is not None else self.model
            self._l2sp_reference = [p.detach().clone().to(self.args.device) for p in encoder_parameters(source)]
            if len(self._l2sp_reference) != len(encoder_parameters(self.model)):
                raise ValueError("teacher_model's image encoder does not have the same parameters as the model's")

    # -- set-up ---------------------------------------------------------------------------------

    def _setup_ldifs(self, anchor: nn.Module) -> None:
        encoder = image_encoder(self.model)
        if not _accepts_hidden_states(encoder):
            raise ValueError(
                f"LDIFS needs a model that returns hidden_states, but {type(encoder).__name__}.forward takes no "
                "output_hidden_states; use regularizer 'l2sp' or 'none' for this model"
            )
        num_layers = _num_hidden_layers(encoder)
        if self.args.ldifs_layers is not None:
            self.ldifs_layers = list(self.args.ldifs_layers)
        elif num_layers is not None:
            self.ldifs_layers = default_ldifs_layers(num_layers)
        else:
            raise ValueError(f"cannot infer the number of blocks of {type(encoder).__name__}; set ldifs_layers explicitly")
        if num_layers is not None and max(self.ldifs_layers) > num_layers:
            raise ValueError(
                f"ldifs layer index {max(self.ldifs_layers)} out of range: the model has {num_layers} blocks, "
                f"so hidden_states indices are 0..{num_layers}"
            )
        teacher = copy.deepcopy(anchor)
        teacher.requires_grad_(False)
        teacher.eval()
        if self.args.teacher_dtype is not None:
            teacher.to(_DTYPES[self.args.teacher_dtype])
        if self.is_deepspeed_enabled:
            raise NotImplementedError("LDIFS with DeepSpeed is not supported yet; use DDP or FSDP through accelerate")
        # Evaluation mode: moved to the device and wrapped for mixed precision, never in DDP.
        self.teacher = self.accelerator.prepare_model(teacher, evaluation_mode=True)

    # -- loss -----------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        need_hidden = self.regularizer == "ldifs"
        task_loss, outputs = OBJECTIVES[self.objective](model, inputs, need_hidden)
        mode = "train" if model.training else "eval"
        metrics = self._metrics[mode]
        metrics["loss_task"].append(task_loss.detach())
        loss = task_loss
        if self.regularizer == "ldifs":
            student = hidden_states_of(outputs)
            if student is None:
                raise ValueError(f"{type(self.accelerator.unwrap_model(model)).__name__} returned no hidden_states; LDIFS needs them")
            pixel_values = inputs["pixel_values"]
            with torch.no_grad():
                teacher_dtype = next(self.teacher.parameters()).dtype
                teacher = self.teacher(pixel_values=pixel_values.to(teacher_dtype), output_hidden_states=True).hidden_states
            distance = ldifs_distance(student, teacher, self.ldifs_layers, self.args.ldifs_normalization)
            metrics["loss_ldifs"].append(distance.detach())
            loss = loss + self.args.ldifs_lambda * distance
        elif self.regularizer == "l2sp":
            params = encoder_parameters(self.accelerator.unwrap_model(model))
            penalty = l2sp_penalty(params, self._l2sp_reference)
            metrics["loss_l2sp"].append(penalty.detach())
            loss = loss + self.args.l2sp_lambda * penalty
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        prefix = "eval_" if mode == "eval" else ""
        for name, values in self._metrics[mode].items():
            mean = self.accelerator.gather_for_metrics(torch.stack(values).mean().reshape(1)).mean()
            logs[prefix + name] = round(mean.item(), 6)
        self._metrics[mode].clear()
        super().log(logs, start_time)


