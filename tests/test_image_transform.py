"""The native-size fast path of image_transform gives the CLIP processor's pixels."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor

from ldifs_hf.benchmarks.transforms import _native_size_transform, image_transform
from ldifs_hf.tiny import tiny_image_processor


def _images(size, mode, n=3):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).convert(mode) for _ in range(n)]


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
@pytest.mark.parametrize("size", [32, 48, 20])
def test_transform_matches_the_processor(mode, size):
    processor = tiny_image_processor(32)
    images = _images(size, mode)
    out = image_transform(processor)({"image": images, "label": [0, 1, 2]})
    expected = processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
    assert torch.allclose(torch.stack(out["pixel_values"]), expected, atol=1e-5)
    assert out["labels"] == [0, 1, 2]


def test_fast_path_only_for_clip_resize_and_square_crop():
    assert _native_size_transform(tiny_image_processor(32)).size == (32, 32)
    no_crop = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_center_crop=False)
    assert _native_size_transform(no_crop) is None
    uneven = CLIPImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32})
    assert _native_size_transform(uneven) is None
