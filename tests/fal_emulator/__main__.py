"""Run the emulator as its own process (for benchmarks).

    python -m tests.fal_emulator --port 8443 --latency 1.0 [--ca-dir DIR]

Prints one JSON line ``{"host": ..., "ca_file": ...}`` when ready, then serves until SIGTERM or
SIGINT. Control endpoints: ``GET /_emulator/ledger``, ``POST /_emulator/reset``,
``POST /_emulator/faults`` ``{"op", "kind", "times"?, ...params}``,
``POST /_emulator/outcomes`` ``{"outcomes": [...]}``, ``GET /_emulator/requests/{id}``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from types import FrameType

from tests.fal_emulator.emulator import FalEmulator


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.fal_emulator", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0, help="0 = any free port")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--public-host", default=None, help="name used in URLs and the certificate")
    p.add_argument("--latency", type=float, default=1.0, help="seconds IN_PROGRESS")
    p.add_argument("--queue-time", type=float, default=0.0, help="seconds IN_QUEUE")
    p.add_argument("--inference-time", type=float, default=None, help="fixed metrics.inference_time")
    p.add_argument("--runners", type=int, default=None, help="max concurrent IN_PROGRESS")
    p.add_argument("--no-metrics", action="store_true", help="COMPLETED status has metrics {}")
    p.add_argument("--ca-dir", default=None, help="where the CA PEM goes (reused if present)")
    p.add_argument("--public-roots", action="store_true", help="append certifi roots to the CA file")
    args = p.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    emu = FalEmulator(
        port=args.port,
        host=args.host,
        latency=args.latency,
        queue_time=args.queue_time,
        inference_time=args.inference_time,
        report_metrics=not args.no_metrics,
        runners=args.runners,
        ca_dir=args.ca_dir,
        public_host=args.public_host,
        public_roots=args.public_roots,
    )
    with emu:
        sys.stdout.write(json.dumps({"host": emu.host, "ca_file": emu.ca_file}) + "\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
