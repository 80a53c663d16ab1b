"""The jobs list and a job's page against a real worker, in a real browser."""

from __future__ import annotations

import time
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import Console, png, shot, sign_in


def _wait_state(console: Console, key: str, job_id: str, state: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if console.job(key, job_id)["state"] == state:
            return
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} is {console.job(key, job_id)['state']}, not {state}")


def test_filter_search_and_open_a_job_with_both_images(console: Console, page: Any) -> None:
    console.start_worker()
    done = [console.upload(console.tenant_key, f"cat-{i}.png", png((80 + i, 60))) for i in range(3)]
    broken = console.upload(console.tenant_key, "broken.png", b"\x89PNG\r\n\x1a\n not an image")
    console.upload(console.other_key, "other-tenant.png", png())
    for job_id in done:
        _wait_state(console, console.tenant_key, job_id, "succeeded")
    _wait_state(console, console.tenant_key, broken, "failed")

    sign_in(page, console, console.tenant_key)
    page.goto(console.url + "/jobs")
    rows = page.locator("#job-rows tr")
    assert rows.count() == 4  # the tenant's own, not globex's
    shot(page, "jobs")
    page.get_by_label("State").select_option("failed")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/console/jobs?state=failed&**")
    assert rows.count() == 1 and "broken" in rows.first.inner_text()
    page.get_by_role("link", name="Clear").click()
    page.wait_for_url("**/console/jobs")
    page.get_by_label("Search").fill("cat-1")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**q=cat-1")
    assert rows.count() == 1 and "cat-1" in rows.first.inner_text()
    page.get_by_label("Search").fill(done[2])  # a job id
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(f"**q={done[2]}")
    assert rows.count() == 1 and done[2][:8] in rows.first.inner_text()

    # bad input: a message on the page, never a traceback
    page.goto(console.url + "/jobs?state=exploded&since=yesterday&colour=red&after=garbage")
    alerts = " ".join(page.get_by_role("alert").all_inner_texts())
    assert "There is no state 'exploded'" in alerts
    assert "since 'yesterday' is not a date" in alerts
    assert "Unknown filter 'colour'" in alerts
    assert "cursor" in alerts
    assert rows.count() == 4
    shot(page, "jobs-bad-filters")

    page.goto(console.url + "/jobs?q=cat-0")
    page.get_by_role("link", name=done[0][:8]).click()
    page.wait_for_url(f"**/console/jobs/{done[0]}")
    for image in ("#input-image", "#result-image"):
        loaded = page.locator(image).evaluate("img => img.complete && img.naturalWidth")
        assert loaded > 0, image
    assert page.locator("#result-image").evaluate("img => img.naturalWidth") > 0
    timeline = page.locator("ol.timeline li")
    assert timeline.count() == 1 and "#1 succeeded" in timeline.inner_text()
    with page.expect_download() as download:
        page.get_by_role("link", name="Download result").click()
    assert download.value.suggested_filename == f"{done[0]}-result.png"
    shot(page, "job")


def test_retry_a_failed_job_and_watch_it_succeed(console: Console, page: Any) -> None:
    # The first worker refuses images over 100 pixels: the job fails for real.
    strict = console.start_worker(ORCH_MAX_INPUT_PIXELS="100")
    job_id = console.upload(console.tenant_key, "big.png", png((90, 60)))
    _wait_state(console, console.tenant_key, job_id, "failed")
    strict.stop(timeout=20)
    console.start_worker()

    sign_in(page, console, console.tenant_key)
    page.goto(f"{console.url}/jobs/{job_id}")
    assert "failed" in page.locator("h1").inner_text()
    error = page.get_by_role("heading", name="Error")
    assert error.is_visible()
    assert "pixels" in page.locator("pre.error-text").first.inner_text()
    shot(page, "job-failed")
    page.get_by_role("button", name="Retry").click()
    page.wait_for_selector("text=Retried 1 job(s)")
    deadline = time.monotonic() + 60
    while "succeeded" not in page.locator("h1").inner_text() and time.monotonic() < deadline:
        time.sleep(0.5)
        page.get_by_role("link", name="Refresh").click()
    assert "succeeded" in page.locator("h1").inner_text()
    timeline = page.locator("ol.timeline li").all_inner_texts()
    assert [t.split(" on ")[0] for t in timeline] == ["#1 failed", "#2 succeeded"]
    assert page.locator("#result-image").evaluate("img => img.naturalWidth") == 90


def test_retry_and_cancel_a_selection(console: Console, page: Any) -> None:
    queued = [console.upload(console.tenant_key, f"q{i}.png", png((60 + i, 40)))
              for i in range(3)]  # no worker: they stay queued
    sign_in(page, console, console.tenant_key)
    page.goto(console.url + "/jobs")
    page.get_by_label(f"Select job {queued[0][:8]}").check()
    page.get_by_label(f"Select job {queued[1][:8]}").check()
    page.get_by_role("button", name="Cancel selected").click()
    page.wait_for_selector("text=Cancelled 2 job(s)")
    states = {j: console.job(console.tenant_key, j)["state"] for j in queued}
    assert states == {queued[0]: "cancelled", queued[1]: "cancelled", queued[2]: "queued"}
    page.get_by_label("Select every job shown").check()
    page.get_by_role("button", name="Retry selected").click()
    message = page.get_by_role("alert").inner_text()
    assert "Retried 2 job(s)" in message and "1 could not be" in message
    assert console.job(console.tenant_key, queued[0])["state"] == "queued"


def test_keyset_pages_load_more(console: Console, page: Any) -> None:
    for i in range(55):
        console.upload(console.tenant_key, f"p{i:02}.png", png((40 + i, 40)))
    sign_in(page, console, console.tenant_key)
    page.goto(console.url + "/jobs")
    rows = page.locator("#job-rows tr:not(#more-row)")
    assert rows.count() == 50
    page.get_by_role("link", name="Load more").click()
    # Playwright's own assertion, not wait_for_function: a string predicate that has to poll
    # is evaluated in the page, which the console's CSP (no 'unsafe-eval') refuses.
    expect(page.locator("#job-rows tr")).to_have_count(55)
    assert page.locator("#more-row").count() == 0
    names = [t.strip() for t in page.locator("#job-rows td.input").all_inner_texts()]
    assert names == [f"p{i:02}" for i in reversed(range(55))]
