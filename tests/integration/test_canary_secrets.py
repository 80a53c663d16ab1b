"""Canary secrets: a distinct value in every secret-bearing setting, a real run through the API,
a local and a fal worker (the fal emulator injecting faults), webhooks and error replies; then
every log line, every value written to the run's Redis DB, every value in every table and every
error body is searched for the canaries: zero hits.

Secrets in play: FAL_KEY, two API keys, ORCH_WEBHOOK_SIGNING_KEY, and passwords in the database
URL (the test server trusts local connections, so it ignores it) and in the broker URL (sent
as ``AUTH default …``, which a Redis without passwords accepts).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from orchestrator.jobs.states import JobState
from orchestrator.webhooks.signing import new_signing_key
from tests.conftest import run_cli
from tests.fal_emulator import FalEmulator, Fault
from tests.integration.test_api import Api, tls  # noqa: F401  (tls: fixture)
from tests.support.db import load_jobs, wait_for_state
from tests.support.images import data_uri, numbered_png
from tests.support.wait import wait_for_log, wait_until

FAL_KEY = "canary-fal-id-5Tq8:canary-fal-secret-Wz3kP7"
DB_PASSWORD = "canary-db-pw-Lm4Rx9"
BROKER_PASSWORD = "canary-broker-pw-Hv6Nc2"


class RedisRecorder(threading.Thread):
    """Every command sent to the run's Redis DB while the test runs (Redis's MONITOR)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        # No read timeout (redis-py's default is 5 s): a quiet spell, such as a worker
        # starting, must not end the recording.
        self.client = redis.Redis.from_url(url, socket_timeout=None)
        self.db = int(url.rsplit("/", 1)[1])
        self.commands: list[str] = []
        self.ready = threading.Event()
        self._monitor: Any = None

    def run(self) -> None:
        try:
            with self.client.monitor() as monitor:
                self._monitor = monitor
                self.ready.set()
                for entry in monitor.listen():
                    if int(entry.get("db", -1)) == self.db:
                        self.commands.append(str(entry.get("command", "")))
        except Exception:  # the connection is closed to stop it
            pass

    def stop(self) -> None:
        if self._monitor is not None:
            self._monitor.connection.disconnect()
        self.join(timeout=5)


