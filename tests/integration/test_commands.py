"""The command layer (orchestrator.commands) on the real Postgres and Redis: tenant isolation,
keyset pagination, batches (``auto`` included) in one transaction, and request errors."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import psycopg
import pytest
from PIL import Image

from orchestrator import commands
from orchestrator.commands import BatchEntry, Caller, CancelOutcome, JobFilter, SubmitOptions
from orchestrator.errors import (
    InputUnreachable,
    JobNotFound,
    JobStateError,
    RequestError,
)
from orchestrator.jobs.producer import Source
from orchestrator.jobs.states import JobState
from orchestrator.results.links import link_token
from orchestrator.settings import Settings, load_settings
from tests.conftest import run_cli

ADMIN = Caller(client=None, is_admin=True)
ALICE = Caller("alice")
BOB = Caller("bob")


def png(tag: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (3, 2), (tag % 256, tag // 256 % 256, 9)).save(buf, "PNG")
    return buf.getvalue()


def sql(settings: Settings) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(settings.database.url.get_secret_value().replace("+psycopg", ""), autocommit=True)


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return load_settings()


def test_a_tenant_cannot_see_or_touch_another_tenants_job(settings: Settings) -> None:
    [mine] = commands.submit(settings, ALICE, [Source("a", data=png(1))],
                             SubmitOptions(backend="local"))
    [theirs] = commands.submit(settings, BOB, [Source("b", data=png(2))],
                               SubmitOptions(backend="local"))
    assert commands.show(settings, ALICE, mine.job_id).client == "alice"

    for act in (commands.show, commands.cancel, commands.retry, commands.result):
        with pytest.raises(JobNotFound):
            act(settings, BOB, mine.job_id)
    assert commands.show(settings, ALICE, mine.job_id).state == "queued"  # untouched
    with pytest.raises(JobNotFound):  # a malformed id is just as absent
        commands.show(settings, BOB, "not-a-uuid")

    # A tenant lists its own jobs, whatever client it names; an admin picks one or sees all.
    own = commands.list_jobs(settings, BOB, JobFilter(client="alice")).jobs
    assert [j.id for j in own] == [theirs.job_id]
    assert [j.id for j in commands.list_jobs(settings, ADMIN, JobFilter(client="alice")).jobs] \
        == [mine.job_id]
    assert len(commands.list_jobs(settings, ADMIN).jobs) == 2
    assert commands.show(settings, ADMIN, theirs.job_id).client == "bob"

    # Costs: another client's are forbidden to a tenant, and its own are scoped to it.
    with pytest.raises(RequestError) as refused:
        commands.costs(settings, BOB, client="alice")
    assert refused.value.forbidden
    assert commands.costs(settings, BOB).client == "bob"

    # The owner acts on it: no result yet is a state error, cancel and retry work.
    with pytest.raises(JobStateError):
        commands.result(settings, ALICE, mine.job_id)
    done = commands.cancel(settings, ALICE, mine.job_id)
    assert (done.outcome, done.state) == (CancelOutcome.CANCELLED, JobState.CANCELLED)
    with pytest.raises(JobStateError, match="already cancelled"):
        commands.cancel(settings, ALICE, mine.job_id)
    assert commands.retry(settings, ALICE, mine.job_id).state == "queued"
    # The result link's token works without a caller; any other token is "not found".
    with sql(settings) as conn:
        row = conn.execute("SELECT result_token FROM jobs WHERE id = %s", (mine.job_id,)).fetchone()
    assert row is not None
    link = link_token(str(row[0]), mine.job_id, 60)  # what image.url carries (issue 14.1)
    with pytest.raises(JobStateError):  # the right token, but nothing to download yet
        commands.result_by_token(settings, mine.job_id, link)
    with pytest.raises(JobNotFound):  # the stored secret itself is no link
        commands.result_by_token(settings, mine.job_id, str(row[0]))
    with pytest.raises(JobNotFound):
        commands.result_by_token(settings, mine.job_id, "wrong")


def _insert_jobs(settings: Settings, n: int, *, stamps: int) -> None:
    """n jobs over ``stamps`` distinct creation times (many ties), half alice's, half bob's."""
    with sql(settings) as conn:
        conn.execute(
            "INSERT INTO jobs (id, state, backend, model, options, client, source_kind, "
            "source_name, deliveries, crashes, attempt_count, max_attempts, created_at) "
            "SELECT gen_random_uuid(), CASE WHEN i %% 3 = 0 THEN 'failed' ELSE 'queued' END, "
            "'local', 'm', '{}', CASE WHEN i %% 2 = 0 THEN 'alice' ELSE 'bob' END, 'file', "
            "'j' || i, 0, 0, 0, 3, "
            "timestamptz '2026-01-01 00:00:00+00' + (i %% %s) * interval '1 second' "
            "FROM generate_series(1, %s) AS i", (stamps, n))
        conn.execute("ANALYZE jobs")


def _all_pages(settings: Settings, caller: Caller, filters: JobFilter, limit: int) -> list[uuid.UUID]:
    seen: list[uuid.UUID] = []
    cursor: str | None = None
    while True:
        page = commands.list_jobs(settings, caller, filters, limit=limit, after=cursor)
        assert len(page.jobs) <= limit
        seen += [job.id for job in page.jobs]
        if page.next_cursor is None:
            return seen
        assert len(page.jobs) == limit
        cursor = page.next_cursor


def test_keyset_pagination_walks_every_job_once_in_order(settings: Settings) -> None:
    _insert_jobs(settings, 1000, stamps=40)  # ~25 jobs share each created_at
    with sql(settings) as conn:
        expected = [r[0] for r in conn.execute(
            "SELECT id FROM jobs ORDER BY created_at DESC, id DESC")]
        alice_failed = [r[0] for r in conn.execute(
            "SELECT id FROM jobs WHERE client = 'alice' AND state = 'failed' "
            "ORDER BY created_at DESC, id DESC")]
    assert _all_pages(settings, ADMIN, JobFilter(), 37) == expected
    assert _all_pages(settings, ALICE, JobFilter(state=JobState.FAILED), 11) == alice_failed

    # A job created while someone pages does not shift the pages after the first.
    first = commands.list_jobs(settings, ADMIN, limit=100)
    commands.submit(settings, ALICE, [Source("late", data=png(7))], SubmitOptions(backend="local"))
    rest = _all_pages_from(settings, first.next_cursor)
    assert [j.id for j in first.jobs] + rest == expected

    with pytest.raises(RequestError, match="cursor"):
        commands.list_jobs(settings, ADMIN, after="not a cursor")
    with pytest.raises(RequestError, match="limit"):
        commands.list_jobs(settings, ADMIN, limit=0)


def _all_pages_from(settings: Settings, cursor: str | None) -> list[uuid.UUID]:
    out: list[uuid.UUID] = []
    while cursor is not None:
        page = commands.list_jobs(settings, ADMIN, limit=100, after=cursor)
        out += [job.id for job in page.jobs]
        cursor = page.next_cursor
    return out


def test_a_deep_page_is_an_index_range_scan(settings: Settings) -> None:
    """A page far down a large table is found through the index at the cursor: the query plan
    reads a page's worth of rows, not everything before it."""
    _insert_jobs(settings, 200_000, stamps=100_000)
    with sql(settings) as conn:
        deep = conn.execute("SELECT created_at, id FROM jobs ORDER BY created_at DESC, id DESC "
                            "OFFSET 150000 LIMIT 1").fetchone()
    assert deep is not None
    cursor = commands.jobs.encode_cursor(deep[0], deep[1])
    from sqlalchemy.dialects import postgresql

    from orchestrator.commands import jobs as job_commands

    statements: list[str] = []
    original = job_commands.session_scope

    # Capture the SQL the command runs, then EXPLAIN ANALYZE it.
    from contextlib import contextmanager

    @contextmanager
    def spying(url: str):  # type: ignore[no-untyped-def]
        with original(url) as session:
            real = session.scalars

            def scalars(stmt, *a, **k):  # type: ignore[no-untyped-def]
                statements.append(str(stmt.compile(dialect=postgresql.dialect(),
                                                   compile_kwargs={"literal_binds": True})))
                return real(stmt, *a, **k)

            session.scalars = scalars  # type: ignore[method-assign]
            yield session

    job_commands.session_scope = spying  # type: ignore[assignment]
    try:
        page = commands.list_jobs(settings, ADMIN, limit=50, after=cursor)
    finally:
        job_commands.session_scope = original
    assert len(page.jobs) == 50
    with sql(settings) as conn:
        plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statements[0]).fetchone()
    assert plan is not None
    text = json.dumps(plan[0])
    assert "Seq Scan" not in text, text

    def rows_read(node: dict[str, object]) -> int:
        own = int(node.get("Actual Rows", 0)) if "Scan" in str(node.get("Node Type")) else 0  # type: ignore[call-overload]
        return own + sum(rows_read(child) for child in node.get("Plans", []))  # type: ignore[attr-defined]

    assert rows_read(plan[0][0]["Plan"]) < 1000, text


