from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from orchestrator.errors import ConfigError
from orchestrator.settings import DEFAULT_CONFIG_FILE, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("ORCH_") or name == "FAL_KEY":
            monkeypatch.delenv(name)


def test_committed_defaults_are_read() -> None:
    assert DEFAULT_CONFIG_FILE.is_file()
    settings = load_settings()
    assert settings.fal.price_per_second == Decimal("0.00111")
    assert settings.fal.endpoint == "fal-ai/imageutils/rembg"


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


def test_unknown_setting_in_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = tmp_path / "site.toml"
    extra.write_text("max_atempts = 3\n")
    monkeypatch.setenv("ORCH_CONFIG", str(extra))
    with pytest.raises(ConfigError, match="max_atempts"):
        load_settings()


def test_missing_config_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_CONFIG", "/nonexistent/orchestrator.toml")
    with pytest.raises(ConfigError, match="ORCH_CONFIG"):
        load_settings()


def test_missing_model_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_LOCAL_MODEL_PATH", "/nonexistent/model.onnx")
    with pytest.raises(ConfigError, match="ORCH_LOCAL_MODEL_PATH"):
        load_settings()


def test_fal_key_is_read_from_fal_key_and_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAL_KEY", "canary-secret-123:abc")
    settings = load_settings()
    assert settings.fal.key is not None
    assert settings.fal.key.get_secret_value() == "canary-secret-123:abc"
    assert "canary-secret-123" not in repr(settings)
    assert "canary-secret-123" not in str(settings.model_dump())


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
    monkeypatch.setattr("orchestrator.settings._cpu_count", lambda: cores)
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
