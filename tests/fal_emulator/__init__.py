"""An emulator of fal.ai's queue API (``queue.fal.run``) for ``fal-ai/imageutils/rembg``.

It follows /work/shared/docs/fal-queue-protocol.md (§14 in particular) and is exercised with the
real ``fal_client``: it serves HTTPS on loopback with its own CA, so a process that sets
``FAL_QUEUE_RUN_HOST=emu.host`` (before importing fal_client) and ``SSL_CERT_FILE=emu.ca_file``
talks to it unchanged.

    from tests.fal_emulator import FalEmulator, Fault

    with FalEmulator(latency=0.2) as emu:
        os.environ.update(emu.env())
        ...
        emu.faults.add("submit", Fault("drop_after_accept"))
        emu.outcomes.append("validation_error")

Choices where the protocol doc leaves things open:

- A request is IN_QUEUE for ``queue_time`` (longer while all ``runners`` are busy), then
  IN_PROGRESS for ``latency`` seconds (or until the model finishes, if later), then COMPLETED.
- Input problems (missing/invalid ``image_url``, undecodable image, data URI over 10 MiB, a
  failed download) are *not* rejected at submit: the request is accepted (billable), runs, and
  completes with a 422 result ``{"detail": [{"loc": ["body", "image_url"], "msg", "type"}]}``.
  Its status then carries ``error: "Invalid status code: 422"`` and no ``error_type`` (model
  errors are not infrastructure errors). Only a body that is not JSON gets a 422 at submit.
- Runner errors: status ``error_type: "runner_server_error"``; result 500 with
  ``X-Fal-Error-Type``. Cancelled: ``error_type: "client_cancelled"``, result 499.
  A start timeout (``X-Fal-Request-Timeout``): ``error_type: "request_timeout"``, result 504
  with ``X-Fal-Request-Timeout-Type: user``.
- Results never expire (no §6 retention windows); ``X-Fal-Queue-Priority`` is ignored.
- ``metrics.inference_time`` is the time spent IN_PROGRESS unless ``inference_time`` is set.
"""

from tests.fal_emulator.emulator import FalEmulator, free_port
from tests.fal_emulator.faults import KINDS as FAULT_KINDS
from tests.fal_emulator.faults import Fault, FaultQueue
from tests.fal_emulator.state import OUTCOMES, RequestState

__all__ = [
    "FAULT_KINDS",
    "OUTCOMES",
    "FalEmulator",
    "Fault",
    "FaultQueue",
    "RequestState",
    "free_port",
]
