"""The real IS-Net model on the real photos: results as bare rembg.remove makes them.

``ORCH_LOCAL_MODEL_PRECISION=as-shipped`` runs the model file as it is with rembg's own
pre-processing: pixel-identical to rembg. ``float32`` (the default) runs a float32 copy of the
float16 model and normalises the image in float32: the network's output differs from the float16
model's by ~1e-4 at most, which moves a mask value across a uint8 rounding step here and there.
So the alpha channel must be within 1 of rembg's everywhere, and so must the colour channels
wherever either alpha is > 0 (rembg's cutout composites colour by alpha, so a colour value moves
with its alpha). Anything more than rounding — a wrong mask, a shifted or resized image, lost
colour — differs by far more than 1 and fails.
"""

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


def assert_matches_rembg(name: str, got: np.ndarray, want: np.ndarray, *, exact: bool) -> None:
    assert got.shape == want.shape, name
    if exact:
        assert np.array_equal(got, want), f"{name}: {np.count_nonzero(got != want)} values differ"
        return
    got_i, want_i = got.astype(np.int16), want.astype(np.int16)
    alpha = np.abs(got_i[..., 3] - want_i[..., 3])
    assert alpha.max() <= 1, f"{name}: alpha differs by up to {alpha.max()}"
    visible = (got[..., 3] > 0) | (want[..., 3] > 0)
    colour = np.abs(got_i[..., :3] - want_i[..., :3])[visible]
    assert colour.size == 0 or colour.max() <= 1, f"{name}: colour differs by up to {colour.max()}"


@pytest.mark.parametrize("precision", ["float32", "as-shipped"])
def test_results_match_bare_rembg(
    env: dict[str, str], start_worker, tmp_path: Path, rembg_session: object, precision: str
) -> None:
    import rembg

    real = {"ORCH_LOCAL_MODEL_PATH": str(REAL_MODEL), "ORCH_LOCAL_ONNX_THREADS": "0",
            "ORCH_LOCAL_MODEL_PRECISION": precision,
            "ORCH_LOCAL_MODEL_CACHE_DIR": str(tmp_path / "model-cache")}
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
        assert_matches_rembg(path.name, np.asarray(got_img), want, exact=precision == "as-shipped")

    if precision == "float32":
        assert list((tmp_path / "model-cache").glob("*-fp32-mask.onnx")), "no float32 copy was cached"
    jobs = load_jobs(env["ORCH_DATABASE_URL"])
    assert {j.state for j in jobs} == {JobState.SUCCEEDED}
    assert {j.model for j in jobs} == {"dis_custom:isnet-general.onnx"}


def test_the_tolerance_still_catches_a_real_difference() -> None:
    """One alpha value off by 2, or a colour off by 2 under a visible pixel, fails."""
    want = np.zeros((4, 4, 4), dtype=np.uint8)
    want[..., 3] = 200
    want[..., :3] = 100
    assert_matches_rembg("same", want.copy(), want, exact=False)
    off_by_one = want.copy()
    off_by_one[0, 0] = (101, 99, 100, 201)
    assert_matches_rembg("rounding", off_by_one, want, exact=False)
    for index, value in (((1, 1, 3), 202), ((2, 2, 0), 102)):
        wrong = want.copy()
        wrong[index] = value
        with pytest.raises(AssertionError):
            assert_matches_rembg("wrong", wrong, want, exact=False)
