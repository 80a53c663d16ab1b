from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

from orchestrator.backends.local.inference_gate import InferenceGate
from tests.support.wait import wait_until


def _hold(directory: str, slots: int, seconds: float, log: str) -> None:
    with InferenceGate(Path(directory), slots):
        with open(log, "a") as fh:
            fh.write(f"in {time.monotonic()}\n")
        time.sleep(seconds)  # holding the slot is the point
        with open(log, "a") as fh:
            fh.write(f"out {time.monotonic()}\n")


def _max_inside(log: Path) -> int:
    events = sorted(
        (float(t), kind) for kind, t in (line.split() for line in log.read_text().splitlines())
    )
    inside = peak = 0
    for _, kind in events:
        inside += 1 if kind == "in" else -1
        peak = max(peak, inside)
    return peak


def test_one_slot_admits_one_process_at_a_time(tmp_path: Path) -> None:
    log = tmp_path / "log"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_hold, args=(str(tmp_path / "g"), 1, 0.2, str(log))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(10)
    assert _max_inside(log) == 1


def test_two_slots_admit_two(tmp_path: Path) -> None:
    log = tmp_path / "log"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_hold, args=(str(tmp_path / "g"), 2, 0.5, str(log))) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(10)
    assert _max_inside(log) == 2


def test_a_killed_holder_frees_its_slot(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    holder = ctx.Process(target=_hold, args=(str(tmp_path / "g"), 1, 60, str(tmp_path / "log")))
    holder.start()
    wait_until((tmp_path / "log").exists, timeout=10, interval=0.01, what="the holder inside the gate")
    assert holder.pid is not None
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(5)
    started = time.monotonic()
    with InferenceGate(tmp_path / "g", 1):
        assert time.monotonic() - started < 2
