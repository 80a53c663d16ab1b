"""Seed a SQLite database with two weeks of simulated jobs, for the docs' cost chart.

    python scripts/seed_cost_chart.py /tmp/chart.db
    ORCH_DATABASE_URL=sqlite:////tmp/chart.db orchestrator report costs \
        --since 2026-11-01 --until 2026-11-14 -g day --chart docs/assets/cost-chart.svg

Nothing here ran: the jobs and attempts are made up (a fixed random seed, so the chart is the
same every time) and priced as the workers price real ones — local seconds at
ORCH_LOCAL_PRICE_PER_SECOND (0.0002 here, a CPU host's share) and fal seconds at
ORCH_FAL_PRICE_PER_SECOND (0.00111), each attempt also carrying its fal-equivalent cost.
"""

from __future__ import annotations

import random
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.db.migrate import upgrade  # noqa: E402
from orchestrator.db.models import Attempt, Job  # noqa: E402
from orchestrator.db.session import session_scope  # noqa: E402
from orchestrator.jobs.states import AttemptOutcome, ComputeBasis, JobState  # noqa: E402

LOCAL_PRICE = Decimal("0.0002")
FAL_PRICE = Decimal("0.00111")
START = datetime(2026, 11, 1, tzinfo=UTC)
DAYS = 14


def _money(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.000000001"))


def seed(path: Path) -> int:
    url = f"sqlite:///{path}"
    upgrade(url)
    rng = random.Random(16)
    jobs = 0
    with session_scope(url) as session:
        for day in range(DAYS):
            for _ in range(rng.randint(40, 70)):
                # Busy afternoons overflow to fal, as auto routing would send them.
                backend = "fal" if rng.random() < 0.2 + 0.25 * (day % 7 in (1, 2)) else "local"
                at = START + timedelta(days=day, seconds=rng.randint(0, 86_000))
                seconds = Decimal(str(round(rng.uniform(1.6, 2.4) if backend == "local"
                                            else rng.uniform(0.8, 1.4), 3)))
                price = LOCAL_PRICE if backend == "local" else FAL_PRICE
                job = Job(id=uuid.UUID(int=rng.getrandbits(128)), state=JobState.SUCCEEDED,
                          backend=backend, model="isnet-general-use", client="demo",
                          source_kind="file", source_name="photo.jpg", max_attempts=4,
                          attempt_count=1, created_at=at, updated_at=at, started_at=at,
                          finished_at=at + timedelta(seconds=float(seconds) + 0.5))
                job.attempts.append(Attempt(
                    number=1, backend=backend, worker="seed", outcome=AttemptOutcome.SUCCEEDED,
                    started_at=at, finished_at=job.finished_at, compute_seconds=seconds,
                    compute_basis=(ComputeBasis.LOCAL_MEASURED if backend == "local"
                                   else ComputeBasis.FAL_INFERENCE_TIME),
                    price_per_second=price, cost_usd=_money(seconds * price),
                    fal_equivalent_usd=_money(seconds * FAL_PRICE)))
                session.add(job)
                jobs += 1
    return jobs


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/seed_cost_chart.py DATABASE_FILE")
    print(f"{seed(Path(sys.argv[1]))} jobs seeded", file=sys.stderr)
