"""The API with its database unreachable: a clear 503 with Retry-After, never a 500, and a
submit that got the 503 was not accepted."""

from __future__ import annotations

import asyncio

import httpx
from PIL import Image

from orchestrator.api.app import create_app
from orchestrator.settings import load_settings
from tests.support.images import data_uri, png_of

DEAD_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"


def _data_uri() -> str:
    return data_uri(png_of(Image.new("RGB", (2, 2), (1, 2, 3))))


async def _calls() -> list[httpx.Response]:
    app = create_app(load_settings(database_url=DEAD_DATABASE))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = {"Authorization": "Key orch_not-cached-anywhere"}
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        return [
            await client.post("/fal-ai/imageutils/rembg", json={"image_url": _data_uri()},
                              headers=headers),
            await client.get("/v1/jobs", headers=headers),
            await client.get("/readyz"),
        ]


def test_an_unreachable_database_is_a_503(env: dict[str, str]) -> None:
    submit, listing, ready = asyncio.run(_calls())

    for reply in (submit, listing):
        assert reply.status_code == 503, reply.text
        assert reply.headers["Retry-After"] == "5"
        assert reply.json() == {"detail": "the database is unavailable; retry later"}
    assert ready.status_code == 503 and "database" in ready.text
