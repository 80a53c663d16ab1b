"""Turn untrusted bytes into a Pillow image the local backend can use, or a clear InputError.

Checks, in order: the byte limit, the format (only the allow-listed decoders run), the pixel
count from the header (before any pixel is decoded), then a full decode (truncated or corrupt
data fails here). EXIF orientation is applied, and unusual modes are brought to RGB or RGBA.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from orchestrator.errors import CorruptImage, InputTooLarge, UnsupportedFormat

SUPPORTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")


def _human_bytes(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise InputTooLarge(
            f"the input is {_human_bytes(size)}, more than the limit of {_human_bytes(max_bytes)}"
        )


def _identify_unsupported(data: bytes) -> str | None:
    """The name of a format Pillow knows but we do not accept, if that is what the data is."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            return probe.format
    except Exception:
        return None


def open_image(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Decode ``data`` fully; raise an InputError a person can act on if it is not usable."""
    check_size(len(data), max_bytes)
    if not data:
        raise CorruptImage("the input is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except UnidentifiedImageError:
        other = _identify_unsupported(data)
        if other:
            raise UnsupportedFormat(
                f"{other} images are not supported; send one of: {', '.join(SUPPORTED_FORMATS)}"
            ) from None
        raise CorruptImage(
            "the input is not an image in a supported format "
            f"({', '.join(SUPPORTED_FORMATS)}), or its header is damaged"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputTooLarge(f"the image has more than {max_pixels:,} pixels") from None

    width, height = img.size
    if width <= 0 or height <= 0:
        raise CorruptImage(f"the image has an invalid size {width}×{height}")
    if width * height > max_pixels:
        raise InputTooLarge(
            f"the image is {width}×{height} = {width * height:,} pixels, "
            f"more than the limit of {max_pixels:,}"
        )
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow reports truncation as OSError("image file is truncated ...").
        raise CorruptImage(f"the {img.format} image is truncated or corrupt ({exc})") from None
    except Image.DecompressionBombError:
        raise InputTooLarge(f"the image has more than {max_pixels:,} pixels") from None

    try:
        upright: Image.Image = ImageOps.exif_transpose(img)
    except Exception as exc:  # broken EXIF must not take the job down with a traceback
        raise CorruptImage(f"the image's EXIF orientation data is corrupt ({exc})") from None
    return to_rgb_or_rgba(upright)


def to_rgb_or_rgba(img: Image.Image) -> Image.Image:
    """RGB and RGBA pass through untouched, so results match rembg on the same input."""
    mode = img.mode
    if mode in ("RGB", "RGBA"):
        return img
    if mode in ("LA", "PA") or (mode == "P" and "transparency" in img.info):
        return img.convert("RGBA")
    if mode.startswith("I") or mode == "F":
        # 16- and 32-bit samples: Pillow's convert() clips to 255; scale to 8 bits instead.
        arr = np.asarray(img).astype(np.float64)
        peak = float(arr.max()) if arr.size else 0.0
        if peak > 255:
            arr = arr / (65535.0 if peak <= 65535 else peak) * 255.0
        gray = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
        return gray.convert("RGB")
    return img.convert("RGB")


def image_mime(data: bytes) -> str:
    """The MIME type of an image already accepted by ``open_image``."""
    with Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS) as img:
        return Image.MIME.get(img.format or "", "application/octet-stream")
