"""One contract, every backend: what the job engine relies on from an adapter.

Inline backends (the fake, local rembg on a tiny IS-Net model) and remote backends (the fake,
fal through the emulator with the real fal_client over HTTPS on loopback) are held to the same
tests. A new backend joins by adding a case to ``INLINE`` or ``REMOTE``.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from PIL import Image

from orchestrator import backends, errors
from orchestrator.backends.base import (
    Accepted,
    BackendInput,
    CancelOutcome,
    Finished,
    InlineBackend,
    Queued,
    RemoteBackend,
    RemoteInput,
    RemoteOutput,
    RemotePolicy,
    Running,
)
from orchestrator.settings import Settings, load_settings
from tests.fal_emulator import FalEmulator
from tests.support.images import subject
from tests.support.servers import free_port

KEY = "emulator-key-id:emulator-key-secret"


def png(size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    subject(size).save(buf, "PNG")
    return buf.getvalue()


# -- inline -----------------------------------------------------------------------------------

INLINE = [backends.FAKE_INLINE, backends.LOCAL]


@pytest.fixture(params=INLINE)
def inline(request: pytest.FixtureRequest, tiny_model: Path) -> InlineBackend:
    settings = load_settings(local_model_path=str(tiny_model), local_onnx_threads=1,
                             fake_backends=True)
    return backends.get_inline(request.param, settings)


def test_inline_registered_and_offered(inline: InlineBackend) -> None:
    assert backends.backend_class(inline.name) is type(inline)
    assert not backends.is_remote(inline.name)
    assert inline.name in backends.offered(inline.settings)
    assert type(inline).unavailable_reason(inline.settings) is None
    assert type(inline).model_label(inline.settings)
    price = inline.price_per_second()  # None: the operator has not priced local work
    assert price is None or (isinstance(price, Decimal) and price >= 0)


# warm() runs the model once on a blank image, whose mask rembg normalises by 0/0.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_inline_cuts_out_an_image(inline: InlineBackend) -> None:
    inline.warm()
    out = inline.run(BackendInput(png((64, 48)), {}))
    with Image.open(io.BytesIO(out.data)) as image:
        assert image.format == "PNG" and image.mode == "RGBA" and image.size == (64, 48)
    assert (out.width, out.height) == (64, 48) and out.content_type == "image/png"
    assert out.compute_seconds >= 0 and not out.cropped


def test_inline_crops_to_the_subject(inline: InlineBackend) -> None:
    out = inline.run(BackendInput(png((64, 48)), {"crop_to_bbox": True}))
    assert out.cropped and out.width <= 64 and out.height <= 48


@pytest.mark.parametrize(("data", "error"), [
    (b"not an image at all", errors.CorruptImage),
    (b"", errors.CorruptImage),
])
def test_inline_bad_input_is_a_permanent_input_error(
    inline: InlineBackend, data: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        inline.run(BackendInput(data, {}))
    assert isinstance(info.value, errors.PermanentJobError)
    assert info.value.code in errors.INPUT_ERROR_CODES


# -- remote -----------------------------------------------------------------------------------

REMOTE = [backends.FAKE_REMOTE, backends.FAL]


@pytest.fixture(scope="module")
def fal_emulator() -> Iterator[FalEmulator]:
    """The emulator, with this process's fal_client pointed at it (fal_client bakes its queue
    host in at import, hence the patching; see tests/unit/test_fal_emulator.py)."""
    mp = pytest.MonkeyPatch()
    with FalEmulator(port=free_port(), latency=0.2) as emulator:
        mp.setenv("FAL_QUEUE_RUN_HOST", emulator.host)
        mp.setenv("SSL_CERT_FILE", emulator.ca_file)
        mp.delenv("SSL_CERT_DIR", raising=False)
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        import fal_client.auth
        import fal_client.client

        mp.setattr(fal_client.auth, "FAL_QUEUE_RUN_HOST", emulator.host)
        mp.setattr(fal_client.client, "QUEUE_URL_FORMAT", f"https://{emulator.host}/")
        try:
            yield emulator
        finally:
            mp.undo()


@pytest.fixture(params=REMOTE)
def remote(request: pytest.FixtureRequest, broker_url: str,
           fal_emulator: FalEmulator) -> Iterator[RemoteBackend]:
    fal_emulator.reset()
    fal_emulator.latency = 0.2
    settings: Settings = load_settings(fal_key=KEY, broker_url=broker_url, fake_backends=True)
    yield backends.backend_class(request.param)(settings)  # type: ignore[misc]


def _until_finished(backend: RemoteBackend, request_id: str, timeout: float = 30) -> Finished:
    async def wait() -> Finished:
        deadline = time.monotonic() + timeout
        while True:
            status = await backend.status(request_id)
            assert isinstance(status, (Queued, Running, Finished))
            if isinstance(status, Finished):
                await backend.aclose()
                return status
            assert time.monotonic() < deadline, f"request {request_id} never finished"
            await asyncio.sleep(0.05)

    return asyncio.run(wait())


def test_remote_registered_with_a_policy(remote: RemoteBackend) -> None:
    assert backends.backend_class(remote.name) is type(remote)
    assert backends.is_remote(remote.name)
    assert type(remote).unavailable_reason(remote.settings) is None
    policy = remote.policy()
    assert isinstance(policy, RemotePolicy) and policy.max_in_flight >= 1
    assert policy.poll_initial_seconds > 0 and policy.poll_max_seconds >= policy.poll_initial_seconds
    assert len(remote.credentials_fingerprint()) == 16
    assert KEY not in remote.credentials_fingerprint()


def test_remote_submit_poll_and_fetch_a_result(remote: RemoteBackend) -> None:
    data = png((64, 48))
    accepted = remote.submit(remote.prepare(RemoteInput(None, data, {})), callback_url=None)
    assert isinstance(accepted, Accepted) and accepted.request_id
    assert isinstance(accepted.status, (Queued, Running))
    finished = _until_finished(remote, accepted.request_id)
    assert finished.failure is None
    assert finished.compute_seconds is None or finished.compute_seconds >= 0

    async def fetch() -> RemoteOutput:
        try:
            return await remote.result(accepted.request_id)
        finally:
            await remote.aclose()

    output = asyncio.run(fetch())
    assert output.content_type.startswith("image/")
    with Image.open(io.BytesIO(output.data)) as image:
        assert image.size == (64, 48)


def test_remote_bad_input_is_refused_before_paying(remote: RemoteBackend) -> None:
    with pytest.raises(errors.InputError):
        remote.prepare(RemoteInput(None, b"not an image", {}))


def test_remote_cancel_of_a_finished_request(remote: RemoteBackend) -> None:
    accepted = remote.submit(remote.prepare(RemoteInput(None, png(), {})), callback_url=None)
    _until_finished(remote, accepted.request_id)
    assert remote.cancel(accepted.request_id) is CancelOutcome.ALREADY_COMPLETED


def test_remote_unknown_request_is_an_error_of_the_tree(remote: RemoteBackend) -> None:
    async def ask() -> object:
        try:
            return await remote.status("00000000-0000-0000-0000-000000000000")
        finally:
            await remote.aclose()

    with pytest.raises(errors.TransientJobError):
        asyncio.run(ask())


def test_remote_callbacks_without_a_signature_are_rejected(remote: RemoteBackend) -> None:
    with pytest.raises(errors.WebhookRejected):
        remote.verify_callback({}, b"{}")
