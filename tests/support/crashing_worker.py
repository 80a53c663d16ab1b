"""``orchestrator worker`` whose local backend kills its own process on a poison input.

Stands in for an input that crashes the model (a segfault, the OOM killer): the worker process
dies with SIGKILL mid-job, every time that input is run. Everything else is the real worker.
"""

from __future__ import annotations

import os
import signal

from orchestrator.backends.base import BackendInput, BackendOutput
from orchestrator.backends.local import LocalBackend

POISON_MARK = b"POISON-PILL"
_real_run = LocalBackend.run


def _run(self: LocalBackend, job_input: BackendInput) -> BackendOutput:
    if POISON_MARK in job_input.data:
        os.kill(os.getpid(), signal.SIGKILL)
    return _real_run(self, job_input)


LocalBackend.run = _run  # type: ignore[method-assign]

if __name__ == "__main__":
    from orchestrator.cli import main

    main()
