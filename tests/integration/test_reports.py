"""Cost reports over a database seeded through the real pipeline: the producer, one real worker
process serving both backends (the tiny local model; fal through the emulator and the real
fal_client), with successes on both backends, failures, retries and cancels on both, two tenants
and two UTC days. Every figure is checked against plain SQL sums of the attempt rows."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import os
import sys
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
from PIL import Image

from orchestrator.jobs.states import AttemptOutcome
from tests.conftest import EMULATOR_FAL_KEY, Worker, run_cli
from tests.fal_emulator import FalEmulator
from tests.support.db import load_jobs
from tests.support.images import numbered_png
from tests.support.wait import wait_for_log, wait_until

FAL_KEY = EMULATOR_FAL_KEY
LOCAL_PRICE = "0.01"
TENANT_A, TENANT_B = "tenant-a", "tenant-b"
RECENT = (datetime.now(UTC) - timedelta(days=4)).date().isoformat()  # a short chart


def _png(i: int) -> bytes:
    return numbered_png(i, (70, 50))  # a different image each: no dedup folding


class _Flaky(BaseHTTPRequestHandler):
    """503 on the first request, the image after: a transient failure, then a retry."""

    body = b""
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        if type(self).hits == 1:
            self.send_response(503)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Seeded:
    env: dict[str, str]
    db: str  # plain psycopg URL

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db) as conn:
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _close_pooled_connections(database_url: str) -> Iterator[None]:
    """In-process reports and claims use the process's pooled engine: close it after each test."""
    yield
    from orchestrator.db.session import get_engine

    get_engine(database_url).dispose()


@pytest.fixture(scope="module")
def seeded(
    base_env: dict[str, str], database_url: str, broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Seeded]:
    from orchestrator.db.session import session_scope
    from orchestrator.jobs import transitions as service
    from orchestrator.jobs.producer import Source, submit
    from orchestrator.settings import get_settings

    db = database_url.replace("+psycopg", "")
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("TRUNCATE jobs, job_inputs, attempts, results, api_keys, tenant_usage, fal_budgets, "
                     "fal_budget_alerts RESTART IDENTITY CASCADE")
    broker = redis.Redis.from_url(broker_url)
    for key in broker.keys("*"):
        if key != b"orchestrator-test-run":
            broker.delete(key)

    emulator = FalEmulator(latency=0.3)
    emulator.start()
    _Flaky.body, _Flaky.hits = _png(99), 0
    images = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=images.serve_forever, daemon=True).start()
    saved = dict(os.environ)
    env = {
        **base_env, **emulator.env(), "FAL_KEY": FAL_KEY,
        "ORCH_LOCAL_PRICE_PER_SECOND": LOCAL_PRICE,
        "ORCH_FAL_POLL_INITIAL_SECONDS": "0.1", "ORCH_FAL_POLL_MAX_SECONDS": "0.5",
    }
    os.environ.update(env)
    get_settings.cache_clear()
    settings = get_settings()
    worker: Worker | None = None
    try:
        def one(source: Source, backend: str, client: str) -> uuid.UUID:
            [item] = submit([source], settings=settings, backend=backend, client=client)
            return item.job_id

        # Cancelled while queued, before any worker ran it: no attempt, no cost.
        queued = one(Source("cancel-me", data=_png(0)), "local", TENANT_A)
        with session_scope(settings.database.url.get_secret_value()) as session:
            service.cancel(session, queued)

        one(Source("a1", data=_png(1)), "local", TENANT_A)
        one(Source("a2", data=_png(2)), "local", TENANT_A)
        one(Source("b1", data=_png(3)), "local", TENANT_B)
        one(Source("not-an-image", data=b"GIF89a but not really"), "local", TENANT_B)  # fails
        one(Source("flaky", url=f"http://127.0.0.1:{images.server_address[1]}/p.png"),
            "local", TENANT_A)  # 503, retried, succeeds
        # fal: a runner error (a second paid attempt), a validation error (failed, paid), one
        # that never finishes (cancelled at fal; still a cost), and two that just work.
        emulator.outcomes.extend(["runner_error", "validation_error", "stuck"])
        for i, client in enumerate([TENANT_A, TENANT_B, TENANT_A, TENANT_B, TENANT_A]):
            one(Source(f"fal-{i}", data=_png(10 + i)), "fal", client)
        # Published in this order before any worker runs: the one worker takes them, and fal
        # hands out the outcomes, in this order.

        worker = Worker(env, tmp_path_factory.mktemp("reports") / "worker.log",
                        ["--queues", "local,fal", "--concurrency", "1"],
                        [sys.executable, "-m", "orchestrator"])
        # (Worker.wait_ready expects one backend in its banner.)
        wait_for_log(worker, "local backend ready", "fal poller running", timeout=90)

        def stuck_only() -> bool:
            open_jobs = [j for j in load_jobs(database_url) if not j.state.is_final]
            return len(open_jobs) == 1 and open_jobs[0].backend == "fal"

        wait_until(stuck_only, timeout=120, interval=0.2,
                   what="every job but the stuck fal one to finish")
        [stuck] = [j for j in load_jobs(database_url) if not j.state.is_final]
        cancelled = run_cli(env, "jobs", "cancel", str(stuck.id))
        assert cancelled.returncode == 0, cancelled.stderr
        wait_until(lambda: all(a.outcome is not AttemptOutcome.RUNNING
                               for j in load_jobs(database_url) for a in j.attempts),
                   timeout=60, interval=0.2, what="the cancelled fal attempt to be closed and costed")

        # Tenant B's work happened yesterday (UTC): two days in the reports.
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("UPDATE attempts SET started_at = started_at - interval '1 day', "
                         "finished_at = finished_at - interval '1 day' "
                         "WHERE job_id IN (SELECT id FROM jobs WHERE client = %s)", (TENANT_B,))
            conn.execute("UPDATE jobs SET created_at = created_at - interval '1 day', "
                         "finished_at = finished_at - interval '1 day' WHERE client = %s",
                         (TENANT_B,))
        billed = sum((r.inference_time or 0.0) for r in emulator.requests.values())
        yield Seeded({**env, "BILLED_SECONDS": f"{billed:.6f}"}, db)
    finally:
        if worker is not None:
            worker.stop(timeout=20)
        images.shutdown()
        images.server_close()
        emulator.stop()
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


