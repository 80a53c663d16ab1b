"""Who holds a running job, and whether that holder is still alive.

A lease owner is ``host:pid:token``. The token is fresh per delivery, so a process can tell its
own earlier, abandoned delivery from the one it is running now.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

HOSTNAME = socket.gethostname()


@dataclass(frozen=True)
class LeaseOwner:
    host: str
    pid: int
    token: str

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.token}"

    @classmethod
    def new(cls) -> LeaseOwner:
        return cls(HOSTNAME, os.getpid(), uuid.uuid4().hex[:12])

    @classmethod
    def parse(cls, text: str) -> LeaseOwner | None:
        try:
            host, pid, token = text.rsplit(":", 2)
            return cls(host, int(pid), token)
        except ValueError:
            return None

    def is_this_process(self) -> bool:
        return self.host == HOSTNAME and self.pid == os.getpid()

    def is_known_dead(self) -> bool:
        """True only when the owner ran on this host and its process is gone."""
        if self.host != HOSTNAME:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return _is_zombie(self.pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False
