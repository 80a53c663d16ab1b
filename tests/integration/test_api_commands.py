"""The HTTP front end over the command layer (in process, on the real Postgres and Redis):
tenant isolation, keyset pages through ``/v1/jobs``, a batch with ``auto`` in one transaction,
and caller mistakes as 400s, not configuration errors."""

from __future__ import annotations

import base64
import io
import warnings
from collections.abc import Iterator

import psycopg
import pytest
from PIL import Image

from orchestrator.api.app import create_app
from orchestrator.auth.keys import create_key
from orchestrator.db.session import session_scope
from orchestrator.settings import Settings, load_settings

with warnings.catch_warnings():  # starlette would rather have httpx2; httpx works
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


def _uri(tag: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (3, 3), (tag, 40, 50)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return load_settings()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def _auth(settings: Settings, name: str, *, admin: bool = False) -> dict[str, str]:
    with session_scope(settings.database.url.get_secret_value()) as session:
        return {"Authorization": f"Key {create_key(session, name, admin=admin)}"}


def test_tenants_pages_batches_and_request_errors(settings: Settings, client: TestClient) -> None:
    alice, bob = _auth(settings, "alice"), _auth(settings, "bob")
    admin = _auth(settings, "ops", admin=True)

    batch = client.post("/v1/batches", headers=alice, json={"backend": "auto", "items": [
        {"image_url": _uri(i)} for i in range(5)] + [{"image_url": "ftp://x/y.png"}]})
    assert batch.status_code == 200, batch.text
    body = batch.json()
    assert [item["state"] for item in body] == ["queued"] * 5 + ["rejected"]
    assert "http(s) URL" in body[5]["error"]
    with psycopg.connect(settings.database.url.get_secret_value().replace("+psycopg", "")) as conn:
        rows = conn.execute("SELECT requested_backend, xmin::text FROM jobs").fetchall()
    assert len(rows) == 5 and {r[0] for r in rows} == {"auto"}
    assert len({r[1] for r in rows}) == 1  # one transaction, auto included

    # Pages of 2: three pages, each id once, the last without a cursor.
    seen: list[str] = []
    params: dict[str, str | int] = {"limit": 2}
    for _ in range(3):
        page = client.get("/v1/jobs", headers=alice, params=params)
        assert page.status_code == 200, page.text
        seen += [job["id"] for job in page.json()]
        if "X-Next-Cursor" not in page.headers:
            break
        params = {"limit": 2, "after": page.headers["X-Next-Cursor"]}
    assert "X-Next-Cursor" not in page.headers
    assert sorted(seen) == sorted(item["id"] for item in body[:5]) and len(seen) == 5
    assert client.get("/v1/jobs", headers=alice, params={"after": "junk"}).status_code == 400

    # Bob sees none of it: not in his list, and each of Alice's jobs is a 404 to him.
    job_id = body[0]["id"]
    assert client.get("/v1/jobs", headers=bob, params={"client": "alice"}).json() == []
    for method, path in (("GET", f"/v1/jobs/{job_id}"), ("POST", f"/v1/jobs/{job_id}/cancel"),
                         ("POST", f"/v1/jobs/{job_id}/retry"), ("GET", f"/v1/jobs/{job_id}/result"),
                         ("GET", f"/fal-ai/imageutils/requests/{job_id}/status")):
        assert client.request(method, path, headers=bob).status_code == 404, (method, path)
    assert client.get("/v1/reports/costs", headers=bob, params={"client": "alice"}).status_code == 403
    assert client.get("/v1/jobs", headers=admin, params={"client": "alice"}).json() != []

    # Alice cancels her own job; a second cancel is fal's ALREADY_COMPLETED.
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=alice).status_code == 202
    again = client.post(f"/v1/jobs/{job_id}/cancel", headers=alice)
    assert (again.status_code, again.json()) == (400, {"status": "ALREADY_COMPLETED"})
    assert client.post(f"/v1/jobs/{job_id}/retry", headers=alice).json()["state"] == "queued"

    # A bad backend header is the caller's mistake: 400 with the choices.
    refused = client.post("/fal-ai/imageutils/rembg", headers={**alice, "X-Orchestrator-Backend":
                                                               "gpu"}, json={"image_url": _uri(9)})
    assert refused.status_code == 400 and "unknown backend 'gpu'" in refused.json()["detail"]
    routed = client.post("/fal-ai/imageutils/rembg", headers={**alice, "X-Orchestrator-Backend":
                                                              "auto"}, json={"image_url": _uri(9)})
    assert routed.status_code == 200, routed.text
    shown = client.get(f"/v1/jobs/{routed.json()['request_id']}", headers=alice).json()
    assert shown["requested_backend"] == "auto" and shown["routing"]["decision"] in ("local", "fal")
