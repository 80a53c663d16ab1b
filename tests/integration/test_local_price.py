"""Local work is priced the way an operator knows it, or reported as unpriced — never as $0
(issue 14, 14). Real workers, the real Postgres, the real report queries and renderers."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from orchestrator.jobs.states import JobState
from orchestrator.settings import load_settings
from tests.conftest import run_cli
from tests.support.db import wait_all_final
from tests.support.images import subject


def _image(folder: Path, name: str, size: tuple[int, int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    subject(size).save(path, "PNG")
    return path


def test_an_hourly_host_price_becomes_a_price_per_compute_second_by_inference_slots() -> None:
    settings = load_settings(local_host_price_per_hour="3.6", local_inference_slots=4)
    assert settings.local_price() == Decimal("0.00025")  # 3.6 / 3600 / 4
    both = load_settings(local_host_price_per_hour="3.6", local_price_per_second="0.002")
    assert both.local_price() == Decimal("0.002")  # the contract's setting wins
    assert load_settings().local_price() is None  # not set: unknown, not free


@pytest.mark.parametrize("bad", ["-1", "lots"])
def test_a_bad_host_price_is_refused_with_its_name(bad: str) -> None:
    from orchestrator.errors import ConfigError

    with pytest.raises(ConfigError, match="local_host_price_per_hour"):
        load_settings(local_host_price_per_hour=bad)


def test_jobs_cost_the_host_price_and_reports_say_when_local_work_has_no_price(
    env: dict[str, str], start_worker, tmp_path: Path
) -> None:
    db = env["ORCH_DATABASE_URL"]
    priced = start_worker("--queues", "local", "--concurrency", "1", extra_env={
        "ORCH_LOCAL_HOST_PRICE_PER_HOUR": "7.2", "ORCH_LOCAL_INFERENCE_SLOTS": "2"})
    out = run_cli(env, "submit", str(_image(tmp_path / "a", "priced", (80, 60))), "--wait")
    assert out.returncode == 0, out.stderr
    priced.stop(timeout=30)
    [job] = wait_all_final(db, timeout=60)
    [attempt] = job.attempts
    assert attempt.price_per_second == Decimal("0.001")  # 7.2 / 3600 / 2
    assert attempt.compute_seconds is not None and attempt.compute_seconds > 0
    assert attempt.cost_usd == (attempt.compute_seconds * Decimal("0.001")).quantize(Decimal("1e-9"))

    # The same worker without any price: the attempt's cost is unknown, not $0.
    start_worker("--queues", "local", "--concurrency", "1")
    out = run_cli(env, "submit", str(_image(tmp_path / "b", "unpriced", (70, 50))), "--wait")
    assert out.returncode == 0, out.stderr
    jobs = wait_all_final(db, timeout=60)
    [unpriced] = [j for j in jobs if j.source_name.startswith("unpriced")]
    assert unpriced.state is JobState.SUCCEEDED
    [attempt] = unpriced.attempts
    assert attempt.compute_seconds is not None and attempt.compute_seconds > 0
    assert attempt.price_per_second is None and attempt.cost_usd is None
    assert attempt.fal_equivalent_usd is not None and attempt.fal_equivalent_usd > 0

    since = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    as_json = run_cli(env, "report", "costs", "--since", since, "-g", "backend", "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    for row in (report["total"], *report["rows"]):
        assert row["local_price"] == "not set" and row["local_unpriced_attempts"] == 1
        assert row["local_cost_usd"] is None and row["saving_usd"] is None
        assert row["cost_usd"] is None  # the total includes work of unknown cost
        assert Decimal(row["local_fal_equivalent_usd"]) > 0  # what is known is still there

    as_csv = run_cli(env, "report", "costs", "--since", since, "--format", "csv")
    [total] = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert total["local_price"] == "not set"
    assert total["local_cost_usd"] == total["saving_usd"] == total["cost_usd"] == ""

    table = run_cli(env, "report", "costs", "--since", since, "-g", "backend")
    assert table.returncode == 0, table.stderr
    shown = " ".join(table.stdout.split())
    assert "local price not set" in shown and "not set" in shown
    assert "$0.0000" not in shown

    chart = tmp_path / "costs.svg"
    drawn = run_cli(env, "report", "costs", "--since", since, "--chart", str(chart))
    assert drawn.returncode == 0, drawn.stderr
    from orchestrator.db.session import get_engine
    from orchestrator.reports import cost_report, make_period
    from orchestrator.reports.chart import _days, chart_title

    by_day = cost_report(get_engine(db), make_period(since, None), ("day", "backend"), None)
    assert "local price not set" in chart_title(by_day, _days(by_day))
    get_engine(db).dispose()
