"""A /metrics scrape reads a bounded slice of the tables, however large they are (issue 14.7):
with 60,000 old jobs and attempts in Postgres, every query of a scrape touches only the recent
and in-flight rows, as Postgres' own EXPLAIN ANALYZE counts them."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from sqlalchemy import event
from sqlalchemy.engine import Engine

from orchestrator.api.metrics import OrchestratorCollector
from orchestrator.settings import load_settings

OLD = 60_000
RECENT = 30


def _fill(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO jobs (id, state, backend, model, options, client, source_kind, "
            "source_name, max_attempts, deliveries, crashes, attempt_count, redrives, "
            "dedup_attached, created_at, updated_at, finished_at) "
            "SELECT gen_random_uuid(), CASE WHEN g %% 10 = 0 THEN 'failed' ELSE 'succeeded' END, "
            "CASE WHEN g %% 2 = 0 THEN 'local' ELSE 'fal' END, 'm', '{}', 't', 'url', 'x', 4, 1, 0, "
            "1, 0, 0, now() - interval '30 days' + g * interval '1 second', "
            "now() - interval '30 days', now() - interval '30 days' + g * interval '2 second' "
            "FROM generate_series(1, %s) g", (OLD,))
        conn.execute(
            "INSERT INTO jobs (id, state, backend, model, options, client, source_kind, "
            "source_name, max_attempts, deliveries, crashes, attempt_count, redrives, "
            "dedup_attached, created_at, updated_at, finished_at) "
            "SELECT gen_random_uuid(), CASE WHEN g %% 3 = 0 THEN 'queued' ELSE 'succeeded' END, "
            "'local', 'm', '{}', 't', 'url', 'x', 4, 1, 0, 1, 0, 0, now() - interval '1 hour', "
            "now(), CASE WHEN g %% 3 = 0 THEN NULL ELSE now() END "
            "FROM generate_series(1, %s) g", (RECENT,))
        conn.execute(
            "INSERT INTO attempts (job_id, number, backend, worker, outcome, started_at, "
            "finished_at, compute_seconds, compute_basis, cost_usd, polls) "
            "SELECT id, 1, backend, 'w', 'succeeded', created_at, finished_at, 1.5, "
            "'local_measured', 0.001, 0 FROM jobs")
        conn.execute("ANALYZE jobs")
        conn.execute("ANALYZE attempts")


def _rows_read(plan: dict[str, Any]) -> int:
    """Rows that scans of jobs and attempts produced or filtered out, over all loops."""
    total = 0
    if plan.get("Relation Name") in ("jobs", "attempts"):
        loops = int(plan.get("Actual Loops", 1))
        total += (int(plan.get("Actual Rows", 0)) + int(plan.get("Rows Removed by Filter", 0))
                  + int(plan.get("Rows Removed by Index Recheck", 0))) * loops
    for child in plan.get("Plans", []):
        total += _rows_read(child)
    return total


def test_a_scrape_reads_only_recent_and_in_flight_rows(env: dict[str, str]) -> None:
    dsn = env["ORCH_DATABASE_URL"].replace("+psycopg", "")
    _fill(dsn)
    statements: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:
        if "FROM jobs" in statement or "FROM attempts" in statement:
            statements.append((statement, parameters))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        families = {m.name: m for m in OrchestratorCollector(load_settings()).collect()}
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    assert len(statements) >= 4
    with psycopg.connect(dsn) as conn:
        for statement, parameters in statements:
            [[plan]] = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement,
                                    parameters).fetchall()
            plan = plan if isinstance(plan, list) else json.loads(plan)
            read = _rows_read(plan[0]["Plan"])
            # The recent rows (and an index's few neighbours), never the 60,000 old ones.
            assert read <= 10 * RECENT, (read, statement)
    jobs = {(s.labels["state"], s.labels["backend"]): s.value
            for s in families["orchestrator_jobs"].samples}
    assert jobs == {("queued", "local"): RECENT // 3, ("succeeded", "local"): RECENT * 2 // 3}
    cost = {s.labels["backend"]: s.value for s in families["orchestrator_cost_usd_24h"].samples}
    assert abs(cost["local"] - RECENT * 0.001) < 1e-9 and "fal" not in cost
