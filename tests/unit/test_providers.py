"""The ONNX provider check on real onnxruntime sessions (this machine has no GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.backends.local import create_session
from orchestrator.backends.local.providers import check_providers
from orchestrator.errors import ConfigError, ProviderFallback
from orchestrator.settings import load_settings


def test_cpu_session_passes(tiny_model: Path) -> None:
    settings = load_settings(local_model_path=str(tiny_model), local_onnx_threads=1)
    assert check_providers(create_session(settings), settings) == ["CPUExecutionProvider"]


def test_cuda_asked_for_but_cpu_used_is_refused(tiny_model: Path) -> None:
    settings = load_settings(local_model_path=str(tiny_model), local_onnx_threads=1,
                             local_providers="CUDAExecutionProvider,CPUExecutionProvider")
    with pytest.warns((UserWarning, RuntimeWarning)):  # onnxruntime and rembg only warn
        session = create_session(settings)
    assert session.inner_session.get_providers() == ["CPUExecutionProvider"]  # the silent fallback
    with pytest.raises(ProviderFallback, match="ORCH_LOCAL_PROVIDERS asks for CUDAExecutionProvider"):
        check_providers(session, settings)


def test_an_available_accelerator_passes(tiny_model: Path) -> None:
    # The CPU build of onnxruntime ships the Azure provider: asked for, it is really active.
    settings = load_settings(local_model_path=str(tiny_model), local_onnx_threads=1,
                             local_providers="AzureExecutionProvider,CPUExecutionProvider")
    active = check_providers(create_session(settings), settings)
    assert "AzureExecutionProvider" in active


def test_empty_provider_list_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="ORCH_LOCAL_PROVIDERS"):
        load_settings(local_providers="")
