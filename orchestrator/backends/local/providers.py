"""ONNX Runtime execution providers: a local worker runs on what it was asked for, or not at all.

onnxruntime falls back to the CPU without an error when a requested provider (CUDA, ROCm,
TensorRT …) cannot load, e.g. when the CUDA libraries are missing: the worker would then run
10-20× slower while the operator believes it uses the GPU. So every session's active providers
(``InferenceSession.get_providers()``) are compared with ``ORCH_LOCAL_PROVIDERS``, once before
the worker starts (in a separate process: CUDA must not be initialised in a process that
forks) and again in every pool process.

``python -m orchestrator.backends.local.providers`` runs the check and prints the active providers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from orchestrator.errors import BackendUnavailable, ConfigError, ProviderFallback
from orchestrator.settings import Settings

SETTING = "ORCH_LOCAL_PROVIDERS"



def active_providers(session: Any) -> list[str]:
    """The providers a rembg session's ONNX Runtime session really uses."""
    return list(session.inner_session.get_providers())


def check_providers(session: Any, settings: Settings) -> list[str]:
    """The session's active providers; ProviderFallback when an asked-for one is missing."""
    active = active_providers(session)
    missing = [p for p in settings.accelerators() if p not in active]
    if missing:
        import onnxruntime as ort

        raise ProviderFallback(
            f"{SETTING} asks for {', '.join(missing)}, but onnxruntime runs the model on "
            f"{', '.join(active)} (providers in this onnxruntime build: "
            f"{', '.join(ort.get_available_providers())}); refusing to start on a silent CPU "
            f"fallback. Install the matching onnxruntime-gpu and CUDA/cuDNN libraries, or set "
            f"{SETTING}=CPUExecutionProvider"
        )
    return active


def preflight(settings: Settings, timeout: float = 600) -> None:
    """Before a local worker starts: when an accelerator is asked for, prove that a session
    really gets it, in a child process. ConfigError (naming the setting) when it does not."""
    if not settings.accelerators():
        return
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.backends.local.providers"],
        capture_output=True, text=True, timeout=timeout,
    )
    if out.returncode != 0:
        lines = [line for line in out.stderr.splitlines() if line.startswith("refused: ")]
        detail = lines[-1][len("refused: "):] if lines else out.stderr.strip()[-2000:]
        raise ConfigError(detail)


def main() -> int:
    from orchestrator.backends.local import create_session
    from orchestrator.settings import get_settings

    settings = get_settings()
    try:
        active = check_providers(create_session(settings), settings)
    except BackendUnavailable as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 3
    print(json.dumps({"requested": settings.local.providers, "active": active}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
