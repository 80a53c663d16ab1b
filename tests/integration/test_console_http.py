"""The console over HTTP in-process (real Postgres): cookies, headers, htmx answers, assets."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest

from orchestrator.api.app import create_app
from orchestrator.auth.keys import create_key
from orchestrator.db.session import session_scope
from orchestrator.settings import get_settings

with warnings.catch_warnings():  # starlette would rather have httpx2; httpx works
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


@pytest.fixture
def setup(env: dict[str, str]) -> Iterator[tuple[TestClient, str]]:
    settings = get_settings()
    with session_scope(settings.database.url.get_secret_value()) as session:
        key = create_key(session, "ops", admin=True)
    # No lifespan (no `with`): the console needs no broker for these pages.
    yield TestClient(create_app(settings), base_url="https://testserver"), key


def _sign_in(client: TestClient, key: str) -> str:
    response = client.post("/console/sign-in", data={"key": key, "next": "/console/jobs"},
                           follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/console/jobs"
    return response.headers["set-cookie"]


def test_session_cookie_is_secure_over_tls_and_never_holds_the_key(setup: tuple[TestClient, str]
                                                                   ) -> None:
    client, key = setup
    cookie = _sign_in(client, key)
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "secure", "samesite=strict", "path=/console"} <= flags
    assert key not in cookie and key[5:] not in cookie


def test_redirect_after_sign_in_stays_in_the_console(setup: tuple[TestClient, str]) -> None:
    client, key = setup
    for target in ("https://evil.example/", "//evil.example/x", "/v1/jobs", "/console\\..\\x"):
        response = client.post("/console/sign-in", data={"key": key, "next": target},
                               follow_redirects=False)
        assert response.headers["location"] == "/console/overview", target


def test_pages_carry_a_strict_policy_and_assets_are_local(setup: tuple[TestClient, str]) -> None:
    client, key = setup
    _sign_in(client, key)
    page = client.get("/console/jobs")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere
    htmx = client.get("/console/static/htmx-2.0.11.min.js")
    assert htmx.status_code == 200 and b'version:"2.0.11"' in htmx.content
    assert client.get("/console/static/console.css").status_code == 200


def test_expired_or_missing_session_on_an_htmx_request_redirects_the_page(
        setup: tuple[TestClient, str]) -> None:
    client, _ = setup
    response = client.get("/console/overview/figures", headers={"HX-Request": "true"},
                          follow_redirects=False)
    assert response.status_code == 204
    assert response.headers["hx-redirect"].startswith("/console/sign-in?reason=required")
    plain = client.get("/console/jobs?state=failed", follow_redirects=False)
    assert plain.status_code == 303
    assert plain.headers["location"] == ("/console/sign-in?reason=required"
                                         "&next=%2Fconsole%2Fjobs%3Fstate%3Dfailed")


def test_unknown_pages_and_bad_values_are_pages_not_tracebacks(setup: tuple[TestClient, str]
                                                                ) -> None:
    client, key = setup
    _sign_in(client, key)
    missing = client.get("/console/nowhere")
    assert missing.status_code == 404 and "Not found" in missing.text
    assert "text/html" in missing.headers["content-type"]
    nul = client.get("/console/jobs", params={"q": "a\x00b", "client": "x\x00"})
    assert nul.status_code in (200, 422) and "text/html" in nul.headers["content-type"]
    assert "Traceback" not in nul.text
    costs = client.get("/console/costs.csv", params={"since": "2026-02-30"})
    assert costs.status_code == 400 and "is not a date" in costs.text
