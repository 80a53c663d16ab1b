"""Every setting's addresses: its group and field in the model, its flat key, its env var."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic.fields import FieldInfo

from orchestrator.settings.models import FLAT_KEY, GROUPS, Settings

ENV_PREFIX = "ORCH_"
# fal's own variable, read as it is (fal_client reads it too).
_UNPREFIXED = {"fal_key": "FAL_KEY"}
SECRET_FLAT_KEYS = frozenset({"fal_key", "webhook_signing_key", "console_session_secret"})


@dataclass(frozen=True)
class Entry:
    group: str
    field: str
    flat: str
    info: FieldInfo

    @property
    def env(self) -> str:
        return _UNPREFIXED.get(self.flat, f"{ENV_PREFIX}{self.flat.upper()}")

    @property
    def path(self) -> str:
        return f"{self.group}.{self.field}"


def _entries() -> tuple[Entry, ...]:
    out = []
    for group in GROUPS:
        model = Settings.model_fields[group].annotation
        assert isinstance(model, type)
        for name, info in model.model_fields.items():
            extra = info.json_schema_extra
            assert isinstance(extra, dict), f"{group}.{name} has no flat name"
            out.append(Entry(group, name, str(extra[FLAT_KEY]), info))
    return tuple(out)


ENTRIES: tuple[Entry, ...] = _entries()
BY_FLAT: dict[str, Entry] = {e.flat: e for e in ENTRIES}
BY_PATH: dict[tuple[str, str], Entry] = {(e.group, e.field): e for e in ENTRIES}
assert len(BY_FLAT) == len(ENTRIES), "two settings share a flat name"


def setting_name(key: str) -> str:
    """The environment variable that sets ``key`` (a flat key, or ``group.field``)."""
    if key in BY_FLAT:
        return BY_FLAT[key].env
    group, _, field = key.partition(".")
    if (group, field) in BY_PATH:
        return BY_PATH[(group, field)].env
    return f"{ENV_PREFIX}{key.upper()}"