def test_a_batch_with_auto_is_one_transaction_and_a_bad_item_rejects_only_itself(
    settings: Settings,
) -> None:
    entries = [
        BatchEntry(Source("i0", data=png(10)), "i0"),
        BatchEntry(InputUnreachable("the image_url has no host"), "http:///x"),
        BatchEntry(Source("i2", data=png(12)), "i2", crop_to_bbox=True),
        BatchEntry(Source("i3", data=png(13)), "i3", sync_mode=True),
    ]
    out = commands.submit_batch(settings, ALICE, entries, SubmitOptions(backend="auto"))
    assert [o.origin for o in out] == ["i0", "http:///x", "i2", "i3"]
    assert out[1].submitted is None and out[1].error == "the image_url has no host"
    accepted = [o.submitted for o in out if o.submitted is not None]
    assert len(accepted) == 3 and all(s.created for s in accepted)
    with sql(settings) as conn:
        rows = conn.execute("SELECT requested_backend, routing IS NOT NULL, client, "
                            "xmin::text FROM jobs").fetchall()
    assert len(rows) == 3
    assert {(r[0], r[1], r[2]) for r in rows} == {("auto", True, "alice")}
    assert len({r[3] for r in rows}) == 1, rows  # one transaction wrote them all
    assert [commands.show(settings, ALICE, s.job_id).options for s in accepted] == [
        {"crop_to_bbox": False}, {"crop_to_bbox": True}, {"crop_to_bbox": False, "sync_mode": True}]

    # Named backends too; an unknown backend is refused before anything is recorded.
    named = commands.submit_batch(settings, BOB, entries[:1] + entries[2:],
                                  SubmitOptions(backend="local"))
    assert all(o.submitted is not None for o in named)
    with pytest.raises(RequestError, match="unknown backend"):
        commands.submit_batch(settings, BOB, entries, SubmitOptions(backend="gpu"))
    with sql(settings) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (6,)
        assert conn.execute("SELECT count(DISTINCT xmin::text) FROM jobs WHERE client = 'bob'"
                            ).fetchone() == (1,)


