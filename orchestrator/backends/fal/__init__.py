"""The fal backend: ``fal-ai/imageutils/rembg`` through fal's queue API.

A delivery of a fal job submits it once (``submitter``); the request is then polled from
Postgres by the poller thread of any fal worker (``poller``), which fetches, downloads and
stores the result. No worker slot sleeps while fal works.
"""

from __future__ import annotations

import base64
from decimal import Decimal
from typing import Any, ClassVar

from orchestrator.backends.base import Backend
from orchestrator.backends.fal.client import key_fingerprint
from orchestrator.backends.fal.limits import key_refusal
from orchestrator.errors import BackendUnavailable, InputTooLarge
from orchestrator.images.decode import image_mime, open_image
from orchestrator.queue.broker import is_redis
from orchestrator.settings import Settings

# fal's toolkit accepts data URIs up to 10 MiB (fal-queue-protocol.md §10).
MAX_DATA_URI_CHARS = 10 * 1024 * 1024


class FalBackend(Backend):
    name: ClassVar[str] = "fal"
    remote: ClassVar[bool] = True

    @classmethod
    def model_label(cls, settings: Settings) -> str:
        return settings.fal.endpoint

    @classmethod
    def unavailable_reason(cls, settings: Settings) -> str | None:
        if settings.fal.key is None or not settings.fal.key.get_secret_value():
            return "FAL_KEY is not set, so the fal backend is unavailable"
        if not is_redis(settings.broker.url.get_secret_value()):
            return ("the fal backend keeps its limits shared by all workers in Redis: "
                    "set ORCH_BROKER_URL to a redis:// URL to use it")
        refusal = key_refusal(settings.broker.url.get_secret_value(), key_fingerprint(settings.fal.key.get_secret_value()))
        if refusal:
            return f"fal refused the current FAL_KEY ({refusal}); set a valid key"
        return None

    def key(self) -> str:
        reason = self.unavailable_reason(self.settings)
        if reason:
            raise BackendUnavailable(reason)
        assert self.settings.fal.key is not None
        return self.settings.fal.key.get_secret_value()

    def price_per_second(self) -> Decimal:
        return self.settings.fal.price_per_second

    def arguments(self, *, url: str | None, data: bytes | None, options: dict[str, Any]) -> dict[str, Any]:
        """fal's input: URLs pass through; file bytes go as a data URI within fal's limit."""
        if url is not None:
            image_url = url
        else:
            assert data is not None
            # Fail fast (and free) on what is not an image, before paying fal to say so.
            open_image(data, max_bytes=self.settings.inputs.max_bytes,
                       max_pixels=self.settings.inputs.max_pixels)
            image_url = f"data:{image_mime(data)};base64,{base64.b64encode(data).decode()}"
            if len(image_url) > MAX_DATA_URI_CHARS:
                raise InputTooLarge(
                    f"the file is {len(data):,} bytes: as a data URI that exceeds fal's 10 MiB "
                    "limit; submit it as an http(s) URL instead"
                )
        return {"image_url": image_url, "crop_to_bbox": bool(options.get("crop_to_bbox", False)),
                "sync_mode": False}
