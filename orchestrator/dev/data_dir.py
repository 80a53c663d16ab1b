"""The data folder of ``orchestrator dev``: database, broker, TLS files, the dev API key, logs.

Secrets (the API key, the webhook signing key, the TLS private key) are files readable only by
their owner (0600) in a folder only its owner can enter (0700). The database keeps only the
key's hash; the file is what lets a restart print the same key again.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_DIR = Path("orchestrator-data")


@dataclass(frozen=True)
class DataDir:
    root: Path

    @classmethod
    def at(cls, path: Path) -> DataDir:
        return cls(path.expanduser().resolve())

    def create(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.logs.mkdir(mode=0o700, exist_ok=True)
        self.secure()

    def secure(self) -> None:
        """Folders 0700 and files 0600 under the root, whatever they were made with (``mkdir -p``
        leaves 0755, the umask 0644): run on every start (issue 14.8)."""
        self.root.chmod(0o700)
        for folder, dirs, files in os.walk(self.root):
            for name in dirs:
                path = Path(folder, name)
                if not path.is_symlink():
                    path.chmod(0o700)
            for name in files:
                path = Path(folder, name)
                if not path.is_symlink():
                    path.chmod(0o600)

    @property
    def database(self) -> Path:
        return self.root / "orchestrator.db"

    @property
    def broker(self) -> Path:
        return self.root / "broker.db"

    @property
    def tls(self) -> Path:
        return self.root / "tls"

    @property
    def api_key_file(self) -> Path:
        return self.root / "api-key"

    @property
    def signing_key_file(self) -> Path:
        return self.root / "webhook-signing-key"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def lock_file(self) -> Path:
        return self.root / "dev.lock"

    def database_url(self) -> str:
        return f"sqlite:///{self.database}"

    def broker_url(self) -> str:
        return f"sqla+sqlite:///{self.broker}"

    def environment(self, environ: Mapping[str, str]) -> dict[str, str]:
        """The database and broker for this run: the ones in ``environ`` when set, else the
        embedded SQLite files in this folder."""
        env = {
            "ORCH_DATABASE_URL": environ.get("ORCH_DATABASE_URL") or self.database_url(),
            "ORCH_BROKER_URL": environ.get("ORCH_BROKER_URL") or self.broker_url(),
        }
        # Image bytes as files in this folder (no server to run) on the embedded database,
        # unless an object store or another result store is configured. On a database given
        # from outside, other commands with the same two variables must find the bytes too:
        # they stay where that deployment keeps them (the database by default).
        embedded = not environ.get("ORCH_DATABASE_URL")
        if (embedded and not environ.get("ORCH_OBJECT_STORE_URL")
                and not environ.get("ORCH_RESULT_STORE")):
            env["ORCH_RESULT_STORE"] = "directory"
            env["ORCH_RESULT_DIR"] = environ.get("ORCH_RESULT_DIR") or str(self.objects)
        return env

    @property
    def objects(self) -> Path:
        return self.root / "objects"


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # the file may have existed with wider permissions
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")


def read_secret(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return text or None
