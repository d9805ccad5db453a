"""Every PIL mode becomes the right 8-bit RGB picture (pixel values computed by hand), or is refused by
name: 16-bit images used to become all white through PIL's `convert("RGB")`, and the run trained at
chance with exit code 0."""

import io

import datasets
import numpy as np
import pytest
from PIL import Image

from ldifs_hf.benchmarks import BenchmarkError, load_benchmark
from ldifs_hf.benchmarks.transforms import SUPPORTED_IMAGE_MODES, TrainImageTransform, image_transform, rgb_images, to_rgb
from ldifs_hf.tiny import make_tiny_clip


def _rgb(image) -> np.ndarray:
    converted = to_rgb(image)
    assert converted.mode == "RGB" and converted.size == image.size
    return np.asarray(converted)


def _gray(values) -> np.ndarray:
    """The expected [1, N, 3] RGB pixels of a row of grey levels."""
    return np.repeat(np.asarray([values], dtype=np.uint8)[:, :, None], 3, axis=2)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I;16N"])
def test_16_bit_grayscale_is_scaled_by_its_bit_depth(mode):
    samples = np.asarray([[0, 128, 129, 257, 32768, 65534, 65535]])
    order = {"I;16B": ">u2", "I;16": "<u2", "I;16L": "<u2", "I;16N": "=u2"}[mode]
    image = Image.frombytes(mode, (samples.shape[1], 1), samples.astype(order).tobytes())
    assert image.mode == mode
    # v * 255 / 65535 = v / 257, rounded: 128/257 = 0.498, 129/257 = 0.502, 32768/257 = 127.5019, 65534/257 = 254.996.
    assert np.array_equal(_rgb(image), _gray([0, 0, 1, 1, 128, 255, 255]))


def test_32_bit_integer_image_with_16_bit_values_is_scaled_like_16_bit():
    image = Image.fromarray(np.asarray([[0, 1000, 65535]], dtype=np.int32))
    assert image.mode == "I"
    assert np.array_equal(_rgb(image), _gray([0, 4, 255]))  # 1000 / 257 = 3.89


@pytest.mark.parametrize("values, shown", [([0, -1], "-1..0"), ([0, 70000], "0..70000")])
def test_32_bit_integer_image_outside_16_bits_is_refused_by_name(values, shown):
    with pytest.raises(ValueError, match=rf"mode 'I'\) with values {shown} has no known range; accepted: values 0\.\.65535"):
        to_rgb(Image.fromarray(np.asarray([values], dtype=np.int32)))


def test_float_image_in_unit_range_is_scaled_to_8_bits():
    image = Image.fromarray(np.asarray([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32))
    assert image.mode == "F"
    assert np.array_equal(_rgb(image), _gray([0, 64, 128, 255]))  # 63.75 -> 64, 127.5 -> 128


@pytest.mark.parametrize("values", [[0.0, 2.0], [-0.5, 0.5], [0.0, float("nan")], [0.0, 255.0]])
def test_float_image_outside_unit_range_is_refused_by_name(values):
    with pytest.raises(ValueError, match=r"float image \(PIL mode 'F'\) with values .* accepted: values in \[0, 1\]"):
        to_rgb(Image.fromarray(np.asarray([values], dtype=np.float32)))


def _palette_image(**info) -> Image.Image:
    image = Image.new("P", (3, 1))
    image.putpalette([10, 20, 30, 200, 100, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    image.putdata([0, 1, 2])
    image.info.update(info)
    return image


def test_palette_image_takes_its_palette_colours():
    assert np.array_equal(_rgb(_palette_image()), np.asarray([[[10, 20, 30], [200, 100, 0], [0, 0, 255]]], dtype=np.uint8))


def test_palette_image_with_a_transparent_entry_is_white_there():
    image = _palette_image(transparency=1)
    assert np.array_equal(_rgb(image), np.asarray([[[10, 20, 30], [255, 255, 255], [0, 0, 255]]], dtype=np.uint8))


def test_palette_image_with_per_entry_alpha_is_composited_over_white():
    image = _palette_image(transparency=bytes([255, 0, 255]))  # entry 1 fully transparent
    assert np.array_equal(_rgb(image), np.asarray([[[10, 20, 30], [255, 255, 255], [0, 0, 255]]], dtype=np.uint8))


def test_rgba_is_composited_over_white():
    pixels = np.asarray([[[200, 100, 0, 255], [200, 100, 0, 0], [200, 100, 0, 102]]], dtype=np.uint8)
    rgb = _rgb(Image.fromarray(pixels, mode="RGBA")).astype(int)
    assert rgb[0, 0].tolist() == [200, 100, 0] and rgb[0, 1].tolist() == [255, 255, 255]
    # 40 % opaque: 0.4 * colour + 0.6 * 255 = (233, 193, 153); PIL's integer compositing may be 1 off.
    assert np.abs(rgb[0, 2] - [233, 193, 153]).max() <= 1


def test_grayscale_with_alpha_is_composited_over_white():
    image = Image.fromarray(np.asarray([[[100, 255], [100, 0]]], dtype=np.uint8), mode="LA")
    assert np.array_equal(_rgb(image), _gray([100, 255]))


def test_grayscale_with_a_transparent_level_is_white_there():
    image = Image.fromarray(np.asarray([[7, 100]], dtype=np.uint8))
    image.info["transparency"] = 7
    assert np.array_equal(_rgb(image), _gray([255, 100]))


def test_premultiplied_rgba_is_unpremultiplied_then_composited():
    image = Image.new("RGBa", (1, 1), (100, 50, 0, 255))
    assert _rgb(image)[0, 0].tolist() == [100, 50, 0]


def test_8_bit_grayscale_and_bilevel():
    assert np.array_equal(_rgb(Image.fromarray(np.asarray([[0, 17, 255]], dtype=np.uint8))), _gray([0, 17, 255]))
    bilevel = Image.fromarray(np.asarray([[False, True]]))
    assert bilevel.mode == "1"
    assert np.array_equal(_rgb(bilevel), _gray([0, 255]))


@pytest.mark.parametrize(
    "mode, pixel, expected",
    [
        ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
        ("CMYK", (255, 0, 0, 0), (0, 255, 255)),  # full cyan: no red
        ("CMYK", (0, 0, 0, 255), (0, 0, 0)),
        ("YCbCr", (128, 128, 128), (128, 128, 128)),  # neutral chroma: grey
        ("HSV", (0, 255, 255), (255, 0, 0)),  # hue 0, full saturation and value: red
        ("RGBX", (1, 2, 3, 0), (1, 2, 3)),
    ],
)
def test_colour_spaces_use_pils_conversion(mode, pixel, expected):
    assert _rgb(Image.new(mode, (1, 1), pixel))[0, 0].tolist() == list(expected)


def test_rgb_is_returned_as_is():
    image = Image.new("RGB", (2, 2), (1, 2, 3))
    assert to_rgb(image) is image


@pytest.mark.parametrize("mode", ["LAB", "La"])
def test_modes_without_an_rgb_reading_are_refused_by_name(mode):
    with pytest.raises(ValueError, match=rf"PIL mode '{mode}' are not supported; accepted modes: RGB, 1, L, P"):
        to_rgb(Image.new(mode, (1, 1)))


def test_every_accepted_mode_has_a_conversion():
    for mode in SUPPORTED_IMAGE_MODES:
        assert to_rgb(Image.new(mode, (2, 2))).mode == "RGB"


def test_a_refusal_names_the_file_the_image_came_from(tmp_path):
    path = tmp_path / "depth.tiff"
    Image.fromarray(np.asarray([[0, 70000]], dtype=np.int32)).save(path)
    with pytest.raises(ValueError, match=rf"a 32-bit integer image \(from {path}\) \(PIL mode 'I'\) with values 0\.\.70000"):
        to_rgb(Image.open(path))


def test_not_an_image_is_refused():
    with pytest.raises(ValueError, match="expected a PIL image, got NoneType"):
        to_rgb(None)


# -- through the loader and the transforms -----------------------------------------------------------------


def _saved_dataset(path, images: list[Image.Image]):
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["dark", "bright"])})
    labels = [index % 2 for index in range(len(images))]
    split = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(path)
    return path


