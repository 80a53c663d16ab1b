"""rembg's ``dis_custom`` session on the operator's model file, at the configured precision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.errors import BackendUnavailable
from orchestrator.settings import Settings


def normalize_float32(image: Any, mean: tuple[float, float, float], std: tuple[float, float, float],
                      size: tuple[int, int]) -> Any:
    """rembg's ``BaseSession.normalize`` computed in float32 rather than float64.

    rembg scales each pixel by the image's maximum, subtracts ``mean`` and divides by ``std`` in
    float64 over an H×W×3 array, then transposes and converts to float32: three full-size
    float64 temporaries. Here the uint8 pixels go to a float32 C×H×W array once and are scaled in
    place; every value differs from rembg's by at most one float32 rounding step (≤ 3e-8 on the
    sample photos).
    """
    import numpy as np
    from PIL import Image

    pixels = np.asarray(image.convert("RGB").resize(size, Image.Resampling.LANCZOS))
    peak = np.float32(max(int(pixels.max()), 1e-6))
    planes = np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)
    planes /= peak
    for channel in range(3):
        planes[channel] -= np.float32(mean[channel])
        planes[channel] /= np.float32(std[channel])
    return planes[np.newaxis]


def configured_path_session(settings: Settings, opts: Any) -> Any:
    """A ``dis_custom`` session on ``ORCH_LOCAL_MODEL_PATH``: the float32 copy and float32
    pre-processing, or the file as shipped with rembg's own pre-processing."""
    from rembg.sessions.dis_custom import DisCustomSession

    from orchestrator.backends.local.precision import float32_model

    source = settings.local.model_path
    assert source is not None
    as_shipped = settings.local.model_precision == "as-shipped"
    try:
        path = source if as_shipped else float32_model(source, settings.local.model_cache_dir)
    except ImportError as exc:
        raise BackendUnavailable(
            f"ORCH_LOCAL_MODEL_PRECISION=float32 needs the onnx package ({exc}); install the "
            "local extra: pip install 'bg-orchestrator[local]', or set "
            "ORCH_LOCAL_MODEL_PRECISION=as-shipped"
        ) from exc
    except OSError as exc:
        raise BackendUnavailable(
            f"could not cache a float32 copy of {source} ({exc}); set ORCH_LOCAL_MODEL_CACHE_DIR "
            "to a writable directory, or ORCH_LOCAL_MODEL_PRECISION=as-shipped"
        ) from exc

    class ConfiguredPathSession(DisCustomSession):  # type: ignore[misc]
        # rembg refuses model paths outside its model home because its HTTP server takes
        # them from users; ours comes from the operator's settings, so it is trusted.
        @classmethod
        def download_models(cls, *args: Any, **kwargs: Any) -> str:
            return str(kwargs["model_path"])

        def normalize(self, img: Any, mean: tuple[float, float, float],
                      std: tuple[float, float, float], size: tuple[int, int],
                      *args: Any, **kwargs: Any) -> dict[str, Any]:
            if as_shipped:
                return super().normalize(img, mean, std, size, *args, **kwargs)  # type: ignore[no-any-return]
            return {self.inner_session.get_inputs()[0].name: normalize_float32(img, mean, std, size)}

    return ConfiguredPathSession("dis_custom", opts, model_path=str(Path(path)),
                                 providers=list(settings.local.providers))