def _sql_totals(seeded: Seeded, where: str = "TRUE", *params: Any) -> dict[str, Any]:
    [row] = seeded.sql(
        f"""SELECT count(*), count(*) FILTER (WHERE a.number > 1),
                   coalesce(sum(a.compute_seconds), 0), coalesce(sum(a.cost_usd), 0),
                   coalesce(sum(a.cost_usd) FILTER (WHERE a.backend = 'fal'), 0),
                   coalesce(sum(a.cost_usd) FILTER (WHERE a.backend = 'local'), 0),
                   coalesce(sum(a.fal_equivalent_usd) FILTER (WHERE a.backend = 'local'), 0)
            FROM attempts a JOIN jobs j ON j.id = a.job_id WHERE {where}""", *params)
    names = ["attempts", "retries", "compute_seconds", "cost_usd", "fal_cost_usd",
             "local_cost_usd", "local_fal_equivalent_usd"]
    return dict(zip(names, row))


def _percentile(values: list[float], q: float) -> float:
    """percentile_cont: linear interpolation between the closest ranks."""
    values = sorted(values)
    pos = (len(values) - 1) * q
    low, high = math.floor(pos), math.ceil(pos)
    return values[low] + (values[high] - values[low]) * (pos - low)


def _check_total(total: dict[str, Any], expected: dict[str, Any]) -> None:
    for name, value in expected.items():
        got = total[name]
        if isinstance(value, Decimal):
            assert Decimal(got) == value, (name, got, value)
            assert round(Decimal(got), 2) == round(value, 2)  # to the cent, a fortiori
        else:
            assert got == value, (name, got, value)


def test_seeded_pipeline_has_what_the_report_must_count(seeded: Seeded) -> None:
    states = dict(seeded.sql("SELECT state, count(*) FROM jobs GROUP BY state"))
    assert states == {"succeeded": 7, "failed": 2, "cancelled": 2}
    outcomes = dict(seeded.sql("SELECT backend || ':' || outcome, count(*) FROM attempts GROUP BY 1"))
    assert outcomes["local:retry"] == 1 and outcomes["fal:retry"] == 1
    assert outcomes["local:failed"] == 1 and outcomes["fal:failed"] == 1
    assert outcomes["fal:cancelled"] == 1
    costs = dict(seeded.sql("SELECT backend, sum(cost_usd) FROM attempts GROUP BY 1"))
    assert costs["fal"] > 0 and costs["local"] > 0


