"""Submit throughput and latency of the HTTP API against bare Celery on a plain app, in one run.

    python benchmarks/api_submit.py                 # 3 rounds, 10 s phases: ~6 minutes
    python benchmarks/api_submit.py --quick         # 1 round, 2 s phases: ~1 minute, a check

Its own Postgres database and Redis DB 12 (dropped and flushed at the end), a key, the API's
per-key and per-tenant limits lifted, no worker: a 200 from `POST /fal-ai/imageutils/rembg`
means the job row is committed and its message is in Redis. Each request carries a different
1x1 PNG (a tEXt chunk with a counter), so deduplication folds nothing together.

Six sides, each once a round, in rotating order (`benchmarks.harness.Run`):

* `send_task x1`, `delay x1`: bare Celery, one process publishing back to back for --duration s:
  `send_task("orchestrator.run_job", args=[id], queue="local")` on a *plain* app
  (`Celery(broker=...)`, JSON, the orchestrator's queues and transport options, no events),
  and `delay()` of a task of that name routed to the same queue;
* `send_task x2`, `delay x2`: two such processes at once, released together; the sum of rates;
* `api x1`, `api x2`: `orchestrator api --workers W` on 127.0.0.1 (plain http; `--https` for
  TLS), then
  1. closed loop: --concurrency clients, a keep-alive connection each, back to back (--warmup s
     discarded, then --duration s) -> sustained submits/s, p50/p99, the API's CPU-ms per submit;
  2. open loop: --rate requests/s on a fixed schedule whatever the replies (--warmup s
     discarded, then --duration s), latency from the *scheduled* send time (no coordinated
     omission), up to 256 connections -> p50/p99.
  After each, job rows, enqueued rows and new `local` messages must all equal the 200s.

Ratios are taken per round, like with like: `api x1 / send_task x1`, `api x2 / send_task x2`
(the goal: >= 0.5), and against `delay()`. Load generators and baselines are processes of their
own (not under the API's GIL); the load is a minimal asyncio HTTP/1.1 client (its schedule lag is
recorded). Everything shares the machine's cores with Postgres and Redis. The record goes to
benchmarks/results/api_submit.json; a markdown table for the docs is printed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import re
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def ms_stats(values: list[float]) -> dict[str, float]:
    v = sorted(values) or [float("nan")]
    return {f"{k}_ms": round(v[min(len(v) - 1, max(0, -int(-q * len(v)) - 1))] * 1000, 2)
            for k, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))}


# ---- in subprocesses: `api_submit.py _open|_closed|_celery CONFIG_JSON` ------------------------

def request_bytes(cfg: dict[str, Any], tag: str) -> bytes:
    text = b"tEXtn\0" + tag.encode()  # after IHDR: a valid PNG, different for every request
    png = PNG[:33] + struct.pack(">I", len(text) - 4) + text + struct.pack(">I", zlib.crc32(text)) + PNG[33:]
    body = json.dumps({"image_url": "data:image/png;base64," + base64.b64encode(png).decode()}).encode()
    return (f"POST /fal-ai/imageutils/rembg HTTP/1.1\r\nHost: {cfg['host']}:{cfg['port']}\r\n"
            f"Authorization: Key {cfg['key']}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def connect(cfg: dict[str, Any]) -> Conn:
    ctx = ssl.create_default_context(cafile=cfg["cafile"]) if cfg["cafile"] else None
    return await asyncio.open_connection(cfg["host"], cfg["port"], ssl=ctx)


async def post(conn: Conn, request: bytes) -> int:
    conn[1].write(request)
    head = await conn[0].readuntil(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    await conn[0].readexactly(int(length.group(1)) if length else 0)
    return int(head[9:12])


async def open_loop(cfg: dict[str, Any]) -> dict[str, Any]:
    rate, slots = cfg["rate"], asyncio.Semaphore(256)
    idle: list[tuple[Conn, float]] = []
    lat: list[float] = []
    lag: list[float] = []
    done: list[float] = []
    errors: Counter[str] = Counter()
    totals: Counter[str] = Counter()

    async def one(request: bytes, scheduled: float, measured: bool) -> None:
        issued, conn = time.perf_counter(), None
        async with slots:
            while idle and conn is None:  # LIFO; uvicorn closes a connection idle for 5 s
                conn, used = idle.pop()
                if time.perf_counter() - used > 4 or conn[0].at_eof():
                    conn[1].close()
                    conn = None
            try:
                conn = conn or await connect(cfg)
                status = await asyncio.wait_for(post(conn, request), 30)
            except Exception as exc:  # outcome unknown: counted, connection dropped
                if conn:
                    conn[1].close()
                errors[type(exc).__name__] += measured
                totals["unknown"] += 1
                return
            idle.append((conn, time.perf_counter()))
        totals["ok"] += status == 200
        if measured and status != 200:
            errors[str(status)] += 1
        elif measured:
            done.append(time.perf_counter())
            lat.append(done[-1] - scheduled)
            lag.append(issued - scheduled)

    total, first = int((cfg["warmup"] + cfg["duration"]) * rate), int(cfg["warmup"] * rate)
    requests = [request_bytes(cfg, f"open-{cfg['tag']}-{i}") for i in range(total)]
    t0, tasks = time.perf_counter() + 0.05, []
    for i in range(total):
        if (wait := t0 + i / rate - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(one(requests[i], t0 + i / rate, i >= first)))
    await asyncio.gather(*tasks)
    t_first = t0 + first / rate
    return {"target_rps": rate, "requests": total - first, "ok": len(lat), "errors": dict(errors),
            "ok_rps": round(len(done) / (max(done, default=t_first + 1) - t_first), 1), **ms_stats(lat),
            "schedule_lag": ms_stats(lag), "ok_total": totals["ok"], "unknown_total": totals["unknown"]}


async def closed_loop(cfg: dict[str, Any]) -> dict[str, Any]:
    lat: list[float] = []
    errors: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    t0 = time.perf_counter()
    t_measure, t_end = t0 + cfg["warmup"], t0 + cfg["warmup"] + cfg["duration"]

    async def client(c: int) -> None:
        conn = await connect(cfg)
        for n in itertools.count():
            if time.perf_counter() >= t_end:
                return
            request, start = request_bytes(cfg, f"closed-{cfg['tag']}-{c}-{n}"), time.perf_counter()
            measured = start >= t_measure
            try:
                status = await asyncio.wait_for(post(conn, request), 30)
            except Exception as exc:  # outcome unknown
                errors["unknown:" + type(exc).__name__] += measured
                totals["unknown"] += 1
                conn[1].close()
                conn = await connect(cfg)
                continue
            totals["ok"] += status == 200
            if measured and status == 200 and time.perf_counter() <= t_end:
                lat.append(time.perf_counter() - start)
            elif measured and status != 200:
                errors[str(status)] += 1

    await asyncio.gather(*(client(c) for c in range(cfg["concurrency"])))
    return {"concurrency": cfg["concurrency"], "ok": len(lat), "errors": dict(errors),
            "submits_per_s": round(len(lat) / cfg["duration"], 1), **ms_stats(lat),
            "ok_total": totals["ok"], "unknown_total": totals["unknown"]}


def plain_celery(cfg: dict[str, Any]) -> Any:
    """What a competent user writes: a plain app, the orchestrator's serializer, queues,
    routing and transport options, no task events."""
    from celery import Celery
    from kombu import Queue  # type: ignore[attr-defined]

    app = Celery("bare", broker=cfg["broker"], set_as_current=False)
    app.conf.update(
        broker_transport_options=cfg["transport"], task_serializer="json", accept_content=["json"],
        task_ignore_result=True, task_queues=[Queue(name, routing_key=name) for name in cfg["queues"]],
        task_create_missing_queues=False,
        task_routes={cfg["task"]: {"queue": cfg["queue"], "routing_key": cfg["queue"]}},
    )
    return app


def celery_publisher(cfg: dict[str, Any]) -> dict[str, Any]:
    app = plain_celery(cfg)

    @app.task(name=cfg["task"])  # type: ignore[untyped-decorator]
    def run_job(job_id: str) -> None:  # never runs here: only its delay() is measured
        pass

    if cfg["mode"] == "send_task":
        def publish() -> object:
            return app.send_task(cfg["task"], args=[str(uuid.uuid4())], queue=cfg["queue"],
                                 routing_key=cfg["queue"])
    else:
        def publish() -> object:
            return run_job.delay(str(uuid.uuid4()))

    publish()  # connected and declared before the clock starts
    print("ready", flush=True)
    sys.stdin.readline()  # released together with the other publishers of this side
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() < t0 + cfg["duration"]:
        publish()
        n += 1
    return {"published": n + 1, "per_s": round(n / (time.perf_counter() - t0), 1)}


def role_main(role: str, cfg: dict[str, Any]) -> None:
    cpu = time.process_time()
    result = celery_publisher(cfg) if role == "celery" else \
        asyncio.run(open_loop(cfg) if role == "open" else closed_loop(cfg))
    print(json.dumps({**result, "client_cpu_s": round(time.process_time() - cpu, 2)}), flush=True)


# ---- the run -------------------------------------------------------------------------------------

def role_cmd(role: str, cfg: dict[str, Any]) -> list[str]:
    return [sys.executable, __file__, "_" + role, json.dumps(cfg)]


def last_json(text: str) -> dict[str, Any]:
    return dict(json.loads(text.strip().splitlines()[-1]))


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its live children (uvicorn's workers)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(tree_cpu_seconds(int(k)) for k in kids)


class Bench:
    """The run's database, Redis DB, key and environment; one method per side."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dbname = f"orch_bench_{uuid.uuid4().hex[:8]}"
        self.db_url = args.pg.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{self.dbname}"
        self.env = {**os.environ, "ORCH_DATABASE_URL": self.db_url, "ORCH_BROKER_URL": args.redis,
                    "ORCH_API_REQUESTS_PER_SECOND": "100000",
                    # one tenant floods the API on purpose: no per-tenant rate or in-flight cap
                    "ORCH_API_TENANT_REQUESTS_PER_SECOND": "100000", "ORCH_TENANT_MAX_JOBS_IN_FLIGHT": "0"}
        # The stored-input cap stays at its default: it reads the tenant's running total.
        self.env.pop("ORCH_CONFIG", None)
        self.redis = redis.Redis.from_url(args.redis)
        self.tmp = tempfile.TemporaryDirectory()
        self.orch = [sys.executable, "-m", "orchestrator"]
        self.key = ""
        self.sides = 0

    def setup(self) -> None:
        if self.redis.exists("orchestrator-test-run"):  # tests/conftest.py claims DBs 1-15 with this key
            sys.exit(f"{self.args.redis} is claimed by a test run: pass another --redis")
        with psycopg.connect(self.args.pg, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')
        self.redis.flushdb()
        subprocess.run([*self.orch, "migrate"], env=self.env, cwd=ROOT, check=True, capture_output=True)
        out = subprocess.run([*self.orch, "keys", "create", "bench"], env=self.env, cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
        self.key = out.split()[0]

    def teardown(self) -> None:
        self.redis.flushdb()
        with psycopg.connect(self.args.pg, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
        self.tmp.cleanup()

    def celery_cfg(self, mode: str) -> dict[str, Any]:
        from orchestrator.queue.broker import transport_options
        from orchestrator.queue.celery_app import QUEUE_NAMES, RUN_JOB_TASK
        from orchestrator.settings import get_settings

        settings = get_settings()  # ORCH_* of this run, set in main()
        return {"mode": mode, "broker": self.args.redis, "transport": transport_options(settings),
                "queues": list(QUEUE_NAMES), "queue": "local", "task": RUN_JOB_TASK,
                "duration": self.args.duration}

    def bare(self, mode: str, processes: int) -> dict[str, Any]:
        self.redis.delete("local")
        procs = [subprocess.Popen(role_cmd("celery", self.celery_cfg(mode)), env=self.env, cwd=ROOT,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                 for _ in range(processes)]
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:  # released together
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [last_json(proc.communicate(timeout=self.args.duration + 60)[0]) for proc in procs]
        published = sum(r["published"] for r in results)
        messages = int(self.redis.llen("local"))
        self.redis.delete("local")
        return {"submits_per_s": round(sum(r["per_s"] for r in results), 1),
                "per_process": [r["per_s"] for r in results], "published": published,
                "messages": messages, "consistent": messages == published}

    def counts(self) -> tuple[int, int, int]:
        with psycopg.connect(self.db_url.replace("+psycopg", "")) as conn:
            jobs, enqueued = conn.execute("SELECT count(*), count(enqueued_at) FROM jobs").fetchone() or (0, 0)
        return int(jobs), int(enqueued), int(self.redis.llen("local"))

    def check(self, before: tuple[int, int, int], ok: int, unknown: int) -> dict[str, Any]:
        # Every 200 is a row, enqueued, with its message; a request whose reply was lost may be too.
        jobs, enqueued, messages = (a - b for a, b in zip(self.counts(), before, strict=True))
        return {"jobs": jobs, "enqueued": enqueued, "messages": messages, "ok": ok, "unknown": unknown,
                "consistent": jobs == enqueued == messages and ok <= jobs <= ok + unknown}

    def start_api(self, workers: int) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [*self.orch, "api", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
        cafile = None
        if self.args.https:
            cafile, keyfile = f"{self.tmp.name}/cert.pem", f"{self.tmp.name}/key.pem"
            if not os.path.exists(cafile):
                subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                                "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                                "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", keyfile, "-out", cafile],
                               check=True, capture_output=True)
            cmd += ["--ssl-certfile", cafile, "--ssl-keyfile", keyfile]
        api = subprocess.Popen(cmd, env=self.env, cwd=ROOT, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ctx = ssl.create_default_context(cafile=cafile) if cafile else None
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{'https' if cafile else 'http'}://127.0.0.1:{port}/healthz",
                                       timeout=2, context=ctx)
                break
            except OSError:
                if time.monotonic() > deadline or api.poll() is not None:
                    self.stop_api(api)
                    raise RuntimeError("the API did not start") from None
                time.sleep(0.2)
        time.sleep(0.5 * workers)  # uvicorn's other worker processes
        cfg = {"host": "127.0.0.1", "port": port, "key": self.key, "cafile": cafile,
               "rate": self.args.rate, "duration": self.args.duration, "warmup": self.args.warmup,
               "concurrency": self.args.concurrency}
        return api, cfg

    @staticmethod
    def stop_api(api: subprocess.Popen[bytes]) -> None:
        if api.poll() is None:
            os.killpg(api.pid, 15)
            api.wait(timeout=30)

    def api(self, workers: int) -> dict[str, Any]:
        self.sides += 1
        self.redis.delete("local")
        api, cfg = self.start_api(workers)
        try:
            before, cpu0 = self.counts(), tree_cpu_seconds(api.pid)
            cl = last_json(subprocess.run(role_cmd("closed", {**cfg, "tag": self.sides}), env=self.env,
                                          cwd=ROOT, check=True, capture_output=True, text=True).stdout)
            # CPU over warm-up and measured phase, per 200 over both
            cpu_ms = (tree_cpu_seconds(api.pid) - cpu0) * 1000 / max(1, cl["ok_total"])
            closed_check = self.check(before, cl.pop("ok_total"), cl.pop("unknown_total"))
            before = self.counts()
            op = last_json(subprocess.run(role_cmd("open", {**cfg, "tag": self.sides}), env=self.env, cwd=ROOT, check=True,
                                          capture_output=True, text=True).stdout)
            open_check = self.check(before, op.pop("ok_total"), op.pop("unknown_total"))
        finally:
            self.stop_api(api)
        self.redis.delete("local")
        return {"submits_per_s": cl["submits_per_s"], "closed_p50_ms": cl["p50_ms"], "closed_p99_ms": cl["p99_ms"],
                "api_cpu_ms_per_submit": round(cpu_ms, 3),
                "open_p50_ms": op["p50_ms"], "open_p99_ms": op["p99_ms"], "open_max_ms": op["max_ms"],
                "open_ok_rps": op["ok_rps"], "open_schedule_lag_p99_ms": op["schedule_lag"]["p99_ms"],
                "closed_errors": cl["errors"], "open_errors": op["errors"],
                "closed": cl, "open": op, "closed_check": closed_check, "open_check": open_check,
                "consistent": closed_check["consistent"] and open_check["consistent"]
                and not cl["errors"] and not op["errors"]}


def table(run: Any, args: argparse.Namespace) -> str:
    from benchmarks.harness import fmt

    def f(side: str, key: str, digits: int = 1) -> str:
        return fmt(run.figure(side, key), digits)

    def r(side: str, base: str) -> str:
        return fmt(run.ratio(side, base, "submits_per_s"), 2) + "×"

    c, rate = args.concurrency, f"{args.rate:g}"
    rows = [
        ("bare `send_task`, plain app, 1 process", f("send_task x1", "submits_per_s") + " /s", ""),
        ("bare `delay()`, plain app, 1 process", f("delay x1", "submits_per_s") + " /s", ""),
        ("bare `send_task`, plain app, 2 processes (sum)", f("send_task x2", "submits_per_s") + " /s", ""),
        ("bare `delay()`, plain app, 2 processes (sum)", f("delay x2", "submits_per_s") + " /s", ""),
        (f"API, 1 process: sustained submits, {c} clients", f("api x1", "submits_per_s") + " /s", ""),
        (f"API, 2 processes: sustained submits, {c} clients", f("api x2", "submits_per_s") + " /s", ""),
        ("**API 1 process / bare `send_task` 1 process**", r("api x1", "send_task x1"), "≥ 0.5×"),
        ("**API 2 processes / bare `send_task` 2 processes**", r("api x2", "send_task x2"), "≥ 0.5×"),
        ("API 1 process / bare `delay()` 1 process", r("api x1", "delay x1"), ""),
        ("API 2 processes / bare `delay()` 2 processes", r("api x2", "delay x2"), ""),
        (f"API, 1 process: closed-loop p50 / p99 ({c} clients)",
         f"{f('api x1', 'closed_p50_ms')} / {f('api x1', 'closed_p99_ms')} ms", ""),
        (f"API, 2 processes: closed-loop p50 / p99 ({c} clients)",
         f"{f('api x2', 'closed_p50_ms')} / {f('api x2', 'closed_p99_ms')} ms", ""),
        (f"**API, 1 process: open loop at {rate} rps, p99**", f("api x1", "open_p99_ms", 1) + " ms", "≤ 25 ms"),
        (f"API, 1 process: open loop at {rate} rps, p50", f("api x1", "open_p50_ms", 1) + " ms", ""),
        (f"API, 2 processes: open loop at {rate} rps, p50 / p99",
         f"{f('api x2', 'open_p50_ms')} / {f('api x2', 'open_p99_ms')} ms", ""),
        ("API CPU per submit (closed loop), 1 / 2 processes",
         f"{f('api x1', 'api_cpu_ms_per_submit', 2)} / {f('api x2', 'api_cpu_ms_per_submit', 2)} ms", ""),
    ]
    dirty = " (dirty tree)" if run.commit["dirty"] else ""
    lines = [f"Median (range) of {run.rounds_count} rotating rounds, ratios per round; "
             f"`{run.command}` at commit `{run.commit['commit']}`{dirty}, "
             f"{os.cpu_count()} cores, load average before {run.load_before[0]:.2f}.", "",
             "| measure | median (range) | goal |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {g} |" for a, b, g in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured, per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds discarded before each API phase")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop clients")
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s phases: checks the script")
    parser.add_argument("--https", action="store_true", help="serve and load over TLS")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 2.0, 0.5

    sys.path.insert(0, str(ROOT))
    from benchmarks.harness import Run

    bench = Bench(args)
    os.environ.update({k: v for k, v in bench.env.items() if k.startswith("ORCH_")})
    os.environ.pop("ORCH_CONFIG", None)
    run = Run("api_submit", rounds=args.rounds, params={
        k: getattr(args, k) for k in ("rate", "duration", "warmup", "concurrency", "https")})
    bench.setup()
    try:
        run.rounds({
            "send_task x1": lambda: bench.bare("send_task", 1),
            "delay x1": lambda: bench.bare("delay", 1),
            "api x1": lambda: bench.api(1),
            "send_task x2": lambda: bench.bare("send_task", 2),
            "delay x2": lambda: bench.bare("delay", 2),
            "api x2": lambda: bench.api(2),
        })
    finally:
        bench.teardown()
    consistent = all(r["consistent"] for rs in run.results.values() for r in rs)
    run.extra["ratios"] = {f"{a} / {b}": run.ratio(a, b, "submits_per_s") for a, b in (
        ("api x1", "send_task x1"), ("api x2", "send_task x2"), ("api x1", "delay x1"), ("api x2", "delay x2"))}
    run.extra["consistent"] = consistent
    run.save()
    print()
    print(table(run, args))
    print(f"\nrows = enqueued = messages = 200s, no errors, bare messages = published: {consistent}")
    if not consistent:
        sys.exit("the counts do not match (see the record)")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1].startswith("_"):
        role_main(sys.argv[1][1:], json.loads(sys.argv[2]))
    else:
        main()
