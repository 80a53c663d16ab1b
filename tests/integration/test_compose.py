"""docker-compose.yml holds the whole system and is valid for docker compose."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT

SERVICES = {"postgres", "redis", "objectstore", "migrate", "api", "worker-local", "worker-fal", "reconciler",
            "flower"}


def _docker_compose() -> str:
    """Its path; missing, the check is skipped on a developer's machine but FAILS on CI."""
    found = shutil.which("docker-compose")
    if found is not None:
        return found
    message = "docker-compose is not installed (scripts/install.sh installs it)"
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{message}; CI must run the compose check")
    pytest.skip(message)


def test_compose_file_is_valid_and_complete() -> None:
    compose = _docker_compose()
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    base = [compose, "--project-directory", str(ROOT), "-f",
            str(ROOT / "docker-compose.yml")]
    checked = subprocess.run([*base, "config", "-q"], env=env, capture_output=True, text=True,
                             timeout=60, check=False)
    assert checked.returncode == 0, checked.stderr
    listed = subprocess.run([*base, "--profile", "fal", "config", "--services"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == SERVICES


def test_the_image_installs_what_the_services_run() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "-e '.[local,ops]'" in dockerfile  # rembg/onnxruntime for worker-local, Flower
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(dep.startswith("flower==") for dep in extras["ops"])


@pytest.mark.parametrize(("ci", "outcome"), [("true", "failed"), (None, "skipped")])
def test_a_missing_docker_compose_fails_the_check_on_ci(tmp_path: Path, ci: str | None,
                                                         outcome: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = str(tmp_path)  # no docker-compose on it
    if ci is not None:
        env["CI"] = ci
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfs",
         f"{Path(__file__)}::test_compose_file_is_valid_and_complete"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert f"1 {outcome}" in run.stdout, run.stdout + run.stderr
