"""SQL expressions written once and rendered for Postgres or SQLite (the embedded mode).

On Postgres they render exactly as before (the report indexes match ``utc_bucket``'s text); on
SQLite, where timestamps are stored as UTC text (``orchestrator.db.types.UTCDateTime``), they use
SQLite's date functions.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

BUCKET_UNITS = ("day", "week", "month")


class seconds_between(FunctionElement[float]):  # noqa: N801 - used like func.*
    """``end - start`` in seconds (float)."""

    type = Float()
    inherit_cache = True
    name = "seconds_between"

    def __init__(self, start: Any, end: Any) -> None:
        super().__init__(start, end)


@compiles(seconds_between)
def _seconds_between(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"date_part('epoch', {end} - {start})"


@compiles(seconds_between, "sqlite")
def _seconds_between_sqlite(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"((julianday({end}) - julianday({start})) * 86400.0)"


class utc_bucket(FunctionElement[Any]):  # noqa: N801 - used like func.*
    """The UTC day, week or month of an instant. Postgres: ``date_trunc(unit, timezone('UTC',
    moment))`` with literals, the very expression the report indexes are built on (a timestamp).
    SQLite: the bucket as text, ``YYYY-MM-DD`` (a day, or a week's Monday) or ``YYYY-MM``."""

    inherit_cache = True
    name = "utc_bucket"

    def __init__(self, unit: str, moment: Any) -> None:
        if unit not in BUCKET_UNITS:
            raise ValueError(f"unknown time bucket {unit!r}")
        self.unit = unit
        super().__init__(moment)


@compiles(utc_bucket)
def _utc_bucket(element: utc_bucket, compiler: SQLCompiler, **kw: Any) -> str:
    (moment,) = (compiler.process(c, **kw) for c in element.clauses)
    return f"date_trunc('{element.unit}', timezone('UTC', {moment}))"


@compiles(utc_bucket, "sqlite")
def _utc_bucket_sqlite(element: utc_bucket, compiler: SQLCompiler, **kw: Any) -> str:
    (moment,) = (compiler.process(c, **kw) for c in element.clauses)
    if element.unit == "day":
        return f"date({moment})"
    if element.unit == "week":  # the Monday on or before the day, as date_trunc('week') gives
        return f"date({moment}, '-6 days', 'weekday 1')"
    return f"strftime('%Y-%m', {moment})"


class utc_day_value(FunctionElement[Any]):  # noqa: N801 - used like func.*
    """A naive UTC midnight to compare with ``utc_bucket('day', …)``: the value itself on
    Postgres, ``date(value)`` (text) on SQLite."""

    inherit_cache = True
    name = "utc_day_value"

    def __init__(self, value: Any) -> None:
        super().__init__(value)


@compiles(utc_day_value)
def _utc_day_value(element: utc_day_value, compiler: SQLCompiler, **kw: Any) -> str:
    (value,) = (compiler.process(c, **kw) for c in element.clauses)
    return value


@compiles(utc_day_value, "sqlite")
def _utc_day_value_sqlite(element: utc_day_value, compiler: SQLCompiler, **kw: Any) -> str:
    (value,) = (compiler.process(c, **kw) for c in element.clauses)
    return f"date({value})"
