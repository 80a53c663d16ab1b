"""Money and seconds reach JSON as plain decimal strings, never "0E-9" or a float (issue 14, 12)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from fastapi.encoders import jsonable_encoder

from orchestrator.cli.common import print_json
from orchestrator.commands.views import JobView
from orchestrator.db.models import Attempt, Job
from orchestrator.jobs.states import AttemptOutcome, ComputeBasis, JobState


def _job_with_a_free_attempt() -> Job:
    job = Job(state=JobState.SUCCEEDED, backend="local", model="isnet", options={},
              client="default", source_kind="file", source_name="a.png", max_attempts=3)
    job.attempts = [Attempt(number=1, backend="local", worker="w1",
                            outcome=AttemptOutcome.SUCCEEDED,
                            started_at=datetime(2026, 11, 30, tzinfo=UTC),
                            compute_seconds=Decimal("0E-6"),
                            compute_basis=ComputeBasis.LOCAL_MEASURED,
                            cost_usd=Decimal("0E-9"), fal_equivalent_usd=Decimal("1.2E-8"))]
    return job


def test_job_dict_gives_money_and_seconds_as_plain_strings_for_the_api() -> None:
    # The API answers with FastAPI's encoder, which turns a Decimal into a float.
    attempt = jsonable_encoder(JobView.of(_job_with_a_free_attempt(), detailed=True).to_dict())[
        "attempt_log"][0]
    assert attempt["cost_usd"] == "0.000000000"
    assert attempt["fal_equivalent_usd"] == "0.000000012"
    assert attempt["compute_seconds"] == "0.000000"


def test_cli_json_prints_plain_decimal_strings(capsys: pytest.CaptureFixture[str]) -> None:
    print_json({"spent_usd": Decimal("0E-9"), "limit_usd": Decimal("1E+1")})
    out = json.loads(capsys.readouterr().out)
    assert out == {"spent_usd": "0.000000000", "limit_usd": "10"}
