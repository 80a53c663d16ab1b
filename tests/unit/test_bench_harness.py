"""The benchmark harness: rounds rotate, ratios pair rounds, records name their commit."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.harness import Run, fmt, summary


def test_rounds_rotate_the_order_and_ratios_pair_rounds(tmp_path: Path) -> None:
    calls: list[str] = []
    speed = {"bare": iter([10.0, 12.0, 11.0]), "pipe": iter([9.0, 12.0, 13.2])}

    def side(name: str):  # type: ignore[no-untyped-def]
        def run() -> dict[str, float]:
            calls.append(name)
            return {"ips": next(speed[name])}
        return run

    run = Run("unit", rounds=3, params={"n": 1})
    run.rounds({"bare": side("bare"), "pipe": side("pipe")})
    assert calls == ["bare", "pipe", "pipe", "bare", "bare", "pipe"]
    assert run.figure("bare", "ips") == {"median": 11.0, "min": 10.0, "max": 12.0,
                                         "values": [10.0, 12.0, 11.0]}
    ratio = run.ratio("pipe", "bare", "ips")
    assert ratio["values"] == [0.9, 1.0, 1.2]  # round by round, not median over median
    assert ratio["median"] == 1.0
    record = json.loads(run.save(tmp_path / "unit.json").read_text())
    assert record["summary"]["pipe"]["ips"]["median"] == 12.0
    assert record["commit"] and record["command"].startswith("python ")
    assert record["machine"]["cpus"] >= 1 and record["raw"]["bare"][0]["round"] == 1


def test_summary_and_format() -> None:
    assert summary([]) == {"median": None, "min": None, "max": None, "values": []}
    assert fmt(summary([1.0, 3.0, 2.0]), 1) == "2.0 (1.0–3.0)"
    assert fmt(summary([])) == "–"
