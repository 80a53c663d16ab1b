"""API keys for admins: list, create (the key is returned once), revoke."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from orchestrator.auth import keys
from orchestrator.commands.caller import Caller
from orchestrator.db.session import session_scope
from orchestrator.errors import RequestError
from orchestrator.settings import Settings


@dataclass(frozen=True)
class KeyView:
    """A key as it may be shown: never the key itself, nor its hash."""

    name: str
    prefix: str
    admin: bool
    created_at: datetime
    revoked_at: datetime | None


def require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise RequestError("this needs an admin key", forbidden=True)


def list_keys(settings: Settings, caller: Caller) -> list[KeyView]:
    require_admin(caller)
    with session_scope(settings.database.url.get_secret_value()) as session:
        return [KeyView(k.name, k.prefix, k.admin, k.created_at, k.revoked_at)
                for k in keys.list_keys(session)]


def create_key(settings: Settings, caller: Caller, name: str, *, admin: bool = False) -> str:
    """A new key for tenant ``name``: the only time the key itself is available."""
    require_admin(caller)
    with session_scope(settings.database.url.get_secret_value()) as session:
        return keys.create_key(session, name.strip(), admin=admin)


def revoke_key(settings: Settings, caller: Caller, name_or_prefix: str) -> int:
    """Revoke every live key of that name, or the one key with that prefix; how many."""
    require_admin(caller)
    with session_scope(settings.database.url.get_secret_value()) as session:
        return keys.revoke_key(session, name_or_prefix.strip())
