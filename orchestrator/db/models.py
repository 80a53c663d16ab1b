"""The tables: jobs, their inputs, attempts (with compute seconds and cost) and results."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    false,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from orchestrator.db.types import UTCDateTime
from orchestrator.jobs.states import AttemptOutcome, ComputeBasis, JobState, SubmitState

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# The UTC day of an instant, exactly as orchestrator.reports.costs.utc_bucket writes it (the
# planner matches an index expression only to the same expression). Postgres only: SQLite (the
# embedded mode) has no date_trunc, and its reports scan a small table anyway.
UTC_DAY = "date_trunc('day', timezone('UTC', {}))"

Money = Numeric(18, 9)
Seconds = Numeric(14, 6)


def _enum(cls: type[Any], name: str) -> Enum:
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=24,
        values_callable=lambda members: [m.value for m in members],
    )


# Expression indexes written in Postgres's SQL (``.ddl_if(dialect="postgresql")``): SQLite,
# the embedded mode's database, has neither the functions nor the need.
POSTGRES_ONLY_INDEXES = frozenset({"ix_jobs_report_day", "ix_attempts_report_day"})


def autogenerate_filter(dialect_name: str) -> Callable[..., bool]:
    """Alembic's ``include_object``: leave Postgres-only indexes out elsewhere."""

    def include(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
        return not (type_ == "index" and dialect_name != "postgresql" and name in POSTGRES_ONLY_INDEXES)

    return include


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, server_default=func.now(), nullable=False
    )
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, server_default=func.now(), onupdate=func.now(), nullable=False
    )


class Job(TimestampMixin, Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("client", "idempotency_key", name="uq_jobs_client_idempotency_key"),
        Index("ix_jobs_state_backend", "state", "backend"),
        Index("ix_jobs_created_at", "created_at"),
        # Cost reports (orchestrator/reports/costs.py): jobs by UTC day and backend, read in
        # group order from the index alone; and one client's jobs of a period.
        Index("ix_jobs_report_day", text(UTC_DAY.format("created_at")), "backend",
              postgresql_include=["created_at", "state", "finished_at"]).ddl_if(dialect="postgresql"),
        Index("ix_jobs_client_created_at", "client", "created_at",
              postgresql_include=["backend", "state", "finished_at"]),
        # Dedup lookups. With created_at in it, Postgres picks it over ix_jobs_client_created_at
        # even before the table has statistics (that one scans every recent job of the tenant).
        Index("ix_jobs_client_input_sha256_created_at", "client", "input_sha256", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    state: Mapped[JobState] = mapped_column(
        _enum(JobState, "job_state"), nullable=False, default=JobState.QUEUED
    )
    backend: Mapped[str] = mapped_column(String(16), nullable=False)
    model: Mapped[str] = mapped_column(String(200), nullable=False)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    client: Mapped[str] = mapped_column(String(100), nullable=False, default="default")
    idempotency_key: Mapped[str | None] = mapped_column(String(255))

    # What to process: an uploaded/stored input (job_inputs row) or a URL the worker fetches.
    source_kind: Mapped[str] = mapped_column(String(8), nullable=False)  # "file" | "url"
    source_name: Mapped[str] = mapped_column(String(500), nullable=False)
    source_url: Mapped[str | None] = mapped_column(Text)
    input_sha256: Mapped[str | None] = mapped_column(String(64))

    # Delivery bookkeeping: Celery keeps no per-message delivery count, so we do.
    deliveries: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Deliveries whose worker process died mid-attempt; capped by `max_deliveries`.
    crashes: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    attempt_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The reconciler's last re-publish of this job (it had no live delivery), and how many.
    redriven_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    redrives: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")

    error_code: Mapped[str | None] = mapped_column(String(100))
    error_message: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A paid submission's reply was lost and the job was submitted again: fal may have billed
    # it twice.
    possible_duplicate: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    # Where to POST fal's webhook body when the job ends (fal_webhook on the HTTP API).
    webhook_url: Mapped[str | None] = mapped_column(Text)
    # A per-job secret in the result URL the API hands out, so the URL works without a key.
    result_token: Mapped[str | None] = mapped_column(String(64))
    # Dedup: this job reused the result of that one, at zero cost …
    deduplicated_from: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # … or later identical requests were attached to this job while it ran.
    dedup_attached: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # What the caller asked for when it differs from ``backend``: "auto" (orchestrator/routing),
    # and why the job runs where it does (the decision and its inputs).
    requested_backend: Mapped[str | None] = mapped_column(String(16))
    routing: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    attempts: Mapped[list[Attempt]] = relationship(
        back_populates="job", order_by="Attempt.number", cascade="all, delete-orphan"
    )
    result: Mapped[Result | None] = relationship(back_populates="job", cascade="all, delete-orphan")


class JobInput(Base):
    """The bytes of a file or upload, stored so that any worker host can read them."""

    __tablename__ = "job_inputs"

    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    # Where the bytes are (orchestrator/storage): in ``data`` ("database"), or at ``location``
    # in a directory or an S3 bucket.
    data: Mapped[bytes | None] = mapped_column(LargeBinary)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    store: Mapped[str] = mapped_column(String(16), nullable=False, default="database",
                                       server_default="database")
    location: Mapped[str | None] = mapped_column(Text, index=True)
    # Set when retention deleted the bytes (data and location are then NULL).
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class TenantUsage(Base):
    """Running totals per tenant, kept in the transactions that change them, so a quota check
    reads one row instead of summing a table (orchestrator.storage.usage)."""

    __tablename__ = "tenant_usage"

    client: Mapped[str] = mapped_column(String(100), primary_key=True)
    # Bytes of the tenant's stored inputs that retention has not removed (job_inputs rows
    # with expired_at NULL): added when they are recorded, subtracted when they expire.
    stored_input_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0,
                                                    server_default="0")


class Attempt(Base):
    """One try at a job, with its compute seconds and cost."""

    __tablename__ = "attempts"
    __table_args__ = (
        UniqueConstraint("job_id", "number", name="uq_attempts_job_id_number"),
        Index("ix_attempts_started_at", "started_at"),
        # Cost reports: attempts by UTC day and backend with their figures, index-only.
        Index("ix_attempts_report_day", text(UTC_DAY.format("started_at")), "backend",
              postgresql_include=["started_at", "number", "compute_seconds", "cost_usd",
                                  "fal_equivalent_usd"]).ddl_if(dialect="postgresql"),
        Index("ix_attempts_outcome_next_poll_at", "outcome", "next_poll_at"),
        Index("ix_attempts_provider_request_id", "provider_request_id"),
    )

    # SQLite only auto-increments an INTEGER primary key (the rowid); BIGINT everywhere else.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
    )
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    backend: Mapped[str] = mapped_column(String(16), nullable=False)
    worker: Mapped[str] = mapped_column(String(200), nullable=False)
    outcome: Mapped[AttemptOutcome] = mapped_column(
        _enum(AttemptOutcome, "attempt_outcome"), nullable=False
    )
    started_at: Mapped[datetime] = mapped_column(
        UTCDateTime, server_default=func.now(), nullable=False
    )
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error_code: Mapped[str | None] = mapped_column(String(100))
    error_message: Mapped[str | None] = mapped_column(Text)

    compute_seconds: Mapped[Decimal | None] = mapped_column(Seconds)
    compute_basis: Mapped[ComputeBasis | None] = mapped_column(_enum(ComputeBasis, "compute_basis"))
    price_per_second: Mapped[Decimal | None] = mapped_column(Money)
    cost_usd: Mapped[Decimal | None] = mapped_column(Money)
    # For local attempts: what fal would have charged for the same compute seconds.
    fal_equivalent_usd: Mapped[Decimal | None] = mapped_column(Money)

    # Remote (fal) attempts: the one paid submission and its polling.
    submit_state: Mapped[SubmitState | None] = mapped_column(_enum(SubmitState, "submit_state"))
    provider_request_id: Mapped[str | None] = mapped_column(String(100))
    provider_status: Mapped[str | None] = mapped_column(String(20))
    queue_position: Mapped[int | None] = mapped_column(Integer)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_in_progress_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    polls: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    poll_errors: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )

    job: Mapped[Job] = relationship(back_populates="attempts")


