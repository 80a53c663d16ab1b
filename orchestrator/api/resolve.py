"""Resolve the hosts of submitted URLs at submit time: concurrently, and all within one deadline.

A batch of 500 ``image_url`` items used to resolve its hosts one after another, each bounded
only by the system resolver's own timeouts, so one slow name server held a request (and a
worker thread) for minutes. Here distinct hosts are looked up at once, at most
``ORCH_URL_CHECK_CONCURRENCY`` at a time, and whatever has not resolved by
``ORCH_URL_CHECK_TIMEOUT_SECONDS`` counts as unresolvable. ``getaddrinfo`` cannot be cancelled:
a lookup still hanging at the deadline finishes in its (daemon) thread and its answer is dropped.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable

Target = tuple[str, int]  # (host, port)
# Each target's addresses, or None: it did not resolve (an error, or not by the deadline).
Resolved = dict[Target, list[str] | None]

Lookup = Callable[[str, int], list[str]]


def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


def resolve_all(targets: Iterable[Target], *, timeout: float, concurrency: int,
                lookup: Lookup = _getaddrinfo) -> Resolved:
    """Every distinct target resolved, ``concurrency`` at a time, all within ``timeout`` s."""
    pending = list(dict.fromkeys(targets))
    results: Resolved = dict.fromkeys(pending)
    if not pending:
        return results
    lock = threading.Lock()
    done = threading.Event()
    state = {"next": 0, "finished": 0}

    def work() -> None:
        while True:
            with lock:
                if state["next"] >= len(pending) or done.is_set():
                    return
                target = pending[state["next"]]
                state["next"] += 1
            try:
                addresses: list[str] | None = lookup(*target)
            except (OSError, UnicodeError, ValueError):
                addresses = None
            with lock:
                if not done.is_set():
                    results[target] = addresses
                state["finished"] += 1
                if state["finished"] == len(pending):
                    done.set()

    for _ in range(min(concurrency, len(pending))):
        threading.Thread(target=work, name="url-check", daemon=True).start()
    deadline = time.monotonic() + timeout
    done.wait(max(0.0, deadline - time.monotonic()))
    with lock:
        done.set()  # late answers are dropped; unstarted lookups are not started
        return dict(results)
