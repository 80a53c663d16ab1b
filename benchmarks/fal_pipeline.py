"""fal backend throughput against the fair bare loop at the same in-flight limit, same run.

    python benchmarks/fal_pipeline.py                 # the 1 s sweep, the default-limits row, the 40 s row
    python benchmarks/fal_pipeline.py --skip-long     # the 1 s sweep and the default-limits row
    python benchmarks/fal_pipeline.py --only-long     # the 40 s row alone (~10 min)
    python benchmarks/fal_pipeline.py --quick         # a ~1 minute check that it all runs

Every side talks to the same fal queue emulator (tests/fal_emulator, its own process, HTTPS on
loopback) that keeps each request IN_PROGRESS for ``--latency`` seconds.

- bare@N: ``benchmarks/fal_bare.py`` — one asyncio loop over ``fal_client.AsyncClient`` with an
  ``asyncio.Semaphore(N)``, the pipeline's own poll schedule (read from the settings the
  pipeline runs with), the result fetched without fal_client's extra status call (as the
  pipeline does), one shared download client. Both connection pools hold min(N,
  ``--bare-connections``) connections, all kept alive (fal_client's default keeps 20): the loop
  is CPU-bound in one process and httpcore scans every pooled connection per request, so in a
  development A/B at 128 in flight a 32-connection pool ran 1.2–1.6× faster than a 128 one.
- pipeline@N: ``orchestrator submit``'s producer (Postgres rows, Redis messages) →
  ``orchestrator worker --queues fal --concurrency 2`` (submit tasks + a poller thread in each
  process) → results stored in Postgres, timed from the first submit to the last stored result.
  ``ORCH_FAL_MAX_IN_FLIGHT=N`` and the submit rate raised to 100000/s, so that only the
  in-flight limit binds, as on the bare side.
- pipeline@default: the same with the shipped limits (200 in flight, 20 submits/s): the submit
  rate binds there, so it has no bare twin and no ratio.
- the 40 s row: 1,000 jobs of 40 s each, bare and pipeline at ``--long-limit`` (1,000) in flight;
  the goal is ≥ 1,000 requests in flight at fal with two worker processes.

Peak in flight: on the bare side counted in the loop (submit accepted → download done), on the
pipeline side from the attempt rows (submitted_at → finished_at). Pipeline rows also record
polls per job (``attempts.polls``) and Postgres transactions per job (``xact_commit`` of the
run's database over the run, reads and idle poller claims included). Each row runs in rotating
alternating rounds (benchmarks/harness.py); the ratio is taken round by round. The record goes
to benchmarks/results/fal_pipeline.json and a markdown table is printed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.fal_bare import images  # noqa: E402
from benchmarks.harness import Run, fmt  # noqa: E402

KEY = "bench-key:secret"
UNBOUND_RATE = "100000"  # submits/s: high enough that only the in-flight limit binds
GOAL_RATIO = 0.8
GOAL_IN_FLIGHT = 1000


class Emulator:
    """The fal queue emulator in its own process."""

    def __init__(self, latency: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fal_emulator", "--port", "0", "--latency", str(latency)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self.proc.stdout is not None
        info = json.loads(self.proc.stdout.readline())
        self.env = {"FAL_QUEUE_RUN_HOST": info["host"], "SSL_CERT_FILE": info["ca_file"],
                    "FAL_KEY": KEY}

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


@contextlib.contextmanager
def environ(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(env)
    os.environ.pop("ORCH_CONFIG", None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def poll_schedule(env: dict[str, str]) -> tuple[float, float]:
    """The pipeline's poll schedule under ``env``, as its settings read it."""
    from orchestrator.settings import load_settings

    with environ(env):
        fal = load_settings().fal
    return fal.poll_initial_seconds, fal.poll_max_seconds


def run_bare(n: int, limit: int, emulator: Emulator, pipeline_env: dict[str, str],
             connections: int) -> dict[str, Any]:
    initial, maximum = poll_schedule(pipeline_env)
    connections = min(limit, connections)
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fal_bare.py"), "-n", str(n), "--limit", str(limit),
         "--poll-initial", str(initial), "--poll-max", str(maximum), "--connections", str(connections)],
        text=True, capture_output=True, env={**os.environ, **emulator.env}, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"the bare loop failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(limit=limit, poll_initial=initial, poll_max=maximum, connections=connections)
    return result


