"""The unit layer: what ``pytest tests/unit`` runs, in under 30 s.

No PostgreSQL, Redis, Celery worker, API or fal emulator: a test here that asks for one of their
fixtures fails at setup, and belongs in tests/integration. Every test here is marked ``unit``.
"""

from __future__ import annotations

import pytest

SERVICE_FIXTURES = frozenset({
    "database_url", "broker_url", "base_env", "env", "start_worker", "emulator",
})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(__file__.rsplit("/", 1)[0]):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(autouse=True)
def _no_services(request: pytest.FixtureRequest) -> None:
    used = SERVICE_FIXTURES.intersection(request.fixturenames)
    if used:
        pytest.fail(f"{request.node.nodeid} uses {sorted(used)}: a unit test runs without "
                    "services; move it to tests/integration")
