"""A float32, mask-only copy of an ONNX model, made once and cached beside the user's other caches.

ONNX Runtime's CPU provider computes in float32: where it has no float16 kernel for a node it
casts around it, so a model shipped with float16 weights (the shared ``isnet-general.onnx`` has
238 float16 initializers and 91 Cast nodes of its own) spends part of every run converting
tensors back and forth. A copy with float32 weights and
its casts to float16 made casts to float32 (no-ops, which ONNX Runtime removes when it optimises
the graph) computes
the same function without the conversions; its mask differs from the float16 model's only by the
rounding of the conversions (``benchmarks/local_pipeline.py`` prints the largest alpha difference
against bare rembg).

The copy also keeps only the model's first output and the nodes it needs: rembg's ``dis_custom``
session reads the first output (the mask) and nothing else, while the IS-Net export also computes
five side outputs, each upsampled to 1024×1024 and passed through a sigmoid (~5 % of a run's
time). The first output is computed by the same nodes as before: bit for bit the same.

The copy is cached as ``<cache dir>/<sha256 of the source>-fp32-mask.onnx``: written to a
temporary file and renamed (atomic: concurrent worker processes never read a half-written copy),
reused while the source's content is the same, rebuilt when it changes. A model with float32
weights and one output is used as it is.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

FLOAT = 1
FLOAT16 = 10


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bg-orchestrator" / "models"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def has_float16_weights(model: Any) -> bool:
    return any(init.data_type == FLOAT16 for init in model.graph.initializer)


def mask_only(model: Any) -> Any:
    """A model computing only ``model``'s first output (onnx's Extractor keeps the nodes and
    initializers it needs)."""
    from onnx.utils import Extractor

    graph = model.graph
    weights = {init.name for init in graph.initializer}
    inputs = [value.name for value in graph.input if value.name not in weights]
    return Extractor(model).extract_model(inputs, [graph.output[0].name])


def to_float32(model: Any) -> Any:
    """Rewrite ``model`` in place: float16 initializers and constants become float32, casts to
    float16 cast to float32, float16 type annotations become float32."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    for i, init in enumerate(graph.initializer):
        if init.data_type == FLOAT16:
            graph.initializer[i].CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), init.name))
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == FLOAT16:
                    attr.t.CopyFrom(numpy_helper.from_array(
                        numpy_helper.to_array(attr.t).astype(np.float32), attr.t.name))
        elif node.op_type == "Cast":
            # A cast to float16 now casts to float32: right whatever its input's type. Casts
            # between two float32 tensors are then no-ops, which ONNX Runtime's graph
            # optimisation removes (its Cast elimination).
            for attr in node.attribute:
                if attr.name == "to" and attr.i == FLOAT16:
                    attr.i = FLOAT
    for value in [*graph.value_info, *graph.input, *graph.output]:
        if value.type.tensor_type.elem_type == FLOAT16:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    return model


def float32_model(source: Path, cache_dir: Path | None = None) -> Path:
    """The path of a float32, mask-only version of ``source``: ``source`` itself when it has no
    float16 weights and one output, else the cached copy (made now if missing)."""
    import onnx

    cache_dir = cache_dir or default_cache_dir()
    digest = file_sha256(source)
    cached = cache_dir / f"{digest}-fp32-mask.onnx"
    plain = cache_dir / f"{digest}-as-is"
    if cached.is_file():
        return cached
    if plain.is_file():
        return source
    model = onnx.load(str(source))
    cache_dir.mkdir(parents=True, exist_ok=True)
    if not has_float16_weights(model) and len(model.graph.output) == 1:
        _write_atomically(plain, b"")  # remember the answer: no need to parse the model again
        return source
    data = mask_only(to_float32(model)).SerializeToString()
    _write_atomically(cached, data)
    return cached


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it private; a model copy is as readable as its source
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
