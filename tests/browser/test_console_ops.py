"""Overview, budgets, keys, costs and keyboard use, in a real browser."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

from tests.browser.conftest import Console, png, shot, sign_in
from tests.conftest import run_cli


def test_set_a_budget_and_see_the_overview_change(console: Console, page: Any) -> None:
    sign_in(page, console, console.admin_key)
    spend = page.get_by_role("region", name="fal spend")
    assert "No fal budget is set." in spend.inner_text()
    assert "No worker answered." in page.get_by_role("region", name="Workers and circuits").inner_text()

    page.get_by_role("link", name="Budgets").click()
    page.get_by_label("Daily limit (USD)").fill("12.50")
    page.get_by_label("Monthly limit (USD)").fill("300")
    page.get_by_role("button", name="Set limits").click()
    assert "Limits for all clients: daily 12.50, monthly 300" in page.get_by_role("status").inner_text()
    page.get_by_label("Client").fill("acme")
    page.get_by_label("Daily limit (USD)").fill("lots")
    page.get_by_role("button", name="Set limits").click()
    assert "'lots' is not an amount of USD" in page.get_by_role("alert").inner_text()
    rows = page.locator("table tbody tr").all_inner_texts()
    assert len(rows) == 2 and "$12.50" in rows[0] and "$300.00" in rows[1]
    shot(page, "budgets")

    page.get_by_role("link", name="Overview").click()
    text = page.get_by_role("region", name="fal spend").inner_text()
    assert "all clients, daily $12.50: 0.0 % used" in text
    assert "all clients, monthly $300.00: 0.0 % used" in text

    # The page refreshes itself: a limit set elsewhere (the CLI) shows up without a reload.
    out = run_cli(console.env, "budget", "set", "--daily", "1", "--client", "acme")
    assert out.returncode == 0, out.stderr
    page.wait_for_selector("text=acme, daily $1.00: 0.0 % used", timeout=15_000)
    console.start_worker()
    page.locator("#figures li", has_text=": healthy").wait_for(timeout=30_000)
    for i in range(3):
        console.upload(console.tenant_key, f"o{i}.png", png((40 + i, 30)))
    console.upload(console.other_key, "bad.png", b"\x89PNG\r\n\x1a\n broken")
    states = page.get_by_role("region", name="Jobs by state")
    states.get_by_role("row", name="succeeded 3 3").wait_for(timeout=30_000)
    states.get_by_role("row", name="failed 1 1").wait_for(timeout=30_000)
    shot(page, "overview")

    # a tenant sees only the limits that apply to it, and no worker internals
    page.context.clear_cookies()
    sign_in(page, console, console.tenant_key)
    text = page.get_by_role("region", name="fal spend").inner_text()
    assert "acme, daily $1.00" in text
    assert page.get_by_role("region", name="Workers and circuits").count() == 0

    # clearing
    page.context.clear_cookies()
    sign_in(page, console, console.admin_key)
    page.goto(console.url + "/budgets")
    page.get_by_role("button", name="Clear limits").click()
    assert "Limits removed." in page.get_by_role("status").inner_text()


def test_keys_create_shown_once_and_revoke(console: Console, page: Any) -> None:
    sign_in(page, console, console.admin_key)
    page.get_by_role("link", name="Keys").click()
    page.get_by_label("Tenant (client) name").fill("initech")
    page.get_by_role("button", name="Create key").click()
    key = page.get_by_label("The key").input_value()
    assert key.startswith("orch_")
    shot(page, "keys")
    # the key works (at the API), and is never shown again
    assert console.job(key, console.upload(key, "i.png", png()))["client"] == "initech"
    page.goto(console.url + "/keys")
    assert key not in page.content() and page.get_by_label("The key").count() == 0
    page.get_by_role("button", name=f"Revoke key {key[:12]} of initech").click()
    assert "Revoked 1 key(s)." in page.get_by_role("status").inner_text()
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        import httpx

        status = httpx.get(f"{console.api.url}/v1/jobs",
                           headers={"Authorization": f"Key {key}"}).status_code
        if status == 401:
            break
        time.sleep(0.5)
    assert status == 401


def test_costs_report_chart_and_csv(console: Console, page: Any) -> None:
    console.start_worker()
    ids = [console.upload(console.tenant_key, f"c{i}.png", png((50 + i, 50))) for i in range(3)]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(
            console.job(console.tenant_key, j)["state"] != "succeeded" for j in ids):
        time.sleep(0.3)
    sign_in(page, console, console.admin_key)
    page.goto(console.url + "/costs?group=day&group=backend")
    totals = page.get_by_role("region", name="Totals").inner_text()
    assert "3 ok, 0 failed" in totals
    chart = page.locator("svg.chart-wide")
    assert chart.is_visible() and not page.locator("svg.chart-narrow").is_visible()
    assert chart.get_attribute("role") == "img"
    assert "Cost per day" in chart.locator("title").first.text_content()
    assert page.locator("svg.chart-wide rect").count() >= 1
    report = page.locator("table.report tbody tr").all_inner_texts()
    assert "fake-inline" in report[0] and report[-1].startswith("TOTAL")
    shot(page, "costs")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    rows = list(csv.reader(io.StringIO(download.value.path().read_text())))
    assert rows[0][:3] == ["day", "backend", "jobs"] and rows[-1][0] == "TOTAL"
    assert rows[1][1] == "fake-inline" and rows[1][2] == "3"

    # a phone: the narrow chart, the page does not scroll sideways
    page.set_viewport_size({"width": 360, "height": 780})
    page.reload()
    assert page.locator("svg.chart-narrow").is_visible()
    assert not page.locator("svg.chart-wide").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    shot(page, "costs-phone")

    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(console.url + "/costs?since=2026-13-01&group=fortnight")
    alerts = " ".join(page.get_by_role("alert").all_inner_texts())
    assert "Cannot group by 'fortnight'" in alerts and "is not a date" in alerts
    # a tenant asking for another client's costs gets a message, and its own figures
    page.context.clear_cookies()
    sign_in(page, console, console.other_key)
    page.goto(console.url + "/costs?client=acme")
    assert "only its own costs" in page.get_by_role("alert").inner_text()
    assert "0 ok" in page.get_by_role("region", name="Totals").inner_text()


def _focus_walk(page: Any, steps: int = 120) -> list[str]:
    """Press Tab from the top of the page and name each element that takes the focus."""
    page.locator("body").focus()
    seen: list[str] = []
    for _ in range(steps):
        page.keyboard.press("Tab")
        name = page.evaluate("""() => {
            const e = document.activeElement;
            if (!e || e === document.body) return "";
            const label = e.labels && e.labels.length ? e.labels[0].innerText : "";
            return (e.getAttribute("aria-label") || label || e.innerText || e.value || e.name || "").trim();
        }""")
        if seen and name == seen[0]:
            break
        seen.append(name)
    return seen


def test_keyboard_alone_reaches_every_action(console: Console, page: Any) -> None:
    console.start_worker(ORCH_MAX_INPUT_PIXELS="100")
    job_id = console.upload(console.tenant_key, "k.png", png((30, 30)))
    deadline = time.monotonic() + 60
    while console.job(console.tenant_key, job_id)["state"] != "failed":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    page.goto(console.url + "/sign-in")
    page.keyboard.press("Tab")  # the skip link
    page.keyboard.press("Tab")
    page.keyboard.type(console.admin_key)
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/overview")

    page.goto(console.url + "/jobs")
    reached = _focus_walk(page)
    for action in ("Skip to content", "Overview", "Jobs", "Costs", "Budgets", "Keys", "Sign out",
                   "Filter", "Clear", "Retry selected", "Cancel selected",
                   "Select every job shown", f"Select job {job_id[:8]}", job_id[:8]):
        assert action in reached, (action, reached)
    # the focus is visible: an outline drawn around the focused element
    page.get_by_role("button", name="Retry selected").focus()
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"

    # open the job and retry it with the keyboard only
    page.get_by_role("link", name=job_id[:8]).focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/console/jobs/{job_id}")
    reached = _focus_walk(page)
    for action in ("Retry", "Download input", "Refresh"):
        assert action in reached, (action, reached)
    page.get_by_role("button", name="Retry").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Retried 1 job(s)")

    for path, actions in (("/budgets", ("Set limits", "Clear limits")),
                          ("/keys", ("Create key", "admin (sees every tenant)")),
                          ("/costs", ("Show", "Download CSV"))):
        page.goto(console.url + path)
        reached = _focus_walk(page)
        for action in actions:
            assert any(action in r for r in reached), (path, action, reached)
