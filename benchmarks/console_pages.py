"""Server time of the console's jobs and costs pages over 1,000,000 jobs, beside the same queries
run bare, in one run.

    python benchmarks/console_pages.py [--jobs 1000000] [--days 90] [--runs 7]

Fills its own Postgres database with the generator of ``benchmarks/report_costs.py`` (set-based
SQL: jobs over ``--days`` days for 20 clients, ~15 % with a second attempt), signs in to the
console with an admin key, and times whole requests through the FastAPI app in this process
(routing, session check, command, template; no network), median of ``--runs`` after a warm-up:

1. ``/console/jobs`` — the first page (50 jobs, newest first);
2. ``/console/jobs?after=…`` — a page half-way down the million (keyset: as fast as the first);
3. ``/console/jobs?client=client-0&state=failed`` — filtered;
3b. ``/console/jobs?q=img-123457`` — a search by part of an input name (rare: a scan);
4. ``/console/costs?group=day&group=backend`` over the whole period (the report and its chart).

Beside each, the same work without the page: ``commands.list_jobs`` (its SQL, both queries) and
``commands.costs``, and the bare SQL aggregate of the cost benchmark.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_costs import ATTEMPTS_SQL, BARE_SQL, JOBS_SQL, PG_ADMIN_URL, RETRY_SHARE  # noqa: E402


def median_ms(call: Callable[[], object], runs: int) -> tuple[float, list[float]]:
    call()  # warm-up: caches, plans, template compilation
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    dbname = f"orch_bench_console_{uuid.uuid4().hex[:8]}"
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    url = f"{base}/{dbname}".replace("postgresql://", "postgresql+psycopg://", 1)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    os.environ["ORCH_DATABASE_URL"] = url
    os.environ.setdefault("ORCH_BROKER_URL", "redis://127.0.0.1:6379/0")  # never contacted
    try:
        import warnings

        with warnings.catch_warnings():  # starlette would rather have httpx2; httpx works
            warnings.simplefilter("ignore")
            from fastapi.testclient import TestClient

        from orchestrator import commands
        from orchestrator.api.app import create_app
        from orchestrator.auth.keys import create_key
        from orchestrator.commands import Caller, JobFilter
        from orchestrator.commands.jobs import encode_cursor
        from orchestrator.db.migrate import upgrade
        from orchestrator.db.session import session_scope
        from orchestrator.jobs.states import JobState
        from orchestrator.settings import get_settings

        upgrade(url)
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        started = time.perf_counter()
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(JOBS_SQL, {"jobs": args.jobs, "end": end, "span": args.days * 86400,
                                    "retry_pct": round(RETRY_SHARE * 100)})
            conn.execute(ATTEMPTS_SQL)
            conn.execute("VACUUM ANALYZE jobs")
            conn.execute("VACUUM ANALYZE attempts")
            n_jobs = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]  # type: ignore[index]
            n_attempts = conn.execute("SELECT count(*) FROM attempts").fetchone()[0]  # type: ignore[index]
            middle = conn.execute("SELECT created_at, id FROM jobs ORDER BY created_at DESC, id DESC "
                                  "OFFSET %s LIMIT 1", (n_jobs // 2,)).fetchone()
        print(f"generated {n_jobs:,} jobs and {n_attempts:,} attempts over {args.days} days "
              f"in {time.perf_counter() - started:.1f} s")

        settings = get_settings()
        with session_scope(url) as session:
            key = create_key(session, "bench-ops", admin=True)
        client = TestClient(create_app(settings))  # no lifespan: the console needs no broker
        signed = client.post("/console/sign-in", data={"key": key}, follow_redirects=False)
        assert signed.status_code == 303, signed.text
        assert middle is not None
        cursor = encode_cursor(middle[0], middle[1])
        since = (end - timedelta(days=args.days + 1)).date().isoformat()
        until = (end + timedelta(days=1)).date().isoformat()
        admin = Caller(client=None, is_admin=True)

        def page(path: str, must: str) -> Callable[[], object]:
            def get() -> object:
                response = client.get(path)
                assert response.status_code == 200 and must in response.text, response.text[:500]
                return response
            return get

        engine = create_engine(url)

        def bare_aggregate() -> None:
            with engine.connect() as conn:
                conn.execute(text(BARE_SQL)).all()

        cases: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
            ("jobs, first page", page("/console/jobs", "Load more"),
             lambda: commands.list_jobs(settings, admin, limit=50)),
            ("jobs, page at 50 %", page(f"/console/jobs?after={cursor}", "Load more"),
             lambda: commands.list_jobs(settings, admin, limit=50, after=cursor)),
            ("jobs, client + failed", page("/console/jobs?client=client-0&state=failed", "client-0"),
             lambda: commands.list_jobs(settings, admin, JobFilter(state=JobState.FAILED,
                                                                    client="client-0"), limit=50)),
            ("jobs, search a name", page("/console/jobs?q=img-123457", "img-123457"),
             lambda: commands.list_jobs(settings, admin, JobFilter(search="img-123457"),
                                        limit=50)),
            (f"costs, {args.days} days",
             page(f"/console/costs?since={since}&until={until}&group=day&group=backend", "TOTAL"),
             lambda: commands.costs(settings, admin, since=since, until=until,
                                    group_by=("day", "backend"))),
        ]
        print(f"{'':24} {'page ms':>9} {'bare ms':>9}  (runs of the page)")
        for name, with_page, bare in cases:
            page_ms, page_all = median_ms(with_page, args.runs)
            bare_ms, _ = median_ms(bare, args.runs)
            print(f"{name:24} {page_ms:9.1f} {bare_ms:9.1f}  "
                  f"({', '.join(f'{t:.0f}' for t in page_all)})")
        aggregate_ms, _ = median_ms(bare_aggregate, args.runs)
        print(f"{'bare SQL cost aggregate':24} {'':9} {aggregate_ms:9.1f}")
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        engine.dispose()
    finally:
        from orchestrator.db.session import get_engine

        get_engine(url).dispose()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin_conn:
            admin_conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


if __name__ == "__main__":
    main()
