"""The submit's fast path answers only what the FastAPI route would accept unchanged; the rest
goes to the route (orchestrator/api/fast_submit.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from orchestrator.api.fast_submit import PATH, _common_case, parse_body
from orchestrator.api.routes.fal_queue import RembgInput

BODIES: list[Any] = [
    {"image_url": "data:image/png;base64,AAAA"},
    {"image_url": "https://example.com/a.png", "sync_mode": True, "crop_to_bbox": False},
    {"image_url": "x", "extra": [1, 2], "crop_to_bbox": True},
    {"image_url": "x" * 50_000_000},
    {"image_url": "x" * 50_000_001},
    {"image_url": ""},
    {"image_url": 5},
    {"image_url": None},
    {"image_url": ["x"]},
    {"sync_mode": True},
    {"image_url": "x", "sync_mode": "true"},
    {"image_url": "x", "sync_mode": 1},
    {"image_url": "x", "crop_to_bbox": None},
    {"image_url": "x", "crop_to_bbox": 0.0},
    ["image_url"],
    "image_url",
    None,
    {},
]


@pytest.mark.parametrize("data", BODIES, ids=lambda d: json.dumps(d)[:40])
def test_the_fast_path_takes_a_body_only_as_the_route_reads_it(data: Any) -> None:
    body = json.dumps(data).encode()
    fields = parse_body(body)
    try:
        model = RembgInput.model_validate(json.loads(body))
    except ValidationError:
        assert fields is None  # the route answers with its validation error
        return
    if fields is not None:
        assert fields == {"image_url": model.image_url, "sync_mode": model.sync_mode,
                          "crop_to_bbox": model.crop_to_bbox}


def test_a_body_that_is_not_json_goes_to_the_route() -> None:
    assert parse_body(b"{not json") is None
    assert parse_body(b"") is None


def scope(path: str = PATH, method: str = "POST", query: bytes = b"",
          headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    base = [(b"host", b"api"), (b"authorization", b"Key k"), (b"content-type", b"application/json"),
            (b"content-length", b"40")]
    return {"type": "http", "method": method, "path": path, "query_string": query,
            "root_path": "", "headers": base if headers is None else headers}


def test_only_the_common_shape_of_request_takes_the_fast_path() -> None:
    assert _common_case(scope())
    assert _common_case(scope(headers=[(b"Content-Type", b"Application/JSON"), (b"content-length", b"3")]))
    assert not _common_case(scope(method="GET"))
    assert not _common_case(scope(path="/v1/jobs"))
    assert not _common_case(scope(query=b"fal_webhook=https://example.com/hook"))
    with_header = scope()["headers"]
    for extra in ((b"idempotency-key", b"k1"), (b"x-orchestrator-backend", b"fal"),
                  (b"transfer-encoding", b"chunked")):
        assert not _common_case(scope(headers=[*with_header, extra])), extra
    assert not _common_case(scope(headers=[(b"content-type", b"application/json; charset=utf-8"),
                                           (b"content-length", b"3")]))
    assert not _common_case(scope(headers=[(b"content-type", b"text/plain"), (b"content-length", b"3")]))
    assert not _common_case(scope(headers=[(b"content-type", b"application/json")]))  # no length
    assert not _common_case({**scope(), "type": "websocket"})
