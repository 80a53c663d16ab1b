"""tests/support/wait.py: a wait returns the condition's value, or fails naming what it awaited."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.wait import WaitTimeout, wait_for_log, wait_until


def test_wait_until_returns_the_first_truthy_value() -> None:
    counter = itertools.count()
    assert wait_until(lambda: next(counter) >= 3 and "done", timeout=5, interval=0.01,
                      what="three polls") == "done"


def test_wait_until_names_what_it_awaited_and_the_last_value_seen() -> None:
    started = time.monotonic()
    values = iter(range(1000))
    with pytest.raises(WaitTimeout, match=r"waiting for the answer; last seen: \[\]") as failure:
        wait_until(lambda: [] if next(values) > 2 else 0, timeout=0.3, interval=0.05,
                   what="the answer")
    assert time.monotonic() - started >= 0.3  # it waited its whole timeout
    assert "0.3 s" in str(failure.value)


def test_an_error_in_the_predicate_is_not_retried() -> None:
    calls = []

    def broken() -> bool:
        calls.append(1)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        wait_until(broken, timeout=5, what="nothing")
    assert len(calls) == 1


class _Proc:
    def __init__(self, log: Path, script: str) -> None:
        self.log_path = log
        with log.open("w") as sink:
            self.proc = subprocess.Popen([sys.executable, "-c", script], stdout=sink)

    def text(self) -> str:
        return self.log_path.read_text()


def test_wait_for_log_sees_the_lines_and_fails_fast_when_the_process_exits(tmp_path: Path) -> None:
    ready = _Proc(tmp_path / "a.log", "import time; print('poller running\\npoller running\\n ready.', "
                                      "flush=True); time.sleep(30)")
    try:
        assert "ready." in wait_for_log(ready, "poller running", times=2, timeout=20)
    finally:
        ready.proc.kill()
        ready.proc.wait()
    dead = _Proc(tmp_path / "b.log", "print('starting', flush=True); raise SystemExit(3)")
    started = time.monotonic()
    with pytest.raises(AssertionError, match="worker exited with 3"):
        wait_for_log(dead, "poller running", timeout=120)
    dead.proc.wait()
    assert time.monotonic() - started < 60  # it failed when the process exited, not at its timeout
