from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
import typing
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import SecretStr

from orchestrator.errors import ConfigError
from orchestrator.settings import MaskedUrl, bundled_defaults, catalog, load_settings
from orchestrator.settings.defaults_file import render
from orchestrator.settings.registry import BY_FLAT, ENTRIES, Entry

REPO = Path(__file__).resolve().parents[2]

# The environment variables of before the grouping: users' deployments set these, so none may
# be renamed or lost (the product contract fixes them).
ENV_NAMES_BEFORE_GROUPING = {
    "FAL_KEY", "ORCH_FAKE_BACKENDS", "ORCH_OBJECT_STORE_URL", "ORCH_S3_ENDPOINT_URL", "ORCH_S3_PUBLIC_ENDPOINT_URL", "ORCH_S3_CONNECT_TIMEOUT_SECONDS", "ORCH_S3_READ_TIMEOUT_SECONDS", "ORCH_S3_MAX_ATTEMPTS", "ORCH_RESULT_URL_TTL_SECONDS", "ORCH_INPUT_RETENTION_SECONDS", "ORCH_RESULT_RETENTION_DAYS", "ORCH_ORPHAN_GRACE_SECONDS", "ORCH_GC_INTERVAL_SECONDS", "ORCH_WEBHOOK_ALLOW_HOSTS", "ORCH_API_AUTH_FAILURES_PER_MINUTE",
    "ORCH_API_AUTH_FAILURE_BURST", "ORCH_API_MAX_SMALL_BODY_BYTES", "ORCH_METRICS_KEY",
    "ORCH_METRICS_CACHE_SECONDS", "ORCH_RESULT_LINK_TTL_SECONDS", "ORCH_API_PUBLIC_URL", "ORCH_API_REQUESTS_PER_SECOND", "ORCH_AUTO_DEADLINE_SECONDS",
    "ORCH_AUTO_FAL_MAX_ERROR_RATE", "ORCH_AUTO_LOCAL_PARALLELISM",
    "ORCH_AUTO_LOCAL_SECONDS_PER_JOB", "ORCH_BREAKER_COOLDOWN_SECONDS", "ORCH_BREAKER_FAILURES",
    "ORCH_BROKER_URL", "ORCH_BUDGET_ALERT_WEBHOOK_URL", "ORCH_DATABASE_URL",
    "ORCH_DB_RETRY_SECONDS", "ORCH_DEDUP_WINDOW_SECONDS", "ORCH_DEFAULT_BACKEND",
    "ORCH_FAL_ADOPT_WAIT_SECONDS", "ORCH_FAL_BUDGET_DAILY_USD", "ORCH_FAL_BUDGET_MONTHLY_USD",
    "ORCH_FAL_BUDGET_WAIT_SECONDS", "ORCH_FAL_ENDPOINT", "ORCH_FAL_JOB_COST_ESTIMATE_USD",
    "ORCH_FAL_JWKS_URL", "ORCH_FAL_MAX_IN_FLIGHT", "ORCH_FAL_MAX_RESULT_BYTES",
    "ORCH_FAL_MAX_SUBMITS_PER_SECOND", "ORCH_FAL_OVER_BUDGET", "ORCH_FAL_POLL_BATCH",
    "ORCH_FAL_POLL_INITIAL_SECONDS", "ORCH_FAL_POLL_MAX_SECONDS", "ORCH_FAL_PRICE_PER_SECOND",
    "ORCH_FAL_REQUEST_TIMEOUT_SECONDS", "ORCH_FAL_RESUBMIT_AFTER_SECONDS", "ORCH_FAL_SLOT_WAIT_SECONDS",
    "ORCH_FAL_SUBMIT_TIMEOUT_SECONDS", "ORCH_FAL_WEBHOOK_URL", "ORCH_FETCH_ALLOW_HOSTS",
    "ORCH_FETCH_MAX_REDIRECTS", "ORCH_FETCH_TIMEOUT_SECONDS", "ORCH_LEASE_SECONDS",
    "ORCH_LOCAL_INFERENCE_SLOTS", "ORCH_LOCAL_MODEL", "ORCH_LOCAL_MODEL_CACHE_DIR", "ORCH_LOCAL_MODEL_PATH",
    "ORCH_LOCAL_MODEL_PRECISION",
    "ORCH_LOCAL_ONNX_THREADS", "ORCH_LOCAL_PRICE_PER_SECOND", "ORCH_LOCAL_HOST_PRICE_PER_HOUR", "ORCH_LOCAL_PROVIDERS",
    "ORCH_LOG_FORMAT", "ORCH_LOG_LEVEL", "ORCH_MAX_ATTEMPTS", "ORCH_MAX_DELIVERIES",
    "ORCH_MAX_INPUT_BYTES", "ORCH_MAX_INPUT_PIXELS", "ORCH_PNG_COMPRESS_LEVEL",
    "ORCH_RECONCILE_INTERVAL_SECONDS", "ORCH_RECONCILE_IN_WORKER",
    "ORCH_RECONCILE_STALE_AFTER_SECONDS", "ORCH_RESULT_DIR", "ORCH_RESULT_STORE",
    "ORCH_RETRY_BACKOFF_BASE_SECONDS", "ORCH_RETRY_BACKOFF_MAX_SECONDS",
    "ORCH_UNACKED_RESTORE_INTERVAL_SECONDS", "ORCH_VISIBILITY_TIMEOUT_SECONDS",
    "ORCH_WEBHOOK_SIGNING_KEY", "ORCH_WORKER_CONCURRENCY", "ORCH_WORKER_MAX_MEMORY_MB",
    "ORCH_WORKER_MAX_TASKS_PER_CHILD", "ORCH_WORKER_START_TIMEOUT_SECONDS",
}
# Settings added since (new names; none of the old may go).
ENV_NAMES_ADDED = {"ORCH_CONSOLE_SESSION_SECRET", "ORCH_CONSOLE_SESSION_HOURS",
                   "ORCH_API_TENANT_REQUESTS_PER_SECOND", "ORCH_API_MAX_HEADER_BYTES",
                   "ORCH_URL_CHECK_TIMEOUT_SECONDS", "ORCH_URL_CHECK_CONCURRENCY",
                   "ORCH_TENANT_MAX_JOBS_IN_FLIGHT", "ORCH_TENANT_MAX_STORED_INPUT_BYTES"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("ORCH_") or name == "FAL_KEY":
            monkeypatch.delenv(name)


def _value(entry: Entry, settings: Any) -> Any:
    return getattr(getattr(settings, entry.group), entry.field)


# --- defaults ----------------------------------------------------------------------------------

def test_committed_defaults_are_read() -> None:
    assert bundled_defaults().is_file()
    settings = load_settings()
    assert settings.fal.price_per_second == Decimal("0.00111")
    assert settings.fal.endpoint == "fal-ai/imageutils/rembg"


def test_bundled_defaults_file_is_generated_from_the_model() -> None:
    # Out of date? `python -m orchestrator.settings.defaults_file --write`.
    assert bundled_defaults().read_text(encoding="utf-8") == render()


def test_config_dir_holds_the_bundled_file_not_a_copy() -> None:
    committed = REPO / "config" / "orchestrator.toml"
    assert committed.is_symlink()
    assert committed.resolve() == Path(str(bundled_defaults())).resolve()


def test_bundled_defaults_equal_the_model_defaults() -> None:
    from orchestrator.settings.models import Settings

    assert load_settings() == Settings()


# --- layers ------------------------------------------------------------------------------------

def test_orch_config_file_overrides_defaults_and_env_overrides_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = tmp_path / "site.toml"
    extra.write_text('max_attempts = 7\nlocal_model = "u2net"\n')
    monkeypatch.setenv("ORCH_CONFIG", str(extra))
    assert load_settings().retries.max_attempts == 7
    assert load_settings().local.model == "u2net"
    monkeypatch.setenv("ORCH_MAX_ATTEMPTS", "9")
    settings = load_settings()
    assert settings.retries.max_attempts == 9
    assert settings.local.model == "u2net"


def test_orch_config_file_takes_sections_and_flat_keys_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = tmp_path / "site.toml"
    extra.write_text('fal_poll_batch = 17\n[retries]\nmax_attempts = 8\n[local]\nmodel = "u2net"\n')
    monkeypatch.setenv("ORCH_CONFIG", str(extra))
    settings = load_settings()
    assert (settings.fal.poll_batch, settings.retries.max_attempts, settings.local.model) == (
        17, 8, "u2net")


def test_a_setting_given_twice_in_one_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = tmp_path / "site.toml"
    extra.write_text("max_attempts = 3\n[retries]\nmax_attempts = 8\n")
    monkeypatch.setenv("ORCH_CONFIG", str(extra))
    with pytest.raises(ConfigError, match="ORCH_MAX_ATTEMPTS"):
        load_settings()


def test_flat_and_grouped_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(fal_key="k", max_attempts=3, fal={"poll_batch": 9})
    assert settings.fal.key is not None and settings.fal.key.get_secret_value() == "k"
    assert settings.retries.max_attempts == 3
    assert settings.fal.poll_batch == 9
    monkeypatch.setenv("ORCH_MAX_ATTEMPTS", "5")
    assert load_settings(max_attempts=2).retries.max_attempts == 2  # arguments win over env
    with pytest.raises(ConfigError, match="max_atempts"):
        load_settings(max_atempts=2)


def test_bad_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_MAX_ATTEMPTS", "lots")
    with pytest.raises(ConfigError, match="ORCH_MAX_ATTEMPTS"):
        load_settings()


def test_bad_value_in_config_file_names_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = tmp_path / "site.toml"
    extra.write_text('broker_url = "amqp://guest@localhost//"\n')
    monkeypatch.setenv("ORCH_CONFIG", str(extra))
    with pytest.raises(ConfigError, match="ORCH_BROKER_URL"):
        load_settings()
    extra.write_text('[fal]\npoll_batch = 0\n')
    with pytest.raises(ConfigError, match="ORCH_FAL_POLL_BATCH"):
        load_settings()


def test_unknown_setting_in_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = tmp_path / "site.toml"
    extra.write_text("max_atempts = 3\n")
    monkeypatch.setenv("ORCH_CONFIG", str(extra))
    with pytest.raises(ConfigError, match="max_atempts"):
        load_settings()
    extra.write_text("[fal]\npoll_bach = 3\n")
    with pytest.raises(ConfigError, match="fal.poll_bach"):
        load_settings()


def test_invalid_toml_is_refused_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = tmp_path / "site.toml"
    extra.write_text("max_attempts = = 3\n")
    monkeypatch.setenv("ORCH_CONFIG", str(extra))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings()


def test_missing_config_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_CONFIG", "/nonexistent/orchestrator.toml")
    with pytest.raises(ConfigError, match="ORCH_CONFIG"):
        load_settings()


def test_missing_model_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_LOCAL_MODEL_PATH", "/nonexistent/model.onnx")
    with pytest.raises(ConfigError, match="ORCH_LOCAL_MODEL_PATH"):
        load_settings()


# --- every environment variable sets its field ---------------------------------------------------

def _sample(entry: Entry, tmp_path: Path) -> tuple[str, Any]:
    """A valid value other than the default, as env text and as the expected parsed value."""
    special: dict[str, tuple[str, Any]] = {
        "database_url": ("postgresql://u@db.test/other", "postgresql+psycopg://u@db.test/other"),
        "broker_url": ("redis://broker.test:6380/3", "redis://broker.test:6380/3"),
        "local_providers": ("CUDAExecutionProvider, CPUExecutionProvider",
                            ["CUDAExecutionProvider", "CPUExecutionProvider"]),
        "fetch_allow_hosts": ("A.test,b.test", ["a.test", "b.test"]),
        "object_store_url": ("s3://bucket/prefix", "s3://bucket/prefix"),
        "result_retention_days": ("30", 30.0),
        "webhook_allow_hosts": ("Hooks.test:8443,c.test:*", ["hooks.test:8443", "c.test:*"]),
        "log_level": ("debug", "DEBUG"),
    }
    if entry.flat in special:
        return special[entry.flat]
    default = _value(entry, load_settings())
    annotation = entry.info.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is Literal:
        choice = next(a for a in typing.get_args(annotation) if a != default)
        return str(choice), choice
    if annotation is bool:
        return ("false", False) if default else ("true", True)
    if annotation is int:
        return str(default + 1), default + 1
    if annotation is float:
        return str(default / 2), default / 2
    if annotation is Decimal:
        value = (default or Decimal(0)) + Decimal("1.25")
        return str(value), value
    if annotation is SecretStr:
        return "secret-sample", SecretStr("secret-sample")
    if annotation is Path:
        path = tmp_path / f"{entry.field}.onnx"
        path.write_bytes(b"x")
        return str(path), path.resolve()
    if annotation is str:
        return "https://sample.test/x", "https://sample.test/x"
    raise AssertionError(f"no sample for {entry.env} ({annotation}): extend this test")


def test_every_env_name_of_before_still_exists() -> None:
    assert {doc.env for doc in catalog()} == ENV_NAMES_BEFORE_GROUPING | ENV_NAMES_ADDED
    assert len(catalog()) == len(ENTRIES)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.env)
