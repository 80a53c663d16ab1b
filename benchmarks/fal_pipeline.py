"""fal backend throughput against a bare asyncio loop over fal_client.AsyncClient, same run.

    python benchmarks/fal_pipeline.py -n 500 --latency 1.0

Both sides talk to the same fal queue emulator (tests/fal_emulator, its own process, HTTPS on
loopback) with the given latency per request. Bare: submit → poll (fal_client's default 0.1 s)
→ result → download, all requests at once, nothing persisted. Pipeline: `orchestrator submit`'s
producer (Postgres rows, Redis messages) → `orchestrator worker --queues fal --concurrency 2`
(submit tasks + the poller thread) → results stored in Postgres; timed from the first submit to
the last stored result. Prints completions per second for both, the ratio, and the peak number
of requests in flight at fal during the pipeline run.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import redis
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def start_emulator(latency: float) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fal_emulator", "--port", "0", "--latency", str(latency)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    return proc, {"FAL_QUEUE_RUN_HOST": info["host"], "SSL_CERT_FILE": info["ca_file"]}


def images(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (64 + i % 32, 48), (i % 255, 120, 200)).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def run_bare(n: int, fal_env: dict[str, str], key: str, interval: float) -> dict[str, float]:
    code = f"""
import asyncio, base64, json, sys, time, httpx, fal_client
blobs = json.load(sys.stdin)
async def one(client, http, b64):
    handle = await client.submit("fal-ai/imageutils/rembg", {{"image_url": "data:image/png;base64," + b64}})
    out = await handle.get(interval={interval!r})
    r = await http.get(out["image"]["url"])
    r.raise_for_status()
    return len(r.content)
async def main():
    client = fal_client.AsyncClient(key={key!r})
    async with httpx.AsyncClient(timeout=60) as http:
        t = time.perf_counter()
        sizes = await asyncio.gather(*(one(client, http, b) for b in blobs))
        print(json.dumps({{"seconds": time.perf_counter() - t, "done": len(sizes)}}))
asyncio.run(main())
"""
    blobs = [base64.b64encode(b).decode() for b in images(n)]
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(blobs), text=True,
                         capture_output=True, env={**os.environ, **fal_env}, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["cps"] = result["done"] / result["seconds"]
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


def run_pipeline(n: int, fal_env: dict[str, str], key: str, pg_admin: str, redis_url: str,
                 processes: int) -> dict[str, object]:
    dbname = f"orch_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    db_url = pg_admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{dbname}"
    redis.Redis.from_url(redis_url).flushdb()
    env = {**os.environ, **fal_env, "FAL_KEY": key, "ORCH_DATABASE_URL": db_url,
           "ORCH_BROKER_URL": redis_url, "ORCH_FAL_MAX_IN_FLIGHT": "5000",
           "ORCH_FAL_MAX_SUBMITS_PER_SECOND": "5000", "ORCH_FAL_POLL_MAX_SECONDS": "2"}
    env.pop("ORCH_CONFIG", None)
    worker = None
    try:
        subprocess.run([sys.executable, "-m", "orchestrator", "migrate"], env=env, check=True,
                       capture_output=True)
        log_path = Path(f"/tmp/{dbname}-worker.log")
        log = open(log_path, "w")
        worker = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "worker", "--queues", "fal", "--concurrency",
             str(processes), "--loglevel", "WARNING"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and log_path.read_text().count("fal poller running") < processes:
            time.sleep(0.1)
        time.sleep(1.0)
        os.environ.update({k: env[k] for k in ("ORCH_DATABASE_URL", "ORCH_BROKER_URL", "FAL_KEY")})
        from orchestrator.jobs.producer import Source, submit, wait_for
        from orchestrator.jobs.states import JobState
        from orchestrator.settings import get_settings

        settings = get_settings()
        sources = [Source(name=f"img-{i}", data=b) for i, b in enumerate(images(n))]
        started = time.perf_counter()
        submitted = submit(sources, settings=settings, backend="fal")
        states = wait_for([s.job_id for s in submitted], settings=settings, poll_seconds=0.1)
        seconds = time.perf_counter() - started
        done = sum(1 for s in states.values() if s is JobState.SUCCEEDED)
        return {"seconds": seconds, "done": done, "cps": done / seconds, "processes": processes,
                "peak_in_flight": peak_in_flight(db_url)}
    finally:
        if worker is not None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
        with psycopg.connect(pg_admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--skip-bare", action="store_true")
    args = parser.parse_args()
    emulator, fal_env = start_emulator(args.latency)
    key = "bench-key:secret"
    try:
        bare = None
        if not args.skip_bare:
            # fal_client's default poll interval (0.1 s), and a gentler one closer to ours: the
            # faster of the two is the baseline.
            for interval in (0.1, 0.5):
                run = run_bare(args.n, fal_env, key, interval)
                print(f"bare fal_client loop (poll every {interval} s): {run['cps']:.1f} completions/s "
                      f"({run['done']} in {run['seconds']:.2f} s)")
                if bare is None or run["cps"] > bare["cps"]:
                    bare = run
        pipe = run_pipeline(args.n, fal_env, key, args.pg, args.redis, args.processes)
        print(f"pipeline           : {pipe['cps']:.1f} completions/s ({pipe['done']} in {pipe['seconds']:.2f} s), "
              f"{pipe['processes']} worker processes, peak {pipe['peak_in_flight']} requests in flight")
        if bare:
            print(f"ratio              : {pipe['cps'] / bare['cps']:.3f}x the bare loop")
        print(json.dumps({"bare": bare, "pipeline": pipe, "latency": args.latency, "n": args.n}))
    finally:
        emulator.send_signal(signal.SIGTERM)
        emulator.wait(timeout=30)


if __name__ == "__main__":
    main()
