"""The local pipeline against bare rembg and against inference alone, in one run, same photos.

    python benchmarks/local_pipeline.py              # the documented figures (~25 min, quiet machine)
    python benchmarks/local_pipeline.py --quick      # a check that everything runs (~2 min)

Sides, each on the same 4 sample photos repeated to ``-n`` images (default 24), on the same model
file (``../shared/models/isnet-general.onnx``, float16 weights as shipped):

- ``ceiling-fp16``: ``session.run`` alone on inputs pre-computed by rembg's ``normalize``, the
  model as shipped — no decode, pre/post-processing or encode: inference's own cost;
- ``ceiling-fp32``: the same on the float32 copy the worker makes (``ORCH_LOCAL_MODEL_PRECISION``);
- ``bare``: ``rembg.remove(bytes)`` → PNG bytes, one reused session per process, rembg's defaults;
- ``pipeline``: ``orchestrator submit``'s path (Postgres rows + Redis messages) → a warm
  ``orchestrator worker`` with its default settings → results stored in Postgres, timed from the
  first submit to the last job's ``finished_at``.

Two configurations of the machine's 2 cores: ``1x2`` (one session × 2 ONNX threads: the worker's
default) and ``2x1`` (two sessions × 1 thread: bare and ceilings as two processes each doing half
the images; the pipeline as ``--concurrency 2`` with ``ORCH_LOCAL_ONNX_THREADS=1`` and
``ORCH_LOCAL_INFERENCE_SLOTS=2``). Each configuration runs its sides in rotating alternating
rounds (``benchmarks.harness.Run``). Each side also reports its CPU seconds per image (user +
system, all threads: the bare processes; the worker's processes, the run's Postgres backends and
the submit call): less disturbed than wall-clock time when other work shares the machine, it
shows which side needs less of the cores (with 1x2 it includes ONNX Runtime's spinning). Parity: the pipeline's results for the 4 photos against
bare rembg's (largest alpha difference; largest colour difference where both alphas are > 0).
Needs the machine's Postgres and Redis (DB 14 by default); drops its database at the end.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"

from benchmarks.harness import Run, fmt  # noqa: E402

CONFIGS = {"1x2": (1, 2), "2x1": (2, 1)}  # name: (processes, ONNX threads each)
GOAL = 1.05


def rss_peak_mib(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024 if match else 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def bare_side(model: Path, images: list[Path], n: int, procs: int, threads: int, mode: str,
              out: Path | None = None) -> Callable[[], dict[str, Any]]:
    """A side run by ``procs`` bare_rembg.py processes started together, each warm."""
    def run() -> dict[str, Any]:
        cmd = [sys.executable, str(ROOT / "benchmarks" / "bare_rembg.py"), "--model", str(model),
               "-n", str(n), "--threads", str(threads), "--mode", mode,
               "--images", *map(str, images)]
        workers = []
        for k in range(procs):
            extra = ["--out", str(out / f"shard{k}")] if out is not None else []
            workers.append(subprocess.Popen([*cmd, "--shard", f"{k}/{procs}", *extra], text=True,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        for w in workers:
            assert w.stdout is not None and w.stdout.readline().strip() == "ready"
        started = time.perf_counter()
        for w in workers:
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.flush()
        results = [_json(w.stdout.readline()) for w in workers if w.stdout is not None]
        seconds = time.perf_counter() - started
        for w in workers:
            w.wait(timeout=60)
        return {"images": sum(r["images"] for r in results), "seconds": seconds, "ips": n / seconds,
                "cpu_s_per_image": sum(r["cpu_s"] for r in results) / n,
                "peak_rss_mib": max(r["peak_rss_mib"] for r in results), "processes": procs}
    return run


def _json(line: str) -> dict[str, Any]:
    import json

    value: dict[str, Any] = json.loads(line)
    return value


class Pipeline:
    """A warm ``orchestrator worker`` on a throwaway database, kept for a configuration's rounds."""

    def __init__(self, model: Path, procs: int, threads: int, pg_admin: str, redis_url: str,
                 precision: str) -> None:
        self.pg_admin = pg_admin
        self.dbname = f"orch_bench_local_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(pg_admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')
        db_url = pg_admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        redis.Redis.from_url(redis_url).flushdb()
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("ORCH_") or k == "ORCH_LOCAL_MODEL_CACHE_DIR"}
        self.env.update({
            "ORCH_DATABASE_URL": f"{db_url}/{self.dbname}", "ORCH_BROKER_URL": redis_url,
            "ORCH_LOCAL_MODEL_PATH": str(model), "ORCH_LOCAL_MODEL_PRECISION": precision,
            "ORCH_LOCAL_ONNX_THREADS": str(threads), "ORCH_LOCAL_INFERENCE_SLOTS": str(procs),
            "ORCH_WORKER_CONCURRENCY": str(procs),
            "ORCH_DEDUP_WINDOW_SECONDS": "0",  # the same 4 photos repeat: measure real work
        })
        subprocess.run([sys.executable, "-m", "orchestrator", "migrate"], env=self.env, check=True,
                       capture_output=True)
        self.log_path = Path(tempfile.gettempdir()) / f"{self.dbname}-worker.log"
        self.log = self.log_path.open("w")
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "worker", "--queues", "local"],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        self.procs = self._wait_warm()
        self.last_jobs: list[uuid.UUID] = []
        self.seen: set[uuid.UUID] = set()

    def _wait_warm(self) -> int:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            text = self.log_path.read_text()
            m = re.search(r"(\d+) process\(es\)", text)
            procs = int(m.group(1)) if m else 0
            if procs and text.count("local backend ready") >= procs:
                return procs
            if self.worker.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError("worker did not warm up:\n" + self.log_path.read_text())

    def settings(self) -> Any:
        from orchestrator.settings import load_settings

        # The worker's settings, not this process's environment: above all no deduplication,
        # or the repeated photos would be served from earlier jobs instead of being computed.
        return load_settings(database_url=self.env["ORCH_DATABASE_URL"],
                             broker_url=self.env["ORCH_BROKER_URL"],
                             local_model_path=self.env["ORCH_LOCAL_MODEL_PATH"],
                             dedup_window_seconds=0)

    def side(self, images: list[Path], n: int) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            from sqlalchemy import func, select

            from orchestrator.db.models import Job
            from orchestrator.db.session import session_scope
            from orchestrator.jobs.producer import Source, submit, wait_for
            from orchestrator.jobs.states import JobState

            settings = self.settings()
            blobs = [(p.stem, p.read_bytes()) for p in images]
            sources = [Source(name=f"{blobs[i % len(blobs)][0]}-{i}", data=blobs[i % len(blobs)][1])
                       for i in range(n)]
            workers = [self.worker.pid, *children(self.worker.pid)]
            cpu_before = {pid: cpu_seconds(pid) for pid in [*workers, *self.postgres_backends()]}
            started = time.time()
            submit_cpu = time.process_time()
            submitted = submit(sources, settings=settings, backend="local")
            submit_cpu = time.process_time() - submit_cpu
            ids = [s.job_id for s in submitted]
            fresh = set(ids) - self.seen
            assert len(fresh) == n, "jobs were deduplicated: the pipeline would not compute them"
            self.seen |= fresh
            states = wait_for(ids, settings=settings, poll_seconds=0.2)
            assert all(s is JobState.SUCCEEDED for s in states.values()), states
            # The worker's processes, the database's backends for this run (a backend opened
            # during it counts from 0) and the submit call; not Redis, which other helpers share.
            cpu = submit_cpu + sum(cpu_seconds(pid) - cpu_before.get(pid, 0.0)
                                   for pid in {*workers, *self.postgres_backends()})
            with session_scope(settings.database.url.get_secret_value()) as session:
                last: datetime = session.execute(
                    select(func.max(Job.finished_at)).where(Job.id.in_(ids))).scalar_one()
            seconds = last.timestamp() - started
            self.last_jobs = ids
            pids = children(self.worker.pid)
            return {"images": n, "seconds": seconds, "ips": n / seconds, "processes": self.procs,
                    "cpu_s_per_image": cpu / n,
                    "peak_rss_mib": max((rss_peak_mib(p) for p in pids), default=0.0),
                    "peak_rss_mib_main": round(rss_peak_mib(self.worker.pid), 1)}
        return run

    def postgres_backends(self) -> list[int]:
        with psycopg.connect(self.pg_admin, autocommit=True) as conn:
            rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s",
                                (self.dbname,)).fetchall()
        return [int(row[0]) for row in rows]

    def results(self, count: int) -> list[bytes]:
        from orchestrator import commands
        from orchestrator.cli.common import OPERATOR

        settings = self.settings()
        return [commands.result(settings, OPERATOR, job_id).data for job_id in self.last_jobs[:count]]

    def close(self) -> None:
        self.worker.terminate()
        try:
            self.worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.worker.kill()
        self.log.close()
        with psycopg.connect(self.pg_admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')


def parity(images: list[Path], bare_out: Path, pipeline_pngs: list[bytes]) -> dict[str, Any]:
    """Largest differences between the pipeline's results and bare rembg's, over the photos."""
    import numpy as np
    from PIL import Image

    alpha = colour = 0
    differing = 0
    for path, got_png in zip(images, pipeline_pngs, strict=True):
        want = np.asarray(Image.open(bare_out / "shard0" / f"{path.stem}.png").convert("RGBA")).astype(int)
        got = np.asarray(Image.open(io.BytesIO(got_png)).convert("RGBA")).astype(int)
        assert got.shape == want.shape, path.name
        alpha = max(alpha, int(np.abs(got[..., 3] - want[..., 3]).max()))
        differing += int(np.count_nonzero(got[..., 3] != want[..., 3]))
        both = (got[..., 3] > 0) & (want[..., 3] > 0)
        if both.any():
            colour = max(colour, int(np.abs(got[..., :3] - want[..., :3])[both].max()))
    return {"max_alpha_diff": alpha, "alpha_values_differing": differing,
            "max_colour_diff_where_opaque": colour, "photos": len(images)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=24, help="images per side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="-n 4, one round: a ~2-minute check")
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--precision", choices=("float32", "as-shipped"), default="float32",
                        help="the pipeline's ORCH_LOCAL_MODEL_PRECISION")
    parser.add_argument("--model", type=Path, default=SHARED / "models" / "isnet-general.onnx")
    parser.add_argument("--images", type=Path, default=SHARED / "images")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    if args.quick:
        args.n, args.rounds = 4, 1
    images = sorted(args.images.glob("*.png"))
    model = args.model.resolve()

    from orchestrator.backends.local.precision import float32_model

    cache = os.environ.get("ORCH_LOCAL_MODEL_CACHE_DIR")
    fp32 = float32_model(model, Path(cache) if cache else None)  # the copy the worker will use
    run = Run("local_pipeline", rounds=args.rounds,
              params={"n": args.n, "configs": args.configs, "precision": args.precision,
                      "model": str(model), "fp32_copy": str(fp32), "images": [p.name for p in images]})
    scratch = Path(tempfile.mkdtemp(prefix="bench-local-"))
    run.extra["parity"] = {}
    try:
        for name in args.configs:
            procs, threads = CONFIGS[name]
            pipeline = Pipeline(model, procs, threads, args.pg, args.redis, args.precision)
            try:
                bare_out = scratch / name
                run.rounds({
                    f"{name} ceiling-fp16": bare_side(model, images, args.n, procs, threads, "ceiling"),
                    f"{name} ceiling-fp32": bare_side(fp32, images, args.n, procs, threads, "ceiling"),
                    f"{name} bare": bare_side(model, images, args.n, procs, threads, "remove", bare_out),
                    f"{name} pipeline": pipeline.side(images, args.n),
                })
                run.extra["parity"][name] = parity(images, bare_out, pipeline.results(len(images)))
                print(f"[local_pipeline] {name} parity: {run.extra['parity'][name]}", flush=True)
            finally:
                pipeline.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for name in args.configs:
        run.extra.setdefault("ratios", {})[name] = {
            "pipeline/bare": run.ratio(f"{name} pipeline", f"{name} bare", "ips"),
            "bare/pipeline CPU per image": run.ratio(f"{name} bare", f"{name} pipeline",
                                                     "cpu_s_per_image"),
            "bare/ceiling-fp16": run.ratio(f"{name} bare", f"{name} ceiling-fp16", "ips"),
            "ceiling-fp32/ceiling-fp16": run.ratio(f"{name} ceiling-fp32", f"{name} ceiling-fp16", "ips"),
        }
    run.save()
    print(table(run, args.configs))


def table(run: Run, configs: list[str]) -> str:
    commit = run.commit["commit"] + (" (dirty)" if run.commit["dirty"] else "")
    lines = [
        f"Command: `{run.command}` · commit `{commit}` · {run.rounds_count} rounds, "
        f"{run.params['n']} images per side · median (range)",
        "",
        "| config | side | images/s | s/image | CPU s/image | peak RSS MiB/process | ratio | goal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in configs:
        bare = f"{name} bare"
        for side, label in (("ceiling-fp16", "`session.run` only, as shipped (fp16)"),
                            ("ceiling-fp32", "`session.run` only, float32 copy"),
                            ("bare", "bare `rembg.remove`"),
                            ("pipeline", "pipeline (submit → worker → stored)")):
            key = f"{name} {side}"
            ips = run.figure(key, "ips")
            spi = run.figure(key, "seconds")
            n = run.params["n"]
            per_image = {k: (v / n if isinstance(v, float) else v) for k, v in spi.items()
                         if k != "values"}
            ratio = run.ratio(key, bare, "ips")
            goal = f"≥ {GOAL:.2f}× bare" if side == "pipeline" else ""
            rss = run.figure(key, "peak_rss_mib")
            cpu = run.figure(key, "cpu_s_per_image")
            lines.append(f"| {name} | {label} | {fmt(ips)} | {fmt(per_image)} | {fmt(cpu)} | "
                         f"{fmt(rss, 0)} | {fmt(ratio)}× bare | {goal} |")
    for name, p in run.extra.get("parity", {}).items():
        lines.append("")
        lines.append(f"Parity ({name}, pipeline vs bare rembg, {p['photos']} photos): largest alpha "
                     f"difference {p['max_alpha_diff']} ({p['alpha_values_differing']} alpha values "
                     f"differ), largest colour difference where opaque {p['max_colour_diff_where_opaque']}.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
