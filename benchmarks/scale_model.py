"""The scale model's measurements: throughput and cost per job on each path, and this machine's ceilings.

    python benchmarks/scale_model.py              # the figures in docs/explanation/scale-model.md
    python benchmarks/scale_model.py --quick      # ~1 minute: checks that it runs
    python benchmarks/scale_model.py --markdown benchmarks/results/scale_model.json   # tables again

Its own Postgres database (dropped at the end), Redis DB 11 (flushed), one fal queue emulator.
Every side starts its processes fresh, runs, stops them, and reads what it cost:

- ``local-cN``: ``orchestrator worker --queues fake-inline --concurrency N`` (N = 1, 2, 4). The
  fake inline backend (``ORCH_FAKE_BACKENDS=1``) thresholds a small image instead of running the
  model, so what is measured is the orchestration around inference (rows, messages, leases,
  result storage); inference itself is the local benchmark's figure (``--inference-img-s``).
- ``fal-cN``: ``orchestrator worker --queues fal --concurrency N`` against the emulator
  (``--fal-latency`` s IN_PROGRESS). The in-flight and submit-rate limits are raised (5000) so
  that the figure is the workers' capacity, not the configured limit; the scale model applies
  the default limits as ceilings of their own.
- ``producer``: the same submits with no worker running: what submitting costs by itself, to
  subtract from the worker paths when the API does the submitting.
- ``api-wN``: ``orchestrator api --workers N`` (N = 1, 2), ``--api-clients`` closed-loop HTTP
  clients (in their own process) posting distinct 1×1 PNGs to ``/fal-ai/imageutils/rembg`` for
  ``--api-seconds``; no worker (a 200 means the row is committed and the message is in Redis).

Worker paths submit ``-n`` jobs at once through the producer (in its own process) and are timed
from the first submit to the last stored result, the worker already warm. Cost per job:
CPU-ms of each component (utime+stime from /proc, children that exited included: the worker or
API process tree, every ``postgres`` process, redis-server from ``INFO cpu``, the producer or
load generator, the emulator); Postgres writes from ``pg_stat_database`` of this database
(commits, rows inserted/updated/deleted, read after the processes stopped so their counters are
flushed) and WAL bytes (``pg_current_wal_lsn()``, server-wide); Redis commands (``INFO
commandstats``, server-wide). Server-wide counters include whatever else runs on the machine.

Ceilings, measured in the same run: ``pgbench`` (single-row INSERT, one commit each, 8 clients)
and ``redis-benchmark`` (SET, LPUSH, 50 clients, no pipelining) on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import redis
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.api_submit import request_bytes  # noqa: E402
from benchmarks.harness import Run, fmt  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")
FAL_KEY = "bench-key:secret"
# Tables emptied between sides (api_keys and alembic_version stay).
KEEP_TABLES = ("api_keys", "alembic_version")
# The model's load assumptions: `--markdown RECORD --peak-factor 3` re-derives with another.
ASSUMPTIONS = ("jobs_per_day", "peak_factor", "fal_share", "attempts_per_job", "inference_img_s",
               "fal_request_s", "fal_concurrency", "pg_cpu")
BLOB_KB = 512
# A live backend reports its counters to pg_stat_database at most once a second (PostgreSQL 15):
# wait that long after start-up or warm-up so that they are not counted in the side.
STATS_FLUSH_S = 1.5  # the bytes ceiling's row: about a sample photo's input + result


# ---- counters ------------------------------------------------------------------------------------

def _stat(pid: int) -> tuple[int, list[str]]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return pid, text.rsplit(")", 1)[1].split()


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process, its reaped children and its live descendants."""
    try:
        _, f = _stat(pid)
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = sum(int(x) for x in f[11:15]) / CLK  # utime stime cutime cstime
    return own + sum(tree_cpu_s(int(k)) for k in kids)


def postmaster_pid() -> int:
    """The postgres process whose parent is not a postgres process."""
    names = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                names[int(entry.name)] = (entry / "comm").read_text().strip()
            except OSError:
                continue
    for pid, name in names.items():
        if name == "postgres":
            try:
                ppid = int(_stat(pid)[1][1])
            except OSError:
                continue
            if names.get(ppid) != "postgres":
                return pid
    raise RuntimeError("no postgres process visible in /proc")


class BackendCpu(threading.Thread):
    """CPU of this database's own Postgres backends, sampled while a side runs (a backend's CPU
    is gone from /proc once it exits, so each is read every 0.2 s and its last reading kept).
    Leaves out the server's shared processes (WAL writer, checkpointer, autovacuum), which the
    server-wide figure includes, and whatever other databases do."""

    def __init__(self, postmaster: int, dbname: str) -> None:
        super().__init__(daemon=True)
        self.postmaster, self.tag = postmaster, f" {dbname} "
        self.base: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.stopping = threading.Event()
        self._sample(initial=True)

    def _sample(self, initial: bool = False) -> None:
        try:
            kids = Path(f"/proc/{self.postmaster}/task/{self.postmaster}/children").read_text().split()
        except OSError:
            return
        for kid in map(int, kids):
            try:
                if self.tag not in Path(f"/proc/{kid}/cmdline").read_text():
                    continue
                cpu = sum(int(x) for x in _stat(kid)[1][11:13]) / CLK
            except OSError:
                continue
            self.base.setdefault(kid, cpu if initial else 0.0)
            self.last[kid] = cpu

    def run(self) -> None:
        while not self.stopping.wait(0.2):
            self._sample()

    def stop(self) -> float:
        self._sample()
        self.stopping.set()
        self.join()
        return sum(self.last[pid] - self.base[pid] for pid in self.last)


