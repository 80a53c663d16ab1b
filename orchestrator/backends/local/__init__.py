"""The local backend: rembg on an ONNX Runtime session, one per worker process.

The session is created once per process (Celery's ``worker_process_init``) and reused for
every job that process runs. rembg and onnxruntime are imported lazily: the CLI and API work
without the ``local`` extra installed.
"""

from __future__ import annotations

import io
import os
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from orchestrator.backends.base import BackendInput, BackendOutput, InlineBackend
from orchestrator.backends.local.inference_gate import GatedInferenceSession, InferenceGate
from orchestrator.errors import BackendUnavailable
from orchestrator.images.decode import open_image
from orchestrator.jobs.states import ComputeBasis
from orchestrator.settings import Settings

if TYPE_CHECKING:
    from PIL import Image

INSTALL_HINT = "install the local extra: pip install 'bg-orchestrator[local]'"

_session_lock = threading.Lock()
_sessions: dict[tuple[str, int, int], Any] = {}
_gate: InferenceGate | None = None


def install_gate(gate: InferenceGate | None) -> None:
    """Route this process's inference through a worker-wide gate (set at process start)."""
    global _gate
    _gate = gate


def _import_rembg() -> Any:
    try:
        import rembg
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise BackendUnavailable(f"the local backend needs rembg and onnxruntime ({exc}); {INSTALL_HINT}") from exc
    return rembg


def _model_key(settings: Settings) -> str:
    if settings.local.model_path is not None:
        return f"{settings.local.model_path}:{settings.local.model_precision}"
    return settings.local.model


def create_session(settings: Settings) -> Any:
    """A rembg session for the configured model, with the configured ONNX thread count."""
    rembg = _import_rembg()
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = settings.onnx_threads()
    opts.inter_op_num_threads = 1
    if settings.local.model_path is not None:
        from orchestrator.backends.local.model_session import configured_path_session

        return configured_path_session(settings, opts)
    try:
        return rembg.new_session(
            settings.local.model, sess_opts=opts, providers=list(settings.local.providers)
        )
    except Exception as exc:
        raise BackendUnavailable(
            f"the rembg model {settings.local.model!r} could not be loaded ({exc}); on a machine "
            "without internet access set ORCH_LOCAL_MODEL_PATH to a local IS-Net ONNX file"
        ) from exc


def get_session(settings: Settings) -> Any:
    """The process's session, created on first use (normally at process start)."""
    key = (_model_key(settings), settings.onnx_threads(), os.getpid())
    with _session_lock:
        session = _sessions.get(key)
        if session is None:
            session = create_session(settings)
            if _gate is not None:
                session.inner_session = GatedInferenceSession(session.inner_session, _gate)
            _sessions[key] = session
        return session


def sessions_created() -> int:
    return len(_sessions)


def remove_background(image: Image.Image, session: Any, *, crop_to_bbox: bool) -> Image.Image:
    """rembg.remove with the session, then an optional crop to the subject's alpha box."""
    rembg = _import_rembg()
    cutout: Image.Image = rembg.remove(image, session=session)
    if crop_to_bbox:
        box = cutout.getchannel("A").getbbox()
        if box is not None:
            cutout = cutout.crop(box)
    return cutout


class LocalBackend(InlineBackend):
    name: ClassVar[str] = "local"

    @classmethod
    def model_label(cls, settings: Settings) -> str:
        if settings.local.model_path is not None:
            return f"dis_custom:{Path(settings.local.model_path).name}"
        return settings.local.model

    @classmethod
    def unavailable_reason(cls, settings: Settings) -> str | None:
        try:
            rembg = _import_rembg()
        except BackendUnavailable as exc:
            return str(exc)
        if settings.local.model_path is not None:
            return None
        names = rembg.sessions.sessions_names  # rembg has no top-level `sessions_names`
        if settings.local.model not in names:
            return (
                f"ORCH_LOCAL_MODEL={settings.local.model!r} is not a rembg model; choose one of "
                f"{', '.join(sorted(names))}"
            )
        return None

    def price_per_second(self) -> Decimal | None:
        return self.settings.local_price()

    @classmethod
    def preflight(cls, settings: Settings) -> None:
        from orchestrator.backends.local.providers import preflight

        preflight(settings)  # a GPU asked for must really be used: no silent CPU fallback

    def warm(self, *, worker_pid: int | None = None) -> list[str]:
        """Create the session, check it really runs on the providers asked for, and run it
        once: ONNX Runtime sizes its memory arena on the first run, which would otherwise slow
        the process's first real job by seconds. In a worker, inference first goes through the
        worker-wide gate (one per worker main process). Returns the session's active providers."""
        from PIL import Image

        from orchestrator.backends.local.providers import check_providers

        if worker_pid is not None:
            install_gate(InferenceGate.for_worker(worker_pid, self.settings.inference_slots()))

        session = get_session(self.settings)
        active = check_providers(session, self.settings)
        session.predict(Image.new("RGB", (32, 32)))
        return active

    def run(self, job_input: BackendInput) -> BackendOutput:
        image = open_image(
            job_input.data,
            max_bytes=self.settings.inputs.max_bytes,
            max_pixels=self.settings.inputs.max_pixels,
        )
        session = get_session(self.settings)
        crop = bool(job_input.options.get("crop_to_bbox", False))
        started = time.perf_counter()
        cutout = remove_background(image, session, crop_to_bbox=crop)
        seconds = time.perf_counter() - started
        buf = io.BytesIO()
        cutout.save(buf, "PNG", compress_level=self.settings.results.png_compress_level)
        return BackendOutput(
            data=buf.getvalue(),
            content_type="image/png",
            width=cutout.width,
            height=cutout.height,
            compute_seconds=Decimal(f"{seconds:.6f}"),
            compute_basis=ComputeBasis.LOCAL_MEASURED,
            cropped=crop,
        )
