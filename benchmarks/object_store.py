"""Image bytes in the object store against bytes in Postgres, in one run.

    python benchmarks/object_store.py [--puts 300] [--jobs 1000] [--downloads 200]

Starts its own SeaweedFS (``weed mini`` on free loopback ports, telemetry off, one identity)
and its own Postgres database (migrated; dropped at the end), and uses the Redis DB of
``BENCH_REDIS_URL`` (default redis://127.0.0.1:6379/14, for the API's rate limiter).

1. Writes: ``--puts`` results of 100 KiB (random bytes: PNGs do not compress), three times,
   each written through ``S3Store.put`` (the path a worker takes: Content-MD5, error mapping)
   and as a bare ``put_object`` of the same bytes on a boto3 client with the same
   configuration, interleaved one by one. Results per second (one writer), ratio.
2. Postgres size per 1,000 jobs: ``--jobs`` succeeded jobs (job, attempt, input and result
   rows) with a 64 KiB input and a 48 KiB result kept in the database (the default store): the
   size of the four tables with TOAST and indexes after ``VACUUM FULL``; then ``orchestrator
   results migrate --to s3``, ``VACUUM FULL`` again, and the size again.
3. Downloads: ``--downloads`` results fetched (a) from the API, which reads the bytes from
   Postgres (``/v1/jobs/{id}/result?token=``, database store), (b) through the API's 307 to a
   presigned URL, followed to the store, (c) straight from the presigned URL the job carries.
   Latency (median, p95) per download, and the API process's CPU time per download (user +
   system, from /proc); plus the API's 307 alone (what a caller pays to get a fresh URL).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402

from tests.support.seaweed import SeaweedFS, free_ports  # noqa: E402

PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
TABLES = ("jobs", "job_inputs", "attempts", "results")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_puts(env: dict[str, str], n: int) -> dict[str, float]:
    from orchestrator.settings import load_settings
    from orchestrator.storage.s3 import S3Store, make_client

    settings = load_settings()
    store = S3Store(settings)
    bare = make_client(settings, settings.storage.s3_endpoint_url)
    payloads = [os.urandom(100 * 1024) for _ in range(n)]
    bucket, prefix = store.bucket, store.where.prefix
    for i in range(10):  # warm both connection pools
        store.put(f"warm/{i}", payloads[i], "image/png")
        bare.put_object(Bucket=bucket, Key=f"{prefix}warm-bare/{i}", Body=payloads[i])
    # Interleaved put by put (store, bare, store, bare …), each timed on its own: load from
    # other processes on a shared machine then falls on both alike.
    spent = {"store": 0.0, "bare": 0.0}
    for _ in range(3):
        for i, data in enumerate(payloads):
            started = time.perf_counter()
            store.put(f"results/{uuid.uuid4()}/{i}.png", data, "image/png")
            spent["store"] += time.perf_counter() - started
            started = time.perf_counter()
            bare.put_object(Bucket=bucket, Key=f"{prefix}bare/{uuid.uuid4()}/{i}.png", Body=data,
                            ContentType="image/png")
            spent["bare"] += time.perf_counter() - started
    store_rate, bare_rate = 3 * n / spent["store"], 3 * n / spent["bare"]
    return {"store_per_s": store_rate, "bare_per_s": bare_rate, "ratio": store_rate / bare_rate}


def _table_bytes(database_url: str) -> int:
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        row = conn.execute("SELECT sum(pg_total_relation_size(t::regclass)) FROM unnest(%s::text[]) t",
                           (list(TABLES),)).fetchone()
    assert row is not None
    return int(row[0])


def _vacuum_full(database_url: str) -> int:
    """VACUUM FULL the four tables and return their size. Another session's open snapshot (other
    test runs share this server) keeps dead rows alive, so repeat until the size settles."""
    size = _table_bytes(database_url)
    for _ in range(20):
        with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute("VACUUM FULL " + ", ".join(TABLES))
        now = _table_bytes(database_url)
        if now >= size * 0.99:
            return now
        size = now
        time.sleep(1)
    return size


def bench_size(env: dict[str, str], jobs: int) -> dict[str, float]:
    from tests.support.stored_jobs import insert_succeeded_jobs

    db = env["ORCH_DATABASE_URL"]
    insert_succeeded_jobs(db, jobs, size=48 * 1024, input_size=64 * 1024)
    before = _vacuum_full(db)
    moved = subprocess.run([sys.executable, "-m", "orchestrator", "results", "migrate", "--to",
                            "s3", "--batch-size", "200"], env=env, cwd=ROOT, capture_output=True,
                           text=True, check=False)
    assert moved.returncode == 0, moved.stderr
    after = _vacuum_full(db)
    per = 1000 / jobs
    return {"before_per_1000_jobs_bytes": before * per, "after_per_1000_jobs_bytes": after * per,
            "ratio": before / after}


def bench_downloads(env: dict[str, str], n: int, tmp: Path) -> dict[str, dict[str, float]]:
    from tests.support.stored_jobs import insert_succeeded_jobs

    db = env["ORCH_DATABASE_URL"]
    with psycopg.connect(db.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("TRUNCATE jobs, job_inputs, attempts, results CASCADE")
    originals = insert_succeeded_jobs(db, 2 * n, size=200 * 1024)
    ids = list(originals)
    db_ids, s3_ids = ids[:n], ids[n:]
    with psycopg.connect(db.replace("+psycopg", ""), autocommit=True) as conn:
        tokens = dict(conn.execute("SELECT id, result_token FROM jobs").fetchall())
    migrated = subprocess.run([sys.executable, "-m", "orchestrator", "results", "migrate", "--to",
                               "s3"], env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    assert migrated.returncode == 0, migrated.stderr
    # Half back to the database store: the same API serves both kinds of rows.
    with psycopg.connect(db.replace("+psycopg", ""), autocommit=True) as conn:
        for job_id in db_ids:
            conn.execute("UPDATE results SET store = 'database', location = NULL, data = %s "
                         "WHERE job_id = %s", (originals[job_id], job_id))
    (port,) = free_ports(1)
    log = open(tmp / "api.log", "w")  # noqa: SIM115
    api = subprocess.Popen([sys.executable, "-m", "orchestrator", "api", "--host", "127.0.0.1",
                            "--port", str(port)], env=env, cwd=ROOT, stdout=log,
                           stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        out: dict[str, dict[str, float]] = {}
        with httpx.Client(base_url=base, timeout=30) as client, httpx.Client(timeout=30) as store:
            def via_api(job_id: uuid.UUID) -> bytes:
                return client.get(f"/v1/jobs/{job_id}/result", params={"token": tokens[job_id]}).content

            def via_redirect(job_id: uuid.UUID) -> bytes:
                reply = client.get(f"/v1/jobs/{job_id}/result", params={"token": tokens[job_id]})
                assert reply.status_code == 307, reply.text
                return store.get(reply.headers["location"]).content

            presigned = {}
            for job_id in s3_ids:
                reply = client.get(f"/v1/jobs/{job_id}/result", params={"token": tokens[job_id]})
                presigned[job_id] = reply.headers["location"]

            def direct(job_id: uuid.UUID) -> bytes:
                return store.get(presigned[job_id]).content

            def redirect_only(job_id: uuid.UUID) -> bytes:
                client.get(f"/v1/jobs/{job_id}/result", params={"token": tokens[job_id]})
                return originals[job_id]  # the API's part alone: no bytes through it

            for name, fn, batch in (("api_from_postgres", via_api, db_ids),
                                    ("api_redirect_then_store", via_redirect, s3_ids),
                                    ("api_redirect_only", redirect_only, s3_ids),
                                    ("presigned_direct", direct, s3_ids)):
                for job_id in batch[:10]:  # warm-up
                    fn(job_id)
                cpu = _cpu_seconds(api.pid)
                times = []
                for job_id in batch:
                    started = time.perf_counter()
                    body = fn(job_id)
                    times.append(time.perf_counter() - started)
                    assert body == originals[job_id]
                cpu_used = _cpu_seconds(api.pid) - cpu
                out[name] = {"median_ms": 1000 * statistics.median(times),
                             "p95_ms": 1000 * _pct(times, 0.95),
                             "api_cpu_ms_per_download": 1000 * cpu_used / len(batch)}
        return out
    finally:
        api.terminate()
        api.wait(timeout=30)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--downloads", type=int, default=200)
    args = parser.parse_args()

    dbname = f"orch_bench_store_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    database_url = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    database_url += f"/{dbname}"
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmpdir:
        tmp = Path(tmpdir)
        weed = SeaweedFS(tmp / "weed", tmp / "weed.log")
        weed.start()
        try:
            weed.client().create_bucket(Bucket="bench")
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("ORCH_")},
                   "ORCH_DATABASE_URL": database_url, "ORCH_BROKER_URL": REDIS_URL,
                   "ORCH_OBJECT_STORE_URL": "s3://bench/orch",
                   "ORCH_S3_ENDPOINT_URL": weed.endpoint,
                   "ORCH_API_REQUESTS_PER_SECOND": "100000",
                   "AWS_ACCESS_KEY_ID": weed.access_key,
                   "AWS_SECRET_ACCESS_KEY": weed.secret_key,
                   "AWS_EC2_METADATA_DISABLED": "true"}
            os.environ.update(env)
            from orchestrator.db.migrate import upgrade

            upgrade(database_url)
            puts = bench_puts(env, args.puts)
            print(f"writes: through the store {puts['store_per_s']:.0f}/s, bare boto3 "
                  f"{puts['bare_per_s']:.0f}/s, ratio {puts['ratio']:.2f}x (goal >= 0.8x)")
            size = bench_size(env, args.jobs)
            print(f"postgres per 1,000 jobs: {size['before_per_1000_jobs_bytes'] / 2**20:.1f} MiB "
                  f"in the database, {size['after_per_1000_jobs_bytes'] / 2**20:.2f} MiB with the "
                  f"object store (after VACUUM FULL): {size['ratio']:.0f}x smaller (goal >= 20x)")
            downloads = bench_downloads(env, args.downloads, tmp)
            for name, figures in downloads.items():
                print(f"download {name}: median {figures['median_ms']:.1f} ms, p95 "
                      f"{figures['p95_ms']:.1f} ms, API CPU {figures['api_cpu_ms_per_download']:.2f} "
                      f"ms per download")
        finally:
            weed.stop()
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


if __name__ == "__main__":
    main()
