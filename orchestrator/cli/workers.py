"""``orchestrator workers``: every worker's health, through Celery's remote control."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from orchestrator.cli.common import console, console_err, print_json


def _ask(timeout: float, node: str | None) -> dict[str, dict[str, Any]]:
    from orchestrator.commands.workers import worker_health

    return worker_health(timeout, node)


def workers(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per worker.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for replies.", min=0.1)] = 2.0,
    node: Annotated[
        str | None, typer.Option(help="Ask only this Celery node (e.g. local@host).")
    ] = None,
) -> None:
    """Show each worker's health: processes warm, ONNX providers in use, memory, limits.

    Exits 1 when no worker answers or any worker is not healthy (usable as a health check).
    """
    nodes = _ask(timeout, node)
    if as_json:
        for name, health in sorted(nodes.items()):
            print_json({"node": name, **health})
    else:
        table = Table("node", "ok", "queues", "process", "warm", "providers", "jobs", "RSS MiB",
                      "limit MiB")
        for name, health in sorted(nodes.items()):
            for proc in health.get("processes") or [{}]:
                table.add_row(
                    name, "yes" if health.get("ok") else "NO", ",".join(health.get("queues", [])),
                    str(proc.get("pid", "-")), "yes" if proc.get("warm") else "no",
                    ",".join(proc.get("providers") or []) or "-", str(proc.get("jobs", "-")),
                    str(proc.get("rss_mb", "-")), str(health.get("max_memory_mb") or "-"),
                )
        console.print(table)
        for name, health in sorted(nodes.items()):
            for problem in health.get("problems", []):
                console_err.print(f"[red]{name}:[/red] {problem}")
    if not nodes:
        console_err.print("[red]no worker answered[/red]")
        raise typer.Exit(1)
    if not all(h.get("ok") for h in nodes.values()):
        raise typer.Exit(1)
