"""Distances of a fine-tuned image encoder from its reference: ||θ−θ0||² and the LDIFS feature
distance d(θ, θ0, D) of paper eq. 3, with the same taps and normalisation as training."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..benchmarks.transforms import collate_images
from ..modeling import named_encoder_parameters
from ..regularizers import default_ldifs_layers, ldifs_distance

@torch.no_grad()
def parameter_distance(model: nn.Module, reference: nn.Module) -> float:
    """Squared L2 distance ||theta - theta_0||^2 between two models' vision towers (and projections)."""
    params, ref = named_encoder_parameters(model), named_encoder_parameters(reference)
    if params.keys() != ref.keys():
        missing = sorted(params.keys() ^ ref.keys())[:3]
        raise ValueError(f"the two vision towers have different parameters (e.g. {missing}); they must share an architecture")
    total = torch.zeros((), dtype=torch.float64)
    for name, p in params.items():
        total += (p.detach().double() - ref[name].detach().to(p.device).double()).pow(2).sum().cpu()
    return total.item()


@torch.no_grad()
def feature_distance(
    model: nn.Module,
    reference: nn.Module,
    dataset,
    *,
    layers: Sequence[int] | None = None,
    normalization: str = "token",
    batch_size: int = 256,
    collate_fn=None,
    desc: str | None = None,
    num_workers: int = 0,
) -> float:
    """LDIFS feature-space distance d(theta, theta_0, D) (eq. 3), averaged over the examples of `dataset`.

    Both vision towers see the same pixel values; `layers` defaults to the training default taps.
    """
    layers = list(layers) if layers is not None else default_ldifs_layers(model.vision_model.config.num_hidden_layers)
    device = next(model.parameters()).device
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn or collate_images, num_workers=num_workers)
    modes = (model.training, reference.training)
    model.eval()
    reference.eval()
    total, count = 0.0, 0
    try:
        for batch in tqdm(loader, desc=desc or "feature distance", leave=False):
            pixel_values = batch["pixel_values"].to(device)
            student = model.vision_model(pixel_values=pixel_values.to(next(model.parameters()).dtype), output_hidden_states=True).hidden_states
            ref_device = next(reference.parameters()).device
            teacher = reference.vision_model(
                pixel_values=pixel_values.to(device=ref_device, dtype=next(reference.parameters()).dtype), output_hidden_states=True
            ).hidden_states
            teacher = [t.to(device) for t in teacher]
            total += ldifs_distance(student, teacher, layers, normalization=normalization).item() * len(pixel_values)
            count += len(pixel_values)
    finally:
        model.train(modes[0])
        reference.train(modes[1])
    if count == 0:
        raise ValueError("cannot compute a feature distance over an empty dataset")
    return total / count


