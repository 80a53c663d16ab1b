"""Time of the cost report over 1,000,000 attempt rows, against the bare SQL aggregate, in one run.

    python benchmarks/report_costs.py [--attempts 1000000] [--days 90] [--runs 5]

Makes its own Postgres database (migrated to the newest revision, dropped at the end) and fills
it with set-based SQL (``generate_series``, no ORM, no Python loop over rows): jobs over
``--days`` UTC days for 20 clients, ~70 % local and ~30 % fal, ~85 % succeeded, the rest failed
or cancelled; every job has a first attempt and ~15 % have a second (a retry), so the attempts
add up to ``--attempts``. Then ``VACUUM ANALYZE`` (what autovacuum does on a live database).

Timed in ``--runs`` alternating rounds (``benchmarks/harness.py``: the order rotates each round;
median and range reported, ratios per round; one warm-up run first, not counted):

1. the report: ``orchestrator.reports.cost_report`` grouped by day and backend over the whole
   period — both of its queries (attempt sums; job counts and latency p50/p95), with totals rows,
   turned into report rows;
2. the bare aggregate over the same rows:
   ``SELECT date_trunc('day', started_at), backend, sum(cost_usd) FROM attempts GROUP BY 1, 2``;
3. the report for one client over the last 7 days (the tenant view on the API);
4. then the two day indexes are dropped and the report and the bare aggregate are timed again,
   alternating: what the indexes buy.
The record goes to ``benchmarks/results/report_costs.json``; a markdown table is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.harness import Run, fmt  # noqa: E402

PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RETRY_SHARE = 0.15

JOBS_SQL = """
INSERT INTO jobs (id, state, backend, model, options, client, source_kind, source_name,
                  deliveries, crashes, attempt_count, max_attempts, created_at, updated_at,
                  started_at, finished_at)
SELECT md5(i::text)::uuid,
       CASE WHEN mod(i, 20) = 0 THEN 'failed' WHEN mod(i, 33) = 0 THEN 'cancelled' ELSE 'succeeded' END,
       CASE WHEN mod(i, 10) < 7 THEN 'local' ELSE 'fal' END,
       CASE WHEN mod(i, 10) < 7 THEN 'isnet-general-use' ELSE 'fal-ai/imageutils/rembg' END,
       '{}', 'client-' || (mod(i, 20)), 'file', 'img-' || i, 1, 0,
       CASE WHEN mod(i, 100) < %(retry_pct)s THEN 2 ELSE 1 END, 4,
       t, t, t, t + make_interval(secs => 0.5 + (mod(i, 97)) / 10.0)
FROM (SELECT i, %(end)s::timestamptz - make_interval(secs => (i::float8 / %(jobs)s) * %(span)s) AS t
      FROM generate_series(1, %(jobs)s) AS i) AS s
"""

ATTEMPTS_SQL = """
INSERT INTO attempts (job_id, number, backend, worker, outcome, started_at, finished_at,
                      compute_seconds, compute_basis, price_per_second, cost_usd,
                      fal_equivalent_usd)
SELECT j.id, n.number, j.backend, 'bench',
       CASE WHEN n.number < j.attempt_count THEN 'retry'
            WHEN j.state = 'succeeded' THEN 'succeeded'
            WHEN j.state = 'cancelled' THEN 'cancelled' ELSE 'failed' END,
       j.created_at + make_interval(secs => n.number - 1), j.finished_at,
       s.seconds,
       CASE WHEN j.backend = 'local' THEN 'local_measured' ELSE 'fal_inference_time' END,
       p.price, round(s.seconds * p.price, 9), round(s.seconds * 0.00111, 9)
FROM jobs j
CROSS JOIN LATERAL generate_series(1, j.attempt_count) AS n(number)
CROSS JOIN LATERAL (SELECT round((0.4 + (hashtext(j.source_name) & 1023) / 512.0)::numeric, 6)
                    AS seconds) AS s
CROSS JOIN LATERAL (SELECT CASE WHEN j.backend = 'local' THEN 0.0002 ELSE 0.00111 END::numeric
                    AS price) AS p
