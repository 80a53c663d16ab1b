"""The auto policy: fal or local for each job, from the signals; a pure function."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator import backends
from orchestrator.routing.signals import Signals


@dataclass(frozen=True)
class Decision:
    backend: str  # backends.AUTO_INLINE or backends.AUTO_REMOTE
    reason: str
    local_wait_seconds: float  # the estimate the choice was made on
    deadline_seconds: float

    def as_dict(self, signals: Signals) -> dict[str, Any]:
        return {"requested": "auto", "decision": self.backend, "reason": self.reason,
                "local_wait_seconds": round(self.local_wait_seconds, 3),
                "deadline_seconds": self.deadline_seconds, "inputs": signals.as_dict()}


def fal_blockers(s: Signals, max_error_rate: float) -> list[str]:
    out = []
    if s.fal_unavailable:
        out.append(s.fal_unavailable)
    if s.fal_breaker.open:
        out.append(f"fal's circuit is open: {s.fal_breaker.failures_in_a_row} failures in a row, "
                   f"the last at {s.fal_breaker.last_failure_at}")
    if s.fal_error_rate is not None and s.fal_error_rate >= max_error_rate:
        out.append(f"{s.fal_error_rate:.0%} of fal's last {s.fal_recent_attempts} attempts failed")
    if s.fal_budget_blocked:
        out.append(s.fal_budget_blocked)
    return out


def decide(s: Signals, *, deadline: float, max_error_rate: float, ahead: int = 0) -> Decision:
    """Local (it costs less) while its estimated wait fits the deadline and its circuit is
    closed; else fal, unless fal is unavailable, failing, or over budget — then local anyway.
    ``ahead``: local jobs of the same submission already placed before this one."""
    wait = (s.local_depth + ahead + 1) * s.local_seconds_per_job / max(1, s.local_parallelism)
    blocked = fal_blockers(s, max_error_rate)
    if s.local_breaker.open and not blocked:
        return Decision(backends.AUTO_REMOTE, f"the local circuit is open ({s.local_breaker.failures_in_a_row} "
                        "failures in a row)", wait, deadline)
    if wait <= deadline:
        return Decision(backends.AUTO_INLINE, f"local wait ~{wait:.1f} s fits the {deadline:g} s deadline",
                        wait, deadline)
    if not blocked:
        return Decision(backends.AUTO_REMOTE, f"local wait ~{wait:.1f} s exceeds the {deadline:g} s deadline",
                        wait, deadline)
    return Decision(backends.AUTO_INLINE, f"local wait ~{wait:.1f} s exceeds the {deadline:g} s deadline, "
                    f"but fal is not usable: {'; '.join(blocked)}", wait, deadline)


def plan(s: Signals, n: int, *, deadline: float, max_error_rate: float) -> list[Decision]:
    """One decision per job of a submission, each counting the local jobs placed before it."""
    out: list[Decision] = []
    ahead = 0
    for _ in range(n):
        decision = decide(s, deadline=deadline, max_error_rate=max_error_rate, ahead=ahead)
        ahead += decision.backend == backends.AUTO_INLINE
        out.append(decision)
    return out
