"""The ``orchestrator`` command line in a subprocess, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_cli(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def submit_json(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    """``orchestrator submit ARGS --json``, which must succeed: one dict per job."""
    out = run_cli(env, "submit", *args, "--json")
    assert out.returncode == 0, out.stderr
    return json_lines(out.stdout)


def submit_ids(env: dict[str, str], *args: str) -> list[str]:
    """``orchestrator submit ARGS --json``, which must succeed: the job ids, in order."""
    return [line["id"] for line in submit_json(env, *args)]
