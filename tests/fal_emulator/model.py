"""The emulated ``fal-ai/imageutils/rembg`` model: deterministic, Pillow only.

The "mask" is the image's luminance: dark pixels become transparent, bright ones opaque
(a ramp between ``LOW`` and ``HIGH``). Same input bytes and flags, same output PNG bytes.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass
from typing import Any

import httpx
from PIL import Image, ImageOps

MAX_DATA_URI_LENGTH = 10 * 1024 * 1024  # fal toolkit's limit for data: URIs
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
FETCH_TIMEOUT = 30.0
LOW, HIGH = 96, 160

_DATA_URI = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(;[^;,]*)*?),(?P<data>.*)$", re.DOTALL)


@dataclass(frozen=True)
class ModelOutput:
    png: bytes
    width: int
    height: int


class ModelValidationError(Exception):
    """The input was rejected: becomes a 422 ``{"detail": [{loc, msg, type}]}``."""

    def __init__(self, msg: str, error_type: str, loc: tuple[str, ...] = ("body", "image_url")):
        super().__init__(msg)
        self.msg = msg
        self.error_type = error_type
        self.loc = loc

    def detail(self) -> list[dict[str, Any]]:
        return [{"loc": list(self.loc), "msg": self.msg, "type": self.error_type}]


def load_image_bytes(image_url: Any) -> bytes:
    if not isinstance(image_url, str) or not image_url:
        raise ModelValidationError("Field required", "missing")
    if image_url.startswith("data:"):
        if len(image_url) > MAX_DATA_URI_LENGTH:
            raise ModelValidationError(
                f"Data URI is too long ({len(image_url)} > {MAX_DATA_URI_LENGTH} characters)",
                "file_too_large",
            )
        m = _DATA_URI.match(image_url)
        if m is None:
            raise ModelValidationError("Invalid data URI", "image_load_error")
        data = m.group("data")
        if ";base64" in m.group("params"):
            try:
                return base64.b64decode(data, validate=False)
            except (binascii.Error, ValueError) as exc:
                raise ModelValidationError(f"Invalid base64 data: {exc}", "image_load_error")
        from urllib.parse import unquote_to_bytes

        return unquote_to_bytes(data)
    if image_url.startswith(("http://", "https://")):
        return _fetch(image_url)
    raise ModelValidationError("URL must be an http(s) URL or a data URI", "image_load_error")


def _fetch(url: str) -> bytes:
    try:
        with httpx.Client(timeout=FETCH_TIMEOUT, follow_redirects=True) as client:
            with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise ModelValidationError(
                        f"Failed to download the file: HTTP {response.status_code}",
                        "file_download_error",
                    )
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > MAX_DOWNLOAD_BYTES:
                        raise ModelValidationError("File is too large", "file_too_large")
                    chunks.append(chunk)
                return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise ModelValidationError(f"Failed to download the file: {exc}", "file_download_error")


def decode_image(data: bytes) -> Image.Image:
    # No warnings.catch_warnings() here: it is not thread-safe. Pillow's decompression-bomb
    # limit (an exception past 2x MAX_IMAGE_PIXELS) is the size guard.
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            oriented = ImageOps.exif_transpose(img)
            if oriented.mode in ("P", "PA", "LA", "La", "RGBa"):
                oriented = oriented.convert("RGBA")  # avoids Pillow's palette-transparency warning
            if oriented.mode.startswith("I;16"):
                oriented = oriented.point(lambda v: v / 257, "L")  # type: ignore[arg-type,return-value]
            return oriented.convert("RGB")
    except Exception as exc:  # any decoder failure means "not an image we can load"
        raise ModelValidationError(f"Failed to load the image: {exc}", "image_load_error")


def remove_background(img: Image.Image, crop_to_bbox: bool = False) -> ModelOutput:
    lum = img.convert("L")
    scale = 255 / (HIGH - LOW)
    alpha = lum.point(lambda v: 0 if v <= LOW else 255 if v >= HIGH else int((v - LOW) * scale))
    out = img.convert("RGBA")
    out.putalpha(alpha)
    if crop_to_bbox:
        bbox = alpha.getbbox()
        if bbox is not None:
            out = out.crop(bbox)
    buf = io.BytesIO()
    out.save(buf, "PNG")
    return ModelOutput(png=buf.getvalue(), width=out.width, height=out.height)


def run(arguments: Any) -> ModelOutput:
    """The whole model: input JSON → PNG, or ``ModelValidationError``."""
    if not isinstance(arguments, dict):
        raise ModelValidationError("Input should be a valid dictionary", "dict_type", ("body",))
    data = load_image_bytes(arguments.get("image_url"))
    return remove_background(decode_image(data), bool(arguments.get("crop_to_bbox", False)))
