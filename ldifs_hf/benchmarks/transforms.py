"""Images to model inputs: every PIL mode to an 8-bit RGB image (`to_rgb`), the CLIP processor's
evaluation transform (with an exact fast path for images already at the crop size), the training
augmentation of the official code (open_clip's train preprocess), and the image/label collate function
every image loader uses."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image


# How each PIL mode becomes 8-bit RGB (`to_rgb`); any other mode is refused by name.
RGB_BY_CONVERSION = ("1", "L", "P", "RGBX", "CMYK", "YCbCr", "HSV")  # PIL's own conversion is exact for these
WITH_ALPHA = ("RGBA", "RGBa", "LA", "PA")  # composited over white, as transformers' `convert_to_rgb` does
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")  # samples 0..65535, scaled to 0..255
SUPPORTED_IMAGE_MODES = ("RGB", *RGB_BY_CONVERSION, *WITH_ALPHA, *SIXTEEN_BIT, "I", "F")
_SIXTEEN_BIT_MAX = 65535


def to_rgb(image: Image.Image) -> Image.Image:
    """`image` as an 8-bit RGB image with the same picture, or a ValueError naming a mode that has none.

    PIL's own `convert("RGB")` clips every sample of a 16-bit or 32-bit image to 255 (a white image), and
    drops transparency (keeping whatever colour hides under it). Here:
    - 16-bit grayscale ("I;16*"): scaled by the bit depth, v * 255 / 65535, rounded. Not by the image's
      own maximum: that would stretch each image's contrast differently, so one scene would get other
      pixels in another exposure. (A 12-bit sensor stored in 16 bits therefore looks dark, as in any
      viewer; PNG requires samples scaled to the full 16 bits.)
    - 32-bit integer ("I"): Pillow's mode for 16-bit samples of some formats (PGM with maxval > 255,
      16-bit TIFFs after some operations), so values in 0..65535 are scaled like 16-bit; other values
      have no known range and are refused.
    - 32-bit float ("F"): values in [0, 1] (the float image convention of torchvision and scikit-image)
      become v * 255, rounded; other values (or NaN) are refused.
    - transparency (an alpha band, or a palette / grayscale / RGB image with a transparent entry):
      composited over white, as the CLIP processor's `convert_to_rgb` does.
    - "1", "L", "P", "RGBX", "CMYK", "YCbCr", "HSV": PIL's conversion.
    """
    if not isinstance(image, Image.Image):
        raise ValueError(f"expected a PIL image, got {type(image).__name__}")
    mode = image.mode
    if mode in WITH_ALPHA or ("transparency" in image.info and mode in ("RGB", "L", "P")):
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    if mode == "RGB":
        return image
    if mode in RGB_BY_CONVERSION:
        return image.convert("RGB")
    if mode in SIXTEEN_BIT or mode == "I":
        samples = np.asarray(image, dtype=np.int64)
        if mode == "I" and samples.size and (samples.min() < 0 or samples.max() > _SIXTEEN_BIT_MAX):
            raise ValueError(
                f"a 32-bit integer image{_source(image)} (PIL mode 'I') with values {samples.min()}..{samples.max()} has no known "
                f"range; accepted: values 0..{_SIXTEEN_BIT_MAX} (16-bit samples). Convert it to 8 or 16 bits first"
            )
        return _gray_to_rgb(np.rint(samples * (255 / _SIXTEEN_BIT_MAX)))
    if mode == "F":
        samples = np.asarray(image, dtype=np.float64)
        if samples.size and not (np.isfinite(samples).all() and samples.min() >= 0 and samples.max() <= 1):
            raise ValueError(
                f"a 32-bit float image{_source(image)} (PIL mode 'F') with values {np.nanmin(samples):g}..{np.nanmax(samples):g} "
                "has no known range; accepted: values in [0, 1]. Convert it to 8 bits first"
            )
        return _gray_to_rgb(np.rint(samples * 255))
    raise ValueError(f"images of PIL mode {mode!r}{_source(image)} are not supported; accepted modes: {', '.join(SUPPORTED_IMAGE_MODES)}")


def _source(image: Image.Image) -> str:
    """" (from <file>)" for an image read from a file (a dataset of image paths, an image folder), else ""."""
    return f" (from {image.filename})" if getattr(image, "filename", "") else ""


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(np.repeat(gray.astype(np.uint8)[:, :, None], 3, axis=2))


def rgb_images(batch: dict) -> dict:
    """A `with_transform` function: the batch's decoded images (if the "image" column is asked for)
    through `to_rgb`. Anything else is left as is: the encoded {"bytes", "path"} of a column cast with
    `decode=False`, or a missing image."""
    if "image" in batch:
        batch["image"] = [to_rgb(image) if isinstance(image, Image.Image) else image for image in batch["image"]]
    return batch


def image_transform(image_processor) -> Callable[[dict], dict]:
    """A `set_transform` function: {"image": [PIL], "label": [int]} -> {"pixel_values": [[3,H,W] tensors], "labels": [int]}.

    Images already at a CLIP processor's crop size skip its resize and crop (both are identities for
    them) and are only rescaled and normalised, with the processor's own constants: the same pixels,
    without the per-call overhead that dominates small images.
    """
    fast = _native_size_transform(image_processor)

    def transform(batch: dict) -> dict:
        images = [to_rgb(image) for image in batch["image"]]
        if fast is not None and all(image.size == fast.size for image in images):
            pixel_values = [fast(image) for image in images]
        else:
            pixel_values = list(image_processor(images=images, return_tensors="pt")["pixel_values"])
        return {"pixel_values": pixel_values, "labels": list(batch["label"])}

    return transform


# open_clip's training preprocess (the official LDIFS code's): RandomResizedCrop to the crop size with
# scale (0.9, 1.0), torchvision's default aspect ratios and bicubic resampling, then normalisation.
TRAIN_CROP_SCALE = (0.9, 1.0)
TRAIN_CROP_RATIO = (3 / 4, 4 / 3)


def random_resized_crop_box(width: int, height: int, scale=TRAIN_CROP_SCALE, ratio=TRAIN_CROP_RATIO, generator=None) -> tuple[int, int, int, int]:
    """(left, top, crop width, crop height) of a random crop covering `scale` of the image's area with an
    aspect ratio in `ratio` (torchvision's `RandomResizedCrop.get_params`; its centre-crop fallback too).
    Random draws come from `generator` (default: torch's global one)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * float(torch.empty(1).uniform_(scale[0], scale[1], generator=generator))
        aspect = math.exp(float(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator))
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


class TrainImageTransform:
    """The training counterpart of `image_transform`: a random resized crop (bicubic) to the processor's
    crop size, then its rescaling and normalisation. The LDIFS teacher sees these same pixels.

    Each crop is drawn from a generator seeded by (seed, epoch, the image's bytes), not from the global
    RNG: a run resumed from a checkpoint draws exactly the crops the uninterrupted run drew, whatever
    batches the data loader prefetched. `set_epoch` (called by the run at each epoch) gives every
    epoch fresh crops.
    """

    def __init__(self, image_processor, seed: int = 0, scale=TRAIN_CROP_SCALE, ratio=TRAIN_CROP_RATIO):
        p = image_processor
        crop = getattr(p, "crop_size", None)
        get = (lambda key: crop.get(key)) if isinstance(crop, dict) else (lambda key: getattr(crop, key, None))
        if crop is None or not get("height") or not get("width") or getattr(p, "image_mean", None) is None:
            raise ValueError(
                f"training augmentation needs a CLIP-style image processor (crop_size, image_mean, image_std); "
                f"got {type(p).__name__}. Pass --train_augmentation false to train on the evaluation transform"
            )
        self.size = (int(get("width")), int(get("height")))
        self.normalise = _NativeSizeCLIPTransform(self.size, p.rescale_factor, p.image_mean, p.image_std)
        self.seed, self.scale, self.ratio, self.epoch = seed, scale, ratio, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _generator(self, image: Image.Image) -> torch.Generator:
        digest = hashlib.blake2b(image.tobytes(), digest_size=8, key=f"{self.seed}/{self.epoch}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))

    def crop(self, image: Image.Image) -> Image.Image:
        image = to_rgb(image)
        left, top, w, h = random_resized_crop_box(image.width, image.height, self.scale, self.ratio, self._generator(image))
        return image.resize(self.size, Image.BICUBIC, box=(left, top, left + w, top + h))

    def __call__(self, batch: dict) -> dict:
        return {"pixel_values": [self.normalise(self.crop(image)) for image in batch["image"]], "labels": list(batch["label"])}


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
