"""``jobs show``: a job laid out for a person (``--json`` is for programs)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.commands.views import JobView, ResultMeta

NONE = "—"
STATE_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}


def when(value: datetime | None) -> str:
    return NONE if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def money(value: Decimal | None) -> str:
    # Plain digits (never 1E-9), trailing zeros dropped but at least cents.
    if value is None:
        return NONE
    text = format(value.normalize(), "f")
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


def seconds(value: Decimal | float | None) -> str:
    return NONE if value is None else f"{float(value):.3f} s"


def options_text(options: dict[str, Any]) -> str:
    if not options:
        return NONE
    return ", ".join(f"{key.replace('_', ' ')}: {_plain(value)}" for key, value in sorted(options.items()))


def _plain(value: Any) -> str:
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def result_text(r: ResultMeta) -> str:
    return (f"{r.width}×{r.height} {r.content_type}, {r.size_bytes:,} bytes, stored in {r.store}"
            f"{', cropped to the subject' if r.cropped else ''}\nsha256 {r.sha256}")


def routing_text(routing: dict[str, Any]) -> str:
    lines = [f"requested {routing.get('requested', 'auto')}, chose {routing.get('decision', NONE)}"]
    if routing.get("reason"):
        lines.append(f"because {routing['reason']}")
    rerouted = routing.get("rerouted")
    if isinstance(rerouted, dict):
        lines.append(f"rerouted {rerouted.get('from')} → {rerouted.get('to')} at "
                     f"{rerouted.get('at')}: {rerouted.get('reason')}")
    return "\n".join(lines)


def _fields(job: JobView) -> list[tuple[str, str]]:
    backend = job.backend if job.requested_backend == job.backend else (
        f"{job.backend} (requested {job.requested_backend})")
    fields = [
        ("state", f"[{STATE_STYLE.get(job.state, 'cyan')}]{job.state}[/]"),
        ("backend", escape(backend)),
        ("model", escape(job.model)),
        ("client", escape(job.client)),
        ("input", escape(job.input)),
        ("input sha256", job.input_sha256 or NONE),
        ("options", escape(options_text(job.options))),
        ("idempotency key", escape(job.idempotency_key) if job.idempotency_key else NONE),
        ("attempts", f"{job.attempts} (deliveries {job.deliveries}, crashes {job.crashes})"),
        ("created", when(job.created_at)),
        ("started", when(job.started_at)),
        ("finished", when(job.finished_at)),
    ]
    if job.next_attempt_at is not None:
        fields.append(("next attempt", when(job.next_attempt_at)))
    if job.deduplicated_from is not None:
        fields.append(("result copied from", str(job.deduplicated_from)))
    if job.dedup_attached:
        fields.append(("identical submits attached", str(job.dedup_attached)))
    if job.possible_duplicate:
        fields.append(("possible duplicate", "yes: a provider may have run it twice"))
    if job.error is not None or job.error_code is not None:
        fields.append(("error", escape(f"{job.error or ''} ({job.error_code or 'unknown'})")))
    fields.append(("result", escape(result_text(job.result)) if job.result else NONE))
    if job.routing:
        fields.append(("routing", escape(routing_text(job.routing))))
    return fields


def render_job(console: Console, job: JobView) -> None:
    console.print(f"[bold]job {job.id}[/bold]")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for name, value in _fields(job):
        grid.add_row(name, value)
    console.print(grid)
    if not job.attempt_log:
        console.print("[bold]attempt log[/bold]  none yet")
        return
    console.print("[bold]attempt log[/bold]")
    for a in job.attempt_log:
        # One small block per attempt reads at any terminal width (a wide table does not).
        console.print(f"  [bold]#{a.number}[/bold] {a.outcome} on {escape(a.worker)}")
        block = Table.grid(padding=(0, 2))
        block.add_column(no_wrap=True)
        block.add_column(overflow="fold")
        finished = f" → {when(a.finished_at)}" if a.finished_at else " (running)"
        block.add_row("    time", f"{when(a.started_at)}{finished}")
        basis = f" ({a.compute_basis})" if a.compute_basis else ""
        block.add_row("    compute", f"{seconds(a.compute_seconds)}{basis}")
        block.add_row("    cost", f"{money(a.cost_usd)}, fal equivalent {money(a.fal_equivalent_usd)}")
        if a.provider_request_id:
            block.add_row("    provider request", escape(
                f"{a.provider_request_id} ({a.provider_status or a.submit_state or 'unknown'})"))
        if a.error or a.error_code:
            block.add_row("    error", escape(f"{a.error or ''} ({a.error_code or 'unknown'})"))
        console.print(block)