"""

BARE_SQL = ("SELECT date_trunc('day', started_at), backend, sum(cost_usd) FROM attempts "
            "GROUP BY 1, 2")



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--runs", type=int, default=5, help="alternating rounds")
    parser.add_argument("--keep", action="store_true", help="keep the database (to EXPLAIN)")
    args = parser.parse_args()

    from orchestrator.db.migrate import upgrade
    from orchestrator.reports import cost_report, make_period

    jobs = round(args.attempts / (1 + RETRY_SHARE))
    dbname = f"orch_bench_report_{uuid.uuid4().hex[:8]}"
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    url = f"{base}/{dbname}".replace("postgresql://", "postgresql+psycopg://", 1)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    engine = create_engine(url)
    try:
        upgrade(url)
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        started = time.perf_counter()
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(JOBS_SQL, {"jobs": jobs, "end": end, "span": args.days * 86400,
                                    "retry_pct": round(RETRY_SHARE * 100)})
            conn.execute(ATTEMPTS_SQL)
            conn.execute("VACUUM ANALYZE jobs")
            conn.execute("VACUUM ANALYZE attempts")
            n_jobs = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]  # type: ignore[index]
            n_attempts = conn.execute("SELECT count(*) FROM attempts").fetchone()[0]  # type: ignore[index]
            version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        print(f"generated {n_jobs:,} jobs and {n_attempts:,} attempts over {args.days} days "
              f"in {time.perf_counter() - started:.1f} s (PostgreSQL {version})")

        period = make_period(None, None, now=end + timedelta(hours=1))
        period = type(period)(end - timedelta(days=args.days + 1), end + timedelta(hours=1))
        tenant_period = type(period)(end - timedelta(days=7), end + timedelta(hours=1))
        holder: dict[str, object] = {}

        def report() -> None:
            holder["report"] = cost_report(engine, period, ("day", "backend"))

        def tenant_report() -> None:
            holder["tenant"] = cost_report(engine, tenant_period, ("day", "backend"),
                                           client="client-7")

        def bare() -> None:
            with engine.connect() as conn:
                holder["bare"] = conn.execute(text(BARE_SQL)).all()

        def timed(call: Callable[[], None]) -> Callable[[], dict[str, float]]:
            def side() -> dict[str, float]:
                started = time.perf_counter()
                call()
                return {"ms": (time.perf_counter() - started) * 1000}
            return side

        for call in (bare, report, tenant_report):
            call()  # warm-up: caches, plans
        run = Run("report_costs", rounds=args.runs,
                  params={"jobs": n_jobs, "attempts": n_attempts, "days": args.days,
                          "postgres": version})
        run.rounds({"bare": timed(bare), "report": timed(report), "tenant": timed(tenant_report)})

        result = holder["report"]
        total = result.total  # type: ignore[attr-defined]
        bare_total = sum(row[2] for row in holder["bare"])  # type: ignore[attr-defined]
        assert total.cost_usd == bare_total, (total.cost_usd, bare_total)
        assert total.attempts == n_attempts and total.jobs == n_jobs

        # The same report without the two day indexes (migration 0004's), to show what they buy.
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute("DROP INDEX ix_attempts_report_day")
            conn.execute("DROP INDEX ix_jobs_report_day")
        report()
        run.rounds({"bare_without_day_indexes": timed(bare),
                    "report_without_day_indexes": timed(report)})
        run.save()

        print(f"report rows: {len(result.rows)} (day × backend) + total; "  # type: ignore[attr-defined]
              f"total cost ${total.cost_usd:,.2f} = bare sum ${bare_total:,.2f}")
        rows = [
            ("bare SQL aggregate (one sum)", run.figure("bare", "ms")),
            ("the report, day × backend (all figures, p50/p95, totals)", run.figure("report", "ms")),
            ("one client, last 7 days (the tenant view)", run.figure("tenant", "ms")),
            ("the report without its two day indexes",
             run.figure("report_without_day_indexes", "ms")),
        ]
        print(f"\n| query over {n_attempts:,} attempts | median (range), ms, {args.runs} rounds |")
        print("| --- | --- |")
        for label, figure in rows:
            print(f"| {label} | {fmt(figure, 0)} |")
        print(f"| ratio report / bare (per round) | {fmt(run.ratio('report', 'bare', 'ms'), 2)}× |")
        print(f"| ratio without / with the day indexes (per round) | "
              f"{fmt(run.ratio('report_without_day_indexes', 'report', 'ms'), 2)}× |")
        print(f"\n`{run.command}` at commit {run.commit['commit']}, load average before "
              f"{run.load_before[0]:.2f}")
    finally:
        engine.dispose()
        if args.keep:
            print(f"kept database {dbname}")
        else:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


if __name__ == "__main__":
    main()
