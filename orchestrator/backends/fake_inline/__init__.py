"""An in-memory inline backend for tests and demos: no model, no network.

Its cut-out is a pure function of the input (alpha = 255 where a pixel is brighter than the
image's mean, else 0), so a test can compute what to expect. Latency and failures are set per
instance: ``FakeInlineBackend(settings, latency=0.2, failures=[BackendBusy("x")])`` raises each
of ``failures`` once, in order, before it succeeds.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterable
from decimal import Decimal
from typing import ClassVar

from PIL import Image, ImageStat

from orchestrator.backends.base import BackendInput, BackendOutput, InlineBackend
from orchestrator.images.decode import open_image
from orchestrator.jobs.states import ComputeBasis
from orchestrator.settings import Settings


def fake_cutout(image: Image.Image, *, crop_to_bbox: bool) -> Image.Image:
    """The fakes' "background removal": bright pixels kept, the rest transparent."""
    grey = image.convert("L")
    mean = ImageStat.Stat(grey).mean[0]
    alpha = grey.point(lambda v: 255 if v > mean else 0)
    cutout = image.convert("RGBA")
    cutout.putalpha(alpha)
    if crop_to_bbox:
        box = alpha.getbbox()
        if box is not None:
            cutout = cutout.crop(box)
    return cutout


def encode_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


class FakeInlineBackend(InlineBackend):
    name: ClassVar[str] = "fake-inline"

    def __init__(self, settings: Settings, *, latency: float = 0.0,
                 failures: Iterable[Exception] = (),
                 price_per_second: Decimal = Decimal("0.0001")) -> None:
        super().__init__(settings)
        self.latency = latency
        self._failures = list(failures)
        self._price = price_per_second
        self._lock = threading.Lock()
        self.runs = 0

    @classmethod
    def model_label(cls, settings: Settings) -> str:
        return "fake-threshold"

    @classmethod
    def unavailable_reason(cls, settings: Settings) -> str | None:
        return None

    def price_per_second(self) -> Decimal:
        return self._price

    def run(self, job_input: BackendInput) -> BackendOutput:
        with self._lock:
            self.runs += 1
            failure = self._failures.pop(0) if self._failures else None
        started = time.perf_counter()
        if self.latency:
            time.sleep(self.latency)
        if failure is not None:
            raise failure
        image = open_image(job_input.data, max_bytes=self.settings.inputs.max_bytes,
                           max_pixels=self.settings.inputs.max_pixels)
        crop = bool(job_input.options.get("crop_to_bbox", False))
        cutout = fake_cutout(image, crop_to_bbox=crop)
        return BackendOutput(
            data=encode_png(cutout), content_type="image/png", width=cutout.width,
            height=cutout.height,
            compute_seconds=Decimal(f"{time.perf_counter() - started:.6f}"),
            compute_basis=ComputeBasis.LOCAL_MEASURED, cropped=crop,
        )
