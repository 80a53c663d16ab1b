"""The settings model: every setting, its default, constraints and description, grouped by concern.

This module is the ONE place defaults live. Each field names the flat key it had before the
grouping (``flat``, in ``json_schema_extra``): that key is its TOML name outside a section and,
in capitals after ``ORCH_``, its environment variable (``fal_key`` is fal's own ``FAL_KEY``).

Derived values that span groups stay on the root :class:`Settings` as methods
(:meth:`Settings.onnx_threads`, :meth:`Settings.inference_slots`, :meth:`Settings.concurrency`,
:meth:`Settings.retry_countdown_cap`, :meth:`Settings.accelerators`), so callers keep one
spelling for "what is in effect" while ``settings.local.onnx_threads`` is "what was configured".
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, SecretStr, field_validator

from orchestrator.settings.secrets import MaskedUrl

FLAT_KEY = "flat"


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _setting(flat: str, default: Any = None, *, description: str, **constraints: Any) -> Any:
    """A field that remembers its flat name (its env var and legacy TOML key)."""
    extra: dict[str, JsonValue] = {FLAT_KEY: flat}
    if "default_factory" in constraints:
        return Field(description=description, json_schema_extra=extra, **constraints)
    return Field(default, description=description, json_schema_extra=extra, **constraints)


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class DatabaseSettings(_Group):
    url: MaskedUrl = _setting(
        "database_url", MaskedUrl("postgresql+psycopg://postgres@127.0.0.1:5432/orchestrator"),
        description="SQLAlchemy URL of the database: Postgres, or sqlite:///FILE (the embedded "
        "mode of `orchestrator dev`). postgres:// URLs are read as postgresql+psycopg://.",
    )
    retry_seconds: float = _setting(
        "db_retry_seconds", 300.0, ge=0,
        description="How long a worker keeps retrying a database write (with backoff) while "
        "Postgres is away, holding the result it computed, before giving up on that delivery.",
    )

    @field_validator("url", mode="before")
    @classmethod
    def _normalise_url(cls, value: object) -> object:
        # Plain postgres:// URLs (Heroku, docker) would pick psycopg2, which we do not ship.
        if isinstance(value, str):
            for prefix in ("postgres://", "postgresql://"):
                if value.startswith(prefix):
                    return "postgresql+psycopg://" + value[len(prefix):]
        return value


class BrokerSettings(_Group):
    url: MaskedUrl = _setting(
        "broker_url", MaskedUrl("redis://127.0.0.1:6379/0"),
        description="Celery broker URL: redis://…, or sqla+sqlite:///FILE (the embedded broker "
        "of `orchestrator dev`; no fal backend).",
    )
    visibility_timeout_seconds: int = _setting(
        "visibility_timeout_seconds", 900, ge=10,
        description="Redis redelivers an unacknowledged message after this long; must exceed "
        "every retry countdown.",
    )
    unacked_restore_interval_seconds: int = _setting(
        "unacked_restore_interval_seconds", 10, ge=1,
        description="How often a worker looks for unacknowledged messages older than the "
        "visibility timeout.",
    )

    @field_validator("url", mode="before")
    @classmethod
    def _check_url(cls, value: object) -> object:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(raw, str) and not raw.startswith(
            ("redis://", "rediss://", "redis+socket://", "sqla+", "sqlalchemy+")
        ):
            raise ValueError("must be a redis:// URL (or sqla+sqlite:///FILE, the embedded broker)")
        return value


class FalSettings(_Group):
    key: SecretStr | None = _setting(
        "fal_key", None,
        description="fal credentials (fal's own variable); without it the fal backend reports "
        "itself unavailable.",
    )
    endpoint: str = _setting("fal_endpoint", "fal-ai/imageutils/rembg",
                             description="fal application id that removes backgrounds.")
    price_per_second: Decimal = _setting(
        "fal_price_per_second", Decimal("0.00111"), ge=0,
        description="USD per fal compute second (fal's published price).",
    )
    max_in_flight: int = _setting(
        "fal_max_in_flight", 200, ge=1,
        description="Requests in flight at fal, for all workers together (kept in Redis, so fal "
        "needs a Redis broker).",
    )
    max_submits_per_second: float = _setting(
        "fal_max_submits_per_second", 20.0, gt=0,
        description="Submits per second to fal, for all workers together (kept in Redis).",
    )
    slot_wait_seconds: float = _setting(
        "fal_slot_wait_seconds", 5.0, ge=0, le=60,
        description="How long a submit waits for a free slot when ORCH_FAL_MAX_IN_FLIGHT "
        "requests are in flight (woken as soon as one ends), before its message goes back to "
        "the queue for later; it holds its worker process meanwhile. 0: back to the queue at "
        "once.",
    )
    submit_timeout_seconds: float = _setting("fal_submit_timeout_seconds", 30.0, gt=0,
                                             description="Timeout of one submit to fal.")
    poll_initial_seconds: float = _setting(
        "fal_poll_initial_seconds", 0.5, gt=0,
        description="First polling interval of a fal request; it grows ×1.5 per poll up to "
        "ORCH_FAL_POLL_MAX_SECONDS.",
    )
    poll_max_seconds: float = _setting("fal_poll_max_seconds", 10.0, gt=0,
                                       description="Longest polling interval of a fal request.")
    poll_batch: int = _setting("fal_poll_batch", 200, ge=1, le=5000,
                               description="fal requests one poller checks at once.")
    max_result_bytes: int = _setting("fal_max_result_bytes", 50 * 1024 * 1024, gt=0,
                                     description="Largest result image accepted from fal (bytes).")
    resubmit_after_seconds: float = _setting(
        "fal_resubmit_after_seconds", 5.0, ge=0,
        description="After a submit whose reply was lost, wait this long before submitting again.",
    )
    request_timeout_seconds: float = _setting(
        "fal_request_timeout_seconds", 600.0, gt=0,
        description="A fal request not completed this long after its submit is cancelled at fal; "
        "the job gets a new attempt if it has attempts left.",
    )
    webhook_url: str | None = _setting(
        "fal_webhook_url", None,
        description="Where fal reaches this orchestrator's webhook receiver "
        "(https://HOST/v1/fal/webhook). Set, every submit carries it, and a request whose id "
        "was lost (a worker killed between fal's reply and the commit, a reply lost on the wire) "
        "is adopted from its webhook.",
    )
    adopt_wait_seconds: float = _setting(
        "fal_adopt_wait_seconds", 120.0, ge=0,
        description="With ORCH_FAL_WEBHOOK_URL: how long an unknown submit waits for its webhook "
        "before the job is bought again (and flagged possible_duplicate).",
    )
    jwks_url: str = _setting("fal_jwks_url", "https://rest.fal.ai/.well-known/jwks.json",
                             description="Where fal's webhook signing keys are published.")


class BudgetSettings(_Group):
    daily_usd: Decimal | None = _setting(
        "fal_budget_daily_usd", None, ge=0,
        description="Spend limit on fal for all clients together per UTC day (USD; none = no "
        "limit). `orchestrator budget set` overrides it and sets per-client ones.",
    )
    monthly_usd: Decimal | None = _setting(
        "fal_budget_monthly_usd", None, ge=0,
        description="Spend limit on fal for all clients together per UTC month (USD; none = no "
        "limit). `orchestrator budget set` overrides it and sets per-client ones.",
    )
    over_budget: Literal["wait", "fail"] = _setting(
        "fal_over_budget", "wait",
        description="An explicit fal job over budget waits (re-checked every "
        "ORCH_FAL_BUDGET_WAIT_SECONDS) or fails.",
    )
    wait_seconds: float = _setting("fal_budget_wait_seconds", 60.0, gt=0,
                                   description="How often a job waiting on a budget re-checks it.")
    job_cost_estimate_usd: Decimal = _setting(
        "fal_job_cost_estimate_usd", Decimal("0.005"), gt=0,
        description="What a submission not yet costed counts against a budget: this, or the "
        "dearest of the last 100 costed fal attempts if more.",
    )
    alert_webhook_url: str | None = _setting(
        "budget_alert_webhook_url", None,
        description="Crossing 80 % and 100 % of a budget is logged, and POSTed (JSON) here when set.",
    )


class LocalSettings(_Group):
    model: str = _setting(
        "local_model", "isnet-general-use",
        description="rembg model name for the local backend (u2net, isnet-general-use, "
        "birefnet-general, …).",
    )
    model_path: Path | None = _setting(
        "local_model_path", None,
        description="A custom ONNX model file (IS-Net/DIS family, as rembg's dis_custom); wins "
        "over ORCH_LOCAL_MODEL.",
    )
    model_precision: Literal["float32", "as-shipped"] = _setting(
        "local_model_precision", "float32",
        description="float32: the model file runs from a copy with float32 weights that computes "
        "only the mask rembg reads (made once, cached in ORCH_LOCAL_MODEL_CACHE_DIR; ONNX "
        "Runtime's CPU kernels compute in float32 anyway) and the image is normalised in "
        "float32: alpha within 1 of rembg's; with the shipped IS-Net, inference ~11 % less CPU "
        "and ~500 MiB less per process. as-shipped: the file as it is and rembg's own "
        "pre-processing, pixel-identical to rembg. Applies to ORCH_LOCAL_MODEL_PATH; rembg's "
        "named models run as rembg ships them.",
    )
    model_cache_dir: Path | None = _setting(
        "local_model_cache_dir", None,
        description="Where the float32 copies of models are cached (one file per source model, "
        "named by its sha256); unset = $XDG_CACHE_HOME/bg-orchestrator/models (~/.cache/…).",
    )
    price_per_second: Decimal | None = _setting(
        "local_price_per_second", None, ge=0,
        description="What one local compute second costs you (USD), for reports; wins over the "
        "host price. Neither set: local costs are unknown and reports say \"local price not "
        "set\" rather than $0.",
    )
    host_price_per_hour: Decimal | None = _setting(
        "local_host_price_per_hour", None, ge=0,
        description="A worker host's price per hour (USD), as a cloud bill states it; a local "
        "compute second then costs this ÷ 3600 ÷ the host's inference slots (they run at once).",
    )
    onnx_threads: int = _setting("local_onnx_threads", 0, ge=0, le=256,
                                 description="ONNX intra-op threads per session; 0 = all cores.")
    inference_slots: int = _setting(
        "local_inference_slots", 0, ge=0, le=256,
        description="Inferences one worker runs at once; 0 = cores // ONNX threads (never "
        "oversubscribes).",
    )
    providers: list[str] = _setting(
        "local_providers", default_factory=lambda: ["CPUExecutionProvider"],
        description="ONNX Runtime execution providers for local sessions, in order of preference "
        "(comma-separated in the environment). A worker refuses to start when a non-CPU provider "
        "asked for here is not really in use.",
    )

    @field_validator("model_path", "model_cache_dir", "price_per_second", "host_price_per_hour",
                     mode="before")
    @classmethod
    def _empty_path_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("model_path")
    @classmethod
    def _check_model_path(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such model file: {value}")
        return value.resolve() if value is not None else None

    @field_validator("providers", mode="before")
    @classmethod
    def _split_providers(cls, value: object) -> object:
        value = _split_list(value)
        if isinstance(value, list) and not value:
            raise ValueError("name at least one provider, e.g. CPUExecutionProvider")
        return value


class WorkerSettings(_Group):
    concurrency: int = _setting(
        "worker_concurrency", 0, ge=0, le=512,
        description="Worker processes per `orchestrator worker`; 0 = inference slots. More "
        "processes than slots overlap decoding, encoding and storing with inference, at one ONNX "
        "session (~2 GiB) each.",
    )
    start_timeout_seconds: float = _setting(
        "worker_start_timeout_seconds", 180.0, gt=0,
        description="How long a new worker process may take to load its model before Celery "
        "gives up on it.",
    )
    max_memory_mb: int = _setting(
        "worker_max_memory_mb", 0, ge=0,
        description="A pool process whose resident memory passed this after a job is replaced by "
        "a fresh one (Celery's worker_max_memory_per_child); 0 = no limit.",
    )
    max_tasks_per_child: int = _setting(
        "worker_max_tasks_per_child", 0, ge=0,
        description="A pool process is replaced after this many jobs "
        "(worker_max_tasks_per_child); 0 = never.",
    )


class RoutingSettings(_Group):
    default_backend: Literal["local", "fal", "auto"] = _setting(
        "default_backend", "local", description="Backend of a job submitted without one.",
    )
    fake_backends: bool = _setting(
        "fake_backends", False,
        description="Offer the in-memory fake backends (fake-inline, fake-remote) of "
        "orchestrator/backends: for tests and demos without a model or a provider account.",
    )
    auto_deadline_seconds: float = _setting(
        "auto_deadline_seconds", 60.0, gt=0,
        description="An auto job should be done within this many seconds: local while its "
        "estimated wait (queue depth × recent seconds per job ÷ parallelism) fits, else fal.",
    )
    auto_local_parallelism: int = _setting(
        "auto_local_parallelism", 0, ge=0,
        description="Local jobs run at once across all local workers; 0 = this host's inference "
        "slots.",
    )
    auto_local_seconds_per_job: float = _setting(
        "auto_local_seconds_per_job", 2.0, gt=0,
        description="Seconds per local job until there are finished local attempts to measure.",
    )
    auto_fal_max_error_rate: float = _setting(
        "auto_fal_max_error_rate", 0.5, gt=0, le=1,
        description="fal is avoided while this share of its recent attempts (last 20, 10 "
        "minutes) failed.",
    )
    breaker_failures: int = _setting(
        "breaker_failures", 5, ge=1,
        description="Circuit breaker: this many backend failures in a row open it; auto work "
        "goes to the other backend until the cooldown has passed and an attempt succeeds again.",
    )
    breaker_cooldown_seconds: float = _setting(
        "breaker_cooldown_seconds", 60.0, gt=0,
        description="How long an open circuit breaker keeps auto work off its backend.",
    )


class LogSettings(_Group):
    format: Literal["json", "text"] = _setting(
        "log_format", "json",
        description="json: one JSON object per line with job id, attempt, backend and request "
        "id; text: for people. Applies to `orchestrator worker` and `orchestrator api`.",
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = _setting(
        "log_level", "INFO", description="Log level (any case).",
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class InputSettings(_Group):
    max_bytes: int = _setting("max_input_bytes", 25 * 1024 * 1024, gt=0,
                              description="Largest input image accepted (bytes).")
    max_pixels: int = _setting("max_input_pixels", 40_000_000, gt=0,
                               description="Largest input image accepted (pixels): a "
                               "decompression-bomb guard.")
    fetch_timeout_seconds: float = _setting("fetch_timeout_seconds", 20.0, gt=0,
                                            description="Timeout of fetching an input URL.")
    fetch_max_redirects: int = _setting("fetch_max_redirects", 5, ge=0, le=20,
                                        description="Redirects followed when fetching an input URL.")
    fetch_allow_hosts: list[str] = _setting(
        "fetch_allow_hosts", default_factory=list,
        description="Hosts trusted for input URLs although they resolve to private addresses "
        "(comma-separated in the environment): `host` (ports 80 and 443 only), `host:port` or "
        "`host:*` (any port).",
    )
    webhook_allow_hosts: list[str] = _setting(
        "webhook_allow_hosts", default_factory=list,
        description="The same, for webhook targets (fal_webhook): a separate list, so a host "
        "trusted for image fetches is not a place tenants may POST to.",
    )
    dedup_window_seconds: float = _setting(
        "dedup_window_seconds", 600.0, ge=0,
        description="Identical requests (same client, image bytes, backend, model and options) "
        "within this many seconds reuse the stored result at zero cost, or attach to the job in "
        "flight. 0 = off.",
    )
    url_check_timeout_seconds: float = _setting(
        "url_check_timeout_seconds", 5.0, gt=0, le=60,
        description="At submit, the hosts of all image_url items of one request are resolved "
        "concurrently, all within this many seconds; a host not resolved in time is refused.",
    )
    url_check_concurrency: int = _setting(
        "url_check_concurrency", 32, ge=1, le=256,
        description="At most this many image_url hosts of one request are resolved at once.",
    )
    tenant_max_jobs_in_flight: int = _setting(
        "tenant_max_jobs_in_flight", 10_000, ge=0,
        description="A tenant (API client) may have at most this many jobs queued, running or "
        "retrying; a submit that would exceed it is refused whole. 0 = no cap.",
    )
    tenant_max_stored_input_bytes: int = _setting(
        "tenant_max_stored_input_bytes", 100 * 1024**3, ge=0,
        description="A tenant may have at most this many bytes of stored inputs (files, uploads, "
        "data URIs not yet removed by retention); a submit that would exceed it is refused "
        "whole. 0 = no cap. The default holds about a day of the volume this system is for "
        "(inputs are removed ORCH_INPUT_RETENTION_SECONDS after their job ends).",
    )

    @field_validator("fetch_allow_hosts", "webhook_allow_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        value = _split_list(value)
        return [h.lower() for h in value] if isinstance(value, list) else value

    @field_validator("fetch_allow_hosts", "webhook_allow_hosts")
    @classmethod
    def _check_hosts(cls, value: list[str]) -> list[str]:
        from orchestrator.errors import ConfigError
        from orchestrator.images.allow import parse_entry

        for entry in value:
            try:
                parse_entry(entry)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value


class RetrySettings(_Group):
    max_attempts: int = _setting("max_attempts", 4, ge=1, le=50,
                                 description="Attempts a job gets before it fails.")
    max_deliveries: int = _setting(
        "max_deliveries", 3, ge=1, le=50,
        description="A job whose worker process died this many times is failed (poison-pill cap).",
    )
    backoff_base_seconds: float = _setting("retry_backoff_base_seconds", 2.0, gt=0,
                                           description="First retry delay; it doubles per attempt.")
    backoff_max_seconds: float = _setting(
        "retry_backoff_max_seconds", 120.0, gt=0,
        description="Longest retry delay (also kept below half the visibility timeout).",
    )
    lease_seconds: float = _setting("lease_seconds", 30.0, ge=2,
                                    description="A running job's lease; renewed by a heartbeat "
                                    "every third of it.")


class ReconcilerSettings(_Group):
    interval_seconds: float = _setting(
        "reconcile_interval_seconds", 5.0, gt=0,
        description="A reconciler pass every this many seconds (in each worker's main process, "
        "one active at a time).",
    )
    stale_after_seconds: float = _setting(
        "reconcile_stale_after_seconds", 10.0, ge=0,
        description="A queued job (or a retry that is due) with no message in the broker for this "
        "long is re-published; a job whose lease expired this long ago is re-driven.",
    )
    in_worker: bool = _setting(
        "reconcile_in_worker", True,
        description="Run the reconciler loop inside `orchestrator worker` (off: run "
        "`orchestrator reconcile --loop`).",
    )


class ApiSettings(_Group):
    requests_per_second: float = _setting("api_requests_per_second", 50.0, gt=0,
                                          description="Requests per second one API key may make.")
    tenant_requests_per_second: float = _setting(
        "api_tenant_requests_per_second", 100.0, gt=0,
        description="Requests per second all API keys of one tenant (client) may make together.",
    )
    max_header_bytes: int = _setting(
        "api_max_header_bytes", 16 * 1024, ge=1024, le=1024 * 1024,
        description="A request whose headers (names, values and the request target) are larger "
        "is refused with 431.",
    )
    public_url: str | None = _setting(
        "api_public_url", None,
        description="The API's address as callers reach it; webhook payloads link results there "
        "(else they carry the image as a data URI).",
    )
    webhook_signing_key: SecretStr | None = _setting(
        "webhook_signing_key", None,
        description="Ed25519 seed (base64url) that signs webhooks; `orchestrator keys "
        "signing-key` makes one.",
    )
    auth_failures_per_minute: float = _setting(
        "api_auth_failures_per_minute", 60.0, gt=0,
        description="Failed authentications (no key, a wrong or revoked key) allowed per client "
        "address per minute, after a burst of ORCH_API_AUTH_FAILURE_BURST; then 429.",
    )
    auth_failure_burst: int = _setting(
        "api_auth_failure_burst", 20, ge=1,
        description="Failed authentications allowed at once before the per-minute rate applies.",
    )
    max_small_body_bytes: int = _setting(
        "api_max_small_body_bytes", 1024 * 1024, ge=1024,
        description="Body limit of endpoints that take no image (all but the submit, "
        "/v1/batches and /v1/uploads, which take ORCH_MAX_INPUT_BYTES as base64 and more).",
    )
    metrics_key: SecretStr | None = _setting(
        "metrics_key", None,
        description="/metrics needs `Authorization: Bearer <this>` (Prometheus' "
        "`authorization: {credentials: ...}`) or an admin API key; unset, only an admin key.",
    )
    metrics_cache_seconds: float = _setting(
        "metrics_cache_seconds", 15.0, ge=0,
        description="A scrape is served from a copy at most this old (one computation per "
        "interval per API process, however many scrapers).",
    )
    console_session_secret: SecretStr | None = _setting(
        "console_session_secret", None,
        description="Signs the web console's session cookies; set the same value on every API "
        "process (else one is derived from ORCH_DATABASE_URL).",
    )
    console_session_hours: float = _setting(
        "console_session_hours", 8.0, gt=0, le=24 * 30,
        description="How long a web console sign-in lasts.",
    )


class ResultSettings(_Group):
    store: Literal["database", "directory"] = _setting(
        "result_store", "database",
        description="Where result images are kept: database, or directory (then ORCH_RESULT_DIR).",
    )
    dir: Path = _setting("result_dir", Path(".orchestrator/results"),
                         description="Directory of result images when ORCH_RESULT_STORE=directory.")
    png_compress_level: int = _setting("png_compress_level", 6, ge=0, le=9,
                                       description="zlib level of result PNGs (0 fastest, 9 smallest).")
    link_ttl_seconds: int = _setting(
        "result_link_ttl_seconds", 24 * 3600, ge=10, le=30 * 24 * 3600,
        description="A result link (image.url, webhook payloads) opens the result without a key "
        "for this many seconds; each status or result request hands out a fresh one.",
    )


class StorageSettings(_Group):
    object_store_url: str | None = _setting(
        "object_store_url", None,
        description="`s3://bucket/prefix`: every new input and result goes to this S3-compatible "
        "object store (ORCH_RESULT_STORE is then only where older rows may still be). "
        "Credentials and region: the standard AWS variables.",
    )
    s3_endpoint_url: str | None = _setting(
        "s3_endpoint_url", None,
        description="The S3 API of a store that is not AWS (SeaweedFS, MinIO, R2), as workers "
        "reach it.",
    )
    s3_public_endpoint_url: str | None = _setting(
        "s3_public_endpoint_url", None,
        description="The same store as callers reach it: presigned URLs sign the host, so they "
        "are made by a client on this address (default: ORCH_S3_ENDPOINT_URL).",
    )
    s3_connect_timeout_seconds: float = _setting(
        "s3_connect_timeout_seconds", 5.0, gt=0,
        description="Connect timeout per request to the store; the API fails fast (503) rather "
        "than hold a caller.",
    )
    s3_read_timeout_seconds: float = _setting(
        "s3_read_timeout_seconds", 30.0, gt=0, description="Read timeout per request to the store.",
    )
    s3_max_attempts: int = _setting(
        "s3_max_attempts", 3, ge=1, le=10,
        description="botocore \"standard\" retries (5xx, throttling, timeouts) inside one store "
        "call.",
    )
    result_url_ttl_seconds: int = _setting(
        "result_url_ttl_seconds", 900, ge=1, le=604800,
        description="Lifetime of the presigned GET URLs in image.url, /v1 results and webhooks "
        "(SigV4: at most 7 days).",
    )

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


class RetentionSettings(_Group):
    input_retention_seconds: float = _setting(
        "input_retention_seconds", 86400.0, ge=0,
        description="Inputs are deleted this long after their job ends (a failed job can be "
        "retried until then).",
    )
    result_retention_days: float = _setting(
        "result_retention_days", 0.0, ge=0,
        description="Results are deleted this many days after they were stored; 0 keeps them "
        "forever. The job and attempt rows (the cost history) stay.",
    )
    orphan_grace_seconds: float = _setting(
        "orphan_grace_seconds", 3600.0, ge=0,
        description="The orphan sweep leaves objects younger than this alone: their row may "
        "still commit.",
    )
    gc_interval_seconds: float = _setting(
        "gc_interval_seconds", 300.0, ge=0,
        description="How often the reconciler's loop runs the retention sweep; 0 = never (run "
        "`orchestrator gc`).",
    )


class Settings(BaseModel):
    """All settings; build it with :func:`orchestrator.settings.load_settings`."""

    model_config = ConfigDict(extra="forbid")

    database: DatabaseSettings = Field(default_factory=DatabaseSettings,
                                       description="Database")
    broker: BrokerSettings = Field(default_factory=BrokerSettings, description="Broker")
    fal: FalSettings = Field(default_factory=FalSettings, description="fal")
    budgets: BudgetSettings = Field(default_factory=BudgetSettings, description="fal budgets")
    local: LocalSettings = Field(default_factory=LocalSettings, description="Local backend")
    worker: WorkerSettings = Field(default_factory=WorkerSettings, description="Worker")
    routing: RoutingSettings = Field(default_factory=RoutingSettings,
                                     description="Routing and circuit breaker")
    logs: LogSettings = Field(default_factory=LogSettings, description="Logs")
    inputs: InputSettings = Field(default_factory=InputSettings,
                                  description="Inputs, fetching and deduplication")
    retries: RetrySettings = Field(default_factory=RetrySettings,
                                   description="Retries, deliveries and leases")
    reconciler: ReconcilerSettings = Field(default_factory=ReconcilerSettings,
                                           description="Reconciler")
    api: ApiSettings = Field(default_factory=ApiSettings, description="HTTP API")
    results: ResultSettings = Field(default_factory=ResultSettings, description="Results")
    storage: StorageSettings = Field(default_factory=StorageSettings,
                                     description="Object store (S3) for inputs and results")
    retention: RetentionSettings = Field(default_factory=RetentionSettings,
                                         description="Retention of inputs and results")

    def accelerators(self) -> list[str]:
        """The non-CPU execution providers asked for."""
        return [p for p in self.local.providers if p != "CPUExecutionProvider"]

    def onnx_threads(self) -> int:
        """ONNX intra-op threads per session."""
        return self.local.onnx_threads or _cpu_count()

    def inference_slots(self) -> int:
        """Concurrent inferences per worker: slots × threads stays within the cores."""
        return self.local.inference_slots or max(1, _cpu_count() // self.onnx_threads())

    def local_price(self) -> Decimal | None:
        """USD per local compute second, or None when the operator has not said."""
        if self.local.price_per_second is not None:
            return self.local.price_per_second
        if self.local.host_price_per_hour is not None:
            per_second = self.local.host_price_per_hour / 3600 / self.inference_slots()
            return per_second.quantize(Decimal("0.000000001"))  # the price column's scale
        return None

    def concurrency(self) -> int:
        """Worker processes: one per inference slot unless set (docs/how-to/run-workers.md)."""
        return self.worker.concurrency or self.inference_slots()

    def retry_countdown_cap(self) -> float:
        # Celery keeps countdown messages unacknowledged in worker memory: a countdown longer than
        # the visibility timeout would be redelivered while still waiting.
        return min(self.retries.backoff_max_seconds, self.broker.visibility_timeout_seconds / 2)


GROUPS: tuple[str, ...] = tuple(Settings.model_fields)