def test_cli_json_totals_and_groups_equal_sql_sums_of_attempt_rows(seeded: Seeded) -> None:
    out = run_cli(seeded.env, "report", "costs", "--since", "2000-01-01", "-g", "day,backend",
                  "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["timezone"] == "UTC" and report["currency"] == "USD"
    assert report["group_by"] == ["day", "backend"]
    _check_total(report["total"], _sql_totals(seeded))
    jobs = dict(seeded.sql("SELECT state, count(*) FROM jobs GROUP BY state"))
    assert report["total"]["jobs"] == sum(jobs.values())
    assert (report["total"]["succeeded"], report["total"]["failed"],
            report["total"]["cancelled"]) == (jobs["succeeded"], jobs["failed"], jobs["cancelled"])
    total = report["total"]
    assert Decimal(total["saving_usd"]) == (Decimal(total["local_fal_equivalent_usd"])
                                            - Decimal(total["local_cost_usd"]))
    assert Decimal(total["all_on_fal_usd"]) == (Decimal(total["fal_cost_usd"])
                                                + Decimal(total["local_fal_equivalent_usd"]))

    # Each (UTC day, backend) group is the SQL sum of that day's attempts on that backend.
    expected = {
        (str(day), backend): (n, Decimal(cost))
        for day, backend, n, cost in seeded.sql(
            "SELECT (started_at AT TIME ZONE 'UTC')::date, backend, count(*), sum(cost_usd) "
            "FROM attempts GROUP BY 1, 2")
    }
    got = {(r["day"], r["backend"]): (r["attempts"], Decimal(r["cost_usd"]))
           for r in report["rows"] if r["attempts"]}
    assert got == expected
    assert len({day for day, _ in got}) == 2

    # Latency: percentile_cont over succeeded jobs, submit to done.
    latencies = [float(s) for (s,) in seeded.sql(
        "SELECT extract(epoch FROM finished_at - created_at) FROM jobs WHERE state = 'succeeded'")]
    assert total["latency_p50_seconds"] == pytest.approx(_percentile(latencies, 0.5), abs=1e-3)
    assert total["latency_p95_seconds"] == pytest.approx(_percentile(latencies, 0.95), abs=1e-3)


def test_cli_csv_parses_and_table_says_utc_and_chart_is_an_image_of_the_size_asked(
    seeded: Seeded, tmp_path: Path
) -> None:
    chart = tmp_path / "costs.png"
    out = run_cli(seeded.env, "report", "costs", "--since", RECENT, "-g", "client",
                  "-g", "state", "--format", "csv", "--chart", str(chart), "--chart-size", "640x360")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert list(rows[0])[:2] == ["client", "state"]
    *groups, total = rows
    assert total["client"] == "TOTAL"
    _check_total(total | {"attempts": int(total["attempts"]), "retries": int(total["retries"])},
                 _sql_totals(seeded))
    for row in groups:
        expected = _sql_totals(seeded, "j.client = %s AND j.state = %s", row["client"], row["state"])
        assert Decimal(row["cost_usd"]) == expected["cost_usd"], row
    assert sum(Decimal(r["cost_usd"]) for r in groups) == Decimal(total["cost_usd"])

    with Image.open(chart) as image:
        assert image.format == "PNG" and image.size == (640, 360)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is not None and len(colours) > 10  # drawn, not blank

    table = run_cli(seeded.env, "report", "costs", "--since", "2000-01-01", "-g", "backend")
    assert table.returncode == 0, table.stderr
    assert "UTC" in table.stdout and "TOTAL" in table.stdout
    assert f"{_sql_totals(seeded)['cost_usd']:,.4f}" in table.stdout


def test_svg_chart_has_the_size_asked(seeded: Seeded, tmp_path: Path) -> None:
    from orchestrator.db.session import get_engine
    from orchestrator.reports import cost_report, make_period
    from orchestrator.reports.chart import draw_cost_chart

    url = seeded.env["ORCH_DATABASE_URL"]
    report = cost_report(get_engine(url), make_period(RECENT, None), ("day", "backend"))
    path = tmp_path / "costs.svg"
    draw_cost_chart(report, path, width=800, height=400)
    root = ET.parse(path).getroot()
    # SVG sizes are in points; 800 × 400 CSS pixels are 600 × 300 pt.
    assert (root.get("width"), root.get("height")) == ("600pt", "300pt")


def test_api_report_admin_tenant_isolation_and_csv(seeded: Seeded) -> None:
    from orchestrator.api.app import create_app
    from orchestrator.auth.keys import create_key
    from orchestrator.db.session import session_scope
    from orchestrator.settings import load_settings

    settings = load_settings(database_url=seeded.env["ORCH_DATABASE_URL"],
                             broker_url=seeded.env["ORCH_BROKER_URL"])
    with session_scope(settings.database.url.get_secret_value()) as session:
        keys = {name: create_key(session, name) for name in (TENANT_A, TENANT_B)}
        keys["ops"] = create_key(session, "ops", admin=True)
    app = create_app(settings)

    def call(params: dict[str, str], headers: dict[str, str]) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
                return await http.get("/v1/reports/costs", params=params, headers=headers)
        return asyncio.run(go())

    def get(who: str, **params: Any) -> httpx.Response:
        return call({"since": "2000-01-01", **params}, {"Authorization": f"Key {keys[who]}"})

    admin = get("ops", group_by="client")
    assert admin.status_code == 200, admin.text
    _check_total(admin.json()["total"], _sql_totals(seeded))
    assert {r["client"] for r in admin.json()["rows"]} == {TENANT_A, TENANT_B}

    one_client = get("ops", client=TENANT_B)
    _check_total(one_client.json()["total"], _sql_totals(seeded, "j.client = %s", TENANT_B))

    own = get(TENANT_A, group_by="client,backend")
    assert own.status_code == 200, own.text
    assert own.json()["client"] == TENANT_A
    assert {r["client"] for r in own.json()["rows"]} == {TENANT_A}
    _check_total(own.json()["total"], _sql_totals(seeded, "j.client = %s", TENANT_A))
    assert get(TENANT_A, client=TENANT_B).status_code == 403

    as_csv = get(TENANT_B, format="csv", group_by="day")
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    *_, total = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert total["day"] == "TOTAL"
    assert Decimal(total["cost_usd"]) == _sql_totals(seeded, "j.client = %s", TENANT_B)["cost_usd"]
    accepted = call({"since": "2000-01-01"},
                    {"Authorization": f"Key {keys[TENANT_B]}", "Accept": "text/csv"})
    assert accepted.headers["content-type"].startswith("text/csv")
    assert list(csv.DictReader(io.StringIO(accepted.text)))[-1]["cost_usd"] == total["cost_usd"]

    bad_date = get("ops", since="yesterday")
    assert bad_date.status_code == 400 and "not a date" in bad_date.json()["detail"]
    assert get("ops", group_by="hour").status_code == 400
    assert call({}, {}).status_code == 401


def test_reconcile_fal_prints_the_difference_from_the_bill(seeded: Seeded) -> None:
    billed = Decimal(seeded.env["BILLED_SECONDS"])
    [(recorded, attempts)] = seeded.sql(
        "SELECT coalesce(sum(compute_seconds), 0), count(*) FROM attempts WHERE backend = 'fal'")
    out = run_cli(seeded.env, "report", "reconcile-fal", "--since", "2000-01-01",
                  "--billed-seconds", str(billed), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["fal_attempts"] == attempts
    assert Decimal(data["recorded_seconds"]) == recorded
    assert Decimal(data["difference_seconds"]) == billed - recorded
    # The emulator bills inference_time; finished attempts recorded exactly that.
    assert abs(Decimal(data["difference_seconds"])) < 2
    text = run_cli(seeded.env, "report", "reconcile-fal", "--since", "2000-01-01",
                   "--billed-seconds", str(billed + 10))
    assert text.returncode == 0, text.stderr
    assert "fal billed more than was recorded" in " ".join(text.stdout.split())
    refused = run_cli(seeded.env, "report", "reconcile-fal", "--billed-seconds", "lots")
    assert refused.returncode == 1 and "not a number" in refused.stderr
