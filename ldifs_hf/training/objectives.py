"""The objective registry (`OBJECTIVES`, read by `methods.py` and the trainer): each objective's
collator and its loss (image-label batches with cross-entropy, image-text batches for FLYP's
contrastive loss and FLYP-CE).

Prompts (every template of every class) are tokenised once, when the collator is built; each batch
only picks rows, so the text side costs nothing per step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..benchmarks.registry import fill_templates
from ..benchmarks.transforms import collate_images


class _PromptBank:
    """Token ids of every template filled with every class name: [C, T, L]."""

    def __init__(self, tokenizer, class_names: Sequence[str], templates: Sequence[str], max_length: int | None = None):
        if not class_names or not templates:
            raise ValueError("prompts need at least one class name and one template")
        texts = [prompt for c in class_names for prompt in fill_templates(c, templates)]
        max_length = max_length or min(getattr(tokenizer, "model_max_length", 77), 77)
        enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
        shape = (len(class_names), len(templates), -1)
        self.input_ids = enc["input_ids"].reshape(shape)
        self.attention_mask = enc["attention_mask"].reshape(shape)
        self.num_templates = len(templates)

    def pick(self, classes: torch.Tensor, template_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        ids = self.input_ids[classes, template_ids]
        mask = self.attention_mask[classes, template_ids]
        # Trim the padding every row shares, so the text tower sees no wasted positions.
        width = int(mask.sum(dim=1).max())
        return {"input_ids": ids[:, :width], "attention_mask": mask[:, :width]}


class CaptionCollator:
    """FLYP: each image is paired with its class name in one random template."""

    def __init__(self, tokenizer, class_names, templates, seed: int = 0, max_length: int | None = None):
        self.bank = _PromptBank(tokenizer, class_names, templates, max_length)
        self.rng = random.Random(seed)

    def __call__(self, examples):
        batch = collate_images(examples)
        templates = torch.tensor([self.rng.randrange(self.bank.num_templates) for _ in examples])
        return {**batch, **self.bank.pick(batch["labels"], templates)}


class ClassPromptCollator:
    """FLYP-CE: one random template per class per batch; `input_ids` has one row per class."""

    def __init__(self, tokenizer, class_names, templates, seed: int = 0, max_length: int | None = None):
        self.bank = _PromptBank(tokenizer, class_names, templates, max_length)
        self.num_classes = len(class_names)
        self.rng = random.Random(seed)

    def __call__(self, examples):
        batch = collate_images(examples)
        templates = torch.tensor([self.rng.randrange(self.bank.num_templates) for _ in range(self.num_classes)])
        return {**batch, **self.bank.pick(torch.arange(self.num_classes), templates)}


# -- losses: (model, inputs) -> (loss, outputs) --------------------------------------------------


def _clip_forward(model, inputs, **kwargs):
    return model(
        input_ids=inputs["input_ids"],
        attention_mask=inputs.get("attention_mask"),
        pixel_values=inputs["pixel_values"],
        **kwargs,
    )


def _clip_contrastive_loss(model, inputs):
    # FLYP: CLIP's symmetric loss with arange targets, images vs a prompt of their own class.
    outputs = _clip_forward(model, inputs, return_loss=True)
    return outputs.loss.float(), outputs


def _clip_ce_loss(model, inputs):
    # FLYP-CE: inputs carry one prompt per class, so logits_per_image is [B, C] = scale * cos.
    outputs = _clip_forward(model, inputs)
    return F.cross_entropy(outputs.logits_per_image.float(), inputs["labels"]), outputs


@dataclass(frozen=True)
class Objective:
    """One objective: its batches and its loss.

    name: the registry name (`MethodSpec.objective`, `LDIFSTrainer(objective=...)`).
    collator: a class taking (tokenizer, class_names, templates, seed=) for prompt batches, or None for
        image-label batches (`collate_images`).
    loss: (model, inputs) -> (loss, outputs); None means the parent trainer's own `compute_loss`
        (the classifier's cross-entropy, the label smoother, `compute_loss_func`, trl's losses).
    """

    name: str
    collator: type | None
    loss: Callable | None


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("ce", None, None),
        Objective("clip-contrastive", CaptionCollator, _clip_contrastive_loss),
        Objective("clip-ce", ClassPromptCollator, _clip_ce_loss),
    )
}


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise ValueError(f"objective must be one of {tuple(OBJECTIVES)}, got {name!r}")
    return OBJECTIVES[name]


def collator_for(objective: str, tokenizer=None, class_names=None, templates=None, seed: int = 0):
    """The collator an objective needs (see `OBJECTIVES`)."""
    collator = get_objective(objective).collator
    if collator is None:
        return collate_images
    if tokenizer is None:
        raise ValueError(f"objective {objective!r} needs a tokenizer for its prompts")
    return collator(tokenizer, class_names, templates, seed=seed)
