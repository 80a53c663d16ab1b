"""The webhook verifier on the "Verify webhooks" page works against the orchestrator's signer."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from orchestrator.settings import load_settings
from orchestrator.webhooks.signing import jwks, new_signing_key, signed_headers

PAGE = Path(__file__).resolve().parents[2] / "docs" / "how-to" / "verify-webhooks.md"


def _snippet() -> dict[str, Any]:
    match = re.search(r"<!-- docs-test: webhook-verifier -->\n```python\n(.*?)```",
                      PAGE.read_text(), re.S)
    assert match, "the verifier block is gone from verify-webhooks.md"
    namespace: dict[str, Any] = {}
    exec(compile(match.group(1), str(PAGE), "exec"), namespace)
    return namespace


def test_documented_verifier_accepts_real_webhooks_and_rejects_forgeries() -> None:
    page = _snippet()
    settings = load_settings(webhook_signing_key=new_signing_key())
    body = json.dumps({"request_id": "req-1", "status": "OK", "payload": {}}).encode()
    headers = signed_headers(settings, request_id="req-1", user_id="my-service", body=body)
    keys = page["keys_from_jwks"](jwks(settings))

    assert page["verify"](headers, body, keys)
    assert not page["verify"](headers, body + b" ", keys)  # the body was changed
    assert not page["verify"]({**headers, "X-Fal-Webhook-User-Id": "other"}, body, keys)
    stale = signed_headers(settings, request_id="req-1", user_id="my-service", body=body,
                           now=time.time() - 600)
    assert not page["verify"](stale, body, keys)  # replayed after 5 minutes
    other = load_settings(webhook_signing_key=new_signing_key())
    assert not page["verify"](headers, body, page["keys_from_jwks"](jwks(other)))
