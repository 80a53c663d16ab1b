"""``jobs show``'s layout, from a job built in memory: every kind of field a person reads."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from rich.console import Console

from orchestrator.cli.job_view import money, render_job
from orchestrator.commands.views import AttemptView, JobView, ResultMeta

T0 = datetime(2026, 11, 30, 4, 0, 5, tzinfo=UTC)


def _job(**changes: object) -> JobView:
    attempt = AttemptView(
        number=1, outcome="failed", worker="w1@host", started_at=T0, finished_at=T0,
        error_code="backend_busy", error="fal said 503", compute_seconds=Decimal("0.250000"),
        compute_basis="fal_reported", cost_usd=Decimal("0E-9"),
        fal_equivalent_usd=Decimal("0.000277500"), submit_state="accepted",
        provider_request_id="req-1", provider_status="IN_PROGRESS")
    fields: dict[str, object] = dict(
        id=uuid.UUID(int=7), state="failed", backend="fal", requested_backend="auto",
        model="fal-ai/imageutils/rembg", options={"crop_to_bbox": False, "sync_mode": True},
        client="svc", input="https://example.com/cat.png", input_sha256=None,
        idempotency_key=None, attempts=1, deliveries=2, crashes=0, possible_duplicate=False,
        deduplicated_from=None, dedup_attached=0, error_code="backend_busy",
        error="fal said [bold]503[/bold]", created_at=T0, started_at=T0, finished_at=None,
        next_attempt_at=None, result=None, detailed=True,
        routing={"requested": "auto", "decision": "fal", "reason": "local wait ~9.0 s exceeds "
                 "the 5 s deadline", "inputs": {"local_depth": 12}},
        attempt_log=(attempt,))
    fields.update(changes)
    return JobView(**fields)  # type: ignore[arg-type]


def _render(job: JobView) -> str:
    console = Console(width=140, record=True, color_system=None)
    render_job(console, job)
    return console.export_text()


def test_a_job_reads_as_fields_not_reprs() -> None:
    text = _render(_job())
    for repr_ in ("{'", "None", "True", "False", "Decimal(", "E-9", "datetime."):
        assert repr_ not in text, text
    assert "fal (requested auto)" in text
    assert "crop to bbox: no, sync mode: yes" in text
    assert "2026-11-30 04:00:05 UTC" in text
    assert "fal said [bold]503[/bold] (backend_busy)" in text  # markup in data is shown as is
    assert "requested auto, chose fal" in text and "exceeds the 5 s deadline" in text
    assert "$0.00" in text and "$0.0002775" in text and "0.250 s" in text
    assert "result" in text
    assert "#1 failed on w1@host" in text and "req-1 (IN_PROGRESS)" in text
    assert "fal said 503 (backend_busy)" in text


def test_it_fits_a_narrow_terminal() -> None:
    console = Console(width=80, record=True, color_system=None)
    render_job(console, _job())
    text = console.export_text()
    assert "fal_reported" in text and "$0.0002775" in text and "w1@host" in text


def test_a_result_and_its_metadata() -> None:
    result = ResultMeta(content_type="image/png", sha256="ab" * 32, size_bytes=12345, width=96,
                        height=64, store="directory", cropped=True)
    text = _render(_job(state="succeeded", result=result, error=None, error_code=None,
                        routing=None, idempotency_key="order-42", attempt_log=()))
    assert "96×64 image/png, 12,345 bytes, stored in directory, cropped to the subject" in text
    assert "order-42" in text and "error" not in text and "none yet" in text


def test_money_is_plain_digits() -> None:
    assert money(Decimal("0E-9")) == "$0.00"
    assert money(Decimal("1.500000000")) == "$1.50"
    assert money(Decimal("0.001110000")) == "$0.00111"
    assert money(None) == "—"
