"""The `image` tokenizer on the real 64x64 photographs of images64."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from pact.encodings import EOS_ID, PAD_ID, get_tokenizer, tokenizer_from_spec
from pact.encodings.base import axis_indices
from pact.encodings.image import NUM_SUBPIXELS, ImageTokenizer
from pact.errors import ConfigError, ImageReadError, TokenizerError, TokenizerMismatchError


@pytest.fixture(scope="module")
def images(shared_data):
    return sorted((shared_data / "images64" / "train").glob("*.png"))


@pytest.fixture(scope="module")
def tokenizer() -> ImageTokenizer:
    return get_tokenizer("image")


def _pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_registry_builds_image_tokenizer(tokenizer):
    assert tokenizer.vocab_size == 258
    assert tokenizer.position_axes == (64, 64, 3)
    assert tokenizer.file_suffixes[0] == ".png"
    assert tokenizer.spec() == {"name": "image", "version": "1", "vocab_size": 258, "options": {"fit": "resize"}}


def test_ids_are_subpixels_in_raster_order(tokenizer, images):
    pixels = _pixels(images[0])
    ids = tokenizer.encode_file(images[0])
    assert ids.shape == (NUM_SUBPIXELS,)
    assert ids.dtype == np.int32
    assert np.array_equal(ids, pixels.reshape(-1).astype(np.int32) + 2)
    # Token index 200 is row 1, column 2, channel 2.
    assert ids[200] == int(pixels[1, 2, 2]) + 2


def test_every_real_image_round_trips(tokenizer, images, tmp_path):
    for path in images[:20]:
        ids = tokenizer.encode_file(path)
        decoded = tokenizer.decode(np.append(ids, EOS_ID))
        assert np.array_equal(decoded, _pixels(path)), path
    output = tmp_path / "decoded.png"
    tokenizer.decode_to_file(ids, output)
    assert np.array_equal(_pixels(output), _pixels(images[19]))


def test_axis_indices_match_raster_order(tokenizer, images):
    pixels = _pixels(images[3])
    ids = tokenizer.encode(pixels)
    token_index = np.arange(NUM_SUBPIXELS)
    rows, columns, channels = tokenizer.axis_indices(token_index)
    assert np.array_equal(pixels[rows, columns, channels].astype(np.int32) + 2, ids)
    assert (rows.max(), columns.max(), channels.max()) == (63, 63, 2)


def test_axis_indices_work_on_traced_arrays():
    rows, columns, channels = jax.jit(lambda index: axis_indices(index, (64, 64, 3)))(jnp.arange(6) + 198)
    assert rows.tolist() == [1] * 6
    assert columns.tolist() == [2, 2, 2, 3, 3, 3]
    assert channels.tolist() == [0, 1, 2, 0, 1, 2]


def test_resize_and_center_crop_of_wide_image(images, tmp_path):
    left, right = _pixels(images[0]), _pixels(images[1])
    wide = np.concatenate([left, right], axis=1)  # 64 x 128
    path = tmp_path / "wide.png"
    Image.fromarray(wide).save(path)

    cropped = get_tokenizer("image", fit="center_crop").read(path)
    assert np.array_equal(cropped, wide[:, 32:96])

    resized = get_tokenizer("image").read(path)
    # A box filter halving the width averages each pair of columns.
    pairs = wide.reshape(64, 64, 2, 3).astype(np.float64).mean(axis=2)
    assert resized.shape == (64, 64, 3)
    assert np.abs(resized.astype(np.float64) - pairs).max() <= 1.0


def test_large_jpeg_is_resized(images, tmp_path):
    large = np.repeat(np.repeat(_pixels(images[5]), 4, axis=0), 4, axis=1)  # 256 x 256
    path = tmp_path / "large.jpg"
    Image.fromarray(large).save(path, quality=95)
    pixels = get_tokenizer("image").read(path)
    assert pixels.shape == (64, 64, 3)
    # JPEG is lossy, but box-resizing 4x4 blocks of one colour back gives the original closely.
    assert np.abs(pixels.astype(int) - _pixels(images[5]).astype(int)).mean() < 6


def test_grey_and_sixteen_bit_images_become_rgb(images, tmp_path):
    grey = np.asarray(Image.open(images[2]).convert("L"))
    Image.fromarray(grey).save(tmp_path / "grey.png")
    pixels = get_tokenizer("image").read(tmp_path / "grey.png")
    assert np.array_equal(pixels[..., 0], grey)
    assert np.array_equal(pixels[..., 2], grey)

    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    pixels16 = get_tokenizer("image").read(tmp_path / "grey16.png")
    assert np.array_equal(pixels16[..., 1], grey)


def test_decode_pads_partial_image_and_skips_padding(tokenizer, images):
    ids = tokenizer.encode_file(images[0])
    decoded = tokenizer.decode(np.concatenate([[PAD_ID], ids[:192 * 2]]))
    assert np.array_equal(decoded[:2], _pixels(images[0])[:2])
    assert not decoded[2:].any()
    assert tokenizer.decode(np.concatenate([ids, ids])).shape == (64, 64, 3)


def test_corrupt_files_name_the_file(tokenizer, images, tmp_path):
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(images[0].read_bytes()[:300])
    with pytest.raises(ImageReadError, match="truncated.png: failed to decode the image"):
        tokenizer.read(truncated)

    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ImageReadError, match="notes.png: not a PNG or JPEG image"):
        tokenizer.read(text)

    with pytest.raises(ImageReadError, match="absent.png: file not found"):
        tokenizer.read(tmp_path / "absent.png")


def test_invalid_arrays_and_options_are_rejected(tokenizer, tmp_path):
    with pytest.raises(TokenizerError, match=r"shape \(64, 64, 4\)"):
        tokenizer.encode(np.zeros((64, 64, 4), np.uint8))
    with pytest.raises(TokenizerError, match="uint8 values 0-255"):
        tokenizer.encode(np.full((64, 64, 3), 300))
    with pytest.raises(TokenizerError, match="must end in .png"):
        tokenizer.write(np.zeros((64, 64, 3), np.uint8), tmp_path / "image.jpg")
    with pytest.raises(ConfigError, match="invalid fit 'stretch'"):
        get_tokenizer("image", fit="stretch")


def test_fit_is_part_of_the_spec(tokenizer):
    cropping = get_tokenizer("image", fit="center_crop")
    assert tokenizer_from_spec(cropping.spec()).fit == "center_crop"
    with pytest.raises(TokenizerMismatchError, match="option fit: 'center_crop' in dataset d, 'resize' here"):
        tokenizer.check_compatible(cropping.spec(), "dataset d")
