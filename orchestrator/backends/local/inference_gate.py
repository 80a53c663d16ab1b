"""A cross-process limit on concurrent ONNX inference within one worker.

When a worker runs more processes than it has inference slots, while one process is inside
``session.run`` (using all its ONNX threads), another decodes, pre/post-processes, encodes or
stores, so the cores never wait on single-threaded Python work and never run more inference
threads than there are cores. Slots are ``flock`` files: the kernel releases a slot the moment
its holder dies, so a killed process can never leave the gate shut.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any


class InferenceGate:
    def __init__(self, directory: Path, slots: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.paths = [directory / f"slot-{i}.lock" for i in range(max(1, slots))]
        self._fds: list[int] = []
        self._held: int | None = None

    @classmethod
    def for_worker(cls, worker_pid: int, slots: int) -> InferenceGate:
        return cls(Path(tempfile.gettempdir()) / f"orchestrator-gate-{worker_pid}", slots)

    def _open(self) -> None:
        if not self._fds:
            self._fds = [os.open(p, os.O_RDWR | os.O_CREAT, 0o600) for p in self.paths]

    def __enter__(self) -> InferenceGate:
        self._open()
        if len(self._fds) == 1:
            # One slot: wait in the kernel, woken the moment the holder lets go (or dies).
            fcntl.flock(self._fds[0], fcntl.LOCK_EX)
            self._held = self._fds[0]
            return self
        pause = 0.001
        while True:
            for fd in self._fds:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                self._held = fd
                return self
            time.sleep(pause)
            pause = min(pause * 2, 0.01)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._held is not None:
            fcntl.flock(self._held, fcntl.LOCK_UN)
            self._held = None


class GatedInferenceSession:
    """Wraps an ``onnxruntime.InferenceSession`` so that ``run`` passes through the gate."""

    def __init__(self, inner: Any, gate: InferenceGate) -> None:
        self._inner = inner
        self._gate = gate

    def run(self, *args: Any, **kwargs: Any) -> Any:
        with self._gate:
            return self._inner.run(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