def test_the_python_api_still_takes_auto(settings: Settings) -> None:
    import orchestrator

    [item] = orchestrator.submit([Source("p", data=png(20))], settings=settings, backend="auto",
                                 client="svc", idempotency_key="k-1")
    again = orchestrator.submit([Source("p", data=png(20))], settings=settings, backend="auto",
                                client="svc", idempotency_key="k-1")
    assert [s.job_id for s in again] == [item.job_id] and not again[0].created
    view = commands.show(settings, Caller("svc"), item.job_id)
    assert view.requested_backend == "auto" and view.routing is not None
    assert view.idempotency_key == "k-1"


def test_request_errors_are_not_configuration_errors(settings: Settings, env: dict[str, str],
                                                     tmp_path: Path) -> None:
    with pytest.raises(RequestError, match="unknown backend 'gpu'"):
        commands.submit_paths(settings, ADMIN, [str(tmp_path)], SubmitOptions(backend="gpu"))
    with pytest.raises(RequestError, match="deadline is for backend auto"):
        commands.submit_paths(settings, ADMIN, [str(tmp_path)],
                              SubmitOptions(backend="local", deadline_seconds=5))
    with pytest.raises(RequestError, match="no image files"):
        commands.submit_paths(settings, ADMIN, [str(tmp_path)], SubmitOptions())
    with pytest.raises(RequestError, match="no such file"):
        commands.submit_paths(settings, ADMIN, [str(tmp_path / "missing.png")], SubmitOptions())

    out = run_cli(env, "submit", str(tmp_path / "missing.png"))
    assert out.returncode == 1, out.stderr
    assert "configuration error" not in out.stderr and "no such file" in out.stderr
    assert "Traceback" not in out.stderr


def test_waiting_on_inputs_that_share_a_job_ends_when_it_does(settings: Settings) -> None:
    import time

    from orchestrator.jobs.producer import wait_for

    same = png(30)
    items = commands.submit(settings, ALICE, [Source("x", data=same), Source("y", data=same)],
                            SubmitOptions(backend="local"))
    assert items[0].job_id == items[1].job_id and not items[1].created  # folded by dedup
    commands.cancel(settings, ALICE, items[0].job_id)
    started = time.monotonic()
    assert commands.wait(settings, items, timeout=20, poll_seconds=0.05) == {
        items[0].job_id: JobState.CANCELLED}
    assert wait_for([i.job_id for i in items], settings=settings, timeout=20,
                    poll_seconds=0.05) == {items[0].job_id: JobState.CANCELLED}
    assert time.monotonic() - started < 10  # not the timeout: done at once
