"""``orchestrator dev``: API, worker, database and broker on this machine in one command.

Without ``ORCH_DATABASE_URL`` / ``ORCH_BROKER_URL`` it uses SQLite files in the data folder
(the database, and kombu's SQLAlchemy transport as the broker), so nothing needs installing;
with them set it uses those servers. Either way it runs the production commands —
``orchestrator api`` over TLS and ``orchestrator worker --queues local``, whose main process
runs the reconciler (or ``orchestrator reconcile --loop`` as a third child when
``ORCH_RECONCILE_IN_WORKER`` is off) — as child processes, and stops them all on Ctrl-C.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import IO, Annotated

import typer
from kombu.utils.url import maybe_sanitize_url

from orchestrator import backends
from orchestrator.cli.common import console_err
from orchestrator.dev.data_dir import DEFAULT_DATA_DIR, DataDir
from orchestrator.dev.supervisor import Child, Supervisor
from orchestrator.errors import ConfigError

API_READY_TIMEOUT_SECONDS = 90.0
# The worker loads and warms its model before it takes jobs; past this, dev says it is late.
WORKER_READY_TIMEOUT_SECONDS = 300.0
# Warm shutdown: a worker finishes the job it is running before it exits.
STOP_TIMEOUT_SECONDS = 60.0
EXIT_CHILD_DIED = 1


def dev(
    port: Annotated[int, typer.Option(help="HTTPS port of the API.", min=1, max=65535)] = 8443,
    workers: Annotated[
        int | None,
        typer.Option(help="Local worker processes (default: one per inference slot).", min=1),
    ] = None,
    data_dir: Annotated[
        Path, typer.Option(help="Folder for the database, broker, TLS files, API key and logs.")
    ] = DEFAULT_DATA_DIR,
    host: Annotated[str, typer.Option(help="Address the API listens on.")] = "127.0.0.1",
    print_env: Annotated[
        bool,
        typer.Option("--print-env", help="Print `export` lines that point other orchestrator "
                     "commands at this data folder, and exit."),
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="When ready, print the connection details as JSON.")
    ] = False,
) -> None:
    """The embedded default: API + worker + database + broker, nothing to install."""
    data = DataDir.at(data_dir)
    urls = data.environment(os.environ)
    if print_env:
        for name, value in urls.items():
            print(f"export {name}={shlex.quote(value)}")
        return

    # Everything this run and its children create (database, broker, logs, TLS files) is the
    # owner's only; what an earlier run or `mkdir -p` left is fixed by create() (issue 14.8).
    os.umask(0o077)
    data.create()
    lock = _lock(data)
    os.environ.update(urls)  # this process (migrate, key) and its children use the same URLs
    from orchestrator.settings import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    _check_port_free(host, port)

    from orchestrator.db.migrate import upgrade
    from orchestrator.dev.credentials import ensure_api_key, ensure_signing_key
    from orchestrator.dev.tls import ensure_certificates
    from orchestrator.queue.broker import is_redis, prepare_sqlite_broker
    from orchestrator.queue.prepare import prepare_broker

    prepare_broker()  # this process prepares the embedded broker; its children start their own
    upgrade(settings.database.url.get_secret_value())
    if settings.broker.url.get_secret_value() == data.broker_url():
        prepare_sqlite_broker(settings.broker.url.get_secret_value())
    key = ensure_api_key(data, settings.database.url.get_secret_value())
    hosts = list(dict.fromkeys([h for h in (host, "127.0.0.1", "localhost", "::1")
                                if h not in ("0.0.0.0", "::")]))
    tls = ensure_certificates(data.tls, hosts)
    data.secure()  # the database and broker files the migration and broker set-up created
    api_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    api_url = f"https://{_url_host(api_host)}:{port}"

    child_env = dict(os.environ)
    child_env.setdefault("ORCH_API_PUBLIC_URL", api_url)
    if not child_env.get("ORCH_WEBHOOK_SIGNING_KEY"):
        child_env["ORCH_WEBHOOK_SIGNING_KEY"] = ensure_signing_key(data)
    entry = [sys.executable, "-m", "orchestrator"]
    supervisor = Supervisor()
    stop = _stop_on_signals()
    # The worker's main process runs the reconciler unless that is switched off; then it runs
    # as its own process (when this version of the CLI has the command).
    reconciler_child = not settings.reconciler.in_worker and _has_reconcile_loop()
    reconciler = ("in the worker" if settings.reconciler.in_worker
                  else "own process" if reconciler_child else None)
    died: Child | None = None
    try:
        supervisor.start(Child("api", [*entry, "api", "--host", host, "--port", str(port),
                                       "--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key)],
                               data.logs / "api.log"), child_env)
        worker_args = ["worker", "--queues", backends.DEFAULT,
                       "--hostname", f"dev-{backends.DEFAULT}@{socket.gethostname()}"]
        if workers is not None:
            worker_args += ["--concurrency", str(workers)]
        worker = supervisor.start(Child("worker", [*entry, *worker_args], data.logs / "worker.log"),
                                  child_env)
        if reconciler_child:
            supervisor.start(Child("reconciler", [*entry, "reconcile", "--loop"],
                                   data.logs / "reconciler.log"), child_env)

        _wait_for_api(api_url, tls.ca_cert, supervisor, stop)
        if not stop.is_set():
            details = {
                "api_url": api_url,
                "api_key": key,
                "ca_cert": str(tls.ca_cert),
                "data_dir": str(data.root),
                "database_url": maybe_sanitize_url(settings.database.url.get_secret_value()),
                "broker_url": maybe_sanitize_url(settings.broker.url.get_secret_value()),
                "logs": str(data.logs),
                "reconciler": reconciler,
                "fal_backend": is_redis(settings.broker.url.get_secret_value()),
            }
            if json_out:
                print(json.dumps(details), flush=True)
            else:
                _banner(details, data)
                console_err.print("worker      loading its model; jobs sent now wait in the queue…")
            api_ready_at = time.monotonic()
            warm = _wait_for_worker(worker, supervisor, stop)
            if warm:
                waited = round(time.monotonic() - api_ready_at, 1)
                if json_out:
                    print(json.dumps({"worker_ready": True, "warm_processes": warm,
                                      "seconds_after_api": waited}), flush=True)
                else:
                    console_err.print(f"[bold green]worker ready[/bold green]: takes jobs "
                                      f"({warm} process(es) warm, {waited:g} s after the API)")
        died = _supervise(supervisor, stop)
    finally:
        console_err.print("stopping: API, worker (a running job finishes first)…")
        supervisor.stop(STOP_TIMEOUT_SECONDS)
        lock.close()
    if died is not None:
        console_err.print(f"[red]the {died.name} process exited with code {died.exit_code()}; "
                          f"stopped everything. Last lines of {died.log_path}:[/red]\n"
                          f"{died.log_tail()}")
        raise typer.Exit(EXIT_CHILD_DIED)
    console_err.print("[green]stopped[/green]")


def _lock(data: DataDir) -> IO[str]:
    """Hold the data folder for this process: two dev instances must not share one."""
    fh = open(data.lock_file, "a")  # noqa: SIM115 - held until exit
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise ConfigError(f"another `orchestrator dev` is running on {data.root}; stop it or "
                          "pass --data-dir") from None
    return fh


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); "
                              "choose another port with --port") from None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _has_reconcile_loop() -> bool:
    """Whether this version's CLI has `orchestrator reconcile --loop`."""
    import typer.main

    from orchestrator.cli import app

    group = typer.main.get_command(app)
    command = getattr(group, "commands", {}).get("reconcile")
    return command is not None and any("--loop" in p.opts for p in command.params)


