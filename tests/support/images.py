"""Images the tests make: every mode the pipeline accepts, and every kind of bad input."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def subject(size: tuple[int, int] = (96, 64)) -> Image.Image:
    """A bright disc on a dark background: the tiny model's mask picks out the disc."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    disc = ((xx - w * 0.6) ** 2 + (yy - h * 0.5) ** 2) < (min(w, h) * 0.3) ** 2
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 0] = 30 + (xx * 60 // w)
    arr[..., 2] = 40
    arr[disc] = (240, 220, 200)
    return Image.fromarray(arr, "RGB")


def good_inputs() -> dict[str, bytes]:
    """name → bytes, one per mode or format the pipeline must accept."""
    rgb = subject()
    i16 = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
    p_transparent = rgb.convert("P")
    p_transparent.info["transparency"] = 0
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    return {
        "rgb.png": _save(rgb, "PNG"),
        "rgb.jpg": _save(rgb, "JPEG", quality=95),
        "gray.png": _save(rgb.convert("L"), "PNG"),
        "palette.png": _save(rgb.convert("P"), "PNG"),
        "palette_transparent.png": _save(p_transparent, "PNG", transparency=0),
        "rgba.png": _save(rgb.convert("RGBA"), "PNG"),
        "la.png": _save(rgb.convert("LA"), "PNG"),
        "cmyk.jpg": _save(rgb.convert("CMYK"), "JPEG", quality=95),
        "gray16.png": _save(i16, "PNG"),
        "rgb.webp": _save(rgb, "WEBP", lossless=True),
        "rgb.tiff": _save(rgb, "TIFF"),
        "rotated.jpg": _save(rgb, "JPEG", quality=95, exif=exif),
    }


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size; decoding it would allocate gigabytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def bad_inputs() -> dict[str, tuple[bytes, str]]:
    """name → (bytes, the error code the job must end with)."""
    png = _save(subject((256, 256)), "PNG")
    jpeg = _save(subject((256, 256)), "JPEG")
    return {
        "not_an_image.png": (b"hello, this is plain text and not an image\n" * 10, "corrupt_image"),
        "empty.png": (b"", "corrupt_image"),
        "truncated_png.png": (png[: len(png) // 2], "corrupt_image"),
        "truncated_jpg.jpg": (jpeg[: len(jpeg) // 3], "corrupt_image"),
        "corrupt.png": (png[:40] + bytes(range(256)) * 8, "corrupt_image"),
        "unsupported_ico.png": (_save(subject((32, 32)), "ICO"), "unsupported_format"),
        "unsupported_ppm.png": (_save(subject((32, 32)), "PPM"), "unsupported_format"),
        "bomb.png": (png_header_only(60_000, 60_000), "input_too_large"),
    }


def png_of(img: Image.Image) -> bytes:
    """The image encoded as PNG."""
    return _save(img, "PNG")


def png(size: tuple[int, int] = (96, 64)) -> bytes:
    """A :func:`subject` of ``size`` as PNG bytes."""
    return png_of(subject(size))


def numbered_png(i: int, base: tuple[int, int]) -> bytes:
    """The ``i``-th of a series of different PNGs (``base`` grown by ``i`` pixels each way), so
    no two inputs of a test share a hash and get folded by deduplication."""
    return png((base[0] + i, base[1] + i))


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def write_pngs(folder: Path, n: int, *, base: tuple[int, int], prefix: str = "img",
               start: int = 0) -> list[Path]:
    """Write ``n`` numbered PNGs ``prefix-NNN.png`` into ``folder`` (created); return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        path = folder / f"{prefix}-{i:03d}.png"
        path.write_bytes(numbered_png(i, base))
        paths.append(path)
    return paths


def png_folder(folder: Path, n: int, *, base: tuple[int, int], prefix: str = "img",
               start: int = 0) -> Path:
    """:func:`write_pngs` into ``folder``; return the folder (what ``orchestrator submit`` takes)."""
    write_pngs(folder, n, base=base, prefix=prefix, start=start)
    return folder
