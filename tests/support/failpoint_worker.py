"""``orchestrator worker`` that dies right after fal accepted a submission, before its request id
reaches Postgres: the one window in which a paid request can go unrecorded.

The first worker process to get fal's answer while the file named by ``ORCH_TEST_DIE_AFTER_ACCEPT``
exists removes the file and SIGKILLs itself (once across all processes). Everything else is the
real worker.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from orchestrator.jobs.remote import attempts as remote

_real_record_accepted = remote.record_accepted


def _record_accepted(*args: Any, **kwargs: Any) -> bool:
    marker = os.environ.get("ORCH_TEST_DIE_AFTER_ACCEPT")
    if marker:
        try:
            os.unlink(marker)
        except FileNotFoundError:
            pass
        else:
            os.kill(os.getpid(), signal.SIGKILL)
    return _real_record_accepted(*args, **kwargs)


remote.record_accepted = _record_accepted

if __name__ == "__main__":
    from orchestrator.cli import main

    main()
