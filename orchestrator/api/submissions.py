"""Group commit for the submit endpoint.

Submits that arrive while a batch is being written wait for the next one, so under load many
jobs share one transaction and one broker connection, and an idle API writes a lone request at
once (no timer, no added latency). A batch is recorded, then published; the next batch is
recorded while the previous one is published (publishing takes no database lock, and batches
are published in the order they were recorded). A caller is answered once its job's message
is in the broker. The command layer plans each request, records and publishes the batch; this
only gathers requests and hands each caller its own answer.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from orchestrator import commands
from orchestrator.commands import Caller, SubmitOptions
from orchestrator.jobs.producer import JobRequest, Source, Submitted
from orchestrator.jobs.states import JobState
from orchestrator.queue.broker import queue_depth
from orchestrator.routing import AUTO
from orchestrator.settings import Settings

log = logging.getLogger("orchestrator.api.submissions")

MAX_BATCH = 200


@dataclass(frozen=True)
class Accepted:
    submitted: Submitted
    queue_position: int  # messages ahead of this one in its backend's queue (approximate)


class SubmitBatcher:
    def __init__(self, settings: Settings, max_batch: int = MAX_BATCH) -> None:
        self.settings = settings
        self.max_batch = max_batch
        self._pending: list[tuple[JobRequest, asyncio.Future[Accepted]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._publishing: asyncio.Task[None] | None = None  # the last batch's publishing

    async def submit(self, request: JobRequest) -> Accepted:
        if request.idempotency_key is not None:
            # A reused key is a unique violation that would roll back a shared transaction.
            return (await run_in_threadpool(self._write, [request]))[0]
        future: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await future

    async def submit_for(self, caller: Caller, source: Source, options: SubmitOptions) -> Accepted:
        """Plan one source's job through the command layer, then write it with the others."""
        if commands.resolve_backend(self.settings, options) == AUTO:
            # The routing policy reads the system's state first: not on the event loop.
            planned = await run_in_threadpool(
                commands.requests_for, self.settings, caller, [source], options)
        else:
            planned = commands.requests_for(self.settings, caller, [source], options)
        [request] = planned
        return await self.submit(request)

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            try:
                submitted = await run_in_threadpool(self._record, [r for r, _ in batch])
            except Exception:
                # Nothing of the batch was committed: write each alone, so one bad request
                # fails only its own caller.
                for request, future in batch:
                    await self._write_alone(request, future)
                continue
            self._publishing = asyncio.create_task(
                self._publish(self._publishing, [f for _, f in batch], submitted))

    async def _publish(self, previous: asyncio.Task[None] | None,
                       futures: list[asyncio.Future[Accepted]], submitted: list[Submitted]) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # in recording order (its outcome is its callers')
        try:
            accepted = await run_in_threadpool(self._published, submitted)
        except BaseException as exc:  # cancelled at shutdown, or a bug: no caller waits forever
            for future in futures:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else
                                         RuntimeError("the API is shutting down"))
            if not isinstance(exc, Exception):
                raise
            return  # the callers have the error (each request answers with it, logged there)
        for future, item in zip(futures, accepted, strict=True):
            if not future.done():
                future.set_result(item)

    async def _write_alone(self, request: JobRequest, future: asyncio.Future[Accepted]) -> None:
        try:
            [item] = await run_in_threadpool(self._write, [request])
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(item)

    def _write(self, requests: list[JobRequest]) -> list[Accepted]:
        return self._published(self._record(requests))

    def _record(self, requests: list[JobRequest]) -> list[Submitted]:
        return commands.record_unpublished(self.settings, requests)

    def _published(self, submitted: list[Submitted]) -> list[Accepted]:
        commands.publish(self.settings, submitted)
        return [Accepted(item, pos) for item, pos in zip(submitted, self._positions(submitted),
                                                         strict=True)]

    def _positions(self, submitted: list[Submitted]) -> list[int]:
        """Each new job's place in its queue: the queue's length now, less what this batch
        published after it (one depth query per queue per batch, not per request)."""
        queued = [item for item in submitted if item.created and item.state is JobState.QUEUED]
        depth: dict[str, int] = {}
        try:
            for backend in {item.backend for item in queued}:
                depth[backend] = queue_depth(self.settings, backend)
        except Exception:
            return [0] * len(submitted)
        # Pushed later means further back: walk the batch from its last message.
        positions = [0] * len(submitted)
        for index in range(len(submitted) - 1, -1, -1):
            item = submitted[index]
            if item.created and item.state is JobState.QUEUED:
                depth[item.backend] -= 1
                positions[index] = max(0, depth[item.backend])
        return positions