def peak_in_flight(db_url: str) -> int:
    with psycopg.connect(db_url.replace("+psycopg", "")) as conn:
        rows = conn.execute(
            "SELECT submitted_at, finished_at FROM attempts WHERE submitted_at IS NOT NULL"
        ).fetchall()
    events = sorted([(r[0], 1) for r in rows] + [(r[1], -1) for r in rows if r[1]])
    inside = peak = 0
    for _, delta in events:
        inside += delta
        peak = max(peak, inside)
    return peak


def polls_per_job(db_url: str) -> float:
    with psycopg.connect(db_url.replace("+psycopg", "")) as conn:
        row = conn.execute("SELECT avg(polls) FROM attempts WHERE submitted_at IS NOT NULL").fetchone()
    return float(row[0] or 0) if row else 0.0


def commits(db_url: str, dbname: str) -> int:
    """Transactions committed in the benchmark's database so far (Postgres' own counter)."""
    with psycopg.connect(db_url.replace("+psycopg", "")) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s",
                           (dbname,)).fetchone()
    return int(row[0]) if row else 0


def pipeline_env(limits: dict[str, str]) -> dict[str, str]:
    return {f"ORCH_FAL_{k.upper()}": v for k, v in limits.items()}


def run_pipeline(n: int, emulator: Emulator, limits: dict[str, str], pg_admin: str, redis_url: str,
                 processes: int) -> dict[str, Any]:
    dbname = f"orch_bench_fal_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    db_url = pg_admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{dbname}"
    redis.Redis.from_url(redis_url).flushdb()
    env = {**emulator.env, "ORCH_DATABASE_URL": db_url, "ORCH_BROKER_URL": redis_url,
           **pipeline_env(limits)}
    worker = None
    log_path = Path(f"/tmp/{dbname}-worker.log")
    try:
        with environ(env):
            subprocess.run([sys.executable, "-m", "orchestrator", "migrate"], check=True,
                           capture_output=True, cwd=ROOT)
            with open(log_path, "w") as log:
                worker = subprocess.Popen(
                    [sys.executable, "-m", "orchestrator", "worker", "--queues", "fal",
                     "--concurrency", str(processes), "--loglevel", "WARNING"],
                    stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
            deadline = time.monotonic() + 90
            from orchestrator.queue.health import warm_processes

            while warm_processes(worker.pid) < processes:  # each process: its poller started
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise RuntimeError("the worker did not start:\n" + log_path.read_text()[-3000:])
                time.sleep(0.1)
            time.sleep(1.0)
            from orchestrator.jobs.producer import Source, submit, wait_for
            from orchestrator.jobs.states import JobState
            from orchestrator.settings import load_settings

            settings = load_settings()
            sources = [Source(name=f"img-{i}", data=b) for i, b in enumerate(images(n))]
            commits_before = commits(db_url, dbname)
            started = time.perf_counter()
            submitted = submit(sources, settings=settings, backend="fal")
            states = wait_for([s.job_id for s in submitted], settings=settings, poll_seconds=0.1)
            seconds = time.perf_counter() - started
        time.sleep(1.0)  # backends report their statistics within a second of going idle
        transactions_per_job = (commits(db_url, dbname) - commits_before) / n
        done = sum(1 for s in states.values() if s is JobState.SUCCEEDED)
        if done != n:
            raise RuntimeError(f"only {done} of {n} jobs succeeded; worker log {log_path}")
        return {"seconds": seconds, "done": done, "cps": done / seconds, "processes": processes,
                "peak_in_flight": peak_in_flight(db_url), "polls_per_job": polls_per_job(db_url),
                "db_transactions_per_job": transactions_per_job,
                **{k: float(v) for k, v in limits.items()}}
    finally:
        if worker is not None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
        with psycopg.connect(pg_admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        log_path.unlink(missing_ok=True)


def sides_at(limit: int, n: int, emulator: Emulator, args: argparse.Namespace) -> dict[str, Callable[[], dict[str, Any]]]:
    limits = {"max_in_flight": str(limit), "max_submits_per_second": UNBOUND_RATE}
    return {
        f"bare@{limit}": lambda: run_bare(n, limit, emulator, pipeline_env(limits),
                                          args.bare_connections),
        f"pipeline@{limit}": lambda: run_pipeline(n, emulator, limits, args.pg, args.redis,
                                                  args.processes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=500, help="jobs per side, 1 s rows")
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--limits", default="32,64,128", help="in-flight limits of the sweep")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2, help="worker processes")
    parser.add_argument("--long-n", type=int, default=1000, help="jobs per side, the long row")
    parser.add_argument("--long-latency", type=float, default=40.0)
    parser.add_argument("--long-limit", type=int, default=1000)
    parser.add_argument("--bare-connections", type=int, default=32,
                        help="cap on each of the bare loop's connection pools (see the docstring)")
    parser.add_argument("--skip-long", action="store_true", help="leave out the 40 s row")
    parser.add_argument("--only-long", action="store_true", help="run the 40 s row alone")
    parser.add_argument("--quick", action="store_true",
                        help="a ~1 minute check: 100 jobs, limit 64, one round, no long row")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    args = parser.parse_args()
    if args.quick:
        args.n, args.limits, args.rounds, args.skip_long = 100, "64", 1, True
    limits = [int(x) for x in args.limits.split(",") if x]

    # The long row alone keeps a record of its own: it must not replace the 1 s rows' record.
    run = Run("fal_pipeline_40s" if args.only_long else "fal_pipeline", rounds=args.rounds,
              params=vars(args))
    print(f"[fal_pipeline] pipeline@N: ORCH_FAL_MAX_IN_FLIGHT=N, ORCH_FAL_MAX_SUBMITS_PER_SECOND="
          f"{UNBOUND_RATE} (only the in-flight limit binds); pipeline@default: shipped limits; "
          f"{args.processes} worker processes", flush=True)
    if not args.only_long:
        emulator = Emulator(args.latency)
        try:
            sides: dict[str, Callable[[], dict[str, Any]]] = {}
            for limit in limits:
                sides.update(sides_at(limit, args.n, emulator, args))
            sides["pipeline@default"] = lambda: run_pipeline(args.n, emulator, {}, args.pg,
                                                             args.redis, args.processes)
            run.rounds(sides)
        finally:
            emulator.stop()
    if not args.skip_long:
        emulator = Emulator(args.long_latency)
        try:
            long_run = Run("fal_pipeline", rounds=args.rounds)
            long_run.rounds({f"long:{k}": v for k, v in
                             sides_at(args.long_limit, args.long_n, emulator, args).items()})
            for side, results in long_run.results.items():
                for result in results:
                    run.add(side, result)
        finally:
            emulator.stop()
    table = markdown(run, limits if not args.only_long else [], args)
    run.extra["table"] = table
    run.save()
    print(table)


def markdown(run: Run, limits: list[int], args: argparse.Namespace) -> str:
    commit = run.commit["commit"] + (" (dirty)" if run.commit["dirty"] else "")
    lines = [
        "| row | bare loop (jobs/s) | pipeline (jobs/s) | ratio | goal | peak in flight bare / pipeline |",
        "|---|---|---|---|---|---|",
    ]

    def peaks(bare: str, pipe: str) -> str:
        b, p = run.figure(bare, "peak_in_flight"), run.figure(pipe, "peak_in_flight")
        return f"{fmt(b, 0)} / {fmt(p, 0)}"

    for limit in limits:
        bare, pipe = f"bare@{limit}", f"pipeline@{limit}"
        lines.append(f"| {args.n} jobs, {args.latency:g} s, {limit} in flight | "
                     f"{fmt(run.figure(bare, 'cps'), 1)} | {fmt(run.figure(pipe, 'cps'), 1)} | "
                     f"{fmt(run.ratio(pipe, bare, 'cps'), 2)} | ≥ {GOAL_RATIO} | {peaks(bare, pipe)} |")
    if run.results.get("pipeline@default"):
        lines.append(f"| {args.n} jobs, {args.latency:g} s, default limits (200 in flight, 20 submits/s) | – | "
                     f"{fmt(run.figure('pipeline@default', 'cps'), 1)} | – | – | "
                     f"– / {fmt(run.figure('pipeline@default', 'peak_in_flight'), 0)} |")
    long_bare, long_pipe = f"long:bare@{args.long_limit}", f"long:pipeline@{args.long_limit}"
    if run.results.get(long_pipe):
        lines.append(f"| {args.long_n} jobs, {args.long_latency:g} s, {args.long_limit} in flight | "
                     f"{fmt(run.figure(long_bare, 'cps'), 1)} | {fmt(run.figure(long_pipe, 'cps'), 1)} | "
                     f"{fmt(run.ratio(long_pipe, long_bare, 'cps'), 2)} | peak ≥ {GOAL_IN_FLIGHT} | "
                     f"{peaks(long_bare, long_pipe)} |")
    lines += ["", f"Median (min–max) of {run.rounds_count} rotating alternating rounds, ratio per round; "
              f"{args.processes} worker processes. Command: `{run.command}`; commit `{commit}`."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
