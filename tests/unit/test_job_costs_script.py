"""The demo's per-job cost summary says "not set" for unpriced local work, not $0 (issue 14, 14)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def _summary(*attempts: dict[str, str | None]) -> str:
    job = {"input": "photo.png", "state": "succeeded", "backend": "local",
           "attempt_log": list(attempts)}
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "job_costs.py")],
                         input=json.dumps(job) + "\n", capture_output=True, text=True,
                         timeout=30, check=True)
    return out.stdout


def test_unpriced_local_work_is_not_shown_as_free() -> None:
    text = _summary({"compute_seconds": "1.500000", "cost_usd": None,
                     "fal_equivalent_usd": "0.001665000"})
    assert "not set" in text and "0.000000" not in text
    assert "local price not set" in text


def test_priced_work_shows_its_cost() -> None:
    text = _summary({"compute_seconds": "1.500000", "cost_usd": "0.000150000",
                     "fal_equivalent_usd": "0.001665000"})
    assert "0.000150" in text and "not set" not in text
