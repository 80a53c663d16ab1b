"""The CLI over the command layer: ``submit FOLDER --wait`` with duplicate inputs (issue 14,
item 11) and ``jobs show`` laid out for a person (item 13), on a real worker and the tiny model."""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

from tests.conftest import run_cli
from tests.support.images import subject


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_wait_ends_and_saves_every_input_when_two_files_have_the_same_bytes(
    env: dict[str, str], start_worker, tmp_path: Path
) -> None:
    photo = _png(subject())
    other = _png(subject((80, 60)))
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "photo.png").write_bytes(photo)
    (folder / "photo-copy.png").write_bytes(photo)  # the same bytes: folded into one job
    (folder / "other.png").write_bytes(other)
    start_worker()

    out = tmp_path / "out"
    done = run_cli(env, "submit", str(folder), "--wait", "--output", str(out), "--json",
                   timeout=120)  # before the fix this waited forever
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert sorted(Path(str(line["input"])).name for line in lines) == \
        ["other.png", "photo-copy.png", "photo.png"]
    assert {line["state"] for line in lines} == {"succeeded"}
    by_input = {Path(str(line["input"])).name: line for line in lines}
    assert by_input["photo.png"]["id"] == by_input["photo-copy.png"]["id"]
    assert sorted(p.name for p in out.iterdir()) == ["other.png", "photo-copy.png", "photo.png"]
    assert (out / "photo.png").read_bytes() == (out / "photo-copy.png").read_bytes()
    with Image.open(out / "photo.png") as saved:
        assert saved.mode == "RGBA"

    # jobs show: a layout a person reads — no Python reprs — and --json unchanged.
    job_id = str(by_input["other.png"]["id"])
    shown = run_cli(env, "jobs", "show", job_id)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    for repr_ in ("{'", "None", "True", "False", "Decimal(", "datetime."):
        assert repr_ not in text, text
    assert f"job {job_id}" in text
    assert "crop to bbox: no" in text
    assert "idempotency key  —" in text
    assert "80×60 image/png" in text and "stored in database" in text
    assert "#1 succeeded on" in text and "(local_measured)" in text
    assert " UTC" in text and "$" in text

    as_json = json.loads(run_cli(env, "jobs", "show", job_id, "--json").stdout)
    assert as_json["options"] == {"crop_to_bbox": False}
    assert as_json["idempotency_key"] is None
    assert as_json["result"]["width"] == 80 and as_json["result"]["height"] == 60
    assert as_json["attempt_log"][0]["compute_basis"] == "local_measured"
