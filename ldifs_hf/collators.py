"""Collators for the three objectives: image-label batches, and image-text batches for FLYP.

Prompts (every template of every class) are tokenised once, when the collator is built; each batch
only picks rows, so the text side costs nothing per step.
"""

from __future__ import annotations

import random
from typing import Sequence

import torch


def collate_images(examples: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Stack `pixel_values` and `labels` of examples produced by `ldifs_hf.data.image_transform`."""
    return {
        "pixel_values": torch.stack([torch.as_tensor(e["pixel_values"]) for e in examples]),
        "labels": torch.tensor([int(e["labels"]) for e in examples], dtype=torch.long),
    }


class _PromptBank:
    """Token ids of `template.format(class_name)` for every class and template: [C, T, L]."""

    def __init__(self, tokenizer, class_names: Sequence[str], templates: Sequence[str], max_length: int | None = None):
        if not class_names or not templates:
            raise ValueError("prompts need at least one class name and one template")
        texts = [t.format(c) for c in class_names for t in templates]
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


def collator_for(objective: str, tokenizer=None, class_names=None, templates=None, seed: int = 0):
    """The collator an objective needs ("ce", "clip-contrastive" or "clip-ce")."""
    if objective == "ce":
        return collate_images
    if tokenizer is None:
        raise ValueError(f"objective {objective!r} needs a tokenizer for its prompts")
    cls = {"clip-contrastive": CaptionCollator, "clip-ce": ClassPromptCollator}.get(objective)
    if cls is None:
        raise ValueError(f"unknown objective {objective!r}; valid: ce, clip-contrastive, clip-ce")
    return cls(tokenizer, class_names, templates, seed=seed)