class Meter:
    """Snapshots of the counters every side reads before and after."""

    def __init__(self, db_admin: str, dbname: str, r: redis.Redis) -> None:
        self.db_admin, self.dbname, self.r = db_admin, dbname, r
        self.postmaster = postmaster_pid()

    def snapshot(self) -> dict[str, float]:
        with psycopg.connect(self.db_admin, autocommit=True) as conn:
            row = conn.execute(
                "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, "
                "pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') FROM pg_stat_database WHERE datname = %s",
                (self.dbname,)).fetchone()
            tables = conn.execute("SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables").fetchall()
        assert row is not None
        cpu = self.r.info("cpu")
        cmds = self.r.info("commandstats")
        return {
            "pg_commits": row[0], "pg_rollbacks": row[1], "pg_inserted": row[2],
            "pg_updated": row[3], "pg_deleted": row[4], "wal_bytes": float(row[5]),
            "pg_cpu_s": tree_cpu_s(self.postmaster),
            "redis_cpu_s": sum(float(cpu[k]) for k in ("used_cpu_sys", "used_cpu_user",
                                                         "used_cpu_sys_children", "used_cpu_user_children")),
            "redis_cmds": sum(int(v["calls"]) for v in cmds.values()),
            **{f"redis_cmd_{k.removeprefix('cmdstat_')}": int(v["calls"]) for k, v in cmds.items()},
            **{f"pg_table_{name}": int(n) for name, n in tables},
        }

    @staticmethod
    def per_job(before: dict[str, float], after: dict[str, float], jobs: int,
                reads: int = 0) -> dict[str, float]:
        """``reads``: commits of the benchmark's own read-only polls, left out."""
        d = {k: after[k] - before.get(k, 0) for k in after}
        d["pg_commits"] -= reads
        n = max(1, jobs)
        out = {
            "pg_cpu_ms_per_job": d["pg_cpu_s"] * 1000 / n,
            "redis_cpu_ms_per_job": d["redis_cpu_s"] * 1000 / n,
            "pg_commits_per_job": d["pg_commits"] / n,
            "pg_rows_written_per_job": (d["pg_inserted"] + d["pg_updated"] + d["pg_deleted"]) / n,
            "pg_inserted_per_job": d["pg_inserted"] / n,
            "pg_updated_per_job": d["pg_updated"] / n,
            "pg_deleted_per_job": d["pg_deleted"] / n,
            "wal_kb_per_job": d["wal_bytes"] / 1024 / n,
            "redis_cmds_per_job": (d["redis_cmds"] - 2) / n,  # INFO cpu + INFO commandstats
        }
        top = sorted(((k.removeprefix("redis_cmd_"), v) for k, v in d.items()
                      if k.startswith("redis_cmd_") and v > 0), key=lambda kv: -kv[1])[:8]
        out["redis_top_commands_per_job"] = {k: round(v / n, 2) for k, v in top}  # type: ignore[assignment]
        # TRUNCATE between sides does not reset pg_stat_user_tables: deltas only
        writes = {k.removeprefix("pg_table_"): v / n for k, v in d.items() if k.startswith("pg_table_") and v > 0}
        out["pg_rows_written_per_table_per_job"] = dict(sorted(writes.items(), key=lambda kv: -kv[1]))  # type: ignore[assignment]
        return out


# ---- inputs and subprocess roles -----------------------------------------------------------------

