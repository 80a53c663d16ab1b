"""A readable list of every setting, for generated documentation (``catalog()``)."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from orchestrator.settings.models import Settings
from orchestrator.settings.registry import ENTRIES, SECRET_FLAT_KEYS
from orchestrator.settings.secrets import mask_url_password

NO_DEFAULT = "—"

_TYPE_NAMES: dict[Any, str] = {
    int: "integer", float: "number", Decimal: "decimal", bool: "boolean", str: "text",
    Path: "path", SecretStr: "secret",
}


@dataclass(frozen=True)
class SettingDoc:
    env: str
    group: str
    type: str
    default: str
    description: str


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        named = [_type_name(a) for a in args if a is not type(None)]
        optional = " (optional)" if type(None) in args else ""
        return " or ".join(named) + optional
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is list:
        return f"comma-separated list of {_type_name(args[0])}"
    if isinstance(annotation, type):
        for base, name in _TYPE_NAMES.items():
            if issubclass(annotation, base):
                return "URL (password masked)" if name == "secret" and annotation is not SecretStr \
                    else name
    return str(annotation)


def _bounds(info: FieldInfo) -> str:
    found: dict[str, Any] = {}
    for meta in info.metadata:
        for attr in ("ge", "gt", "le", "lt"):
            if getattr(meta, attr, None) is not None:
                found[attr] = getattr(meta, attr)
    low = f"≥ {found['ge']}" if "ge" in found else f"> {found['gt']}" if "gt" in found else ""
    high = f"≤ {found['le']}" if "le" in found else f"< {found['lt']}" if "lt" in found else ""
    return "".join(f", {part}" for part in (low, high) if part)


def render_value(value: Any) -> str:
    if value is None:
        return NO_DEFAULT
    if isinstance(value, SecretStr):
        return mask_url_password(value.get_secret_value()) if type(value) is not SecretStr \
            else NO_DEFAULT
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or NO_DEFAULT
    return str(value)


def catalog() -> list[SettingDoc]:
    """Every setting, in model order: env var, group (its TOML section), readable type and
    default, description. A secret's default is never shown."""
    defaults = Settings()
    docs = []
    for entry in ENTRIES:
        value = getattr(getattr(defaults, entry.group), entry.field)
        default = NO_DEFAULT if entry.flat in SECRET_FLAT_KEYS else render_value(value)
        docs.append(SettingDoc(
            env=entry.env,
            group=entry.group,
            type=_type_name(entry.info.annotation) + _bounds(entry.info),
            default=default,
            description=entry.info.description or "",
        ))
    return docs