def test_rgb_images_leaves_undecoded_and_missing_images_alone():
    encoded = {"bytes": b"...", "path": None}
    batch = rgb_images({"image": [encoded, None, Image.new("L", (1, 1), 9)], "label": [0, 1, 2]})
    assert batch["image"][:2] == [encoded, None] and batch["image"][2].mode == "RGB" and batch["label"] == [0, 1, 2]
    assert rgb_images({"label": [1]}) == {"label": [1]}


def test_16_bit_dataset_loads_as_the_right_rgb_images(tmp_path):
    levels = [1000 * index for index in range(8)]
    images = [Image.fromarray(np.full((4, 4), level, dtype=np.uint16)) for level in levels]
    assert images[0].mode == "I;16"
    loaded = load_benchmark("custom", data_path=_saved_dataset(tmp_path / "sixteen", images), validation_fraction=0)
    test = loaded.splits["test"]
    assert test.features["image"].mode is None  # decoded in its own mode, not by `datasets`' clipping RGB cast
    firsts = [np.asarray(row["image"])[0, 0].tolist() for row in test]
    assert all(row["image"].mode == "RGB" for row in test)
    assert firsts == [[round(level / 257)] * 3 for level in levels]  # 0, 4, 8, 12, 16, 19, 23, 27: not all white


def test_transforms_give_16_bit_images_the_pixels_of_their_8_bit_equivalent(tmp_path):
    processor = __import__("transformers").CLIPProcessor.from_pretrained(make_tiny_clip(tmp_path / "clip"))
    sixteen = Image.fromarray((np.arange(64, dtype=np.uint16).reshape(8, 8) * 1028))  # 0..64764
    eight = Image.fromarray(np.rint(np.asarray(sixteen) / 257).astype(np.uint8)).convert("RGB")
    evaluate = image_transform(processor.image_processor)
    batch = {"image": [sixteen, eight], "label": [0, 0]}
    values = evaluate(batch)["pixel_values"]
    assert np.array_equal(values[0].numpy(), values[1].numpy())
    train = TrainImageTransform(processor.image_processor, seed=1)
    assert np.array_equal(np.asarray(train.crop(sixteen)), np.asarray(train.crop(eight)))


def test_loader_refuses_an_unsupported_mode_naming_row_and_mode(tmp_path):
    buffer = io.BytesIO()
    Image.new("LAB", (4, 4)).save(buffer, "TIFF")
    good = Image.new("RGB", (4, 4))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    split = datasets.Dataset.from_dict({"image": [good, {"bytes": buffer.getvalue(), "path": None}], "label": [0, 1]}, features=features)
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(tmp_path / "lab")
    with pytest.raises(BenchmarkError, match=r"image at row 1 of split 'train' has PIL mode 'LAB'.*accepted modes: RGB"):
        load_benchmark("custom", data_path=tmp_path / "lab", validation_fraction=0)