def test_each_env_var_sets_its_field(
    entry: Entry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text, expected = _sample(entry, tmp_path)
    assert _value(entry, load_settings()) != expected
    monkeypatch.setenv(entry.env, text)
    value = _value(entry, load_settings())
    if isinstance(value, SecretStr):
        assert value.get_secret_value() == (
            expected.get_secret_value() if isinstance(expected, SecretStr) else expected)
    else:
        assert value == expected
    # the same value in an ORCH_CONFIG file, under its section, sets it too
    monkeypatch.delenv(entry.env)
    site = tmp_path / "site.toml"
    site.write_text(f"[{entry.group}]\n{entry.field} = {_toml(expected, text)}\n")
    monkeypatch.setenv("ORCH_CONFIG", str(site))
    again = _value(entry, load_settings())
    assert again == value


def _toml(expected: Any, text: str) -> str:
    if isinstance(expected, bool):
        return "true" if expected else "false"
    if isinstance(expected, (int, float)):
        return text
    return f'"{text}"'


def test_catalog_describes_every_setting_readably() -> None:
    docs = catalog()
    for doc in docs:
        assert doc.description, doc.env
        assert doc.type and doc.group and doc.default, doc.env
    by_env = {d.env: d for d in docs}
    assert by_env["ORCH_MAX_ATTEMPTS"].default == "4"
    assert by_env["ORCH_LOCAL_MODEL_PATH"].default == "—"
    assert by_env["FAL_KEY"].default == "—"
    assert by_env["ORCH_WEBHOOK_SIGNING_KEY"].default == "—"
    assert by_env["ORCH_FAL_OVER_BUDGET"].type == "one of wait, fail"
    assert "integer" in by_env["ORCH_FAL_POLL_BATCH"].type


# --- secrets -------------------------------------------------------------------------------------

def test_fal_key_is_read_from_fal_key_and_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAL_KEY", "canary-secret-123:abc")
    settings = load_settings()
    assert settings.fal.key is not None
    assert settings.fal.key.get_secret_value() == "canary-secret-123:abc"
    assert "canary-secret-123" not in repr(settings)
    assert "canary-secret-123" not in str(settings.model_dump())


def test_passwords_and_keys_are_masked_in_repr_and_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_DATABASE_URL", "postgresql://orch:canary-db-pw@db.test:5432/o")
    monkeypatch.setenv("ORCH_BROKER_URL", "redis://:canary-redis-pw@redis.test:6379/0")
    monkeypatch.setenv("ORCH_WEBHOOK_SIGNING_KEY", "canary-signing-key")
    monkeypatch.setenv("FAL_KEY", "canary-fal-key")
    settings = load_settings()
    for shown in (repr(settings), str(settings), str(settings.model_dump()),
                  settings.model_dump_json(), repr(settings.database), str(settings.broker.url)):
        assert "canary" not in shown
    assert "db.test" in repr(settings)  # the rest of the URL stays readable
    assert settings.database.url.get_secret_value() == (
        "postgresql+psycopg://orch:canary-db-pw@db.test:5432/o")
    assert settings.broker.url.get_secret_value() == "redis://:canary-redis-pw@redis.test:6379/0"


def test_a_refused_url_does_not_show_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_BROKER_URL", "amqp://u:canary-pw@mq.test//")
    with pytest.raises(ConfigError, match="ORCH_BROKER_URL") as refused:
        load_settings()
    assert "canary" not in str(refused.value)


def test_masked_url_without_password_is_shown_whole() -> None:
    assert str(MaskedUrl("redis://127.0.0.1:6379/0")) == "redis://127.0.0.1:6379/0"
    assert str(MaskedUrl("postgresql+psycopg://u:p@h/db")) == "postgresql+psycopg://u:***@h/db"


# --- values --------------------------------------------------------------------------------------

def test_postgres_urls_are_normalised_to_psycopg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_DATABASE_URL", "postgres://u@h/db")
    assert load_settings().database.url.get_secret_value() == "postgresql+psycopg://u@h/db"


def test_allow_hosts_accept_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_FETCH_ALLOW_HOSTS", "Images.Internal, 10.0.0.5")
    assert load_settings().inputs.fetch_allow_hosts == ["images.internal", "10.0.0.5"]


@pytest.mark.parametrize("cores", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("threads", [0, 1, 2, 3])
def test_inference_never_oversubscribes_cores(
    monkeypatch: pytest.MonkeyPatch, cores: int, threads: int
) -> None:
    monkeypatch.setattr("orchestrator.settings.models._cpu_count", lambda: cores)
    monkeypatch.setenv("ORCH_LOCAL_ONNX_THREADS", str(threads))
    settings = load_settings()
    if threads <= cores:
        assert settings.inference_slots() * settings.onnx_threads() <= cores
    assert settings.concurrency() == settings.inference_slots()


def test_countdowns_stay_below_the_visibility_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_RETRY_BACKOFF_MAX_SECONDS", "100000")
    monkeypatch.setenv("ORCH_VISIBILITY_TIMEOUT_SECONDS", "600")
    settings = load_settings()
    assert settings.retry_countdown_cap() < settings.broker.visibility_timeout_seconds


# --- importing patches nothing -------------------------------------------------------------------

_PROBE = """
import kombu.transport as transports
from kombu.transport import redis
original = redis.QoS.restore_unacked
aliases = dict(transports.TRANSPORT_ALIASES)
import orchestrator, orchestrator.queue.celery_app, orchestrator.queue.tasks
assert redis.QoS.restore_unacked is original, "importing patched kombu's Redis QoS"
assert transports.TRANSPORT_ALIASES == aliases, "importing registered a transport"
from orchestrator.queue.celery_app import app
app.conf.broker_url  # a worker or `celery inspect` reads the configuration first
assert redis.QoS.restore_unacked is not original, "the worker path did not apply the fix"
assert transports.TRANSPORT_ALIASES["sqla"].startswith("orchestrator."), "no sqla transport"
from orchestrator.queue.prepare import prepare_broker
patched = redis.QoS.restore_unacked
prepare_broker()
assert redis.QoS.restore_unacked is patched, "not idempotent"
print("ok")
"""


def test_importing_the_package_patches_nothing() -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_the_publisher_prepares_the_broker() -> None:
    probe = (
        "from kombu.transport import redis\n"
        "original = redis.QoS.restore_unacked\n"
        "from orchestrator.queue.celery_app import publisher_for\n"
        "from orchestrator.settings import load_settings\n"
        "assert redis.QoS.restore_unacked is original\n"
        "publisher_for(load_settings())\n"
        "assert redis.QoS.restore_unacked is not original\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr


# --- the codemod ---------------------------------------------------------------------------------

def _codemod() -> Any:
    spec = importlib.util.spec_from_file_location("settings_codemod",
                                                  REPO / "tools" / "settings_codemod.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_codemod_knows_every_setting() -> None:
    assert _codemod().MAPPING == {e.flat: f"{e.group}.{e.field}" for e in ENTRIES}
    assert set(BY_FLAT) == set(_codemod().MAPPING)


def test_codemod_rewrites_settings_access_and_is_idempotent() -> None:
    codemod = _codemod()
    before = (
        "n = settings.max_attempts + self.settings.fal_poll_batch\n"
        "url = get_settings().database_url\n"
        "other = load_settings(max_attempts=3, fal_key=k).broker_url\n"
        "slots = settings.inference_slots() * app.state.settings.local_onnx_threads\n"
        "keep = job.max_attempts + s.max_attempts + args.concurrency\n"
        "settings.database_url = 'x'\n"
    )
    after = codemod.rewrite(before)
    assert after == (
        "n = settings.retries.max_attempts + self.settings.fal.poll_batch\n"
        "url = get_settings().database.url.get_secret_value()\n"
        "other = load_settings(max_attempts=3, fal_key=k).broker.url.get_secret_value()\n"
        "slots = settings.inference_slots() * app.state.settings.local.onnx_threads\n"
        "keep = job.max_attempts + s.max_attempts + args.concurrency\n"
        "settings.database_url = 'x'\n"
    )
    assert codemod.rewrite(after) == after
    assert codemod.rewrite("x = s.max_attempts\n", frozenset({"s"})) == (
        "x = s.retries.max_attempts\n")


def test_codemod_follows_names_bound_to_settings_in_the_file() -> None:
    codemod = _codemod()
    before = (
        "def policy(self):\n"
        "    s = self.settings\n"
        "    return s.fal_poll_batch\n"
        "def g(cfg: Settings, sig: Signals):\n"
        "    return cfg.max_attempts + sig.max_attempts\n"
        "conf = get_settings()\n"
        "url = conf.broker_url\n"
    )
    assert codemod.rewrite(before) == (
        "def policy(self):\n"
        "    s = self.settings\n"
        "    return s.fal.poll_batch\n"
        "def g(cfg: Settings, sig: Signals):\n"
        "    return cfg.retries.max_attempts + sig.max_attempts\n"
        "conf = get_settings()\n"
        "url = conf.broker.url.get_secret_value()\n"
    )


def test_no_flat_settings_access_is_left_in_the_tree() -> None:
    codemod = _codemod()
    files = [p for d in ("orchestrator", "tests", "benchmarks", "scripts")
             for p in (REPO / d).rglob("*.py") if p != Path(__file__).resolve()]
    left = [str(p) for p in files if codemod.rewrite(p.read_text(encoding="utf-8")) !=
            p.read_text(encoding="utf-8")]
    assert left == []
