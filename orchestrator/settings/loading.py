"""Reading settings: the bundled defaults file, the ``ORCH_CONFIG`` file, the environment, and
keyword overrides, in that order of precedence (lowest first), into one :class:`Settings`.

Every layer is first reduced to ``{(group, field): raw value}``; the model validates the merged
result once, so an error names the environment variable whichever layer the value came from.
TOML files may use ``[group]`` sections with the grouped field names, or the flat keys of
before the grouping (``max_attempts = 6``) at the top level; both work, in one file too.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchestrator.errors import ConfigError
from orchestrator.settings.models import GROUPS, Settings
from orchestrator.settings.registry import BY_FLAT, BY_PATH, ENTRIES, Entry

CONFIG_ENV = "ORCH_CONFIG"
BUNDLED_DEFAULTS_NAME = "defaults.toml"

Layer = dict[tuple[str, str], Any]


def bundled_defaults() -> Traversable:
    """The defaults file shipped inside the package (also in an installed wheel)."""
    return resources.files("orchestrator.settings") / BUNDLED_DEFAULTS_NAME


def _from_mapping(data: Mapping[str, Any], where: str) -> Layer:
    """Flat keys and ``{group: {field: value}}`` sections to one layer; unknown keys refused."""
    layer: Layer = {}
    unknown: list[str] = []

    def put(entry: Entry, value: Any, spelled: str) -> None:
        key = (entry.group, entry.field)
        if key in layer:
            raise ConfigError(f"{where} sets {entry.env} twice (as {spelled} too)")
        layer[key] = value

    for name, value in data.items():
        if name in GROUPS and isinstance(value, Mapping):
            for field, inner in value.items():
                entry = BY_PATH.get((name, field))
                if entry is None:
                    unknown.append(f"{name}.{field}")
                else:
                    put(entry, inner, f"{name}.{field}")
        elif name in BY_FLAT:
            put(BY_FLAT[name], value, name)
        else:
            unknown.append(name)
    if unknown:
        raise ConfigError(f"unknown setting(s) in {where}: {', '.join(sorted(unknown))}")
    return layer


def _read_toml(text: str, where: str) -> Layer:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None
    return _from_mapping(data, where)


@lru_cache(maxsize=1)
def _bundled_layer() -> Layer:
    source = bundled_defaults()
    return _read_toml(source.read_text(encoding="utf-8"), f"the bundled {BUNDLED_DEFAULTS_NAME}")


def _file_layer(environ: Mapping[str, str]) -> Layer:
    extra = environ.get(CONFIG_ENV)
    if not extra:
        return {}
    path = Path(extra)
    if not path.is_file():
        raise ConfigError(f"{CONFIG_ENV} names a file that does not exist: {extra}")
    return _read_toml(path.read_text(encoding="utf-8"), f"{CONFIG_ENV} file {extra}")


def _env_layer(environ: Mapping[str, str]) -> Layer:
    # Matched without regard to case, as pydantic-settings did.
    upper = {name.upper(): value for name, value in environ.items()}
    return {(e.group, e.field): upper[e.env] for e in ENTRIES if e.env in upper}


def _describe(errors: Iterable[Any]) -> str:
    problems = []
    for err in errors:
        loc = [str(part) for part in err["loc"]]
        entry = BY_PATH.get((loc[0], loc[1])) if len(loc) >= 2 else None
        if entry is not None:
            problems.append(f"{entry.env} ({entry.flat}): {err['msg']}")
        else:
            problems.append(f"{'.'.join(loc) or '?'}: {err['msg']}")
    return "; ".join(problems)


def load_settings(**overrides: object) -> Settings:
    """Settings from every layer; ``overrides`` win. They take the flat names of before the
    grouping (``max_attempts=3``, ``fal_key=…``) or a group's dict (``fal={"poll_batch": 9}``).
    A bad value raises :class:`ConfigError` naming its environment variable."""
    environ = os.environ
    merged: Layer = {}
    for layer in (_bundled_layer(), _file_layer(environ), _env_layer(environ),
                  _from_mapping(overrides, "load_settings() arguments")):
        merged.update(layer)
    nested: dict[str, dict[str, Any]] = {}
    for (group, field), value in merged.items():
        nested.setdefault(group, {})[field] = value
    try:
        return Settings.model_validate(nested)
    except ValidationError as exc:
        raise ConfigError("invalid settings: " + _describe(exc.errors())) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