def _wait_for_api(api_url: str, ca_cert: Path, supervisor: Supervisor,
                  stop: threading.Event) -> None:
    import httpx

    deadline = time.monotonic() + API_READY_TIMEOUT_SECONDS
    while not stop.is_set():
        if supervisor.first_exited() is not None:
            return  # _supervise reports it
        try:
            if httpx.get(f"{api_url}/readyz", verify=str(ca_cert), timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise ConfigError(f"the API did not become ready within {API_READY_TIMEOUT_SECONDS:g} s; "
                              "see its log in the data folder's logs/api.log")
        stop.wait(0.2)


def _wait_for_worker(worker: Child, supervisor: Supervisor, stop: threading.Event) -> int:
    """Pool processes warm (0 when a child died, dev is stopping, or the worker is late: then
    said, and dev goes on supervising)."""
    from orchestrator.queue.health import warm_processes

    assert worker.proc is not None
    deadline = time.monotonic() + WORKER_READY_TIMEOUT_SECONDS
    while not stop.is_set() and supervisor.first_exited() is None:
        warm = warm_processes(worker.proc.pid)
        if warm:
            return warm
        if time.monotonic() > deadline:
            console_err.print(f"[yellow]the worker is not ready after "
                              f"{WORKER_READY_TIMEOUT_SECONDS:g} s; see {worker.log_path}[/yellow]")
            return 0
        stop.wait(0.2)
    return 0


def _supervise(supervisor: Supervisor, stop: threading.Event) -> Child | None:
    """Wait for Ctrl-C / SIGTERM (None) or a child that exits on its own (that child)."""
    while not stop.is_set():
        died = supervisor.first_exited()
        if died is not None:
            return died
        stop.wait(0.5)
    return None


def _banner(details: dict[str, object], data: DataDir) -> None:
    key, ca, url = details["api_key"], details["ca_cert"], details["api_url"]
    host_port = str(url).removeprefix("https://")
    console_err.print(f"""[bold green]orchestrator dev is running[/bold green] (Ctrl-C stops it all)
  API         {url}   (docs: {url}/docs)
  API key     {key}   (admin; kept in {data.api_key_file}, mode 0600)
  CA cert     {ca}
  database    {details['database_url']}
  broker      {details['broker_url']}
  worker      local backend (rembg); fal backend {'available with FAL_KEY' if details['fal_backend'] else 'off: it needs a Redis broker (ORCH_BROKER_URL=redis://…)'}
  reconciler  {details['reconciler'] or 'not in this version'}
  logs        {details['logs']}/

Try, in another shell:
  eval "$(orchestrator dev --print-env --data-dir {shlex.quote(str(data.root))})"
  orchestrator submit photo.jpg --wait --output out/
  orchestrator jobs list
  curl --cacert {ca} -H 'Authorization: Key {key}' {url}/v1/jobs
  FAL_QUEUE_RUN_HOST={host_port} FAL_KEY={key} SSL_CERT_FILE={ca} \\
    python -c 'import fal_client; print(fal_client.subscribe("fal-ai/imageutils/rembg", {{"image_url": "https://…"}}))'""",
                      highlight=False, soft_wrap=True)
