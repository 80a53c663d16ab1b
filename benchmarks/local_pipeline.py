"""Local pipeline throughput against bare rembg, in the same run, on the same images and cores.

    python benchmarks/local_pipeline.py -n 24

Bare: ``benchmarks/bare_rembg.py`` (one process, one reused session, rembg's default threads).
Pipeline: ``orchestrator submit`` path (Postgres rows + Redis messages) → ``orchestrator worker``
with its default settings → results stored in Postgres; timed from the first submit to the last
stored result, with the worker already warm. Needs the machine's Postgres and Redis.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def rss_peak_mib(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024 if match else 0.0


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def run_bare(model: Path, images: list[Path], n: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bare_rembg.py"), "--model", str(model),
         "-n", str(n), "--images", *map(str, images)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_pipeline(model: Path, images: list[Path], n: int, pg_admin: str, redis_url: str) -> dict[str, object]:
    dbname = f"orch_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    db_url = pg_admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{dbname}"
    redis.Redis.from_url(redis_url).flushdb()
    env = {**os.environ, "ORCH_DATABASE_URL": db_url, "ORCH_BROKER_URL": redis_url,
           "ORCH_LOCAL_MODEL_PATH": str(model),
           "ORCH_DEDUP_WINDOW_SECONDS": "0"}  # the same 4 photos repeat: measure real work
    for key in ("ORCH_CONFIG",):
        env.pop(key, None)
    worker = None
    try:
        subprocess.run([sys.executable, "-m", "orchestrator", "migrate"], env=env, check=True,
                       capture_output=True)
        log_path = Path(f"/tmp/{dbname}-worker.log")
        log = open(log_path, "w")
        worker = subprocess.Popen([sys.executable, "-m", "orchestrator", "worker", "--queues", "local"],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        procs = 0
        while time.monotonic() < deadline:
            text = log_path.read_text()
            m = re.search(r"(\d+) process\(es\)", text)
            procs = int(m.group(1)) if m else 0
            if procs and text.count("local backend ready") >= procs:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("worker did not warm up:\n" + log_path.read_text())

        # Import here so that the settings come from the benchmark's environment.
        os.environ.update({k: env[k] for k in ("ORCH_DATABASE_URL", "ORCH_BROKER_URL", "ORCH_LOCAL_MODEL_PATH")})
        from orchestrator.jobs.producer import Source, submit, wait_for
        from orchestrator.jobs.states import JobState
        from orchestrator.settings import get_settings

        settings = get_settings()
        blobs = [(p.stem, p.read_bytes()) for p in images]
        sources = [Source(name=f"{blobs[i % len(blobs)][0]}-{i}", data=blobs[i % len(blobs)][1])
                   for i in range(n)]
        started = time.perf_counter()
        submitted = submit(sources, settings=settings, backend="local")
        states = wait_for([s.job_id for s in submitted], settings=settings, poll_seconds=0.25)
        seconds = time.perf_counter() - started
        assert all(s is JobState.SUCCEEDED for s in states.values()), states
        pids = children(worker.pid)
        return {
            "images": n,
            "seconds": seconds,
            "ips": n / seconds,
            "processes": procs,
            "peak_rss_mib_per_process": [round(rss_peak_mib(p), 1) for p in pids],
            "peak_rss_mib_main": round(rss_peak_mib(worker.pid), 1),
        }
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=60)
        with psycopg.connect(pg_admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=24, help="images per side")
    parser.add_argument("--model", type=Path, default=SHARED / "models" / "isnet-general.onnx")
    parser.add_argument("--images", type=Path, default=SHARED / "images")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    images = sorted(args.images.glob("*.png"))
    bare = run_bare(args.model, images, args.n)
    print(f"bare rembg : {bare['ips']:.3f} images/s ({bare['seconds']:.1f} s), "
          f"peak RSS {bare['peak_rss_mib']:.0f} MiB")
    pipe = run_pipeline(args.model, images, args.n, args.pg, args.redis)
    print(f"pipeline   : {pipe['ips']:.3f} images/s ({pipe['seconds']:.1f} s), "
          f"{pipe['processes']} worker processes, peak RSS per process "
          f"{pipe['peak_rss_mib_per_process']} MiB (main {pipe['peak_rss_mib_main']} MiB)")
    print(f"ratio      : {pipe['ips'] / bare['ips']:.3f}x bare rembg")
    print(json.dumps({"bare": bare, "pipeline": pipe, "ratio": pipe["ips"] / bare["ips"]}))


if __name__ == "__main__":
    main()
