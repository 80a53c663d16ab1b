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
    unpriced_total = False
    for job in rows:
        attempts = job.get("attempt_log", [])
        seconds = sum(Decimal(a["compute_seconds"] or 0) for a in attempts)
        cost = sum(Decimal(a["cost_usd"] or 0) for a in attempts)
        fal = sum(Decimal(a["fal_equivalent_usd"] or 0) for a in attempts)
        # Seconds spent with no cost stored: no local price was set (not free).
        unpriced = any(a["cost_usd"] is None and a["compute_seconds"] for a in attempts)
        unpriced_total |= unpriced
        for i, value in enumerate((seconds, cost, fal)):
            totals[i] += value
        note = f"  reused the result of {job['deduplicated_from'][:8]}" if job.get("deduplicated_from") else ""
        shown = f"{'not set':>12}" if unpriced else f"{cost:>12.6f}"
        print(f"{str(job['input'])[:24]:<24} {job['state']:<10} {job['backend']:<8} "
              f"{seconds:>10.3f} {shown} {fal:>15.6f}{note}")
    total = f"{'not set':>12}" if unpriced_total else f"{totals[1]:>12.6f}"
    print(f"{'total (' + str(len(rows)) + ' jobs)':<44} {totals[0]:>10.3f} {total} "
          f"{totals[2]:>15.6f}")
    if unpriced_total:
        print("local price not set: set ORCH_LOCAL_PRICE_PER_SECOND or "
              "ORCH_LOCAL_HOST_PRICE_PER_HOUR to cost local work")


if __name__ == "__main__":
    main()