def _with_password(url: str, user: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    rest = rest.split("@", 1)[1] if "@" in rest else rest
    return f"{scheme}://{user}:{password}@{rest}"


def _decoded(text: str) -> Iterator[str]:
    """The text and every base64 token in it decoded (Celery message bodies are base64)."""
    yield text
    for token in re.findall(r"[A-Za-z0-9+/=_-]{24,}", text):
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                yield decode(token + "=" * (-len(token) % 4)).decode("utf-8", "replace")
            except (binascii.Error, ValueError):
                pass


def _hits(canaries: list[str], where: str, text: str) -> list[str]:
    found = []
    for piece in _decoded(text):
        found += [f"{where}: {c[:12]}…" for c in canaries if c in piece]
    return found


def _redis_dump(url: str) -> Iterator[tuple[str, str]]:
    client = redis.Redis.from_url(url)
    for key in client.scan_iter("*"):
        kind = client.type(key).decode()
        value: Any
        if kind == "string":
            value = client.get(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "set":
            value = client.smembers(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        else:
            value = kind
        yield key.decode(), f"{key!r} {value!r}"


def _database_dump(url: str) -> Iterator[tuple[str, str]]:
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                parts = []
                for value in row:
                    if isinstance(value, (bytes, memoryview)):
                        parts.append(bytes(value).decode("utf-8", "replace"))
                    elif isinstance(value, (dict, list)):
                        parts.append(json.dumps(value))
                    else:
                        parts.append(str(value))
                yield table, "\x1f".join(parts)


@pytest.mark.slow
def test_no_secret_leaks_anywhere(env: dict[str, str], start_worker, tls: dict[str, str],  # noqa: F811
                                  tmp_path: Path) -> None:
    signing_key = new_signing_key()
    emulator = FalEmulator(latency=0.2)
    emulator.start()
    recorder = RedisRecorder(env["ORCH_BROKER_URL"])
    recorder.start()
    assert recorder.ready.wait(5)
    received: list[bytes] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    run_env = {
        **env,
        **emulator.env(),
        "ORCH_DATABASE_URL": _with_password(env["ORCH_DATABASE_URL"], "postgres", DB_PASSWORD),
        "ORCH_BROKER_URL": _with_password(env["ORCH_BROKER_URL"], "default", BROKER_PASSWORD),
        "FAL_KEY": FAL_KEY,
        "ORCH_WEBHOOK_SIGNING_KEY": signing_key,
        "ORCH_FAL_POLL_INITIAL_SECONDS": "0.1",
        "ORCH_FAL_POLL_MAX_SECONDS": "0.3",
        "ORCH_LOG_LEVEL": "DEBUG",  # the most the code ever logs
    }
    outputs: dict[str, str] = {}
    bodies: list[str] = []
    api = None
    try:
        created = run_cli(run_env, "keys", "create", "canary-tenant")
        admin = run_cli(run_env, "keys", "create", "canary-admin", "--admin")
        assert created.returncode == 0 and admin.returncode == 0, created.stderr + admin.stderr
        key, admin_key = created.stdout.strip(), admin.stdout.strip()
        canaries = [FAL_KEY, *FAL_KEY.split(":"), DB_PASSWORD, BROKER_PASSWORD, signing_key,
                    key, admin_key]
        outputs["keys create (stderr)"] = created.stderr + admin.stderr

        worker = start_worker("--queues", "local,fal", "--concurrency", "1", extra_env=run_env,
                              ready=False)
        wait_for_log(worker, "local backend ready", "fal poller running", timeout=90)
        api = Api(run_env, tls, tmp_path / "api.log")
        hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
        with api.client(key) as c, api.client(admin_key) as a:
            local_id = c.post("/fal-ai/imageutils/rembg", params={"fal_webhook": hook},
                              json={"image_url": data_uri(numbered_png(1, (70, 50)))}).json()["request_id"]
            # fal refuses the first submit (500) and rate-limits a status call, then the run
            # fails at fal's runner once and is retried.
            emulator.faults.add("submit", Fault("http_500"))
            emulator.faults.add("status", Fault("http_429"))
            emulator.outcomes.append("runner_error")
            fal_id = c.post("/fal-ai/imageutils/rembg", headers={"X-Orchestrator-Backend": "fal"},
                            json={"image_url": data_uri(numbered_png(2, (70, 50)))}).json()["request_id"]
            for job_id in (local_id, fal_id):
                wait_for_state(run_env["ORCH_DATABASE_URL"], job_id, {JobState.SUCCEEDED}, 90)
            assert c.get(f"/fal-ai/imageutils/requests/{fal_id}").status_code == 200
            # Error replies, each sent with a real key in its Authorization header.
            errors = [
                c.post("/fal-ai/imageutils/rembg", json={"image_url": "not a url"}),
                c.post("/fal-ai/imageutils/rembg", json={"image_url": "http://10.0.0.1/x.png"}),
                c.post("/fal-ai/imageutils/rembg", content=b"{not json",
                       headers={"content-type": "application/json"}),
                c.get("/fal-ai/imageutils/requests/00000000-0000-0000-0000-000000000000/status"),
                c.put(f"/fal-ai/imageutils/requests/{local_id}/cancel"),
                c.get("/v1/jobs", params={"state": "bogus"}),
                c.get(f"/v1/jobs/{local_id}/result", params={"token": "wrong"}),
                c.post(f"/v1/jobs/{local_id}/retry"),
                a.get("/v1/jobs/not-a-uuid"),
            ]
            with api.client(key + "x") as wrong, api.client(None) as anonymous:
                errors += [wrong.get("/v1/jobs"), anonymous.get("/v1/jobs")]
            with api.client(f"{FAL_KEY}") as fal_key_as_api_key:
                errors.append(fal_key_as_api_key.get("/v1/jobs"))
            assert all(r.status_code >= 400 for r in errors), [r.status_code for r in errors]
            bodies += [r.text for r in errors]
            # fal locks the key: the job fails with a credentials error, stored and logged.
            emulator.locked_keys.add(FAL_KEY)
            locked_id = c.post("/fal-ai/imageutils/rembg",
                               headers={"X-Orchestrator-Backend": "fal"},
                               json={"image_url": data_uri(numbered_png(3, (70, 50)))}).json()["request_id"]
            wait_for_state(run_env["ORCH_DATABASE_URL"], locked_id, {JobState.FAILED}, 60)
            locked = c.get(f"/fal-ai/imageutils/requests/{locked_id}")
            assert locked.status_code >= 400
            bodies.append(locked.text)
            bodies.append(c.get(f"/fal-ai/imageutils/requests/{locked_id}/status").text)
            refused = c.post("/fal-ai/imageutils/rembg", headers={"X-Orchestrator-Backend": "fal"},
                             json={"image_url": data_uri(numbered_png(4, (70, 50)))})
            bodies.append(refused.text)
        wait_until(lambda: received, timeout=30, what="the job's webhook")
        for name, args in {"jobs show": ["jobs", "show", fal_id, "--json"],
                           "jobs show locked": ["jobs", "show", locked_id, "--json"],
                           "jobs list": ["jobs", "list", "--json"],
                           "workers": ["workers", "--json"],
                           "submit": ["submit", str(tmp_path / "missing.png"), "--json"]}.items():
            out = run_cli(run_env, *args)
            outputs[name] = out.stdout + out.stderr
        [health] = [json.loads(line) for line in outputs["workers"].splitlines()
                    if line.startswith("{")]
        [proc] = health["processes"]
        assert health["ok"] and proc["pollers"] == ["fal"] and proc["poller_silent_seconds"] < 30, health
        # The secrets were really used: fal saw FAL_KEY, the retries and the lock happened.
        assert any(e["auth"] == f"Key {FAL_KEY}" for e in emulator.ledger)
        assert len(emulator.ledger) >= 2
        assert {op for op, _ in emulator.faults.fired} == {"submit", "status"}
        failed = next(j for j in load_jobs(env["ORCH_DATABASE_URL"]) if str(j.id) == locked_id)
        assert failed.error_code == "credentials_refused", failed.error_message
    finally:
        if api is not None:
            api.stop()
        recorder.stop()
        receiver.shutdown()
        receiver.server_close()
        emulator.stop()
    worker.stop()

    worker_log = worker.text()
    api_log = (tmp_path / "api.log").read_text()
    # The logs are JSON lines with context (Celery's shutdown notice aside) and saw the run.
    api_lines = [json.loads(line) for line in api_log.splitlines() if line.strip()]
    assert any(line["request_id"] and line["logger"] == "orchestrator.api.access"
               for line in api_lines)
    worker_lines = [json.loads(line) for line in worker_log.splitlines() if line.startswith("{")]
    others = [line for line in worker_log.splitlines() if line.strip() and not line.startswith("{")]
    assert all(re.fullmatch(r"worker: \w+ shutdown \(MainProcess\)", o) for o in others), others
    assert any(line["job_id"] == fal_id and line["request_id"] for line in worker_lines)

    hits: list[str] = []
    hits += _hits(canaries, "worker log", worker_log)
    hits += _hits(canaries, "API log", api_log)
    for name, text in outputs.items():
        hits += _hits(canaries, f"CLI {name}", text)
    for body in bodies:
        hits += _hits(canaries, "error body", body)
    for body in received:
        hits += _hits(canaries, "webhook body", body.decode())
    assert len(recorder.commands) > 20  # the recorder saw the run's traffic
    for command in recorder.commands:
        hits += _hits(canaries, "Redis command", command)
    redis_keys = 0
    for key_name, text in _redis_dump(env["ORCH_BROKER_URL"]):
        redis_keys += 1
        hits += _hits(canaries, f"Redis {key_name}", text)
    rows: dict[str, int] = {}
    for table, text in _database_dump(env["ORCH_DATABASE_URL"]):
        rows[table] = rows.get(table, 0) + 1
        hits += _hits(canaries, f"table {table}", text)
    assert rows.get("jobs", 0) >= 3 and rows.get("api_keys") == 2 and rows.get("attempts", 0) >= 4
    assert redis_keys >= 1
    assert hits == []
