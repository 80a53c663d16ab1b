from __future__ import annotations

import warnings
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from orchestrator.db.migrate import downgrade, upgrade
from orchestrator.db.models import Base, autogenerate_filter
from tests.conftest import create_database, drop_database


def _diff(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn, warnings.catch_warnings():
            # SQLite cannot reflect expression indexes; ours are Postgres-only and filtered out.
            warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified "
                                    "expression-based index", UserWarning)
            ctx = MigrationContext.configure(conn, opts={
                "compare_type": True,
                "include_object": autogenerate_filter(conn.dialect.name)})
            return list(compare_metadata(ctx, Base.metadata))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _round_trip(url: str) -> None:
    """Upgrade → the models' tables, no autogenerate diff → downgrade to nothing → upgrade."""
    upgrade(url)
    assert _tables(url) == set(Base.metadata.tables)
    assert _diff(url) == []
    downgrade(url, "base")
    assert _tables(url) == set()
    upgrade(url)
    assert _diff(url) == []


def test_upgrade_downgrade_upgrade_and_models_match_migrations() -> None:
    dbname, url = create_database()
    try:
        _round_trip(url)
    finally:
        drop_database(dbname)


def test_migrate_command(base_env: dict[str, str]) -> None:
    from tests.conftest import run_cli

    dbname, url = create_database()
    try:
        result = run_cli({**base_env, "ORCH_DATABASE_URL": url}, "migrate")
        assert result.returncode == 0, result.stderr
        assert _tables(url) == set(Base.metadata.tables)
    finally:
        drop_database(dbname)


def test_check_constraints_admit_every_enum_value(database_url: str) -> None:
    """Autogenerate does not compare CHECK constraints: a new enum member needs a migration."""
    import psycopg

    from orchestrator.jobs.states import AttemptOutcome, ComputeBasis, JobState, SubmitState

    expected = {
        "ck_jobs_job_state": JobState,
        "ck_attempts_attempt_outcome": AttemptOutcome,
        "ck_attempts_compute_basis": ComputeBasis,
        "ck_attempts_submit_state": SubmitState,
    }
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        rows = dict(conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE contype = 'c'"
        ).fetchall())
    for name, enum in expected.items():
        assert name in rows, name
        for member in enum:
            assert f"'{member.value}'" in rows[name], (name, member)


def test_migrations_run_on_sqlite_and_match_the_models(tmp_path: Path) -> None:
    """The embedded mode's database: the same migrations, SQLite's ALTERs done in batch mode."""
    url = f"sqlite:///{tmp_path / 'orchestrator.db'}"
    _round_trip(url)
