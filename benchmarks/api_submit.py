"""Submit latency and throughput of the HTTP API against bare Celery publishing, in one run.

    python benchmarks/api_submit.py [--rate 200] [--duration 10] [--concurrency 32] [--workers 1] [--https]

Its own Postgres database and Redis DB 12 (dropped and flushed at the end), a key, the per-key
rate limit lifted, then `orchestrator api --workers W` on 127.0.0.1, plain http (loopback load
measures the API, not TLS; `--https` serves and loads over TLS with a throwaway certificate).
No worker: a 200 from `POST /fal-ai/imageutils/rembg` means the job row is committed and its
message is in Redis. Each request carries a different 1x1 PNG (a tEXt chunk with a counter), so
the API's deduplication of identical inputs folds nothing together.

1. open loop: requests issued on a fixed schedule (--rate/s, --warmup s discarded, then --duration
   s) whatever the replies; latency from the *scheduled* send time, so queueing delay is not
   hidden (no coordinated omission); up to 256 keep-alive connections;
2. closed loop: --concurrency clients, a connection each, back to back for --duration s →
   sustained submits/s; job rows, enqueued rows and `local` queue messages must equal the 200s;
3. bare Celery, one thread, --duration s each: `send_task("orchestrator.run_job", queue="local")`
   on the producer's publisher app (what the API calls) and the task's `delay()` (the worker app,
   which also sends a task-sent event); ratios against both (the goal is on `delay()`).
Load and baselines run in their own processes (not under the API's GIL); the load is a minimal
asyncio HTTP/1.1 client (~0.1 ms CPU per request; its schedule lag is printed). All share the
2 cores with Postgres, Redis and whatever else runs (the load average is recorded).
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
from typing import Any, Callable

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
    requests = [request_bytes(cfg, f"open-{i}") for i in range(total)]
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
    t0 = time.perf_counter()

    async def client(c: int) -> None:
        conn = await connect(cfg)
        for n in itertools.count():
            if time.perf_counter() >= t0 + cfg["duration"]:
                return
            request, start = request_bytes(cfg, f"closed-{c}-{n}"), time.perf_counter()
            try:
                status = await asyncio.wait_for(post(conn, request), 30)
            except Exception as exc:  # outcome unknown
                errors["unknown:" + type(exc).__name__] += 1
                conn[1].close()
                conn = await connect(cfg)
                continue
            if status == 200:
                lat.append(time.perf_counter() - start)
            else:
                errors[str(status)] += 1

    await asyncio.gather(*(client(c) for c in range(cfg["concurrency"])))
    seconds = time.perf_counter() - t0
    return {"concurrency": cfg["concurrency"], "seconds": round(seconds, 3), "ok": len(lat),
            "errors": dict(errors), "submits_per_s": round(len(lat) / seconds, 1), **ms_stats(lat),
            "ok_total": len(lat), "unknown_total": sum(n for k, n in errors.items() if k[0] == "u")}


def celery_baseline(cfg: dict[str, Any]) -> dict[str, Any]:
    from orchestrator.queue.celery_app import RUN_JOB_TASK, publisher_for
    from orchestrator.queue.tasks import run_job
    from orchestrator.settings import get_settings

    publisher = publisher_for(get_settings())

    def timed(fn: Callable[[], object]) -> dict[str, float]:
        fn()  # connected before the clock starts
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() < t0 + cfg["duration"]:
            fn()
            n += 1
        return {"published": n + 1, "per_s": round(n / (time.perf_counter() - t0), 1)}

    out: dict[str, Any] = {
        "send_task": timed(lambda: publisher.send_task(RUN_JOB_TASK, args=[str(uuid.uuid4())],
                                                       queue="local", routing_key="local")),
        "delay": timed(lambda: run_job.delay(str(uuid.uuid4()))),
    }
    out["published_total"] = sum(v["published"] for v in out.values())
    return out


def role_main(role: str, cfg: dict[str, Any]) -> None:
    cpu = time.process_time()
    result = celery_baseline(cfg) if role == "celery" else \
        asyncio.run(open_loop(cfg) if role == "open" else closed_loop(cfg))
    print(json.dumps({**result, "client_cpu_s": round(time.process_time() - cpu, 2)}))


# ---- the run -------------------------------------------------------------------------------------

def run_role(role: str, cfg: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "_" + role, json.dumps(cfg)], env=env, cwd=ROOT,
                         check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its live children (uvicorn's workers)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(tree_cpu_seconds(int(k)) for k in kids)


def counts(db_url: str, r: redis.Redis, ok: int, unknown: int) -> dict[str, Any]:
    with psycopg.connect(db_url.replace("+psycopg", "")) as conn:
        jobs, enqueued = conn.execute("SELECT count(*), count(enqueued_at) FROM jobs").fetchone() or (0, 0)
    # Every 200 is a row, enqueued, with its message; a request whose reply was lost may be too.
    return {"jobs": jobs, "enqueued": enqueued, "messages": r.llen("local"), "ok": ok, "unknown": unknown,
            "consistent": jobs == enqueued == r.llen("local") and ok <= jobs <= ok + unknown}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured, per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="open-loop seconds discarded first")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop clients")
    parser.add_argument("--workers", type=int, default=1, help="`orchestrator api --workers`")
    parser.add_argument("--https", action="store_true", help="serve and load over TLS")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    args = parser.parse_args()

    dbname = f"orch_bench_{uuid.uuid4().hex[:8]}"
    db_url = args.pg.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{dbname}"
    env = {**os.environ, "ORCH_DATABASE_URL": db_url, "ORCH_BROKER_URL": args.redis,
           "ORCH_API_REQUESTS_PER_SECOND": "100000",
           # one tenant floods the API on purpose: no per-tenant rate or in-flight cap
           "ORCH_API_TENANT_REQUESTS_PER_SECOND": "100000", "ORCH_TENANT_MAX_JOBS_IN_FLIGHT": "0"}
    env.pop("ORCH_CONFIG", None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp, r, api = tempfile.TemporaryDirectory(), redis.Redis.from_url(args.redis), None
    if r.exists("orchestrator-test-run"):  # tests/conftest.py claims DBs 1-15 with this key
        sys.exit(f"{args.redis} is claimed by a test run: pass another --redis")
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    r.flushdb()
    try:
        orch = [sys.executable, "-m", "orchestrator"]
        subprocess.run([*orch, "migrate"], env=env, cwd=ROOT, check=True, capture_output=True)
        key = subprocess.run([*orch, "keys", "create", "bench"], env=env, cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.strip()
        cmd = [*orch, "api", "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers)]
        cafile, scheme = None, "https" if args.https else "http"
        if args.https:
            cafile, keyfile = f"{tmp.name}/cert.pem", f"{tmp.name}/key.pem"
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                            "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
                            "subjectAltName=IP:127.0.0.1", "-keyout", keyfile, "-out", cafile],
                           check=True, capture_output=True)
            cmd += ["--ssl-certfile", cafile, "--ssl-keyfile", keyfile]
        api = subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True)
        ctx, deadline = ssl.create_default_context(cafile=cafile) if cafile else None, time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/healthz", timeout=2, context=ctx)
                break
            except OSError:
                if time.monotonic() > deadline or api.poll() is not None:
                    raise RuntimeError("the API did not start") from None
                time.sleep(0.2)
        cfg = {"host": "127.0.0.1", "port": port, "key": key, "cafile": cafile, "rate": args.rate,
               "duration": args.duration, "warmup": args.warmup, "concurrency": args.concurrency}

        load_before = os.getloadavg()[0]
        op = run_role("open", cfg, env)
        after_open = counts(db_url, r, op.pop("ok_total"), op.pop("unknown_total"))
        cpu0 = tree_cpu_seconds(api.pid)
        cl = run_role("closed", cfg, env)
        cl["api_cpu_ms_per_submit"] = round((tree_cpu_seconds(api.pid) - cpu0) * 1000 / max(1, cl["ok"]), 2)
        after_closed = counts(db_url, r, after_open["ok"] + cl.pop("ok_total"),
                              after_open["unknown"] + cl.pop("unknown_total"))
        os.killpg(api.pid, 15)
        api.wait(timeout=30)
        before = r.llen("local")
        bare = run_role("celery", cfg, env)
        bare["messages"] = r.llen("local") - before
        consistent = after_open["consistent"] and after_closed["consistent"] and \
            bare["messages"] == bare["published_total"]
        best = max(bare["send_task"]["per_s"], bare["delay"]["per_s"])
        ratio = cl["submits_per_s"] / best
        ratio_delay = cl["submits_per_s"] / bare["delay"]["per_s"]  # the goal is on delay()

        print(f"open loop at {op['target_rps']:g} rps ({scheme}, {args.workers} API process(es)): p50 {op['p50_ms']} ms, "
              f"p90 {op['p90_ms']} ms, p99 {op['p99_ms']} ms, max {op['max_ms']} ms; {op['ok']}/{op['requests']} ok "
              f"at {op['ok_rps']}/s, errors {op['errors']}; generator schedule lag p99 {op['schedule_lag']['p99_ms']} ms")
        print(f"closed loop, {cl['concurrency']} clients: {cl['submits_per_s']} submits/s sustained (p50 "
              f"{cl['p50_ms']} ms, p99 {cl['p99_ms']} ms, errors {cl['errors']}); API CPU "
              f"{cl['api_cpu_ms_per_submit']} ms per submit")
        print(f"bare Celery, one thread: send_task {bare['send_task']['per_s']}/s, delay() {bare['delay']['per_s']}/s")
        print(f"ratio: {ratio_delay:.3f}x bare delay(), {ratio:.3f}x the fastest bare publisher; "
              f"rows = enqueued = messages = 200s: {consistent}; load average before {load_before:.2f}")
        print(json.dumps({"open_loop": op, "closed_loop": cl, "bare_celery": bare, "ratio": ratio,
                          "ratio_vs_delay": ratio_delay,
                          "checks": {"after_open": after_open, "after_closed": after_closed, "consistent": consistent},
                          "workers": args.workers, "scheme": scheme, "loadavg_before": load_before}))
        if not consistent:
            sys.exit("the counts do not match")
    finally:
        if api is not None and api.poll() is None:
            os.killpg(api.pid, 15)
            api.wait(timeout=30)
        r.flushdb()
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        tmp.cleanup()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1].startswith("_"):
        role_main(sys.argv[1][1:], json.loads(sys.argv[2]))
    else:
        main()
