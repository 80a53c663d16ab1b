"""``orchestrator dev`` on its embedded SQLite database and broker against the same command on
Postgres and Redis: the same jobs, the same worker, the same machine, in one run.

    python benchmarks/embedded_pipeline.py -n 60                 # a tiny model: pipeline overhead
    python benchmarks/embedded_pipeline.py -n 12 --real-model    # IS-Net on the sample photos

Each side: start ``orchestrator dev --workers 1`` in a fresh folder, wait until its worker has
loaded the model, submit N images through the producer (the ``orchestrator submit`` path), and
time from the first submit to the last stored result. The sides alternate for ``--rounds``
rounds (``benchmarks/harness.py``: median, range, per-round ratio). Postgres gets a database of its own
(dropped at the end); Redis a DB claimed the way the tests claim theirs (flushed at the end).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))
from benchmarks.harness import Run, fmt  # noqa: E402


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _images(n: int, real: bool) -> list[tuple[str, bytes]]:
    if real:
        photos = sorted((SHARED / "images").glob("*.png"))
        return [(f"{photos[i % len(photos)].stem}-{i}", photos[i % len(photos)].read_bytes())
                for i in range(n)]
    from tests.support.images import subject

    out = []
    for i in range(n):
        buf = io.BytesIO()
        subject((96 + i % 50, 64)).save(buf, "PNG")
        out.append((f"tiny-{i}", buf.getvalue()))
    return out


def run_side(label: str, env: dict[str, str], images: list[tuple[str, bytes]]) -> dict[str, object]:
    folder = Path(tempfile.mkdtemp(prefix=f"embedded-bench-{label}-"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "dev", "--port", str(_free_port()), "--workers", "1",
         "--json"], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stdout is not None
        details = json.loads(proc.stdout.readline())
        worker_log = Path(details["logs"]) / "worker.log"
        deadline = time.monotonic() + 300
        while "local backend ready" not in worker_log.read_text():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label}: the worker did not load its model")
            time.sleep(0.2)
        printed = subprocess.run([sys.executable, "-m", "orchestrator", "dev", "--print-env"],
                                 cwd=folder, env=env, capture_output=True, text=True, check=True)
        urls = dict(line.removeprefix("export ").split("=", 1) for line in printed.stdout.splitlines())
        for name in [n for n in os.environ if n.startswith("ORCH_")]:
            del os.environ[name]  # nothing of the previous side's settings (its store) stays
        os.environ.update({k: v.strip("'") for k, v in urls.items()})
        os.environ.update({k: v for k, v in env.items() if k.startswith("ORCH_")})
        from orchestrator.jobs.producer import Source, submit, wait_for
        from orchestrator.jobs.states import JobState
        from orchestrator.settings import get_settings

        get_settings.cache_clear()
        settings = get_settings()
        sources = [Source(name=name, data=data) for name, data in images]
        started = time.perf_counter()
        submitted = submit(sources, settings=settings, backend="local")
        states = wait_for([s.job_id for s in submitted], settings=settings, poll_seconds=0.05)
        seconds = time.perf_counter() - started
        assert all(s is JobState.SUCCEEDED for s in states.values()), states
        return {"side": label, "jobs": len(images), "seconds": round(seconds, 2),
                "jobs_per_second": round(len(images) / seconds, 3),
                "database": details["database_url"].split(":", 1)[0],
                "broker": details["broker_url"].split(":", 1)[0]}
    finally:
        proc.send_signal(2)  # Ctrl-C
        proc.wait(timeout=120)


def _claim_redis_db(base: str) -> str:
    token = uuid.uuid4().hex
    for db in range(1, 16):
        client = redis.Redis.from_url(f"{base}/{db}")
        if client.set("orchestrator-test-run", token, nx=True, ex=3600):
            return f"{base}/{db}"
    raise SystemExit("no free Redis DB (1-15)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=60, help="jobs per side")
    parser.add_argument("--real-model", action="store_true",
                        help="IS-Net (../shared/models) on the sample photos instead of a tiny model")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    args = parser.parse_args()

    base = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "FAL_"))}
    base.update(ORCH_DEDUP_WINDOW_SECONDS="0")  # repeated photos: measure real work
    if args.real_model:
        base["ORCH_LOCAL_MODEL_PATH"] = str(SHARED / "models" / "isnet-general.onnx")
    else:
        from tests.support.models import write_tiny_dis_model

        model = write_tiny_dis_model(Path(tempfile.mkdtemp()) / "tiny.onnx")
        base.update(ORCH_LOCAL_MODEL_PATH=str(model), ORCH_LOCAL_ONNX_THREADS="1")
    images = _images(args.n, args.real_model)

    dbname = f"orch_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    redis_url = _claim_redis_db(args.redis)
    model = "isnet" if args.real_model else "tiny"
    run = Run(f"embedded_pipeline_{model}", rounds=args.rounds, params={"jobs": args.n, "model": model})
    try:
        db_url = args.pg.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{dbname}"
        served = {**base, "ORCH_DATABASE_URL": db_url, "ORCH_BROKER_URL": redis_url}
        run.rounds({"embedded": lambda: run_side("embedded", base, images),
                    "postgres+redis": lambda: run_side("postgres+redis", served, images)})
    finally:
        redis.Redis.from_url(redis_url).flushdb()
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    run.save()
    embedded, served_fig = run.figure("embedded", "jobs_per_second"), run.figure("postgres+redis", "jobs_per_second")
    print("\n| model, jobs | embedded (SQLite + SQLite broker) | Postgres + Redis | ratio embedded / served |")
    print("| --- | --- | --- | --- |")
    print(f"| {model}, {args.n} jobs | {fmt(embedded)} jobs/s | {fmt(served_fig)} jobs/s | "
          f"{fmt(run.ratio('embedded', 'postgres+redis', 'jobs_per_second'), 2)}× |")
    print(f"\nmedian (range) of {args.rounds} alternating rounds; `{run.command}` at commit "
          f"{run.commit['commit']}, load average before {run.load_before[0]:.2f}")

if __name__ == "__main__":
    main()
