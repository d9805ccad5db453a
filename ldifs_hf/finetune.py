"""From a method spec to the model and collator it trains: head initialisation and tower freezing."""

from __future__ import annotations

import logging

import torch
from transformers import CLIPModel

from .collators import collate_images, collator_for
from .methods import MethodSpec
from .modeling import CLIPVisionClassifier

logger = logging.getLogger(__name__)


def zero_shot_head(clip_model: CLIPModel, tokenizer, class_names, templates) -> torch.Tensor:
    """exp(logit_scale) x the normalised class-prompt embeddings: the ZS-init head weight [C, P]."""
    from .heads import zero_shot_classifier

    weights = zero_shot_classifier(clip_model, tokenizer, class_names, templates)
    return clip_model.logit_scale.exp().detach().float().cpu() * weights.float().cpu()


def build_model(
    spec: MethodSpec,
    clip_model: CLIPModel,
    tokenizer,
    class_names,
    templates,
    train_dataset=None,
    *,
    lp_solver: str = "adamw",
    lp_iterations: int = 1000,
    batch_size: int = 256,
    seed: int = 0,
):
    """The model `spec` fine-tunes: a CLIPVisionClassifier with a ZS or LP head, or the CLIPModel (FLYP)."""
    id2label = dict(enumerate(class_names))
    if spec.head_init == "zero-shot":
        return CLIPVisionClassifier.from_clip(clip_model, zero_shot_head(clip_model, tokenizer, class_names, templates), id2label=id2label)
    if spec.head_init == "linear-probe":
        from .heads import extract_features, fit_linear_probe

        if train_dataset is None:
            raise ValueError(f"method {spec.name!r} fits a linear probe and needs the training set")
        features, labels = extract_features(clip_model, train_dataset, batch_size=batch_size, collate_fn=collate_images, desc="LP-init features")
        weight, bias = fit_linear_probe(features, labels, len(class_names), solver=lp_solver, iterations=lp_iterations, seed=seed)
        return CLIPVisionClassifier.from_clip(clip_model, weight, bias, id2label=id2label)
    freeze_untrained_towers(clip_model, spec)
    return clip_model


def freeze_untrained_towers(model, spec: MethodSpec) -> None:
    """For CLIP objectives that train only the image side, freeze the text tower and logit scale."""
    if spec.trained == "vision" and hasattr(model, "text_model"):
        for module in (model.text_model, model.text_projection):
            module.requires_grad_(False)
        model.logit_scale.requires_grad_(False)


def build_collator(spec: MethodSpec, tokenizer, class_names, templates, seed: int = 0):
    return collator_for(spec.objective, tokenizer, class_names, templates, seed=seed)


def as_classifier(model, tokenizer, class_names, templates) -> CLIPVisionClassifier:
    """The fine-tuned model as an image classifier: FLYP's CLIPModel gets a ZS head from its own text tower."""
    if isinstance(model, CLIPVisionClassifier):
        return model
    return CLIPVisionClassifier.from_clip(model, zero_shot_head(model, tokenizer, class_names, templates), id2label=dict(enumerate(class_names)))


@torch.no_grad()
def classifier_accuracy(model: CLIPVisionClassifier, dataset, batch_size: int = 256) -> float:
    """Top-1 accuracy of a classifier on a dataset yielding pixel_values and labels."""
    from .heads import extract_features

    features, labels = extract_features(model, dataset, batch_size=batch_size, collate_fn=collate_images, desc="accuracy")
    head = model.head.float().cpu()
    predictions = head(features.float().cpu()).argmax(dim=-1)
    return (predictions == labels.cpu()).float().mean().item()
