"""From a method spec to the model and collator it trains: head initialisation and tower freezing."""

from __future__ import annotations

import logging

import torch
from transformers import CLIPModel

from ..benchmarks.transforms import collate_images
from ..cards import hub_base_model
from ..heads import LP_ITERATIONS, extract_features, fit_linear_probe, zero_shot_classifier
from ..modeling import CLIPVisionClassifier
from .methods import MethodSpec
from .objectives import collator_for

logger = logging.getLogger(__name__)


def build_model(
    spec: MethodSpec,
    clip_model: CLIPModel,
    tokenizer,
    class_names,
    templates,
    train_dataset=None,
    *,
    lp_solver: str = "adamw",
    lp_iterations: int = LP_ITERATIONS,
    batch_size: int = 256,
    seed: int = 0,
):
    """The model `spec` fine-tunes: a CLIPVisionClassifier with a ZS or LP head, or the CLIPModel (FLYP)."""
    id2label = dict(enumerate(class_names))
    if spec.head_init == "zero-shot":
        # The official ZS-init head: exp(logit_scale) x the prompt embeddings, and a zero bias that trains.
        weight = zero_shot_classifier(clip_model, tokenizer, class_names, templates, logit_scale=True)
        return CLIPVisionClassifier.from_clip(clip_model, weight, torch.zeros(len(class_names)), id2label=id2label,
                                              base_model=hub_base_model(clip_model.name_or_path))
    if spec.head_init == "linear-probe":
        if train_dataset is None:
            raise ValueError(f"method {spec.name!r} fits a linear probe and needs the training set")
        features, labels = extract_features(clip_model, train_dataset, batch_size=batch_size, collate_fn=collate_images, desc="LP-init features")
        weight, bias = fit_linear_probe(features, labels, len(class_names), solver=lp_solver, iterations=lp_iterations, seed=seed)
        return CLIPVisionClassifier.from_clip(clip_model, weight, bias, id2label=id2label, base_model=hub_base_model(clip_model.name_or_path))
    freeze_untrained_towers(clip_model, spec)
    return clip_model


def freeze_untrained_towers(model, spec: MethodSpec) -> None:
    """For CLIP objectives that train only the image side, freeze the text tower and logit scale; a
    method that keeps the logit scale fixed (FLYP: detached in the official code) freezes it."""
    if spec.trained == "vision" and hasattr(model, "text_model"):
        for module in (model.text_model, model.text_projection):
            module.requires_grad_(False)
        model.logit_scale.requires_grad_(False)
    if not spec.train_logit_scale and hasattr(model, "logit_scale"):
        model.logit_scale.requires_grad_(False)


def build_collator(spec: MethodSpec, tokenizer, class_names, templates, seed: int = 0):
    return collator_for(spec.objective, tokenizer, class_names, templates, seed=seed)
