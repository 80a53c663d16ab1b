"""Print a per-job cost summary from `orchestrator jobs show ID --json` lines on stdin (the
demo's jobs one by one; `orchestrator report costs` then sums every job of the period)."""

from __future__ import annotations

import json
import sys
from decimal import Decimal


def main() -> None:
    rows = [json.loads(line) for line in sys.stdin if line.strip()]
    totals = [Decimal(0), Decimal(0), Decimal(0)]
    print(f"{'input':<24} {'state':<10} {'backend':<8} {'compute s':>10} {'cost USD':>12} "
          f"{'fal would cost':>15}")
    for job in rows:
        attempts = job.get("attempt_log", [])
        seconds = sum(Decimal(a["compute_seconds"] or 0) for a in attempts)
        cost = sum(Decimal(a["cost_usd"] or 0) for a in attempts)
        fal = sum(Decimal(a["fal_equivalent_usd"] or 0) for a in attempts)
        for i, value in enumerate((seconds, cost, fal)):
            totals[i] += value
        note = f"  reused the result of {job['deduplicated_from'][:8]}" if job.get("deduplicated_from") else ""
        print(f"{str(job['input'])[:24]:<24} {job['state']:<10} {job['backend']:<8} "
              f"{seconds:>10.3f} {cost:>12.6f} {fal:>15.6f}{note}")
    print(f"{'total (' + str(len(rows)) + ' jobs)':<44} {totals[0]:>10.3f} {totals[1]:>12.6f} "
          f"{totals[2]:>15.6f}")


if __name__ == "__main__":
    main()
