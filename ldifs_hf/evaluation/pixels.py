"""Decoded, preprocessed images of small evaluation splits, kept in memory for the process.

Decoding and preprocessing images costs far more than a small model's forward pass: a split is decoded
once per process here and every model scored after reads its pixels. The key is the split's encoded
image bytes and the transform's settings, so benchmarks that label the same images (the concept
world's four tasks) share one entry, and a model's features of them are computed once
(`ConceptForgettingEvaluator.features`). Splits beyond `MAX_SPLIT_BYTES` of pixels stream from their
dataset as before; the cache keeps at most `MAX_CACHE_BYTES`, the least recently used dropped first.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch

MAX_SPLIT_BYTES = 256 * 2 ** 20
MAX_CACHE_BYTES = 512 * 2 ** 20
_CACHE: OrderedDict[str, torch.Tensor] = OrderedDict()


def pixel_bytes(image_processor) -> int | None:
    """Bytes of one preprocessed image (float32 [3, H, W] at the processor's crop size), None if unknown."""
    crop = getattr(image_processor, "crop_size", None) or getattr(image_processor, "size", None)
    get = (lambda k: crop.get(k)) if isinstance(crop, dict) else (lambda k: getattr(crop, k, None))
    height, width = (get("height"), get("width")) if crop is not None else (None, None)
    return 3 * int(height) * int(width) * 4 if height and width else None


def images_digest(dataset, processor_settings: str) -> str:
    """A digest of a split's encoded images (read as stored, never decoded) and the transform's settings."""
    table = dataset.with_format("arrow", columns=["image"])
    digest = hashlib.sha256(processor_settings.encode())
    for start in range(0, len(dataset), 1024):
        for image in table[start:start + 1024]["image"].to_pylist():
            digest.update(image["bytes"] if image.get("bytes") is not None else str(image.get("path")).encode())
    return digest.hexdigest()


def labels_of(dataset) -> torch.Tensor:
    """A split's "label" column as a tensor, read as stored (no image decoded)."""
    return torch.tensor(dataset.with_format("arrow", columns=["label"])[:]["label"].to_pylist(), dtype=torch.long)


def cached_pixels(digest: str, decode) -> torch.Tensor:
    """The pixels under `digest`, decoded by `decode()` ([N, 3, H, W]) on first use."""
    if digest in _CACHE:
        _CACHE.move_to_end(digest)
        return _CACHE[digest]
    values = decode()
    _CACHE[digest] = values
    while sum(v.numel() * v.element_size() for v in _CACHE.values()) > MAX_CACHE_BYTES and len(_CACHE) > 1:
        _CACHE.popitem(last=False)
    return values
