"""Structured logs: one JSON object per line, carrying the job's context, secrets masked.

Every record gets ``job_id``, ``attempt``, ``backend`` and ``request_id`` from context
variables that the code running a job sets with :func:`log_context` (``request_id`` is the
HTTP request's id in the API and fal's request id in a fal worker), plus the Celery task id
when a task is running. Known secret values (FAL_KEY, the webhook signing key, passwords in the
database and broker URLs), API keys and ``Authorization`` values are masked in every line, as
defence in depth: the code does not log them in the first place.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, TextIO
from urllib.parse import unquote, urlsplit

from celery._state import get_current_task

from orchestrator.settings import Settings

CONTEXT_FIELDS = ("job_id", "attempt", "backend", "request_id")
MASK = "***"
LogFormat = Literal["json", "text"]

_context: ContextVar[dict[str, object]] = ContextVar("orchestrator_log_context", default={})


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add fields to every log record made inside the block (this thread or task only)."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: object) -> None:
    """Add fields learnt later inside a :func:`log_context` block (undone when it ends)."""
    _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})


def current_context() -> dict[str, object]:
    return dict(_context.get())


# The orchestrator's tasks take the job id as their first argument.
JOB_TASKS = frozenset({"orchestrator.run_job", "orchestrator.deliver_webhook"})
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _celery_task() -> dict[str, Any]:
    """The running Celery task's id, and for a job task its job id and queue (backend)."""
    task = get_current_task()
    request = getattr(task, "request", None) if task is not None else None
    if request is None or not getattr(request, "id", None):
        return {}
    found: dict[str, Any] = {"task_id": str(request.id)}
    args = getattr(request, "args", None) or ()
    if getattr(task, "name", None) in JOB_TASKS and args:
        found["job_id"] = str(args[0])
        found["backend"] = (getattr(request, "delivery_info", None) or {}).get("routing_key")
    return found


def _celery_record(record: logging.LogRecord) -> dict[str, Any]:
    """Celery's own task lines ("received", "succeeded", …) carry the task in ``data``."""
    data = getattr(record, "data", None)
    if not isinstance(data, dict) or data.get("name") not in JOB_TASKS:
        return {}
    match = _UUID.search(str(data.get("args", "")))
    return {"task_id": data.get("id"), "job_id": match.group(0) if match else None}


class ContextFilter(logging.Filter):
    """Copies the job context (and the running Celery task's id) onto each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        found = {**_celery_record(record), **_celery_task(), **_context.get()}
        for name in (*CONTEXT_FIELDS, "task_id"):
            if getattr(record, name, None) is None:
                setattr(record, name, found.get(name))
        return True


# API keys as `orchestrator keys create` makes them: "orch_" + token_urlsafe(32).
_API_KEY = re.compile(r"orch_[A-Za-z0-9_\-]{20,}")
_AUTH_VALUE = re.compile(r"(?i)\b((?:key|bearer)\s+)[A-Za-z0-9_\-.:=+/]{8,}")
_URL_PASSWORD = re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]*:)[^@\s/]+@")
# Query parameters that carry secrets: result-link tokens, webhook URLs (which may carry their
# receiver's own secret), signed-URL signatures. A second defence: access lines have no query.
_SECRET_PARAM = re.compile(
    r"(?i)((?:^|[?&;\s\"'])(?:[a-z0-9_\-]*token|fal_webhook|signature|x-amz-signature|"
    r"x-goog-signature|sig|api_key|access_key|secret|password)=)[^&\s\"']+"
)


def url_password(url: str) -> str | None:
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


def secret_values(settings: Settings) -> list[str]:
    """Every secret value the settings hold, as it could appear in text."""
    values: list[str] = []
    for secret in (settings.fal.key, settings.api.webhook_signing_key, settings.api.metrics_key):
        if secret is not None and secret.get_secret_value():
            text = secret.get_secret_value()
            values.append(text)
            # fal keys are "key_id:key_secret"; either half alone is still a secret.
            values.extend(part for part in text.split(":") if len(part) >= 8)
    for url in (settings.database.url.get_secret_value(), settings.broker.url.get_secret_value()):
        password = url_password(url)
        if password:
            values.append(password)
    return values


class Redactor:
    """Masks known secret values and anything shaped like an API key or auth header."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Short values would mask ordinary words; longest first so a part never hides its whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        # Each pattern needs a literal its match contains: a line without it skips the regex
        # (an access line, written per request, has none of the three).
        if "@" in text:
            text = _URL_PASSWORD.sub(rf"\1{MASK}@", text)
        if "=" in text:
            text = _SECRET_PARAM.sub(rf"\1{MASK}", text)
        if "orch_" in text:
            text = _API_KEY.sub("orch_" + MASK, text)
        return _AUTH_VALUE.sub(rf"\1{MASK}", text)


class RedactFilter(logging.Filter):
    """Renders each record's message with its arguments, masked, before any formatter sees it."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redact = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let the handler report it as usual
            return True
        record.msg = self.redact(message)
        record.args = None
        record.redacted = True  # the formatters need not mask the message again
        return True


def _message(record: logging.LogRecord, redact: Redactor) -> str:
    message = record.getMessage()
    return message if getattr(record, "redacted", False) else redact(message)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the context keys are always present (null when unknown)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redact = redactor

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record, self.redact),
        }
        for name in CONTEXT_FIELDS:
            payload[name] = getattr(record, name, None)
        payload["task_id"] = getattr(record, "task_id", None)
        payload["pid"] = record.process
        if record.exc_info:
            payload["exc"] = self.redact(self.formatException(record.exc_info))
        elif record.exc_text:
            payload["exc"] = self.redact(record.exc_text)
        if record.stack_info:
            payload["stack"] = self.redact(self.formatStack(record.stack_info))
        return json.dumps(payload, default=str, ensure_ascii=False)


# Control characters (and Unicode line breaks) shown as escapes in text lines, so a value a
# caller chose (a path with %0a, a header) cannot end the line and forge the next one.
_CONTROLS = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in (*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029)
}


def escape_controls(text: str) -> str:
    return text.translate(_CONTROLS)


class TextFormatter(logging.Formatter):
    """Human text with the context appended, masked like the JSON lines. The message and the
    context are one line each (control characters escaped); only a traceback spans lines."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redact = redactor

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ctx = " ".join(
            f"{name}={escape_controls(str(getattr(record, name)))}"
            for name in (*CONTEXT_FIELDS, "task_id")
            if getattr(record, name, None) is not None
        )
        return self.redact(f"{text} [{ctx}]" if ctx else text)


_HANDLER_NAME = "orchestrator"


def configure_logging(
    settings: Settings,
    *,
    fmt: LogFormat | None = None,
    level: str | int | None = None,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every log record (the root logger's) through one handler in the chosen format."""
    redactor = Redactor(secret_values(settings))
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactFilter(redactor))
    chosen = fmt or settings.logs.format
    handler.setFormatter(JsonFormatter(redactor) if chosen == "json" else TextFormatter(redactor))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if level is not None else settings.logs.level)
    # Libraries that log through their own handlers (uvicorn, celery) propagate to the root.
    for name in ("uvicorn", "uvicorn.error", "celery", "celery.task"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    # uvicorn's access line carries the query string (result tokens, fal_webhook URLs) and is
    # on by default under `uvicorn --factory …app_factory`; the API's own access line
    # (orchestrator.api.request_log) has the path only, and the request id.
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = False
    access.disabled = True
    logging.captureWarnings(True)
    return handler
