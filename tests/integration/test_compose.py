"""docker-compose.yml holds the whole system and is valid for docker compose."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib

import pytest

from tests.conftest import ROOT

SERVICES = {"postgres", "redis", "migrate", "api", "worker-local", "worker-fal", "reconciler",
            "flower"}


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="docker-compose is not installed (scripts/install.sh installs it)")
def test_compose_file_is_valid_and_complete() -> None:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    base = ["docker-compose", "--project-directory", str(ROOT), "-f",
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
