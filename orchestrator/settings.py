"""One typed settings object.

Precedence, lowest first: the committed defaults in ``config/orchestrator.toml``, the TOML file
named by ``ORCH_CONFIG``, then environment variables (``ORCH_*``, plus fal's own ``FAL_KEY``).
A bad value raises :class:`~orchestrator.errors.ConfigError` naming the setting.
"""

from __future__ import annotations

import os
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from orchestrator.errors import ConfigError

ENV_PREFIX = "ORCH_"
DEFAULT_CONFIG_FILE = Path(__file__).resolve().parent.parent / "config" / "orchestrator.toml"


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        populate_by_name=True,
        validate_default=True,
    )

    # --- where things live ---------------------------------------------------------------
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/orchestrator"
    broker_url: str = "redis://127.0.0.1:6379/0"

    # --- fal (issue 3 builds on these) ---------------------------------------------------
    fal_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("FAL_KEY", "fal_key")
    )
    fal_endpoint: str = "fal-ai/imageutils/rembg"
    fal_price_per_second: Decimal = Field(default=Decimal("0.00111"), ge=0)
    # Limits shared by all workers (kept in Redis, so fal needs a Redis broker): requests in
    # flight at fal, submits per second.
    fal_max_in_flight: int = Field(default=200, ge=1)
    fal_max_submits_per_second: float = Field(default=20.0, gt=0)
    fal_submit_timeout_seconds: float = Field(default=30.0, gt=0)
    # Polling: the interval starts here and grows ×1.5 per poll up to the maximum.
    fal_poll_initial_seconds: float = Field(default=0.5, gt=0)
    fal_poll_max_seconds: float = Field(default=10.0, gt=0)
    fal_poll_batch: int = Field(default=200, ge=1, le=5000)
    fal_max_result_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    # After a submit whose reply was lost, wait this long before submitting again.
    fal_resubmit_after_seconds: float = Field(default=5.0, ge=0)
    # Spend limits on fal for all clients together, per UTC day and month (USD; none = no
    # limit). `orchestrator budget set` overrides them and sets per-client ones.
    fal_budget_daily_usd: Decimal | None = Field(default=None, ge=0)
    fal_budget_monthly_usd: Decimal | None = Field(default=None, ge=0)
    # An explicit fal job over budget waits (re-checked every fal_budget_wait_seconds) or fails.
    fal_over_budget: Literal["wait", "fail"] = "wait"
    fal_budget_wait_seconds: float = Field(default=60.0, gt=0)
    # What a submission not yet costed counts against a budget: this, or the dearest of the
    # last 100 costed fal attempts if more.
    fal_job_cost_estimate_usd: Decimal = Field(default=Decimal("0.005"), gt=0)
    # Crossing 80 % and 100 % of a budget is logged, and POSTed (JSON) here when set.
    budget_alert_webhook_url: str | None = None
    # A fal request not completed this long after its submit is cancelled at fal; the job
    # gets a new attempt if it has attempts left.
    fal_request_timeout_seconds: float = Field(default=600.0, gt=0)
    # Where fal reaches this orchestrator's webhook receiver (`https://HOST/v1/fal/webhook`).
    # Set, every submit carries it, and a request whose id was lost (a worker killed between
    # fal's reply and the commit, a reply lost on the wire) is adopted from its webhook.
    fal_webhook_url: str | None = None
    # With fal_webhook_url: how long an unknown submit waits for its webhook before the job
    # is bought again (and flagged possible_duplicate).
    fal_adopt_wait_seconds: float = Field(default=120.0, ge=0)
    # fal's webhook signing keys.
    fal_jwks_url: str = "https://rest.fal.ai/.well-known/jwks.json"

    # --- local backend -------------------------------------------------------------------
    local_model: str = "isnet-general-use"
    local_model_path: Path | None = None
    local_price_per_second: Decimal = Field(default=Decimal(0), ge=0)
    # ONNX intra-op threads per session; 0 = all cores.
    local_onnx_threads: int = Field(default=0, ge=0, le=256)
    # Inferences one worker runs at once; 0 = cores // ONNX threads (never oversubscribes).
    local_inference_slots: int = Field(default=0, ge=0, le=256)

    # --- worker --------------------------------------------------------------------------
    # Worker processes per `orchestrator worker`; 0 = inference slots. More processes than slots
    # overlap decoding, encoding and storing with inference, at one ONNX session (~2 GiB) each.
    worker_concurrency: int = Field(default=0, ge=0, le=512)
    default_backend: Literal["local", "fal", "auto"] = "local"
    # --- auto routing (orchestrator/routing) ---------------------------------------------
    # An auto job should be done within this many seconds: local while its estimated wait
    # (queue depth × recent seconds per job ÷ parallelism) fits, else fal.
    auto_deadline_seconds: float = Field(default=60.0, gt=0)
    # Local jobs run at once across all local workers; 0 = this host's inference slots.
    auto_local_parallelism: int = Field(default=0, ge=0)
    # Seconds per local job until there are finished local attempts to measure.
    auto_local_seconds_per_job: float = Field(default=2.0, gt=0)
    # fal is avoided while this share of its recent attempts (last 20, 10 minutes) failed.
    auto_fal_max_error_rate: float = Field(default=0.5, gt=0, le=1)
    # Circuit breaker: this many backend failures in a row open it; auto work goes to the
    # other backend until the cooldown has passed and an attempt succeeds again.
    breaker_failures: int = Field(default=5, ge=1)
    breaker_cooldown_seconds: float = Field(default=60.0, gt=0)
    # How long a new worker process may take to load its model before Celery gives up on it.
    worker_start_timeout_seconds: float = Field(default=180.0, gt=0)
    # A pool process whose resident memory passed this after a job is replaced by a fresh one
    # (Celery's worker_max_memory_per_child); 0 = no limit.
    worker_max_memory_mb: int = Field(default=0, ge=0)
    # A pool process is replaced after this many jobs (worker_max_tasks_per_child); 0 = never.
    worker_max_tasks_per_child: int = Field(default=0, ge=0)
    # ONNX Runtime execution providers for local sessions, in order of preference. A worker
    # refuses to start when a non-CPU provider asked for here is not really in use.
    local_providers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["CPUExecutionProvider"]
    )

    # --- logs ----------------------------------------------------------------------------
    # `json`: one JSON object per line with job id, attempt, backend and request id; `text`
    # for people. Applies to `orchestrator worker` and `orchestrator api`.
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    # --- inputs --------------------------------------------------------------------------
    max_input_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    max_input_pixels: int = Field(default=40_000_000, gt=0)
    fetch_timeout_seconds: float = Field(default=20.0, gt=0)
    fetch_max_redirects: int = Field(default=5, ge=0, le=20)
    # Hosts trusted although they resolve to private addresses (comma-separated in the env).
    fetch_allow_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # --- retries and delivery ------------------------------------------------------------
    max_attempts: int = Field(default=4, ge=1, le=50)
    # A job whose worker process died this many times is failed (poison-pill cap).
    max_deliveries: int = Field(default=3, ge=1, le=50)
    retry_backoff_base_seconds: float = Field(default=2.0, gt=0)
    retry_backoff_max_seconds: float = Field(default=120.0, gt=0)
    # Redis redelivers an unacknowledged message after this long; must exceed every countdown.
    visibility_timeout_seconds: int = Field(default=900, ge=10)
    # How often a worker looks for unacknowledged messages older than the visibility timeout.
    unacked_restore_interval_seconds: int = Field(default=10, ge=1)
    # A running job's lease; renewed by a heartbeat every third of it.
    lease_seconds: float = Field(default=30.0, ge=2)
    # How long a worker keeps retrying a database write (with backoff) while Postgres is away,
    # holding the result it computed, before giving up on that delivery.
    db_retry_seconds: float = Field(default=300.0, ge=0)

    # --- reconciler ----------------------------------------------------------------------
    # A pass every this many seconds (in each worker's main process, one active at a time).
    reconcile_interval_seconds: float = Field(default=5.0, gt=0)
    # A queued job (or a retry that is due) with no message in Redis for this long is
    # re-published; a job whose lease expired this long ago is re-driven.
    reconcile_stale_after_seconds: float = Field(default=10.0, ge=0)
    # Run the reconciler loop inside `orchestrator worker` (off: run `orchestrator reconcile --loop`).
    reconcile_in_worker: bool = True

    # Identical requests (same client, image bytes, backend, model and options) within this
    # many seconds reuse the stored result at zero cost, or attach to the job in flight. 0 = off.
    dedup_window_seconds: float = Field(default=600.0, ge=0)

    # --- HTTP API ------------------------------------------------------------------------
    api_requests_per_second: float = Field(default=50.0, gt=0)
    # The API's address as callers reach it; webhook payloads link results there (else they
    # carry the image as a data URI).
    api_public_url: str | None = None
    # Ed25519 seed (base64url) that signs webhooks; `orchestrator keys signing-key` makes one.
    webhook_signing_key: SecretStr | None = None

    # --- results -------------------------------------------------------------------------
    result_store: Literal["database", "directory"] = "database"
    result_dir: Path = Path(".orchestrator/results")
    png_compress_level: int = Field(default=6, ge=0, le=9)

    # --- object store (issue 12): inputs and results in S3 instead of the database ------
    # s3://bucket/prefix; set, every new input and result goes there (result_store is then
    # only where older rows may still be). Credentials and region: the standard AWS variables.
    object_store_url: str | None = None
    # The S3 API of a store that is not AWS (SeaweedFS, MinIO, R2), as workers reach it.
    s3_endpoint_url: str | None = None
    # The same store as callers reach it: presigned URLs sign the host, so they are made by a
    # client on this address (default: s3_endpoint_url).
    s3_public_endpoint_url: str | None = None
    # Per request to the store; the API fails fast (503) rather than hold a caller.
    s3_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    s3_read_timeout_seconds: float = Field(default=30.0, gt=0)
    # botocore "standard" retries (5xx, throttling, timeouts) inside one store call.
    s3_max_attempts: int = Field(default=3, ge=1, le=10)
    # Lifetime of the presigned GET URLs in image.url, /v1 results and webhooks (SigV4: <= 7 days).
    result_url_ttl_seconds: int = Field(default=900, ge=1, le=604800)

    # --- retention (orchestrator gc, and the reconciler's loop) -----------------------------
    # Inputs are deleted this long after their job ends (a failed job can be retried until then).
    input_retention_seconds: float = Field(default=86400.0, ge=0)
    # Results are deleted this many days after they were stored; 0 keeps them forever.
    result_retention_days: float = Field(default=0.0, ge=0)
    # The orphan sweep leaves objects younger than this alone: their row may still commit.
    orphan_grace_seconds: float = Field(default=3600.0, ge=0)
    # How often the reconciler's loop runs the retention sweep; 0 = never (run `orchestrator gc`).
    gc_interval_seconds: float = Field(default=300.0, ge=0)

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, value: str) -> str:
        # Plain postgres:// URLs (Heroku, docker) would pick psycopg2, which we do not ship.
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        return value

    @field_validator("object_store_url", "s3_endpoint_url", "s3_public_endpoint_url",
                     mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("object_store_url")
    @classmethod
    def _check_object_store_url(cls, value: str | None) -> str | None:
        if value is not None:
            from urllib.parse import urlsplit

            parts = urlsplit(value)
            if parts.scheme != "s3" or not parts.netloc:
                raise ValueError("must be s3://bucket or s3://bucket/prefix")
        return value

    @field_validator("s3_endpoint_url", "s3_public_endpoint_url")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("fetch_allow_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip().lower() for h in value.split(",") if h.strip()]
        return value

    @field_validator("local_providers", mode="before")
    @classmethod
    def _split_providers(cls, value: object) -> object:
        if isinstance(value, str):
            value = [p.strip() for p in value.split(",") if p.strip()]
        if isinstance(value, list) and not value:
            raise ValueError("name at least one provider, e.g. CPUExecutionProvider")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    def accelerators(self) -> list[str]:
        """The non-CPU execution providers asked for."""
        return [p for p in self.local_providers if p != "CPUExecutionProvider"]

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str) -> str:
        # Redis, or kombu's SQLAlchemy transport (the embedded broker of `orchestrator dev`).
        if not value.startswith(("redis://", "rediss://", "redis+socket://", "sqla+", "sqlalchemy+")):
            raise ValueError("must be a redis:// URL (or sqla+sqlite:///FILE, the embedded broker)")
        return value

    @field_validator("local_model_path", mode="before")
    @classmethod
    def _empty_path_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("local_model_path")
    @classmethod
    def _check_model_path(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such model file: {value}")
        return value.resolve() if value is not None else None

    def onnx_threads(self) -> int:
        """ONNX intra-op threads per session."""
        return self.local_onnx_threads or _cpu_count()

    def inference_slots(self) -> int:
        """Concurrent inferences per worker: slots × threads stays within the cores."""
        return self.local_inference_slots or max(1, _cpu_count() // self.onnx_threads())

    def concurrency(self) -> int:
        """Worker processes: one per inference slot unless set (benchmarks/README.md says why)."""
        return self.worker_concurrency or self.inference_slots()

    def retry_countdown_cap(self) -> float:
        # Celery keeps countdown messages unacknowledged in worker memory: a countdown longer than
        # the visibility timeout would be redelivered while still waiting.
        return min(self.retry_backoff_max_seconds, self.visibility_timeout_seconds / 2)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        extra = os.environ.get("ORCH_CONFIG")
        if extra:
            if not Path(extra).is_file():
                raise ConfigError(f"ORCH_CONFIG names a file that does not exist: {extra}")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(extra)))
        if DEFAULT_CONFIG_FILE.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=DEFAULT_CONFIG_FILE))
        return tuple(sources)


def setting_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    if field == "fal_key":
        return "FAL_KEY"
    return f"{ENV_PREFIX}{field.upper()}"


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            problems.append(f"{setting_name(field)} ({field}): {err['msg']}")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
