from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from rich.console import Console

from orchestrator.commands.caller import Caller

console = Console()
console_err = Console(stderr=True)

# The CLI is the operator's tool on the database itself: it acts on every tenant's jobs.
OPERATOR = Caller.operator()


def _default(value: Any) -> Any:
    if isinstance(value, (datetime,)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")  # plain digits: str() would give "0E-9"
    if isinstance(value, UUID):
        return str(value)
    if hasattr(value, "value"):
        return value.value
    raise TypeError(f"cannot serialise {type(value).__name__}")


def print_json(obj: Any) -> None:
    """One JSON object per line on stdout."""
    print(json.dumps(obj, default=_default, sort_keys=True))
