"""Models the methods train: a classifier over a CLIP vision tower, and export to a stock CLIPModel."""

from __future__ import annotations

import torch


def encode_images(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """Projected (not normalised) image embeddings [B, P] of a CLIPModel or a CLIPVisionClassifier.

    Both keep the tower as `vision_model` and the projection as `visual_projection`, so one function
    serves the pretrained model, a fine-tuned classifier and a FLYP-trained CLIPModel alike.
    """
    pooled = model.vision_model(pixel_values=pixel_values).pooler_output
    return model.visual_projection(pooled)
