"""Sign-in, sessions, CSRF, tenant scope and revocation, in a real browser."""

from __future__ import annotations

import time
from typing import Any
from unittest import mock

from itsdangerous import URLSafeTimedSerializer

from tests.browser.conftest import Console, shot, sign_in
from tests.conftest import run_cli


def test_sign_in_with_admin_and_tenant_keys(console: Console, page: Any) -> None:
    page.goto(console.url + "/jobs")
    assert "/console/sign-in" in page.url  # no session: sent to sign in, then back
    page.get_by_label("API key").fill("orch_not-a-key")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "That key is not valid or was revoked."
    shot(page, "sign-in")
    page.get_by_label("API key").fill(console.admin_key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/jobs")
    nav = page.get_by_role("navigation", name="Console")
    assert nav.get_by_role("link").all_inner_texts() == [
        "Overview", "Jobs", "Costs", "Budgets", "Keys"]
    cookie = next(c for c in page.context.cookies() if c["name"] == "orch_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    assert console.admin_key not in cookie["value"]
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/sign-in?reason=signed-out")
    assert not any(c["name"] == "orch_console" for c in page.context.cookies())

    sign_in(page, console, console.tenant_key)
    nav = page.get_by_role("navigation", name="Console")
    assert nav.get_by_role("link").all_inner_texts() == ["Overview", "Jobs", "Costs"]
    page.goto(console.url + "/keys")
    assert "needs an admin key" in page.get_by_role("alert").inner_text()


def test_another_tenants_job_is_not_found(console: Console, page: Any) -> None:
    theirs = console.upload(console.other_key, "globex.png", b"\x89PNG not really")
    sign_in(page, console, console.tenant_key)
    for path in (f"/jobs/{theirs}", f"/jobs/{theirs}/input", "/jobs/not-a-uuid"):
        response = page.goto(console.url + path)
        assert response.status == 404, path
        assert "Not found" in page.get_by_role("alert").inner_text(), path
    shot(page, "not-found")
    # and its id in the search box finds nothing
    page.goto(f"{console.url}/jobs?q={theirs}")
    assert page.locator("td.empty").inner_text() == "No job matches these filters."
    # the admin sees it
    page.context.clear_cookies()
    sign_in(page, console, console.admin_key)
    assert page.goto(f"{console.url}/jobs/{theirs}").status == 200


def test_a_post_without_the_csrf_token_is_refused(console: Console, page: Any) -> None:
    job_id = console.upload(console.tenant_key, "a.png", b"\x89PNG not really")
    sign_in(page, console, console.tenant_key)
    page.goto(f"{console.url}/jobs/{job_id}")
    # The same browser session, cookie and all, but no token: refused.
    response = page.request.post(f"{console.url}/jobs/{job_id}/cancel", form={"x": "1"},
                                 max_redirects=0)
    assert response.status == 403
    assert "security token" in response.text()
    response = page.request.post(f"{console.url}/jobs/{job_id}/cancel",
                                 form={"csrf_token": "forged"}, max_redirects=0)
    assert response.status == 403
    assert console.job(console.tenant_key, job_id)["state"] == "queued"
    # With the page's own form (and token) it goes through; Chromium counts plain-HTTP
    # loopback as secure and says the form is same-origin.
    with page.expect_request(lambda r: r.method == "POST") as posted:
        page.get_by_role("button", name="Cancel").click()
    assert posted.value.all_headers().get("sec-fetch-site") == "same-origin"
    page.wait_for_selector("text=Cancelled 1 job(s)")
    assert console.job(console.tenant_key, job_id)["state"] == "cancelled"
    # A form posted from another site is refused even with a valid token.
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    response = page.request.post(f"{console.url}/jobs/{job_id}/retry",
                                 form={"csrf_token": token},
                                 headers={"Origin": "https://evil.example"}, max_redirects=0)
    assert response.status == 403


def test_a_revoked_key_is_locked_out_within_the_cache_time(console: Console, page: Any) -> None:
    sign_in(page, console, console.tenant_key)
    page.goto(console.url + "/jobs")
    out = run_cli(console.env, "keys", "revoke", "acme")
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 8  # the API's key cache is 5 s
    while time.monotonic() < deadline:
        page.goto(console.url + "/jobs")
        if "/sign-in" in page.url:
            break
        time.sleep(0.5)
    assert "/sign-in" in page.url
    assert "revoked" in page.get_by_role("alert").inner_text()


def test_an_expired_session_asks_to_sign_in_again(console: Console, page: Any) -> None:
    sign_in(page, console, console.tenant_key)
    cookie = next(c for c in page.context.cookies() if c["name"] == "orch_console")
    # The same session, as if signed in 9 hours ago (the default lasts 8): re-signed with the
    # server's secret at an earlier time.
    secret = console.env["ORCH_CONSOLE_SESSION_SECRET"]
    serializer = URLSafeTimedSerializer(secret, salt="orchestrator.console.session")
    payload = serializer.loads(cookie["value"])
    with mock.patch("itsdangerous.timed.time.time", return_value=time.time() - 9 * 3600):
        old = serializer.dumps(payload)
    page.context.add_cookies([{**cookie, "value": old}])
    page.goto(console.url + "/jobs")
    assert "/sign-in" in page.url
    assert page.get_by_role("alert").inner_text() == "Your session has expired: sign in again."
    # a tampered cookie is no session at all
    page.context.add_cookies([{**cookie, "value": cookie["value"][:-4] + "AAAA"}])
    page.goto(console.url + "/jobs")
    assert "/sign-in" in page.url and page.get_by_label("API key").is_visible()
