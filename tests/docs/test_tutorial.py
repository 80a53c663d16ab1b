"""The tutorial's commands are the ones a user types: run them.

A code block marked ``<!-- tutorial-test: run -->`` is run with bash (all of a page's run blocks
as one script, in order, so what one exports the next sees, as in the reader's terminal); one
marked ``<!-- tutorial-test: background -->`` is started and left running, as the tutorial tells
the reader, and stopped with Ctrl-C (SIGINT) at the end, which must exit 0. Unmarked blocks
(installing, downloading a model, starting servers) are not run.

What the test changes, and only that: the port 8443 becomes a free one; the installed
package is on PATH (the reader's activated virtualenv); ORCH_LOCAL_MODEL_PATH is the tests' tiny
model (the tutorial's offline step names the real one); on the Postgres page, the tutorial's
database and Redis URLs become this run's own. Everything else is the page's text.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import SAMPLE_IMAGES, create_database, drop_database
from tests.support.images import subject

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial"
BLOCK = re.compile(r"<!-- tutorial-test: (run|background) -->\n```(?:sh|bash)\n(.*?)```", re.S)
PORT = "8443"
# Seconds for the steps after `orchestrator dev` is up: ~30 s on a quiet 2-core machine, with
# room for a loaded one.
STEPS_TIMEOUT = 240
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/orchestrator"
REDIS_URL = "redis://127.0.0.1:6379/0"

pytestmark = pytest.mark.timeout(480)


def blocks(page: Path) -> list[tuple[str, str]]:
    found = [(m.group(1), m.group(2)) for m in BLOCK.finditer(page.read_text())]
    assert found, f"{page.name} marks no block for testing"
    return found


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _workspace(tmp_path: Path) -> Path:
    """A project folder with ``../shared/images`` beside it, as in the repository's layout."""
    images = tmp_path / "shared" / "images"
    images.parent.mkdir()
    if SAMPLE_IMAGES.is_dir():
        images.symlink_to(SAMPLE_IMAGES)
    else:  # a checkout without ../shared: stand-ins with the names the tutorial uses
        images.mkdir()
        for i, name in enumerate(["astronaut.png", "camera.png", "coffee.png", "logo.png"]):
            subject((96 + 16 * i, 64)).save(images / name)
    project = tmp_path / "project"
    project.mkdir()
    return project


def _env(tiny_model: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ORCH_", "FAL_", "TEST_")) and k != "SSL_CERT_FILE"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(ORCH_LOCAL_MODEL_PATH=str(tiny_model), ORCH_LOCAL_ONNX_THREADS="1")
    return env


def _wait_ready(dev: subprocess.Popen[bytes], project: Path, port: str, log: Path) -> None:
    """What the reader waits for: the API answering over its TLS."""
    ca = project / "orchestrator-data" / "tls" / "ca.pem"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert dev.poll() is None, f"orchestrator dev exited:\n{log.read_text()}"
        if ca.is_file():
            try:
                if httpx.get(f"https://127.0.0.1:{port}/readyz", verify=str(ca),
                             timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.5)
    raise AssertionError(f"orchestrator dev not ready after 120 s:\n{log.read_text()}")


def run_page(page: Path, project: Path, env: dict[str, str],
             substitutions: dict[str, str]) -> str:
    """Run the page's marked blocks; returns what the blocks after ``orchestrator dev`` printed.

    Run blocks before the background one (exporting variables, migrating) run first, in the
    reader's first terminal; the variables they export hold in both terminals, as the page says.
    """
    def text(block: str) -> str:
        for old, new in substitutions.items():
            block = block.replace(old, new)
        return block

    found = [(kind, text(block)) for kind, block in blocks(page)]
    kinds = [kind for kind, _ in found]
    assert kinds.count("background") == 1, "the tutorial starts one orchestrator dev"
    at = kinds.index("background")
    before = "\n".join(b for _, b in found[:at])
    after = "\n".join(b for _, b in found[at + 1:])
    background = found[at][1].strip()
    if before:
        pre = subprocess.run(["bash", "-c", "set -euo pipefail\n" + before], cwd=project,
                             env=env, capture_output=True, text=True, timeout=120)
        assert pre.returncode == 0, pre.stdout + pre.stderr
        env = {**env, **_exports(before)}
    log = project.parent / f"{page.stem}-dev.log"
    with open(log, "w") as log_file:
        dev = subprocess.Popen(["bash", "-c", f"exec {background}"], cwd=project, env=env,
                               stdout=log_file, stderr=subprocess.STDOUT)
    try:
        _wait_ready(dev, project, substitutions[PORT], log)
        out_path, err_path = project.parent / "stdout.txt", project.parent / "stderr.txt"
        with open(out_path, "w") as out, open(err_path, "w") as err:
            steps = subprocess.Popen(["bash", "-c", "set -euo pipefail\n" + after], cwd=project,
                                     env=env, stdout=out, stderr=err, text=True)
            try:
                code = steps.wait(timeout=STEPS_TIMEOUT)
            except subprocess.TimeoutExpired:
                steps.kill()
                code = steps.wait()
        stdout = out_path.read_text()
        assert code == 0, (
            f"exit {code}\n--- stdout\n{stdout}\n--- stderr\n{err_path.read_text()}"
            f"\n--- orchestrator dev\n{log.read_text()}")
    finally:
        if dev.poll() is None:
            dev.send_signal(signal.SIGINT)  # Ctrl-C, as the tutorial says
        code = dev.wait(timeout=90)
    assert code == 0, f"orchestrator dev exited {code} on Ctrl-C:\n{log.read_text()}"
    return stdout


def _exports(script: str) -> dict[str, str]:
    return dict(re.findall(r"^export (\w+)=(\S+)$", script, re.M))


def _check_cutouts(folder: Path) -> None:
    images = sorted(p.stem for p in (folder.parent.parent / "shared" / "images").iterdir()
                    if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    assert sorted(p.stem for p in folder.glob("*.png")) == images
    for path in folder.glob("*.png"):
        with path.open("rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_first_cutout_tutorial(tmp_path: Path, tiny_model: Path) -> None:
    project = _workspace(tmp_path)
    port = _free_port()
    out = run_page(TUTORIAL / "first-cutout.md", project, _env(tiny_model), {PORT: port})
    _check_cutouts(project / "output")
    # The fal_client step printed the cut-out's address on the dev API.
    assert f"https://127.0.0.1:{port}/v1/jobs/" in out
    assert (project / "orchestrator-data" / "api-key").is_file()


def test_postgres_and_redis_tutorial(tmp_path: Path, tiny_model: Path, broker_url: str) -> None:
    """On an empty database of its own, so the tutorial's `orchestrator migrate` does the work."""
    project = _workspace(tmp_path)
    dbname, database_url = create_database()
    try:
        subs = {PORT: _free_port(), PG_URL: database_url, REDIS_URL: broker_url}
        run_page(TUTORIAL / "postgres-redis.md", project, _env(tiny_model), subs)
        _check_cutouts(project / "output-pg")
        # The jobs went to Postgres, not to a SQLite file in the data folder.
        assert not (project / "orchestrator-data" / "orchestrator.db").exists()
        with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
            row = conn.execute("SELECT count(*) FROM jobs WHERE state = 'succeeded'").fetchone()
        assert row is not None and row[0] == len(list((project / "output-pg").glob("*.png")))
    finally:
        drop_database(dbname)