class Result(Base):
    """The one stored output of a job."""

    __tablename__ = "results"

    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    attempt_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("attempts.id"), nullable=False)
    content_type: Mapped[str] = mapped_column(String(100), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    width: Mapped[int] = mapped_column(Integer, nullable=False)
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    store: Mapped[str] = mapped_column(String(16), nullable=False)  # database|directory|s3
    location: Mapped[str | None] = mapped_column(Text, index=True)
    data: Mapped[bytes | None] = mapped_column(LargeBinary)
    cropped: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, server_default=func.now(), nullable=False, index=True
    )
    # Set when retention deleted the bytes: the row (size, hash, cost history) stays.
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    job: Mapped[Job] = relationship(back_populates="result")


class ApiKey(Base):
    """An API key of a tenant (``name``); only its SHA-256 hash is stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False, index=True)
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    admin: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, server_default=func.now(), nullable=False
    )
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class FalBudget(Base):
    """A spend limit on fal, set with ``orchestrator budget set``: for every client together
    (``scope`` = ``*``, over the ``ORCH_FAL_BUDGET_*`` settings) or for one client."""

    __tablename__ = "fal_budgets"

    scope: Mapped[str] = mapped_column(String(100), primary_key=True)
    daily_usd: Mapped[Decimal | None] = mapped_column(Money)
    monthly_usd: Mapped[Decimal | None] = mapped_column(Money)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, server_default=func.now(), onupdate=func.now(), nullable=False
    )


class FalBudgetAlert(Base):
    """A budget threshold (80 or 100 %) crossed in a period: announced once, then recorded."""

    __tablename__ = "fal_budget_alerts"

    scope: Mapped[str] = mapped_column(String(100), primary_key=True)
    period: Mapped[str] = mapped_column(String(10), primary_key=True)  # 2026-11-28 | 2026-11
    threshold: Mapped[int] = mapped_column(Integer, primary_key=True)
    spent_usd: Mapped[Decimal] = mapped_column(Money, nullable=False)
    limit_usd: Mapped[Decimal] = mapped_column(Money, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, server_default=func.now(), nullable=False
    )