def images(n: int, tag: str) -> list[bytes]:
    """Distinct small PNGs (deduplication folds nothing together)."""
    out = []
    for i in range(n):
        img = Image.new("RGB", (64, 48), (i % 251, (i // 251) % 251, 200))
        img.putpixel((i % 64, 0), (255, 255, 255))
        buf = io.BytesIO()
        img.save(buf, "PNG", pnginfo=_png_text(tag))
        out.append(buf.getvalue())
    return out


def _png_text(tag: str) -> Any:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("run", tag)
    return info


def role_submit(cfg: dict[str, Any]) -> dict[str, Any]:
    """In its own process: submit n jobs through the producer, wait for them (or not)."""
    from orchestrator.jobs.producer import Source, submit, wait_for
    from orchestrator.jobs.states import JobState
    from orchestrator.settings import get_settings

    settings = get_settings()
    blobs = [Path(p).read_bytes() for p in cfg["photos"]] if cfg.get("photos") else images(cfg["n"], cfg["tag"])
    sources = [Source(name=f"img-{i}", data=blobs[i % len(blobs)]) for i in range(cfg["n"])]
    cpu, started = time.process_time(), time.perf_counter()
    submitted = submit(sources, settings=settings, backend=cfg["backend"])
    submit_s = time.perf_counter() - started
    done, polls = 0, [0]
    if cfg["wait"]:
        def count(_: object) -> None:
            polls[0] += 1

        states = wait_for([s.job_id for s in submitted], settings=settings, poll_seconds=0.2,
                          timeout=cfg["timeout"], on_progress=count)
        done = sum(1 for s in states.values() if s is JobState.SUCCEEDED)
    seconds = time.perf_counter() - started
    # each poll is one read-only transaction: the scale model leaves the waiting out
    return {"jobs": len(submitted), "done": done, "seconds": seconds, "submit_s": submit_s, "polls": polls[0],
            "client_cpu_s": time.process_time() - cpu}


async def _closed_loop(cfg: dict[str, Any]) -> dict[str, Any]:
    ok, errors, lat = 0, 0, []
    t0 = time.perf_counter()

    async def client(c: int) -> None:
        nonlocal ok, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", cfg["port"])
        n = 0
        while time.perf_counter() < t0 + cfg["seconds"]:
            start = time.perf_counter()
            writer.write(request_bytes(cfg, f"{cfg['tag']}-{c}-{n}"))
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            n += 1
            if head[9:12] == b"200":
                ok += 1
                lat.append(time.perf_counter() - start)
            else:
                errors += 1
        writer.close()

    await asyncio.gather(*(client(c) for c in range(cfg["clients"])))
    seconds = time.perf_counter() - t0
    lat.sort()
    return {"jobs": ok, "errors": errors, "seconds": seconds,
            "p50_ms": lat[len(lat) // 2] * 1000 if lat else None,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else None}


def role_load(cfg: dict[str, Any]) -> dict[str, Any]:
    cpu = time.process_time()
    out = asyncio.run(_closed_loop(cfg))
    return {**out, "client_cpu_s": time.process_time() - cpu}


def run_role(role: str, cfg: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "_" + role, json.dumps(cfg)], env=env, cwd=ROOT,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{role} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# ---- the bench -----------------------------------------------------------------------------------

class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = tempfile.TemporaryDirectory(prefix="scale-model-")
        self.dbname = f"orch_scale_{uuid.uuid4().hex[:8]}"
        self.db_url = args.pg.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{self.dbname}"
        self.r = redis.Redis.from_url(args.redis)
        self.env = {**os.environ, "ORCH_DATABASE_URL": self.db_url, "ORCH_BROKER_URL": args.redis,
                    "ORCH_FAKE_BACKENDS": "1", "FAL_KEY": FAL_KEY,
                    "ORCH_API_REQUESTS_PER_SECOND": "100000",
                    "ORCH_API_TENANT_REQUESTS_PER_SECOND": "100000",
                    "ORCH_TENANT_MAX_JOBS_IN_FLIGHT": "0",
                    "ORCH_FAL_MAX_IN_FLIGHT": "5000", "ORCH_FAL_MAX_SUBMITS_PER_SECOND": "5000"}
        self.env.pop("ORCH_CONFIG", None)
        self.emulator: subprocess.Popen[str] | None = None
        self.redis_server: subprocess.Popen[bytes] | None = None
        self.key = ""
        self.rounds_seen = 0
        self.owns_redis_db = False  # never flush a DB a test run has claimed

    def __enter__(self) -> Bench:
        try:
            return self._setup()
        except BaseException:
            self.__exit__()
            raise

    def _setup(self) -> Bench:
        if self.args.private_redis:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            # the machine's Redis keeps nothing on disk either
            self.redis_server = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL, start_new_session=True)
            self.args.redis = f"redis://127.0.0.1:{port}/0"
            self.env["ORCH_BROKER_URL"] = self.args.redis
            self.r = redis.Redis.from_url(self.args.redis)
            for _ in range(100):
                try:
                    self.r.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
        if self.r.exists("orchestrator-test-run"):  # tests/conftest.py claims DBs with this key
            sys.exit(f"{self.args.redis} is claimed by a test run: pass another --redis")
        self.owns_redis_db = True
        with psycopg.connect(self.args.pg, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')
        self.r.flushdb()
        orch = [sys.executable, "-m", "orchestrator"]
        subprocess.run([*orch, "migrate"], env=self.env, cwd=ROOT, check=True, capture_output=True)
        self.key = subprocess.run([*orch, "keys", "create", "scale"], env=self.env, cwd=ROOT, check=True,
                                  capture_output=True, text=True).stdout.strip()
        self.emulator = subprocess.Popen(
            [sys.executable, "-m", "tests.fal_emulator", "--port", "0", "--latency", str(self.args.fal_latency),
             "--ca-dir", self.tmp.name], cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self.emulator.stdout is not None
        info = json.loads(self.emulator.stdout.readline())
        self.fal_host = info["host"]
        self.env.update({"FAL_QUEUE_RUN_HOST": info["host"], "SSL_CERT_FILE": info["ca_file"]})
        self.meter = Meter(self.args.pg.rsplit("/", 1)[0] + f"/{self.dbname}", self.dbname, self.r)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.emulator is not None and self.emulator.poll() is None:
            os.killpg(self.emulator.pid, signal.SIGTERM)
            self.emulator.wait(timeout=30)
        if self.owns_redis_db:
            try:
                self.r.flushdb()
            except redis.ConnectionError:
                pass
        if self.redis_server is not None:
            self.redis_server.terminate()
            self.redis_server.wait(timeout=30)
        with psycopg.connect(self.args.pg, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
        self.tmp.cleanup()

    def reset(self) -> None:
        """Empty tables (but the key) and the Redis DB, so every side starts from the same state."""
        with psycopg.connect(self.db_url.replace("+psycopg", ""), autocommit=True) as conn:
            tables = [t for (t,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
                if t not in KEEP_TABLES]
            conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")
        self.r.flushdb()

    def _settle(self) -> None:
        time.sleep(0.3)  # exited backends' statistics reach pg_stat_database

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def _start(self, argv: list[str], log: Path, ready: Callable[[], bool],
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "orchestrator", *argv], env=env or self.env, cwd=ROOT,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while not ready():
            if time.monotonic() > deadline or proc.poll() is not None:
                self._stop(proc) if proc.poll() is None else None
                raise RuntimeError(f"{argv[0]} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        return proc

    def worker_side(self, path: str, concurrency: int, photos: list[Path] | None = None) -> dict[str, Any]:
        """``photos``: the sample photos over and over (deduplication off), for the bytes a
        real-sized job writes; otherwise distinct small images."""
        queue = {"local": "fake-inline", "fal": "fal"}[path]
        n = self.args.n_photos if photos else self.args.n_fal if path == "fal" else self.args.n_local
        self.reset()
        env = {**self.env, "ORCH_DEDUP_WINDOW_SECONDS": "0"} if photos else self.env
        log = Path(self.tmp.name) / f"{path}-{concurrency}.log"
        # Every pool process logs its backend warm (inline) or its poller running (remote).
        marker = "poller running" if path == "fal" else "backend ready"
        worker = self._start(["worker", "--queues", queue, "--concurrency", str(concurrency)], log,
                             lambda: log.read_text().count(marker) >= concurrency, env)
        time.sleep(STATS_FLUSH_S)
        try:
            before, w0 = self.meter.snapshot(), tree_cpu_s(worker.pid)
            backends = BackendCpu(self.meter.postmaster, self.dbname)
            backends.start()
            emu0 = tree_cpu_s(self.emulator.pid) if self.emulator else 0.0
            self.rounds_seen += 1
            res = run_role("submit", {"n": n, "backend": queue, "wait": True, "timeout": 600,
                                      "photos": [str(p) for p in photos or []],
                                      "tag": f"{path}-{concurrency}-{self.rounds_seen}"}, env)
            worker_cpu = tree_cpu_s(worker.pid) - w0
            backends_cpu = backends.stop()
            emu_cpu = (tree_cpu_s(self.emulator.pid) if self.emulator else 0.0) - emu0
        finally:
            self._stop(worker)
        self._settle()
        after = self.meter.snapshot()
        if res["done"] != n:
            raise RuntimeError(f"{path} c{concurrency}: {res['done']} of {n} jobs succeeded; log {log}")
        with psycopg.connect(self.db_url.replace("+psycopg", "")) as conn:
            row = conn.execute("SELECT (SELECT coalesce(sum(size_bytes), 0) FROM job_inputs)::float8, "
                               "(SELECT coalesce(sum(size_bytes), 0) FROM results)::float8").fetchone()
        assert row is not None
        return {"input_kb_per_job": row[0] / 1024 / n, "result_kb_per_job": row[1] / 1024 / n,
                "pg_db_cpu_ms_per_job": backends_cpu * 1000 / n,"jobs": n, "seconds": res["seconds"], "jobs_per_s": n / res["seconds"],
                "worker_cpu_ms_per_job": worker_cpu * 1000 / n,
                "producer_cpu_ms_per_job": res["client_cpu_s"] * 1000 / n,
                **({"emulator_cpu_ms_per_job": emu_cpu * 1000 / n} if path == "fal" else {}),
                **Meter.per_job(before, after, n, reads=res["polls"])}

    def producer_side(self) -> dict[str, Any]:
        """Submitting alone (no worker): its share of the worker paths' cost."""
        n = self.args.n_local
        self.reset()
        before = self.meter.snapshot()
        backends = BackendCpu(self.meter.postmaster, self.dbname)
        backends.start()
        self.rounds_seen += 1
        res = run_role("submit", {"n": n, "backend": "fake-inline", "wait": False, "timeout": 0,
                                  "tag": f"producer-{self.rounds_seen}"}, self.env)
        backends_cpu = backends.stop()
        self._settle()
        after = self.meter.snapshot()
        return {"jobs": n, "seconds": res["seconds"], "jobs_per_s": n / res["seconds"],
                "producer_cpu_ms_per_job": res["client_cpu_s"] * 1000 / n,
                "pg_db_cpu_ms_per_job": backends_cpu * 1000 / n, **Meter.per_job(before, after, n)}

    def api_side(self, workers: int) -> dict[str, Any]:
        self.reset()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]

        def healthy() -> bool:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
                return True
            except OSError:
                return False

        log = Path(self.tmp.name) / f"api-{workers}.log"
        api = self._start(["api", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
                          log, healthy)
        try:
            self.rounds_seen += 1
            cfg = {"host": "127.0.0.1", "port": port, "key": self.key, "clients": self.args.api_clients,
                   "seconds": self.args.api_seconds, "tag": f"api-{workers}-{self.rounds_seen}"}
            run_role("load", {**cfg, "seconds": 1.0, "tag": cfg["tag"] + "-warm"}, self.env)  # every worker warm
            time.sleep(STATS_FLUSH_S)
            before, a0 = self.meter.snapshot(), tree_cpu_s(api.pid)
            backends = BackendCpu(self.meter.postmaster, self.dbname)
            backends.start()
            res = run_role("load", cfg, self.env)
            api_cpu = tree_cpu_s(api.pid) - a0
            backends_cpu = backends.stop()
        finally:
            self._stop(api)
        self._settle()
        after = self.meter.snapshot()
        n = res["jobs"]
        with psycopg.connect(self.db_url.replace("+psycopg", "")) as conn:
            row = conn.execute("SELECT count(*) FROM jobs").fetchone()
        return {"jobs": n, "errors": res["errors"], "seconds": res["seconds"],
                "jobs_per_s": n / res["seconds"], "p50_ms": res["p50_ms"], "p99_ms": res["p99_ms"],
                "api_cpu_ms_per_job": api_cpu * 1000 / max(1, n),
                "pg_db_cpu_ms_per_job": backends_cpu * 1000 / max(1, n),
                "load_cpu_ms_per_job": res["client_cpu_s"] * 1000 / max(1, n),
                "rows_match": bool(row and row[0] >= n), **Meter.per_job(before, after, n)}

    def ceilings(self) -> dict[str, Any]:
        """What this machine's Postgres and Redis do at most, on the simplest writes."""
        out: dict[str, Any] = {}
        db = f"{self.dbname}_pgbench"
        with psycopg.connect(self.args.pg, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db}"')
        try:
            base = self.args.pg.rsplit("/", 1)[0]
            with psycopg.connect(f"{base}/{db}", autocommit=True) as conn:
                conn.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v text, at timestamptz DEFAULT now())")
                # incompressible bytes, the size of a real job's input + result (TOAST copies them)
                conn.execute("CREATE TABLE blob (v bytea)")
                conn.execute("INSERT INTO blob VALUES (%s)", (os.urandom(BLOB_KB * 1024),))
                conn.execute("CREATE TABLE b (id bigserial PRIMARY KEY, v bytea)")
            m = re.match(r"postgresql://(?P<user>[^@]+)@(?P<host>[^:/]+):(?P<port>\d+)", base)
            assert m, base

            def pgbench(sql: str) -> float | None:
                script = Path(self.tmp.name) / "pgbench.sql"
                script.write_text(sql + "\n")
                text = subprocess.run(
                    ["pgbench", "-h", m["host"], "-p", m["port"], "-U", m["user"], "-n", "-f", str(script),
                     "-c", "8", "-j", "2", "-T", str(max(1, round(self.args.ceiling_seconds))), db],
                    capture_output=True, text=True, check=True).stdout
                tps = re.search(r"tps = ([\d.]+)", text)
                return float(tps.group(1)) if tps else None

            out["pg_insert_commits_per_s"] = pgbench("INSERT INTO t (v) VALUES ('x');")
            blobs = pgbench("INSERT INTO b (v) SELECT v FROM blob;")
            out["pg_blob_mb_per_s"] = blobs * BLOB_KB / 1024 if blobs else None
        finally:
            with psycopg.connect(self.args.pg, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        rm = re.match(r"redis://(?P<host>[^:/]+):(?P<port>\d+)/(?P<db>\d+)", self.args.redis)
        assert rm, self.args.redis
        n = str(int(self.args.ceiling_seconds * 10000))
        text = subprocess.run(["redis-benchmark", "-h", rm["host"], "-p", rm["port"], "--dbnum", rm["db"],
                               "-q", "-t", "set,lpush", "-n", n, "-c", "50"],
                              capture_output=True, text=True, check=True).stdout
        for cmd in ("SET", "LPUSH"):
            hit = re.search(rf"{cmd}: ([\d.]+) requests per second", text.replace("\r", "\n"))
            out[f"redis_{cmd.lower()}_per_s"] = float(hit.group(1)) if hit else None
        self.r.flushdb()
        return out


# ---- the model: measured per-job costs × load -------------------------------------------------------

def med(run_summary: dict[str, Any], side: str, key: str) -> float:
    s = run_summary.get(side, {}).get(key)
    return float(s["median"]) if s and s.get("median") is not None else 0.0


def project(rec: dict[str, Any]) -> dict[str, Any]:
    """Today's load, 10× and 100×: what each component needs, from the medians of this run."""
    p, s = rec["params"], rec["summary"]
    ceil = rec.get("ceilings", {})
    mean = p["jobs_per_day"] / 86400
    peak = mean * p["peak_factor"]
    local_share, fal_share = 1 - p["fal_share"], p["fal_share"]
    api = "api-w1"
    loc = "local-c2" if "local-c2" in s else next(k for k in s if k.startswith("local-"))
    fal = "fal-c2" if "fal-c2" in s else next(k for k in s if k.startswith("fal-"))

    def path_cost(key: str) -> float:
        """Per job submitted through the API: the API's submit, then the worker path minus its
        producer's submit (the API did it)."""
        worker_part = (local_share * (med(s, loc, key) - med(s, "producer", key))
                       + fal_share * (med(s, fal, key) - med(s, "producer", key)))
        return float(med(s, api, key) + max(0.0, worker_part))

    per_job = {
        "api_cpu_ms": med(s, api, "api_cpu_ms_per_job"),
        "worker_cpu_ms": local_share * med(s, loc, "worker_cpu_ms_per_job")
        + fal_share * med(s, fal, "worker_cpu_ms_per_job"),
        "pg_cpu_ms": path_cost("pg_db_cpu_ms_per_job" if p.get("pg_cpu") == "own" else "pg_cpu_ms_per_job"),
        "redis_cpu_ms": path_cost("redis_cpu_ms_per_job"),
        "pg_commits": path_cost("pg_commits_per_job"),
        "pg_rows": path_cost("pg_rows_written_per_job"),
        "wal_kb": path_cost("wal_kb_per_job"),
        "redis_cmds": path_cost("redis_cmds_per_job"),
    }
    photos = "local-photos-c2"
    if photos in s:  # the bytes of real-sized inputs and results, on top of the small images' rows
        per_job["wal_kb_real"] = per_job["wal_kb"] + med(s, photos, "wal_kb_per_job") - med(s, loc, "wal_kb_per_job")
        per_job["result_kb_real"] = med(s, photos, "result_kb_per_job")
        per_job["input_kb_real"] = med(s, photos, "input_kb_per_job")
    infer_core_s = 2.0 / p["inference_img_s"]  # the local benchmark: img/s on this 2-core machine
    api_rate = med(s, api, "jobs_per_s")
    rows = []
    for factor in (1, 10, 100):
        rate = peak * factor
        fal_rate, local_rate = rate * fal_share, rate * local_share
        rows.append({
            "factor": factor, "jobs_per_s": rate, "jobs_per_day": p["jobs_per_day"] * factor,
            "api_cores": rate * per_job["api_cpu_ms"] / 1000,
            "api_processes": rate / api_rate if api_rate else None,
            "worker_cores": rate * per_job["worker_cpu_ms"] / 1000,
            "inference_cores": local_rate * infer_core_s,
            "pg_cores": rate * per_job["pg_cpu_ms"] / 1000,
            "pg_commits_per_s": rate * per_job["pg_commits"],
            "pg_commit_share": rate * per_job["pg_commits"] / ceil["pg_insert_commits_per_s"]
            if ceil.get("pg_insert_commits_per_s") else None,
            "wal_mb_per_s": rate * per_job["wal_kb"] / 1024,
            "wal_mb_per_s_real": rate * per_job["wal_kb_real"] / 1024 if "wal_kb_real" in per_job else None,
            "result_gb_per_day": p["jobs_per_day"] * factor * per_job["result_kb_real"] / 2**20
            if "result_kb_real" in per_job else None,
            "redis_cores": rate * per_job["redis_cpu_ms"] / 1000,
            "redis_ops_per_s": rate * per_job["redis_cmds"],
            "redis_share": rate * per_job["redis_cmds"] / ceil["redis_lpush_per_s"]
            if ceil.get("redis_lpush_per_s") else None,
            "fal_submits_per_s": fal_rate,
            "fal_in_flight": fal_rate * p["fal_request_s"],
            "attempt_rows_per_90_days": p["jobs_per_day"] * factor * 90 * p["attempts_per_job"],
        })
    return {"today": {"mean_jobs_per_s": mean, "peak_jobs_per_s": peak}, "per_job": per_job,
            "inference_core_s_per_image": infer_core_s, "rows": rows,
            "saturation": saturation(rows, ceil, api_rate, p)}


def saturation(rows: list[dict[str, Any]], ceil: dict[str, Any], api_rate: float,
               p: dict[str, Any]) -> list[dict[str, Any]]:
    """Each resource's need at 1×, 10×, 100× as a share of what one machine like this one (2
    cores), one Redis, one Postgres or the configured fal limits give; most loaded first."""
    def share(need: str, capacity: float | None) -> list[float | None]:
        return [r[need] / capacity if capacity and r.get(need) is not None else None for r in rows]

    host = float(p.get("host_cores", 2))
    out = [
        {"resource": "local inference (cores of a 2-core host)", "capacity": host, "add": "more local worker hosts (or more of the mix to fal)",
         "shares": share("inference_cores", host)},
        {"resource": "API (one process's measured submits/s)", "capacity": api_rate, "add": "more API processes, then API hosts behind a load balancer",
         "shares": [r["jobs_per_s"] / api_rate if api_rate else None for r in rows]},
        {"resource": "Postgres commits (pgbench single-row insert ceiling)", "add": "a larger Postgres host; fewer commits per fal job",
         "capacity": ceil.get("pg_insert_commits_per_s"), "shares": share("pg_commits_per_s", ceil.get("pg_insert_commits_per_s"))},
        {"resource": "Postgres bytes (WAL of real-sized images vs pgbench 512 KiB-row ceiling)", "add": "image bytes in an object store (ORCH_OBJECT_STORE_URL)",
         "capacity": ceil.get("pg_blob_mb_per_s"), "shares": share("wal_mb_per_s_real", ceil.get("pg_blob_mb_per_s"))},
        {"resource": "Postgres CPU (cores of a 2-core host)", "capacity": host, "add": "a larger Postgres host; reports on a read replica", "shares": share("pg_cores", host)},
        {"resource": "Redis commands (redis-benchmark LPUSH ceiling)", "capacity": ceil.get("redis_lpush_per_s"), "add": "a Redis per queue",
         "shares": share("redis_ops_per_s", ceil.get("redis_lpush_per_s"))},
        {"resource": "fal submits/s (ORCH_FAL_MAX_SUBMITS_PER_SECOND default)", "capacity": p.get("fal_max_submits", 20.0), "add": "raise ORCH_FAL_MAX_SUBMITS_PER_SECOND (as far as the rate limit of fal allows)",
         "shares": share("fal_submits_per_s", p.get("fal_max_submits", 20.0))},
        {"resource": "fal requests running (fal account concurrency, at most)", "capacity": p.get("fal_concurrency", 40), "add": "a higher concurrency from fal (40 is the most it grants by itself)",
         "shares": share("fal_in_flight", p.get("fal_concurrency", 40))},
        {"resource": "fal requests in flight (ORCH_FAL_MAX_IN_FLIGHT default)", "capacity": p.get("fal_max_in_flight", 200), "add": "raise ORCH_FAL_MAX_IN_FLIGHT",
         "shares": share("fal_in_flight", p.get("fal_max_in_flight", 200))},
    ]
    return sorted(out, key=lambda x: -(x["shares"][-1] or 0))


def markdown(rec: dict[str, Any]) -> str:
    s, p = rec["summary"], rec["params"]
    where = f"`{rec['command']}` at commit `{rec['commit']}`{' (dirty tree)' if rec.get('dirty') else ''}, " \
            f"{rec['started_utc']}, {rec['rounds']} rounds, load average before {rec['loadavg_before'][0]}"
    out = [f"Measured by {where}.", ""]
    if rec.get("rederived"):
        out[0] += " Derived figures re-computed with " + ", ".join(
            f"`--{k.replace('_', '-')} {v}`" for k, v in rec["rederived"].items()) + "."

    def f(side: str, key: str, d: int = 1) -> str:
        return fmt(s[side][key], d) if side in s and key in s[side] else "–"

    def sizes(side: str) -> str:
        if med(s, side, "result_kb_per_job") < 10:  # the small generated images: under 1 KiB
            return "(small)"
        return f"{f(side, 'input_kb_per_job', 0)} + {f(side, 'result_kb_per_job', 0)}"

    out += ["**Throughput and cost per job (measured; median (min–max) of the rounds)**", "",
            "| side | jobs/s | worker CPU ms/job | API CPU ms/job | Postgres CPU ms/job, all processes "
            "| Postgres CPU ms/job, own backends | Redis CPU ms/job | commits/job | rows written/job | WAL KiB/job | Redis cmds/job | input + result KiB/job |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for side in s:
        out.append(f"| {side} | {f(side, 'jobs_per_s')} | {f(side, 'worker_cpu_ms_per_job', 2)} | "
                   f"{f(side, 'api_cpu_ms_per_job', 2)} | {f(side, 'pg_cpu_ms_per_job', 2)} | {f(side, 'pg_db_cpu_ms_per_job', 2)} | "
                   f"{f(side, 'redis_cpu_ms_per_job', 2)} | {f(side, 'pg_commits_per_job', 2)} | "
                   f"{f(side, 'pg_rows_written_per_job', 2)} | {f(side, 'wal_kb_per_job', 2)} | "
                   f"{f(side, 'redis_cmds_per_job', 1)} | {sizes(side)} |")
    scaling = []
    for path in ("local", "fal"):
        base = f"{path}-c1"
        for c in (2, 4):
            side = f"{path}-c{c}"
            if base in s and side in s:
                ratio = rec.get("ratios", {}).get(f"{side}/{base}")
                scaling.append(f"{side} / {base}: {fmt(ratio, 2) if ratio else '–'}×")
    for side in ("api-w2",):
        ratio = rec.get("ratios", {}).get(f"{side}/api-w1")
        if ratio:
            scaling.append(f"api-w2 / api-w1: {fmt(ratio, 2)}×")
    if scaling:
        out += ["", "Throughput ratios, round by round: " + "; ".join(scaling) + "."]
    if "api-w1" in s:
        out += ["", f"API closed loop ({p['api_clients']} clients): p50 {f('api-w1', 'p50_ms')} ms, "
                f"p99 {f('api-w1', 'p99_ms')} ms with 1 process; p50 {f('api-w2', 'p50_ms')} ms, "
                f"p99 {f('api-w2', 'p99_ms')} ms with 2."]
    breakdown = []
    for side in ("local-c2", "fal-c2", "api-w1"):
        first = (rec.get("raw", {}).get(side) or [{}])[0]
        rows_by_table = first.get("pg_rows_written_per_table_per_job") or {}
        commands = first.get("redis_top_commands_per_job") or {}
        if rows_by_table or commands:
            breakdown.append(f"**{side}**: " + ", ".join(f"{t} {v:.2f}" for t, v in rows_by_table.items())
                             + "; Redis " + ", ".join(f"{k} {v}" for k, v in commands.items()))
    if breakdown:
        out += ["", "Rows written per job by table, and Redis commands per job (round 1): "
                + "; ".join(breakdown) + "."]
    c = rec.get("ceilings", {})
    if c:
        out += ["", f"**Ceilings on this machine (measured, same run)**: Postgres single-row INSERT + commit, "
                f"8 pgbench clients: {c.get('pg_insert_commits_per_s', 0):,.0f} commits/s; "
                f"redis-benchmark (50 clients, no pipelining): SET {c.get('redis_set_per_s', 0):,.0f}/s, "
                f"LPUSH {c.get('redis_lpush_per_s', 0):,.0f}/s; Postgres {BLOB_KB} KiB incompressible bytea rows, "
                f"8 clients: {c.get('pg_blob_mb_per_s') or 0:,.0f} MB/s."]
    m = project(rec)
    t = m["today"]
    out += ["", f"**Load (derived)**: today = {p['jobs_per_day']:,.0f} jobs/day (assumption, see the page) = "
            f"{t['mean_jobs_per_s']:.3f} jobs/s mean; peak = {p['peak_factor']:g}× the mean = "
            f"{t['peak_jobs_per_s']:.2f} jobs/s; {p['fal_share']:.0%} fal, the rest local; inference "
            f"{m['inference_core_s_per_image']:.2f} core-s per image (local benchmark: "
            f"{p['inference_img_s']} img/s on 2 cores); fal request {p['fal_request_s']:g} s.",
            "", "**Needs at peak (derived from the medians above; Postgres CPU from "
            + ("its own backends" if p.get("pg_cpu") == "own" else "all its processes") + ")**", "",
            "| load | jobs/s | API cores (processes) | worker cores (orchestration) | local inference cores "
            "| Postgres cores | commits/s (share of ceiling) | WAL MB/s (real-sized images) | results GB/day "
            "| Redis cores | Redis cmds/s (share) | fal submits/s | fal in flight |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in m["rows"]:
        def share(v: float | None) -> str:
            return f" ({v:.1%})" if v is not None else ""
        procs = f" ({r['api_processes']:.2f})" if r["api_processes"] is not None else ""
        real = f" ({r['wal_mb_per_s_real']:.2f})" if r.get("wal_mb_per_s_real") is not None else ""
        gb = f"{r['result_gb_per_day']:.1f}" if r.get("result_gb_per_day") is not None else "–"
        out.append(f"| {r['factor']}× | {r['jobs_per_s']:.2f} | {r['api_cores']:.3f}{procs} | "
                   f"{r['worker_cores']:.3f} | {r['inference_cores']:.1f} | {r['pg_cores']:.3f} | "
                   f"{r['pg_commits_per_s']:.1f}{share(r['pg_commit_share'])} | {r['wal_mb_per_s']:.3f}{real} | {gb} | "
                   f"{r['redis_cores']:.4f} | {r['redis_ops_per_s']:.0f}{share(r['redis_share'])} | "
                   f"{r['fal_submits_per_s']:.2f} | {r['fal_in_flight']:.1f} |")
    out += ["", "**What saturates first (derived): need as a share of one unit's capacity, most loaded at 100× first**",
            "", "| resource | capacity of one | 1× | 10× | 100× |", "| --- | --- | --- | --- | --- |"]
    for row in m["saturation"]:
        cells = [f"{v:.0%}" if v is not None else "–" for v in row["shares"]]
        cap = f"{row['capacity']:,.1f}" if row["capacity"] is not None else "–"
        out.append(f"| {row['resource']} | {cap} | " + " | ".join(cells) + " |")
    out += ["", "**Steps (derived): what is over half its capacity at each load, and what to add**", "",
            "| load | over 50 % of one unit | add | results kept in Postgres | attempt rows per 90 days |",
            "| --- | --- | --- | --- | --- |"]
    host = float(p.get("host_cores", 2))
    for i, r in enumerate(m["rows"]):
        busy = [x for x in m["saturation"] if (x["shares"][i] or 0) >= 0.5]
        what = "; ".join(f"{x['resource'].split(' (')[0]} {x['shares'][i]:.0%}" for x in busy) or "nothing"
        add = "; ".join(dict.fromkeys(
            f"local worker hosts: {math.ceil(r['inference_cores'] / host)} of {host:g} cores in all "
            "(or more of the mix to fal)" if x["resource"].startswith("local inference") else x["add"]
            for x in busy)) or "–"
        gb = f"{r['result_gb_per_day']:,.1f} GB/day" if r.get("result_gb_per_day") is not None else "–"
        out.append(f"| {r['factor']}× | {what} | {add} | {gb} | {r['attempt_rows_per_90_days'] / 1e6:,.1f} million |")
    pj = m["per_job"]
    out += ["", "Per job through the API (mix-weighted): " + ", ".join(
        f"{k.replace('_', ' ')} {v:.2f}" for k, v in pj.items()) + "."]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one small round: checks that it runs (~1 min)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n-local", type=int, default=400, help="jobs per local side")
    parser.add_argument("--n-fal", type=int, default=500, help="jobs per fal side")
    parser.add_argument("--n-photos", type=int, default=40, help="jobs of the local-photos side (0: none)")
    parser.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "images",
                        help="sample photos for the real-sized side")
    parser.add_argument("--concurrency", default="1,2,4", help="worker processes to measure")
    parser.add_argument("--api-workers", default="1,2", help="API processes to measure")
    parser.add_argument("--api-seconds", type=float, default=10.0)
    parser.add_argument("--api-clients", type=int, default=32)
    parser.add_argument("--fal-latency", type=float, default=1.0, help="emulator seconds IN_PROGRESS")
    parser.add_argument("--ceiling-seconds", type=float, default=10.0)
    parser.add_argument("--jobs-per-day", type=float, default=870_000 / 90,
                        help="today's load (the cost-report benchmark's data: ~870k jobs in 90 days)")
    parser.add_argument("--peak-factor", type=float, default=5.0, help="peak rate / mean rate (an assumption)")
    parser.add_argument("--fal-share", type=float, default=0.3, help="share of jobs on fal (cost-report data)")
    parser.add_argument("--attempts-per-job", type=float, default=1.15, help="cost-report data: 15 %% retried")
    parser.add_argument("--inference-img-s", type=float, default=1.18,
                        help="local inference, images/s on this 2-core machine (the local "
                        "benchmark's pipeline, 1 session x 2 threads, float32 copy, at 8393ace)")
    parser.add_argument("--fal-request-s", type=float, default=1.0, help="seconds a fal request is in flight")
    parser.add_argument("--fal-concurrency", type=int, default=40,
                        help="fal's concurrency limit per account (the most it grants; docs/fal-queue-protocol §9)")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--pg-cpu", choices=("all", "own"), default="all",
                        help="Postgres CPU in the model: every postgres process (WAL writer, checkpointer and "
                        "autovacuum included; other databases' work too), or this database's backends only")
    parser.add_argument("--private-redis", action="store_true",
                        help="start a redis-server of its own (no persistence, like the machine's) instead of "
                        "--redis: its command counts and CPU are then this benchmark's alone on a busy machine")
    parser.add_argument("--markdown", type=Path, metavar="RECORD", help="print the tables of a saved record")
    args = parser.parse_args()
    if args.markdown:
        # the measured figures of the record under other load assumptions, when given
        rec = json.loads(args.markdown.read_text())
        for key in ASSUMPTIONS:
            if getattr(args, key) != parser.get_default(key):
                rec["params"][key] = getattr(args, key)
                rec.setdefault("rederived", {})[key] = getattr(args, key)
        print(markdown(rec))
        return
    if args.quick:
        args.rounds, args.n_local, args.n_fal, args.api_seconds, args.ceiling_seconds = 1, 40, 60, 3.0, 2.0
        args.n_photos = 8  # one worker size per path: ~1 minute on a quiet machine
        args.concurrency, args.api_workers = "2", "1"
    model_params = {k: getattr(args, k) for k in ("n_local", "n_fal", "n_photos", "concurrency", "api_workers", "api_seconds",
                                                  "api_clients", "fal_latency", "jobs_per_day", "peak_factor",
                                                  "fal_share", "attempts_per_job", "inference_img_s",
                                                  "fal_request_s", "fal_concurrency", "private_redis", "pg_cpu")}
    from orchestrator.settings.models import FalSettings

    model_params["fal_max_in_flight"] = FalSettings.model_fields["max_in_flight"].default
    model_params["fal_max_submits"] = FalSettings.model_fields["max_submits_per_second"].default
    model_params["host_cores"] = os.cpu_count() or 2
    run = Run("scale_model" + ("_quick" if args.quick else ""), rounds=args.rounds, params=model_params)
    with Bench(args) as bench:
        sides: dict[str, Callable[[], dict[str, Any]]] = {"producer": bench.producer_side}
        for c in map(int, args.concurrency.split(",")):
            sides[f"local-c{c}"] = lambda c=c: bench.worker_side("local", c)  # type: ignore[misc]
            sides[f"fal-c{c}"] = lambda c=c: bench.worker_side("fal", c)  # type: ignore[misc]
        photos = sorted(args.photos.glob("*.png"))
        if photos and args.n_photos:
            sides["local-photos-c2"] = lambda: bench.worker_side("local", 2, photos)
        for w in map(int, args.api_workers.split(",")):
            sides[f"api-w{w}"] = lambda w=w: bench.api_side(w)  # type: ignore[misc]
        run.rounds(sides)
        run.extra["ceilings"] = bench.ceilings()
    concs = [int(c) for c in args.concurrency.split(",")]
    run.extra["ratios"] = {f"{p}-c{c}/{p}-c{concs[0]}": run.ratio(f"{p}-c{c}", f"{p}-c{concs[0]}", "jobs_per_s")
                           for p in ("local", "fal") for c in concs[1:]}
    if "api-w2" in run.results:
        run.extra["ratios"]["api-w2/api-w1"] = run.ratio("api-w2", "api-w1", "jobs_per_s")
    record = run.record()
    run.extra["model"] = project(record)
    path = run.save()
    print()
    print(markdown(json.loads(path.read_text())))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ("_submit", "_load"):
        result = (role_submit if sys.argv[1] == "_submit" else role_load)(json.loads(sys.argv[2]))
        print(json.dumps(result))
    else:
        main()
