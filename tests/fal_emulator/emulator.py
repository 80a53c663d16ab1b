"""``FalEmulator``: fal's queue API for ``fal-ai/imageutils/rembg``, served over HTTPS on loopback."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.fal_emulator.app import App
from tests.fal_emulator.faults import FaultQueue
from tests.fal_emulator.server import EmulatorHTTPServer
from tests.fal_emulator.state import RequestState, RequestsView, Store, dumps
from tests.fal_emulator.tls import make_tls
from tests.fal_emulator.webhooks import Delivery, WebhookSender, WebhookSigner, webhook_body

TICK_SECONDS = 0.02  # how often pending webhooks are checked for completion


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (another process could still take it: bind soon)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class FalEmulator:
    """See the package docstring for the behaviour; the knobs below can be changed at runtime."""

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        latency: float = 1.0,
        queue_time: float = 0.0,
        inference_time: float | None = None,
        report_metrics: bool = True,
        runners: int | None = None,
        ca_dir: str | Path | None = None,
        *,
        public_host: str | None = None,
        public_roots: bool = False,
        model_threads: int = 4,
        webhook_attempts: int = 10,
        webhook_retry_delay: float = 0.2,
    ) -> None:
        self._bind_host = host
        self._public_name = public_host or host
        self._port = port
        self._ca_dir_arg = Path(ca_dir) if ca_dir is not None else None
        self._public_roots = public_roots
        self._store = Store(
            latency=latency,
            queue_time=queue_time,
            inference_time=inference_time,
            runners=runners,
            public_host=lambda: self.host,
            model_threads=model_threads,
        )
        self._store.report_metrics = report_metrics
        self._store.on_complete = self._on_complete
        self.faults = FaultQueue()
        self.locked_keys: set[str] = set()
        self.valid_keys: set[str] = set()
        self.signer = WebhookSigner()
        self._sender = WebhookSender(
            self.signer, attempts=webhook_attempts, first_delay=webhook_retry_delay
        )
        self.errors: list[str] = []  # tracebacks of emulator bugs hit while serving
        self.stopping = False
        self._server: EmulatorHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._tick_stop = threading.Event()
        self._tmp_ca_dir: str | None = None
        self._ca_file: Path | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FalEmulator:
        if self._server is not None:
            raise RuntimeError("already started")
        if self._ca_dir_arg is None:
            self._tmp_ca_dir = tempfile.mkdtemp(prefix="fal-emulator-ca-")
            ca_dir = Path(self._tmp_ca_dir)
        else:
            ca_dir = self._ca_dir_arg
        tls = make_tls(ca_dir, [self._public_name], public_roots=self._public_roots)
        self._ca_file = tls.ca_file
        self._server = EmulatorHTTPServer((self._bind_host, self._port), App(self), tls.context)
        self._port = int(self._server.server_address[1])
        serve = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fal-emulator-{self._port}",
            daemon=True,
        )
        tick = threading.Thread(target=self._tick, name="fal-emulator-tick", daemon=True)
        self._threads = [serve, tick]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        server = self._server
        if server is None:
            return
        self.stopping = True
        self._tick_stop.set()
        server.shutdown()
        server.close_all()
        deadline = time.monotonic() + 5
        while server.open_connections() and time.monotonic() < deadline:
            time.sleep(0.01)
        server.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._store.close()
        self._sender.close()
        if self._tmp_ca_dir is not None:
            shutil.rmtree(self._tmp_ca_dir, ignore_errors=True)
        self._server = None

    def __enter__(self) -> FalEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _tick(self) -> None:
        while not self._tick_stop.wait(TICK_SECONDS):
            if self._store.webhooks_pending:
                self._store.advance()

    # -- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port == 0:
            raise RuntimeError("port 0 is chosen at start(); start the emulator first")
        return self._port

    @property
    def host(self) -> str:
        """``HOST:PORT``, the value for ``FAL_QUEUE_RUN_HOST``."""
        return f"{self._public_name}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"https://{self.host}"

    @property
    def ca_file(self) -> str:
        """The CA PEM (the value for ``SSL_CERT_FILE``); exists once started."""
        if self._ca_file is None:
            raise RuntimeError("the CA is made at start(); start the emulator first")
        return str(self._ca_file)

    def env(self) -> dict[str, str]:
        return {"FAL_QUEUE_RUN_HOST": self.host, "SSL_CERT_FILE": self.ca_file}

    # -- knobs -------------------------------------------------------------------------------

    @property
    def latency(self) -> float:
        return self._store.latency

    @latency.setter
    def latency(self, value: float) -> None:
        self._store.latency = value

    @property
    def queue_time(self) -> float:
        return self._store.queue_time

    @queue_time.setter
    def queue_time(self, value: float) -> None:
        self._store.queue_time = value

    @property
    def inference_time(self) -> float | None:
        return self._store.inference_time

    @inference_time.setter
    def inference_time(self, value: float | None) -> None:
        self._store.inference_time = value

    @property
    def runners(self) -> int | None:
        return self._store.runners

    @runners.setter
    def runners(self, value: int | None) -> None:
        self._store.set_runners(value)

    @property
    def report_metrics(self) -> bool:
        return self._store.report_metrics

    @report_metrics.setter
    def report_metrics(self, value: bool) -> None:
        self._store.report_metrics = value

    # -- inspection --------------------------------------------------------------------------

    @property
    def ledger(self) -> list[dict[str, Any]]:
        """Accepted (billable) submissions, in order."""
        return self._store.ledger

    @property
    def requests(self) -> RequestsView:
        return RequestsView(self._store)

    @property
    def outcomes(self) -> deque[str]:
        """Per next accepted submission: "ok" (default), "validation_error", "runner_error", "stuck"."""
        return self._store.outcomes

    @property
    def webhooks(self) -> list[Delivery]:
        return self._sender.deliveries

    def output_bytes(self, request_id: str) -> bytes:
        """The PNG served for this request's ``image.url`` (KeyError if it has no output)."""
        req = self.requests[request_id]
        if req.output is None:
            raise KeyError(f"request {request_id} has no output (status {req.status})")
        return req.output.png

    def describe(self, req: RequestState) -> dict[str, Any]:
        w = self._store.wall
        return {
            "request_id": req.request_id,
            "endpoint": req.endpoint,
            "status": req.status,
            "outcome": req.outcome,
            "error": req.error,
            "error_type": req.error_type,
            "inference_time": req.inference_time,
            "cancelled": req.cancelled,
            "ran": req.ran,
            "submitted_at": w(req.submitted_at),
            "started_at": w(req.started_at),
            "completed_at": w(req.completed_at),
        }

    def reset(self) -> None:
        self._store.reset()
        self.faults.clear()
        self._sender.clear()
        self.errors.clear()

    # -- webhooks ----------------------------------------------------------------------------

    def _on_complete(self, req: RequestState) -> None:
        if not req.webhook_url or req.webhook_sent or self.stopping or req.result is None:
            return
        req.webhook_sent = True
        body = webhook_body(req.request_id, req.result.status_code, req.result.body)
        self._sender.send(req.request_id, req.webhook_url, dumps(body))
