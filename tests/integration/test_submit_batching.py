"""The API's group commit (orchestrator/api/submissions.py) on the real Postgres and Redis:
concurrent submits share transactions, yet each caller gets its own job (or its own error),
identical inputs of one batch fold into one job, and every created job is published once."""

from __future__ import annotations

import asyncio
import json
import uuid

import psycopg
import redis
from celery._state import _task_stack
from celery.app.task import Context
from celery.result import AsyncResult
from PIL import Image

from orchestrator.api.submissions import Accepted, SubmitBatcher
from orchestrator.jobs.producer import JobRequest, Source, Submitted
from orchestrator.jobs.states import JobState
from orchestrator.queue.celery_app import RUN_JOB_TASK, publish_many, publisher_for
from orchestrator.settings import load_settings
from tests.support.images import png_of


def png(tag: int) -> bytes:
    return png_of(Image.new("RGB", (2, 2), (tag % 256, tag // 256 % 256, 7)))


def request(data: bytes, name: str = "img", client: str = "svc") -> JobRequest:
    return JobRequest(Source(name=name, data=data, origin=name), "local", client=client)


async def submit_all(batcher: SubmitBatcher, requests: list[JobRequest]) -> list[Accepted | BaseException]:
    return await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)


def rows(database_url: str) -> list[tuple[uuid.UUID, str, int]]:
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        return conn.execute("SELECT id, state, dedup_attached FROM jobs").fetchall()


def test_concurrent_submits_each_get_their_own_job_and_one_message(env: dict[str, str]) -> None:
    settings = load_settings()
    batcher = SubmitBatcher(settings, max_batch=16)
    sizes: list[int] = []
    record = batcher._record
    batcher._record = lambda batch: (sizes.append(len(batch)), record(batch))[1]  # type: ignore[method-assign]
    requests = [request(png(i), name=f"img-{i}") for i in range(60)]

    accepted = asyncio.run(submit_all(batcher, requests))

    assert sizes == [16, 16, 16, 12]  # they queued up while the first batch was written

    assert all(isinstance(a, Accepted) for a in accepted)
    ids = [a.submitted.job_id for a in accepted if isinstance(a, Accepted)]
    assert len(set(ids)) == 60
    assert [a.submitted.source.name for a in accepted if isinstance(a, Accepted)] == \
        [f"img-{i}" for i in range(60)]
    stored = rows(env["ORCH_DATABASE_URL"])
    assert {r[0] for r in stored} == set(ids) and {r[1] for r in stored} == {"queued"}
    assert redis.Redis.from_url(env["ORCH_BROKER_URL"]).llen("local") == 60
    # Positions count the messages ahead in the queue: all distinct, 0 … 59.
    positions = sorted(a.queue_position for a in accepted if isinstance(a, Accepted))
    assert positions == list(range(60))


def test_identical_inputs_in_one_batch_fold_into_one_job(env: dict[str, str]) -> None:
    settings = load_settings()
    batcher = SubmitBatcher(settings)
    same = png(1)
    requests = [request(same) for _ in range(5)] + [request(same, client="other")]

    accepted = [a for a in asyncio.run(submit_all(batcher, requests)) if isinstance(a, Accepted)]

    mine = {a.submitted.job_id for a in accepted[:5]}
    assert len(mine) == 1  # one job for the tenant; the other four attached to it
    assert [a.submitted.created for a in accepted[:5]].count(True) == 1
    assert accepted[5].submitted.job_id not in mine  # dedup never crosses tenants
    by_id = {r[0]: r for r in rows(env["ORCH_DATABASE_URL"])}
    assert len(by_id) == 2 and by_id[mine.pop()][2] == 4
    assert redis.Redis.from_url(env["ORCH_BROKER_URL"]).llen("local") == 2


def test_a_bad_request_fails_alone(env: dict[str, str]) -> None:
    """A value Postgres cannot store fails the shared transaction: the batch is written again
    one request at a time, so only its caller gets the error and nothing is stored twice."""
    settings = load_settings()
    batcher = SubmitBatcher(settings)
    requests = [request(png(i), name=f"ok-{i}") for i in range(8)]
    requests.insert(3, request(png(99), name="bad\x00name"))

    accepted = asyncio.run(submit_all(batcher, requests))

    errors = [a for a in accepted if isinstance(a, BaseException)]
    assert len(errors) == 1 and accepted[3] is errors[0]
    ok = [a for a in accepted if isinstance(a, Accepted)]
    assert len(ok) == 8 and all(a.submitted.state is JobState.QUEUED for a in ok)
    assert len(rows(env["ORCH_DATABASE_URL"])) == 8
    assert redis.Redis.from_url(env["ORCH_BROKER_URL"]).llen("local") == 8


def test_a_batch_whose_publishing_breaks_fails_its_callers_only(env: dict[str, str]) -> None:
    """Batches are published one after another, each while the next is recorded: an error
    in one batch's publishing reaches that batch's callers, and the batches after it are
    published and answered as usual."""
    settings = load_settings()
    batcher = SubmitBatcher(settings, max_batch=4)
    published = batcher._published
    calls: list[int] = []

    def breaks_once(submitted: list[Submitted]) -> list[Accepted]:
        calls.append(len(submitted))
        if len(calls) == 1:
            raise RuntimeError("broken publishing")
        return published(submitted)

    batcher._published = breaks_once  # type: ignore[method-assign]
    accepted = asyncio.run(submit_all(batcher, [request(png(i), name=f"img-{i}") for i in range(12)]))

    assert calls == [4, 4, 4]
    assert all(isinstance(a, RuntimeError) for a in accepted[:4])
    assert all(isinstance(a, Accepted) for a in accepted[4:])
    # The first batch's rows are committed and queued (the reconciler re-drives them); only
    # the other two batches' messages went out.
    assert len(rows(env["ORCH_DATABASE_URL"])) == 12
    assert redis.Redis.from_url(env["ORCH_BROKER_URL"]).llen("local") == 8


def test_keyed_requests_keep_their_own_transaction(env: dict[str, str]) -> None:
    settings = load_settings()
    batcher = SubmitBatcher(settings)
    keyed = [JobRequest(Source("k", data=png(5)), "local", client="svc", idempotency_key="order-1")
             for _ in range(3)]
    others = [request(png(10 + i)) for i in range(4)]

    accepted = asyncio.run(submit_all(batcher, keyed + others))

    assert all(isinstance(a, Accepted) for a in accepted)
    keyed_ids = {a.submitted.job_id for a in accepted[:3] if isinstance(a, Accepted)}
    assert len(keyed_ids) == 1
    assert len(rows(env["ORCH_DATABASE_URL"])) == 5


def test_dedup_window_zero_disables_folding(env: dict[str, str]) -> None:
    settings = load_settings(dedup_window_seconds=0)
    batcher = SubmitBatcher(settings)
    same = png(3)

    accepted = asyncio.run(submit_all(batcher, [request(same) for _ in range(4)]))

    assert len({a.submitted.job_id for a in accepted if isinstance(a, Accepted)}) == 4


def _comparable(raw: bytes | str) -> dict[str, object]:
    """A Celery message with what differs between any two sends (ids, origin) blanked."""
    message = json.loads(raw)
    for key in ("id", "root_id", "origin"):
        message["headers"][key] = None
    for key in ("correlation_id", "delivery_tag"):
        message["properties"][key] = None
    return dict(message)


def test_batched_messages_are_the_ones_send_task_publishes(env: dict[str, str]) -> None:
    settings = load_settings()
    publisher = publisher_for(settings)
    broker = redis.Redis.from_url(env["ORCH_BROKER_URL"])
    job = str(uuid.uuid4())

    publisher.send_task(RUN_JOB_TASK, args=[job], queue="fal", routing_key="fal", retry=True)
    publish_many(settings, [(job, "local"), (job, "fal"), (job, "local")])
    # Redis lists are pushed at the head: oldest last.
    [batched_fal, by_send_task] = broker.lrange("fal", 0, -1)
    batched_local = broker.lrange("local", 0, -1)

    assert _comparable(batched_fal) == _comparable(by_send_task)
    assert len(batched_local) == 2
    fal_route = json.loads(by_send_task)["properties"]["delivery_info"]
    for raw in batched_local:
        local = _comparable(raw)
        assert local["properties"]["delivery_info"] == {**fal_route, "routing_key": "local"}  # type: ignore[index]
        assert {**local, "properties": None} == {**_comparable(by_send_task), "properties": None}
    ids = {json.loads(raw)["headers"]["id"] for raw in [batched_fal, *batched_local]}
    assert len(ids) == 3  # every message its own task id


def test_batched_messages_published_inside_a_task_record_its_lineage(env: dict[str, str]) -> None:
    settings = load_settings()
    publisher = publisher_for(settings)
    broker = redis.Redis.from_url(env["ORCH_BROKER_URL"])
    parent = Context(id="parent-task", root_id="root-task", called_directly=False)

    trail: list[str] = []

    class Parent:  # what Celery keeps on its task stack while a task runs
        request = parent

        def add_trail(self, result: AsyncResult) -> None:
            trail.append(result.id)

    _task_stack.push(Parent())
    try:
        publish_many(settings, [("job-1", "local")])
        publisher.send_task(RUN_JOB_TASK, args=["job-1"], queue="local", routing_key="local")
    finally:
        _task_stack.pop()
    by_send_task, batched = (json.loads(raw)["headers"] for raw in broker.lrange("local", 0, -1))
    assert (batched["root_id"], batched["parent_id"]) == ("root-task", "parent-task")
    assert (by_send_task["root_id"], by_send_task["parent_id"]) == ("root-task", "parent-task")
    assert trail == [batched["id"], by_send_task["id"]]  # both added to the parent's children
