"""JSON log lines: job context on every line, secrets masked in messages, args and tracebacks."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from orchestrator.observability.logs import (
    Redactor,
    bind,
    configure_logging,
    log_context,
    secret_values,
)
from orchestrator.settings import load_settings

FAL_KEY = "fal-key-id-1234:fal-key-secret-abcdef"
SIGNING = "c2lnbmluZy1rZXktY2FuYXJ5LXNlZWQtMzItYnl0ZXMhIQ"
DB_PASSWORD = "db-pass-w0rd"
BROKER_PASSWORD = "broker-pass-w0rd"


@pytest.fixture
def capture() -> Iterator[io.StringIO]:
    settings = load_settings(
        fal_key=FAL_KEY,
        webhook_signing_key=SIGNING,
        database_url=f"postgresql+psycopg://app:{DB_PASSWORD}@db:5432/orch",
        broker_url=f"redis://default:{BROKER_PASSWORD}@redis:6379/0",
    )
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    configure_logging(settings, fmt="json", level="DEBUG", stream=stream)
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_line_is_json_with_the_context_keys(capture: io.StringIO) -> None:
    log = logging.getLogger("orchestrator.test")
    log.info("outside any job")
    with log_context(job_id="j-1", backend="local"):
        log.info("claimed")
        bind(attempt=2)
        log.warning("attempt %d failed", 2)
        with log_context(request_id="req-9"):
            log.info("inner")
    log.info("after")
    lines = _lines(capture)
    assert [line["message"] for line in lines] == [
        "outside any job", "claimed", "attempt 2 failed", "inner", "after"]
    for line in lines:
        assert {"ts", "level", "logger", "message", "job_id", "attempt", "backend",
                "request_id", "pid"} <= set(line)
    assert lines[0]["job_id"] is None and lines[4]["job_id"] is None  # the context ended
    assert (lines[1]["job_id"], lines[1]["backend"], lines[1]["attempt"]) == ("j-1", "local", None)
    assert lines[2]["attempt"] == 2 and lines[2]["level"] == "WARNING"
    assert lines[3]["request_id"] == "req-9" and lines[3]["attempt"] == 2


def test_context_belongs_to_its_thread(capture: io.StringIO) -> None:
    log = logging.getLogger("orchestrator.test")
    with log_context(job_id="main-job"):
        thread = threading.Thread(target=lambda: log.info("from another thread"))
        thread.start()
        thread.join()
    [line] = _lines(capture)
    assert line["job_id"] is None


def test_secrets_are_masked_in_messages_args_and_tracebacks(capture: io.StringIO) -> None:
    log = logging.getLogger("orchestrator.test")
    api_key = "orch_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0U1v"
    log.info("key %s", FAL_KEY)
    log.info("secret half only: fal-key-secret-abcdef")
    log.info("signing %s", SIGNING)
    log.info("db postgresql+psycopg://app:%s@db:5432/orch", DB_PASSWORD)
    log.info("broker %s", f"redis://default:{BROKER_PASSWORD}@redis:6379/0")
    log.info("other url https://user:hunter2hunter2@example.com/x")
    log.info("header Authorization: Key %s and %s", "some-caller-key-123456", api_key)
    try:
        raise RuntimeError(f"boom with {FAL_KEY}")
    except RuntimeError:
        log.exception("failed")
    text = capture.getvalue()
    for secret in (FAL_KEY, "fal-key-secret-abcdef", "fal-key-id-1234", SIGNING, DB_PASSWORD,
                   BROKER_PASSWORD, "hunter2hunter2", api_key, "some-caller-key-123456"):
        assert secret not in text, secret
    lines = _lines(capture)
    assert lines[0]["message"] == "key ***"
    assert "***" in str(lines[-1]["exc"]) and "RuntimeError" in str(lines[-1]["exc"])


def test_secret_values_come_from_every_secret_setting() -> None:
    settings = load_settings(
        fal_key=FAL_KEY, webhook_signing_key=SIGNING,
        database_url=f"postgresql://app:{DB_PASSWORD}@db/orch",
        broker_url=f"redis://:{BROKER_PASSWORD}@redis:6379/0",
    )
    values = secret_values(settings)
    assert {FAL_KEY, SIGNING, DB_PASSWORD, BROKER_PASSWORD} <= set(values)
    assert Redactor(values)(f"x {DB_PASSWORD} y") == "x *** y"


def test_text_format_keeps_the_context(capture: io.StringIO) -> None:
    settings = load_settings(fal_key=FAL_KEY)
    stream = io.StringIO()
    configure_logging(settings, fmt="text", level="INFO", stream=stream)
    with log_context(job_id="j-7", attempt=1, backend="fal", request_id="r-1"):
        logging.getLogger("orchestrator.test").info("using %s", FAL_KEY)
    line = stream.getvalue().strip()
    assert line.endswith("using *** [job_id=j-7 attempt=1 backend=fal request_id=r-1]")


def test_secret_query_parameters_are_masked() -> None:
    """Issue 14.1's second defence: result tokens and webhook URLs in any line are masked."""
    redact = Redactor()
    assert redact("GET /v1/jobs/j/result?token=1764.abcDEF_123 200") == (
        "GET /v1/jobs/j/result?token=*** 200"
    )
    assert redact("POST /fal-ai/imageutils/rembg?fal_webhook=https%3A%2F%2Fh%2Fx&a=1") == (
        "POST /fal-ai/imageutils/rembg?fal_webhook=***&a=1"
    )
    assert redact("see https://s3/x.png?X-Amz-Signature=cafe&b=2") == (
        "see https://s3/x.png?X-Amz-Signature=***&b=2"
    )
    assert redact("job_id=abc backend=local") == "job_id=abc backend=local"


def test_text_lines_cannot_be_forged_with_control_characters() -> None:
    """Issue 14.6: a newline a caller put in a path or a value is escaped, not written."""
    settings = load_settings(fal_key=FAL_KEY)
    stream = io.StringIO()
    configure_logging(settings, fmt="text", level="INFO", stream=stream)
    forged = "/x\n2026-01-01 00:00:00,000 INFO orchestrator.api.access: GET /admin 200\r\x1b[2J\u2028"
    with log_context(job_id="j\nfake"):
        logging.getLogger("orchestrator.test").info("GET %s 404", forged)
    text = stream.getvalue()
    assert text.count("\n") == 1 and "\r" not in text and "\x1b" not in text
    assert "\u2028" not in text
    assert "/x\\x0a2026-01-01" in text and "\\x0d\\x1b[2J\\u2028 404" in text
    assert "job_id=j\\x0afake" in text
