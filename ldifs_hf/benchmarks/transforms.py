"""Images to model inputs: the CLIP processor's transform (with an exact fast path for images already
at the crop size) and the image/label collate function every image loader uses."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image


def image_transform(image_processor) -> Callable[[dict], dict]:
    """A `set_transform` function: {"image": [PIL], "label": [int]} -> {"pixel_values": [[3,H,W] tensors], "labels": [int]}.

    Images already at a CLIP processor's crop size skip its resize and crop (both are identities for
    them) and are only rescaled and normalised, with the processor's own constants: the same pixels,
    without the per-call overhead that dominates small images.
    """
    fast = _native_size_transform(image_processor)

    def transform(batch: dict) -> dict:
        images = [image if image.mode == "RGB" else image.convert("RGB") for image in batch["image"]]
        if fast is not None and all(image.size == fast.size for image in images):
            pixel_values = [fast(image) for image in images]
        else:
            pixel_values = list(image_processor(images=images, return_tensors="pt")["pixel_values"])
        return {"pixel_values": pixel_values, "labels": list(batch["label"])}

    return transform


class _NativeSizeCLIPTransform:
    """Rescale + normalise for images that already have a CLIP processor's crop size."""

    def __init__(self, size: tuple[int, int], factor: float, mean, std):
        self.size = size
        self.factor = np.float32(factor)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        pixels = (np.asarray(image, dtype=np.float32) * self.factor - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def _native_size_transform(image_processor) -> _NativeSizeCLIPTransform | None:
    """The fast path when `image_processor` is CLIP's resize-shortest-edge + square center crop."""
    if not type(image_processor).__name__.startswith("CLIPImageProcessor"):
        return None

    def get(container, key):
        return container.get(key) if isinstance(container, dict) else getattr(container, key, None)

    p = image_processor
    edge, height, width = get(p.size, "shortest_edge"), get(p.crop_size, "height"), get(p.crop_size, "width")
    if not (edge and edge == height == width and p.do_resize and p.do_center_crop and p.do_rescale and p.do_normalize):
        return None
    return _NativeSizeCLIPTransform((width, height), p.rescale_factor, p.image_mean, p.image_std)


def collate_images(examples: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Stack `pixel_values` and `labels` of examples produced by `image_transform`."""
    return {
        "pixel_values": torch.stack([torch.as_tensor(e["pixel_values"]) for e in examples]),
        "labels": torch.tensor([int(e["labels"]) for e in examples], dtype=torch.long),
    }
