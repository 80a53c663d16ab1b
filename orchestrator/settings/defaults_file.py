"""The bundled defaults file, generated from the model.

Why generated: the model (``models.py``) is the one place defaults are written. The product
contract still promises "committed defaults in ``config/``" under ``ORCH_CONFIG`` and the
environment, so ``orchestrator/settings/defaults.toml`` is rendered from the model, shipped as
package data (read through ``importlib.resources``, so an installed wheel has it) and read as
the lowest layer; ``config/orchestrator.toml`` is a symlink to it, not a copy. A unit test fails
when the file differs from what the model renders, so the two cannot drift; regenerate with
``python -m orchestrator.settings.defaults_file --write``.
"""

from __future__ import annotations

import sys
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from orchestrator.settings.loading import BUNDLED_DEFAULTS_NAME
from orchestrator.settings.models import GROUPS, Settings
from orchestrator.settings.registry import ENTRIES, SECRET_FLAT_KEYS

HEADER = """\
# GENERATED from orchestrator/settings/models.py — do not edit; regenerate with
#   python -m orchestrator.settings.defaults_file --write
# The committed defaults. Override them with a TOML file named by ORCH_CONFIG (the same
# [sections], or the flat keys of before, e.g. max_attempts = 6), then with environment
# variables (each setting's variable is named above it; fal's key is FAL_KEY)."""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (Decimal, Path, str)):
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'
    if isinstance(value, SecretStr):
        return _toml_value(value.get_secret_value())
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def render() -> str:
    """The defaults file as the model defines it."""
    defaults = Settings()
    parts = [HEADER]
    for group in GROUPS:
        parts.append(f"\n[{group}]")
        for entry in (e for e in ENTRIES if e.group == group):
            value = getattr(getattr(defaults, group), entry.field)
            for line in textwrap.wrap(entry.info.description or "", 96):
                parts.append(f"# {line}")
            parts.append(f"# env: {entry.env}")
            if value is None or entry.flat in SECRET_FLAT_KEYS:
                parts.append(f"# {entry.field} = (unset)")
            else:
                parts.append(f"{entry.field} = {_toml_value(value)}")
    return "\n".join(parts) + "\n"


def source_path() -> Path:
    """The defaults file in a source tree (the one to regenerate)."""
    return Path(__file__).resolve().parent / BUNDLED_DEFAULTS_NAME


def main(argv: list[str]) -> int:
    text = render()
    if "--write" in argv:
        source_path().write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
