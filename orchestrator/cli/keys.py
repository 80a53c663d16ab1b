from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from orchestrator.cli.common import console, console_err, print_json
from orchestrator.commands import Caller
from orchestrator.commands import keys as key_commands
from orchestrator.settings import get_settings

app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="The tenant (client) the key's jobs belong to.")],
    admin: Annotated[bool, typer.Option("--admin", help="May see every tenant's jobs.")] = False,
) -> None:
    """Create a key and print it once: only its hash is stored."""
    key = key_commands.create_key(get_settings(), Caller.operator(), name, admin=admin)
    print(key)
    console_err.print(f"key for [bold]{name}[/bold]{' (admin)' if admin else ''}: store it now, "
                      "it cannot be shown again")


@app.command()
def revoke(
    name_or_prefix: Annotated[str, typer.Argument(help="A key name (all its keys) or a key prefix.")],
) -> None:
    """Revoke keys; requests with them get 401 from then on."""
    n = key_commands.revoke_key(get_settings(), Caller.operator(), name_or_prefix)
    console_err.print(f"revoked {n} key(s)")


@app.command(name="list")
def list_(json_out: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False) -> None:
    """List keys (names, prefixes, state); never the keys themselves."""
    rows = [{"name": k.name, "prefix": k.prefix, "admin": k.admin, "created_at": k.created_at,
             "revoked_at": k.revoked_at}
            for k in key_commands.list_keys(get_settings(), Caller.operator())]
    if json_out:
        for row in rows:
            print_json(row)
        return
    table = Table("name", "prefix", "admin", "created", "revoked")
    for row in rows:
        table.add_row(str(row["name"]), str(row["prefix"]), str(row["admin"]),
                      str(row["created_at"])[:19], str(row["revoked_at"] or "")[:19])
    console.print(table)


@app.command(name="signing-key")
def signing_key() -> None:
    """Print a new webhook signing key, for ORCH_WEBHOOK_SIGNING_KEY (keep it secret)."""
    from orchestrator.webhooks.signing import new_signing_key

    print(new_signing_key())
