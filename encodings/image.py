"""The `image` tokenizer: 64x64 RGB images as 12,288 sub-pixel ids in raster order.

Id layout (vocabulary 258):

    0        PAD
    1        EOS
    2..257   sub-pixel values 0..255 (id = value + 2)

An image is its rows from top to bottom, each row its pixels from left to right, and each
pixel its red, green and blue values. So token index i is row i // 192, column i // 3 % 64
and channel i % 3. `ImageTokenizer.position_axes` is (64, 64, 3), and `axis_indices` maps token
indices to (row, column, channel) for models with learned per-axis position embeddings, as
the original Perceiver AR code uses for ImageNet.

`read` opens PNG or JPEG files and fits them to 64x64 in one of two ways (the `fit` option):

* "resize" (default): the whole image is resized to 64x64 with a box filter, so the aspect
  ratio is not kept. This is how the images of TFDS's `imagenet_resized/64x64` were made
  (Chrabaszcz et al. 2017, "box resize").
* "center_crop": the largest centred square is cut out, then resized with the same filter,
  so the aspect ratio is kept and the edges of wide or tall images are lost.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pact.encodings.base import NUM_RESERVED_IDS, Tokenizer, axis_indices
from pact.errors import ConfigError, ImageReadError, TokenizerError

IMAGE_SIZE = 64
CHANNELS = 3
NUM_SUBPIXELS = IMAGE_SIZE * IMAGE_SIZE * CHANNELS  # 12,288
NUM_VALUES = 256
FITS = ("resize", "center_crop")

__all__ = ["FITS", "IMAGE_SIZE", "NUM_SUBPIXELS", "ImageTokenizer", "axis_indices", "fit_image"]


class ImageTokenizer(Tokenizer):
    """64x64 RGB images as sub-pixel ids, with id = value + 2 (layout in the module docstring)."""

    name = "image"
    version = "1"
    file_suffixes = (".png", ".jpg", ".jpeg")
    modality = "image"
    token_unit = "sub-pixel"
    position_axes = (IMAGE_SIZE, IMAGE_SIZE, CHANNELS)

    def __init__(self, fit: str = "resize"):
        if fit not in FITS:
            raise ConfigError(f"invalid fit {fit!r} for the image tokenizer: use {' or '.join(FITS)}")
        self.fit = fit

    def read(self, path: str | os.PathLike) -> np.ndarray:
        """Read a PNG or JPEG file as a uint8 array [64, 64, 3], fitted by the `fit` option.

        The EXIF orientation of photographs is applied. Grey-scale and palette images become
        RGB, and an alpha channel is dropped. Raises `ImageReadError` naming the file when it
        cannot be read or decoded.
        """
        from PIL import Image, ImageOps, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                image = ImageOps.exif_transpose(image)
                image.load()
                return fit_image(image, self.fit)
        except FileNotFoundError:
            raise ImageReadError(path, "file not found") from None
        except UnidentifiedImageError:
            raise ImageReadError(path, "not a PNG or JPEG image that Pillow can decode") from None
        except (OSError, SyntaxError, ValueError) as error:
            # Pillow raises these for truncated or damaged image data.
            raise ImageReadError(path, f"failed to decode the image: {error}") from None

    def encode(self, item: Any) -> np.ndarray:
        """Encode an image as 12,288 ids in raster order.

        `item` is a uint8 array [H, W, 3] (or [H, W] grey-scale) or a PIL image. Images that
        are not 64x64 are fitted first, as `read` does.
        """
        image = item if _is_pil_image(item) else _as_image_array(item)
        pixels = fit_image(image, self.fit)
        return pixels.reshape(-1).astype(np.int32) + NUM_RESERVED_IDS

    def decode(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Decode ids into a uint8 array [64, 64, 3].

        PAD and ids outside the value range are dropped and decoding stops at the first EOS.
        Missing sub-pixels are 0 (black) and ids past the 12,288th are ignored, so a partly
        generated image decodes to its finished rows.
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        eos_positions = np.flatnonzero(ids == self.eos_id)
        if eos_positions.size:
            ids = ids[: eos_positions[0]]
        values = ids[(ids >= NUM_RESERVED_IDS) & (ids < self.vocab_size)] - NUM_RESERVED_IDS
        pixels = np.zeros(NUM_SUBPIXELS, dtype=np.uint8)
        count = min(len(values), NUM_SUBPIXELS)
        pixels[:count] = values[:count]
        return pixels.reshape(self.position_axes)

    def write(self, item: np.ndarray, path: str | os.PathLike) -> None:
        """Write an image array as a PNG file; `path` must end in .png."""
        from PIL import Image

        if Path(path).suffix.lower() != ".png":
            raise TokenizerError(f"the image tokenizer writes PNG files; {path} must end in .png")
        Image.fromarray(_as_image_array(item)).save(path, format="PNG")

    @property
    def vocab_size(self) -> int:
        return NUM_RESERVED_IDS + NUM_VALUES

    def options(self) -> dict[str, Any]:
        return {"fit": self.fit}

    def axis_indices(self, token_index) -> tuple:
        """Return (row, column, channel) of token index `token_index`; see `base.axis_indices`."""
        return axis_indices(token_index, self.position_axes)


def fit_image(image: Any, fit: str = "resize") -> np.ndarray:
    """Return an image (a PIL image or a uint8 array [H, W, 3]) as a uint8 array [64, 64, 3].

    "resize" box-resizes the whole image, "center_crop" box-resizes its largest centred
    square. A 64x64 RGB array is returned unchanged.
    """
    from PIL import Image

    if not _is_pil_image(image):
        array = _as_image_array(image)
        if array.shape == (IMAGE_SIZE, IMAGE_SIZE, CHANNELS):
            return array
        image = Image.fromarray(array)

    image = _to_rgb(image)
    if fit == "center_crop":
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), resample=Image.Resampling.BOX)
    return np.asarray(image, dtype=np.uint8).copy()


def _to_rgb(image):
    """Convert any Pillow mode to RGB; 16-bit grey-scale keeps its 8 most significant bits."""
    from PIL import Image

    if image.mode in ("I;16", "I;16L", "I;16B", "I"):
        # Pillow's convert("RGB") clips 16-bit values at 255 instead of scaling them.
        values = np.asarray(image, dtype=np.uint32)
        image = Image.fromarray((values >> 8).clip(0, 255).astype(np.uint8))
    return image if image.mode == "RGB" else image.convert("RGB")


def _is_pil_image(item: Any) -> bool:
    module = type(item).__module__
    return module.startswith("PIL.") and hasattr(item, "mode")


def _as_image_array(item: Any) -> np.ndarray:
    array = np.asarray(item)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], CHANNELS, axis=2)
    if array.ndim != 3 or array.shape[2] != CHANNELS or 0 in array.shape:
        raise TokenizerError(
            f"the image tokenizer encodes RGB images of shape [height, width, 3], not shape {array.shape}"
        )
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.integer) or array.min() < 0 or array.max() > 255:
            raise TokenizerError(
                f"the image tokenizer encodes uint8 values 0-255, not {array.dtype} values "
                f"from {array.min()} to {array.max()}"
            )
        array = array.astype(np.uint8)
    return array
