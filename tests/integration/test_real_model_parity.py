"""The real IS-Net model on the real photos: results pixel-identical to bare rembg.remove."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator.jobs.states import JobState
from tests.conftest import REAL_MODEL, SAMPLE_IMAGES, run_cli
from tests.support.db import load_jobs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rembg_session(tmp_path_factory: pytest.TempPathFactory) -> object:
    """rembg's own dis_custom session, set up the way rembg documents: model under REMBG_HOME."""
    home = tmp_path_factory.mktemp("rembg-home")
    (home / "models").mkdir()
    link = home / "models" / REAL_MODEL.name
    link.symlink_to(REAL_MODEL)
    old = os.environ.get("REMBG_HOME")
    os.environ["REMBG_HOME"] = str(home)
    import rembg

    try:
        yield rembg.new_session("dis_custom", model_path=str(link))
    finally:
        if old is None:
            os.environ.pop("REMBG_HOME", None)
        else:
            os.environ["REMBG_HOME"] = old


def test_results_match_bare_rembg_pixel_for_pixel(
    env: dict[str, str], start_worker, tmp_path: Path, rembg_session: object
) -> None:
    import rembg

    real = {"ORCH_LOCAL_MODEL_PATH": str(REAL_MODEL), "ORCH_LOCAL_ONNX_THREADS": "0"}
    start_worker(extra_env=real)
    out = tmp_path / "out"
    result = run_cli({**env, **real}, "submit", str(SAMPLE_IMAGES), "--wait", "-o", str(out))
    assert result.returncode == 0, result.stdout + result.stderr

    images = sorted(SAMPLE_IMAGES.glob("*.png"))
    assert len(images) == 4
    for path in images:
        expected = rembg.remove(path.read_bytes(), session=rembg_session)
        assert isinstance(expected, bytes)
        want = np.asarray(Image.open(io.BytesIO(expected)).convert("RGBA"))
        got_img = Image.open(out / f"{path.stem}.png")
        assert got_img.mode == "RGBA"
        got = np.asarray(got_img)
        assert got.shape == want.shape, path.name
        assert np.array_equal(got, want), f"{path.name}: {np.count_nonzero(got != want)} values differ"

    jobs = load_jobs(env["ORCH_DATABASE_URL"])
    assert {j.state for j in jobs} == {JobState.SUCCEEDED}
    assert {j.model for j in jobs} == {"dis_custom:isnet-general.onnx"}
