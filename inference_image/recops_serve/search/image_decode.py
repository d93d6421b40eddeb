"""Untrusted image bytes -> the 224x224 RGB array the image model reads, or a specific refusal.

Pillow (the maintained PIL; decoders for JPEG, PNG, WebP, GIF...) decodes. Limits, checked in
this order, each a ``ImageInputError`` with the HTTP status to answer:

* ``MAX_IMAGE_BYTES`` (8 MiB) of upload: larger -> 413 naming the limit (the HTTP layer refuses
  before reading the body when Content-Length says so);
* not an image Pillow recognises -> 400;
* more than ``MAX_PIXELS`` (40 Mpx, e.g. 8000x5000) declared in the header -> 413 (a
  decompression bomb: a few KB of PNG can declare 50k x 50k pixels; the header is read before
  any pixel is decoded). Pillow's own ``MAX_IMAGE_PIXELS`` guard is set to the same figure, so
  its ``DecompressionBombError`` is also caught;
* a truncated or corrupt body (``LOAD_TRUNCATED_IMAGES`` stays off) -> 400.

Only the first frame of an animation is used; EXIF orientation is applied (a phone photo is
stored sideways); any mode (palette, CMYK, grey, alpha) becomes RGB on white. Then the TF
EfficientNet evaluation crop: the central 224/256 of the shorter side, resized to 224x224 with a
bicubic filter; ``Image.draft`` lets the JPEG decoder downscale by 2/4/8 while decoding, so a
large photo costs little.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_IMAGE_BYTES = 8 << 20
MAX_PIXELS = 40_000_000
SIZE = 224
CROP_FRACTION = 224 / 256

Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageInputError(ValueError):
    def __init__(self, msg: str, status: int = 400):
        super().__init__(msg)
        self.status = status


def _open(data: bytes) -> Image.Image:
    if not data:
        raise ImageInputError("the body is empty: send the image bytes (JPEG, PNG, WebP or GIF)")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageInputError(
            f"image is {len(data)} bytes, larger than the {MAX_IMAGE_BYTES} byte ({MAX_IMAGE_BYTES >> 20} MiB) limit",
            413,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageInputError(f"image refused as a decompression bomb: {e}", 413) from None
    except UnidentifiedImageError:
        raise ImageInputError("the body is not an image Pillow can read (JPEG, PNG, WebP, GIF...)") from None
    except Exception as e:  # a header Pillow chokes on (SyntaxError, struct.error, OSError...)
        raise ImageInputError(f"the image header is corrupt: {type(e).__name__}: {e}") from None
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageInputError(f"image declares an empty size {w}x{h}")
    if w * h > MAX_PIXELS:
        raise ImageInputError(
            f"image declares {w}x{h} = {w * h} pixels, more than the {MAX_PIXELS} pixel limit "
            "(decompression bomb guard)",
            413,
        )
    return img


def _center_crop_box(w: int, h: int) -> tuple[int, int, int, int]:
    side = max(1, round(min(w, h) * CROP_FRACTION))
    left, top = (w - side) // 2, (h - side) // 2
    return left, top, left + side, top + side


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img).convert("RGB")
    return img.convert("RGB")


def decode(data: bytes, size: int = SIZE) -> np.ndarray:
    """Image bytes -> uint8 [size, size, 3] (RGB), or ``ImageInputError``."""
    img = _open(data)
    try:
        if img.format == "JPEG":
            img.draft("RGB", (size * 2, size * 2))  # DCT scaling: decode at >= 2x the target
        img.load()
        img = ImageOps.exif_transpose(img) or img
        img = to_rgb(img)
        img = img.resize((size, size), Image.Resampling.BICUBIC, box=_center_crop_box(*img.size))
    except ImageInputError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageInputError(f"image refused as a decompression bomb: {e}", 413) from None
    except Exception as e:  # truncated data: OSError("image file is truncated"), bad chunks, ...
        raise ImageInputError(f"the image is truncated or corrupt: {type(e).__name__}: {e}") from None
    return np.asarray(img, dtype=np.uint8)


def from_array(rgb: np.ndarray, size: int = SIZE) -> np.ndarray:
    """An in-memory uint8 image (grey or RGB) through the same crop and resize as ``decode``."""
    img = to_rgb(Image.fromarray(rgb))
    return np.asarray(img.resize((size, size), Image.Resampling.BICUBIC, box=_center_crop_box(*img.size)))
