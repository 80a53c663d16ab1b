from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from orchestrator import errors
from orchestrator.images.decode import open_image
from tests.support.images import bad_inputs, good_inputs, subject

LIMITS = {"max_bytes": 5 * 1024 * 1024, "max_pixels": 20_000_000}


@pytest.mark.parametrize("name", sorted(good_inputs()))
def test_every_supported_mode_decodes_to_rgb_or_rgba(name: str) -> None:
    img = open_image(good_inputs()[name], **LIMITS)
    assert img.mode in ("RGB", "RGBA")
    assert img.size in ((96, 64), (64, 96))


def test_exif_orientation_is_applied() -> None:
    img = open_image(good_inputs()["rotated.jpg"], **LIMITS)
    assert img.size == (64, 96)


def test_sixteen_bit_samples_are_scaled_not_clipped() -> None:
    img = open_image(good_inputs()["gray16.png"], **LIMITS)
    expected = np.asarray(subject().convert("L"), dtype=np.float64)
    got = np.asarray(img.convert("L"), dtype=np.float64)
    assert np.abs(got - expected).max() <= 1


def test_rgb_passes_through_unchanged() -> None:
    data = good_inputs()["rgb.png"]
    assert np.array_equal(np.asarray(open_image(data, **LIMITS)), np.asarray(subject()))


@pytest.mark.parametrize("name", sorted(bad_inputs()))
def test_bad_inputs_raise_a_clear_permanent_error(name: str) -> None:
    data, expected = bad_inputs()[name]
    with pytest.raises(errors.InputError) as info:
        open_image(data, **LIMITS)
    assert info.value.code == expected
    assert not info.value.retryable
    message = str(info.value)
    assert len(message) > 15 and "Traceback" not in message


def test_byte_limit() -> None:
    with pytest.raises(errors.InputTooLarge, match="limit"):
        open_image(b"\x89PNG" + b"\x00" * 2048, max_bytes=1024, max_pixels=10**6)


def test_pixel_limit_is_checked_before_decoding() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (2000, 1000)).save(buf, "PNG")
    with pytest.raises(errors.InputTooLarge, match="2,000,000 pixels"):
        open_image(buf.getvalue(), max_bytes=10**8, max_pixels=1_000_000)


def test_permanent_and_transient_errors_are_told_apart_by_type() -> None:
    assert not errors.CorruptImage("x").retryable
    assert not errors.BackendUnavailable("x").retryable
    assert errors.FetchFailed("x").retryable
    assert issubclass(errors.InputUnreachable, errors.PermanentJobError)
