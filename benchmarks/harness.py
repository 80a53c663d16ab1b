"""What every benchmark shares: alternating rounds, median and range, and where a figure came from.

A figure is only worth quoting with the command that produced it, the commit it ran on and the
state of the machine. Every benchmark here runs its sides in *alternating rounds* (the order
rotates each round: A B C, B C A, C A B …) so that a slow minute of the machine does not land on
one side only, reports each side's median and range, and computes each ratio *per round* (the
two sides of one round ran minutes apart on the same machine) before taking its median.

    from benchmarks.harness import Run

    run = Run("local_pipeline", rounds=3)
    results = run.rounds({"bare": run_bare, "pipeline": run_pipeline})   # each returns a dict
    run.figure("bare", "ips")          # {"median": …, "min": …, "max": …, "values": […]}
    run.ratio("pipeline", "bare", "ips")
    run.save()                         # benchmarks/results/local_pipeline.json

The saved JSON holds every round's raw result, the summaries, and the provenance: command line,
commit (and whether the tree was dirty), UTC time, CPU count, memory, load average before and
after, Python and key package versions.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PACKAGES = ("celery", "kombu", "redis", "fal-client", "httpx", "sqlalchemy", "psycopg", "fastapi",
            "uvicorn", "onnxruntime", "rembg", "numpy", "pillow")


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else ""

    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "orchestrator", "benchmarks")
    return {"commit": git("rev-parse", "--short=12", "HEAD") or "unknown", "dirty": bool(dirty)}


def machine() -> dict[str, Any]:
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"cpus": os.cpu_count(), "mem_gib": round(mem_kib / 2**20, 1),
            "python": platform.python_version(), "packages": versions}


def summary(values: list[float]) -> dict[str, Any]:
    """Median and range of one measure over the rounds."""
    clean = [float(v) for v in values]
    if not clean:
        return {"median": None, "min": None, "max": None, "values": []}
    return {"median": statistics.median(clean), "min": min(clean), "max": max(clean),
            "values": clean}


def fmt(s: Mapping[str, Any], digits: int = 3) -> str:
    """``1.234 (1.200–1.250)``: a summary as the docs quote it."""
    if s.get("median") is None:
        return "–"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


class Run:
    """One benchmark run: its rounds, its raw results, its summaries, its provenance."""

    def __init__(self, name: str, *, rounds: int = 3, params: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.rounds_count = rounds
        self.params = dict(params or {})
        self.results: dict[str, list[dict[str, Any]]] = {}
        self.extra: dict[str, Any] = {}
        self.started = datetime.now(UTC)
        self.load_before = os.getloadavg()
        self.commit = git_commit()
        self.command = "python " + shlex.join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])

    def rounds(self, sides: Mapping[str, Callable[[], dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
        """Run every side once a round, ``rounds`` times, rotating the order each round."""
        names = list(sides)
        for r in range(self.rounds_count):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                started = time.perf_counter()
                result = dict(sides[name]())
                result.setdefault("round", r + 1)
                result.setdefault("wall_s", round(time.perf_counter() - started, 3))
                self.results.setdefault(name, []).append(result)
                print(f"[{self.name}] round {r + 1}/{self.rounds_count} {name}: "
                      f"{json.dumps(_short(result))}", flush=True)
        return self.results

    def add(self, side: str, result: Mapping[str, Any]) -> None:
        """Record one result measured outside ``rounds`` (e.g. a sweep)."""
        self.results.setdefault(side, []).append(dict(result))

    def figure(self, side: str, key: str) -> dict[str, Any]:
        return summary([r[key] for r in self.results.get(side, []) if r.get(key) is not None])

    def ratio(self, side: str, baseline: str, key: str) -> dict[str, Any]:
        """``side / baseline`` of one measure, round by round, then summarised."""
        pairs = zip(self.results.get(side, []), self.results.get(baseline, []), strict=False)
        return summary([a[key] / b[key] for a, b in pairs if a.get(key) and b.get(key)])

    def record(self) -> dict[str, Any]:
        sides = {name: {key: summary([r[key] for r in rs])
                        for key in rs[0] if all(isinstance(r.get(key), int | float) and
                                                not isinstance(r.get(key), bool) for r in rs)}
                 for name, rs in self.results.items() if rs}
        return {
            "benchmark": self.name, "command": self.command, **self.commit,
            "started_utc": self.started.isoformat(timespec="seconds"),
            "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "rounds": self.rounds_count, "params": self.params,
            "loadavg_before": [round(x, 2) for x in self.load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "machine": machine(), "summary": sides, **self.extra, "raw": self.results,
        }

    def save(self, path: Path | None = None) -> Path:
        """Write the record to ``benchmarks/results/<name>.json`` (or ``path``) and return it."""
        path = path or RESULTS / f"{self.name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.record(), indent=1, default=str) + "\n")
        print(f"[{self.name}] commit {self.commit['commit']}{' (dirty)' if self.commit['dirty'] else ''}; "
              f"record written to {os.path.relpath(path, ROOT)}", flush=True)
        return path


def _short(result: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items()
            if isinstance(v, int | float | str | bool) or v is None}
