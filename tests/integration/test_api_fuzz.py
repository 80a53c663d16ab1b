"""A schema-driven fuzz run over the HTTP API's OpenAPI (issue 4: "a schema-driven fuzz run over
the OpenAPI finds no 500").

Schemathesis reads ``/openapi.json`` and, for every operation, sends generated requests (valid
ones and, in its negative mode, invalid ones) to the real app in-process over ASGI, with this
run's own Postgres database and Redis DB behind it. Each generated request also gets:

* a caller: the tenant's key, an admin key, another tenant's key, or whatever ``Authorization``
  header schemathesis made up (so unauthenticated and bad-key calls are fuzzed too);
* sometimes a real job id in place of the generated path id, drawn from jobs seeded in every
  state (queued, running, retrying, succeeded, sync-mode succeeded, failed on input, failed on
  a runner error, cancelled, another tenant's), and sometimes the real result token;
* sometimes a real image (a PNG data URI) or a loopback URL in place of the generated
  ``image_url``, so submits get past input decoding into the producer and the database.

Checks: no 5xx; every status code, content type, header and response body is the one the
OpenAPI declares; invalid requests get a 4xx.

The first runs found three 500s (a non-ASCII result token; NUL characters reaching Postgres
text columns) and undeclared error replies; the app now handles and declares them, and the
regression tests at the end of this file pin the 500s, which the fuzz run may not draw again.

The run is derandomized (Hypothesis seeds it from the test's name), bounded in examples per
operation and keeps no example database, so CI sends the same requests every time.
"""

from __future__ import annotations

import base64
import socket
import traceback
import types
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from PIL import Image
from pydantic import BaseModel, ValidationError
from schemathesis import Case, Response
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.python.asgi import get_client
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from orchestrator.api import resolve as api_resolve
from orchestrator.api.app import create_app
from orchestrator.api.routes.fal_queue import RembgInput
from orchestrator.api.routes.v1 import BatchRequest
from orchestrator.auth.keys import create_key
from orchestrator.db.models import Attempt, Job, Result
from orchestrator.db.session import session_scope
from orchestrator.jobs.states import AttemptOutcome, ComputeBasis, JobState
from orchestrator.jobs.transitions import utcnow
from orchestrator.results.links import link_token
from orchestrator.settings import load_settings
from orchestrator.webhooks.signing import new_signing_key
from tests.support.images import data_uri, png_of

MAX_EXAMPLES = 50  # per operation; the whole file runs in about 20 s

# The schema is what the app serves at /openapi.json. It does not depend on settings, so an app
# built from the committed defaults (never connected to anything) serves it at collection time;
# the tests call a second app built on this run's own database and Redis.
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(load_settings()))

BODY, HEADERS = ParameterLocation.BODY, ParameterLocation.HEADER
TENANT, OTHER, ADMIN = "fuzz-tenant", "fuzz-other", "fuzz-admin"


PNG_URI = data_uri(png_of(Image.new("RGB", (6, 4), (200, 40, 40))))
# 127.0.0.1 is in ORCH_FETCH_ALLOW_HOSTS (conftest), so it is accepted at submit without a DNS
# lookup; nothing fetches it, because no worker runs here.
LOOPBACK_URL = "http://127.0.0.1:9/fuzz.png"
LOOPBACK_HOOK = "http://127.0.0.1:9/hook"

# Tracebacks of the exceptions the app raised in the current request.
API_ERRORS: list[str] = []


class CapturingApp:
    """The app as a server runs it: an exception becomes a 500 (Starlette has usually sent it
    already) and its traceback goes to API_ERRORS, for the checks and the failure report."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        started = False

        async def send_(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_)
        except Exception:
            if scope["type"] != "http":
                raise
            API_ERRORS.append(traceback.format_exc())
            if not started:
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"text/plain")]})
                await send({"type": "http.response.body", "body": b"Internal Server Error"})


@dataclass
class Fuzz:
    app: CapturingApp
    keys: dict[str, str]
    job_ids: list[str]
    token: str  # a valid result-link token of a succeeded job


def _seed_jobs(database_url: str) -> tuple[list[str], str]:
    """One job in every state the API tells apart; their ids and a succeeded job's token."""
    now = utcnow()
    jobs: list[Job] = []
    succeeded: list[Job] = []

    def job(state: JobState, client: str = TENANT, **kw: Any) -> Job:
        j = Job(id=uuid.uuid4(), state=state, backend="local", model="fuzz", client=client,
                options=kw.pop("options", {"crop_to_bbox": False}), source_kind="file",
                source_name=f"fuzz-{state.value}", max_attempts=4, attempt_count=0,
                result_token=uuid.uuid4().hex, created_at=now - timedelta(seconds=len(jobs)), **kw)
        jobs.append(j)
        return j

    def attempt(j: Job, outcome: AttemptOutcome, **kw: Any) -> None:
        j.attempt_count += 1
        j.attempts.append(Attempt(job_id=j.id, number=j.attempt_count, backend="local",
                                  worker="fuzz:1", outcome=outcome, started_at=now, **kw))

    spent = {"finished_at": now, "compute_seconds": Decimal("0.25"),
             "compute_basis": ComputeBasis.LOCAL_MEASURED}
    job(JobState.QUEUED)
    attempt(job(JobState.RUNNING, started_at=now), AttemptOutcome.RUNNING)
    retrying = job(JobState.RETRYING, error_code="fetch_failed", error_message="503 from origin",
                   next_attempt_at=now + timedelta(minutes=5))
    attempt(retrying, AttemptOutcome.RETRY, error_code="fetch_failed",
            error_message="503 from origin", **spent)
    for options in ({"crop_to_bbox": False}, {"crop_to_bbox": True, "sync_mode": True}):
        ok = job(JobState.SUCCEEDED, options=options, finished_at=now)
        attempt(ok, AttemptOutcome.SUCCEEDED, **spent)
        succeeded.append(ok)
    # An input error (fal's 422 on result) and a runner error (fal's 500 runner_server_error)
    for err_type, message in (("corrupt_image", "not an image"), ("remote_run_failed", "runner died")):
        failed = job(JobState.FAILED, error_code=err_type, error_message=message, finished_at=now)
        attempt(failed, AttemptOutcome.FAILED, error_code=err_type, error_message=message, **spent)
    job(JobState.CANCELLED, error_code="cancelled", error_message="cancelled on request",
        finished_at=now)
    job(JobState.QUEUED, client=OTHER)  # another tenant's: a 404 for the tenant's key

    png = base64.b64decode(PNG_URI.split(",", 1)[1])
    with session_scope(database_url) as session:
        session.add_all(jobs)
        session.flush()
        for ok in succeeded:
            session.add(Result(job_id=ok.id, attempt_id=ok.attempts[-1].id,
                               content_type="image/png", sha256="0" * 64, size_bytes=len(png),
                               width=6, height=4, store="database", data=png))
    # A result link's token (issue 14.1): an expiry and a MAC under the job's stored secret.
    return [str(j.id) for j in jobs], link_token(str(succeeded[0].result_token), succeeded[0].id, 3600)


@pytest.fixture
def fuzz(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Fuzz]:
    # The limiter allows 50 requests per second per key. The fuzzer goes faster, and every request
    # over the limit would stop at a 429 before reaching the code under test. A signing key turns
    # webhooks on (without one, every fal_webhook is a 422); no worker runs, so none is sent.
    # Likewise the per-address limit on failed authentication (every fuzzed call comes from
    # one address, and many carry made-up keys).
    settings = load_settings(api_requests_per_second=1_000_000,
                             api_tenant_requests_per_second=1_000_000,
                             api_auth_failures_per_minute=1_000_000, api_auth_failure_burst=1_000_000,
                             webhook_signing_key=new_signing_key())
    with session_scope(settings.database.url.get_secret_value()) as session:
        keys = {TENANT: create_key(session, TENANT), OTHER: create_key(session, OTHER),
                ADMIN: create_key(session, ADMIN, admin=True)}
    job_ids, token = _seed_jobs(settings.database.url.get_secret_value())

    # Hermetic: a generated http(s) image_url or fal_webhook must not make the API resolve names
    # on the internet. For the API's input checks only, hosts other than loopback do not
    # resolve (a 422, as for any unknown host).
    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if str(host) in ("127.0.0.1", "localhost", "::1"):
            return socket.getaddrinfo(host, *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, "no DNS in the fuzz run")

    monkeypatch.setattr(api_resolve, "socket", types.SimpleNamespace(
        getaddrinfo=getaddrinfo, gaierror=socket.gaierror, IPPROTO_TCP=socket.IPPROTO_TCP))
    yield Fuzz(CapturingApp(create_app(settings)), keys, job_ids, token)


# --- checks ----------------------------------------------------------------------------------


def _is_fal_runner_error(case: Case, response: Response) -> bool:
    """Fetching the result of a request whose runner failed is, as at fal, a 500 with
    ``error_type: runner_server_error`` and ``X-Fal-Error-Type`` (fal-queue-protocol.md §9.2);
    fal_client relies on it. The app working as designed, not a server error."""
    if case.operation.label != "GET /fal-ai/imageutils/requests/{request_id}":
        return False
    if response.status_code != 500:
        return False
    if response.headers.get("x-fal-error-type") != ["runner_server_error"]:
        return False
    body = response.json()
    return isinstance(body, dict) and body.get("error_type") == "runner_server_error"


def no_server_error(ctx: Any, response: Response, case: Case) -> bool | None:
    """schemathesis' `not_a_server_error`, less fal's runner-error 500."""
    if _is_fal_runner_error(case, response):
        return None
    return not_a_server_error(ctx, response, case)


def _negative_body_mutations(case: Case) -> list[Any] | None:
    """The mutations that made a negative case, if all of them are in its body."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_negative:
        return None
    mutations = getattr(meta.phase.data, "mutations", None)
    if not mutations or any(m.parameter_location.value != "body" for m in mutations):
        return None
    return list(mutations)


def _multipart_unobservable(case: Case) -> bool:
    """Multipart carries only text and bytes, and drops empty values: a file part generated as a
    number is sent as a file `0`, a field generated as `[]` or `{}` is not sent at all, a number
    where a boolean belongs arrives as the text `0`. What such a negative case violates is gone
    by the time it reaches the server, which rightly accepts it. (schemathesis allows for this
    with form text fields, not with file parts or dropped fields.) A missing required part is
    still visible, so those cases are still checked."""
    mutations = _negative_body_mutations(case)
    return (mutations is not None and (case.media_type or "").startswith("multipart/form-data")
            and all(m.operator.value != "remove_required_property" for m in mutations))


# The models of the JSON bodies, as FastAPI validates them.
BODY_MODELS: dict[str, type[BaseModel]] = {
    "POST /fal-ai/imageutils/rembg": RembgInput,
    "POST /v1/batches": BatchRequest,
}


def _lax_json_accepted(case: Case) -> bool:
    """FastAPI validates bodies with pydantic in lax mode, which takes 0/1, "true"/"false" and the
    like for a boolean (`sync_mode`, `crop_to_bbox`), though the schema says `boolean`. Such a
    body is not a failure to reject negative data, as long as that is the only thing wrong with
    it: it passes pydantic's strict mode but for `bool_type` errors. (Strict mode passing outright
    means schemathesis mislabelled a valid body, e.g. a `null` branch of `anyOf` retyped to the
    `string` the other branch allows.)"""
    model = BODY_MODELS.get(case.operation.label)
    if model is None or _negative_body_mutations(case) is None:
        return False
    try:
        model.model_validate(case.body, strict=True)
    except ValidationError as exc:
        return all(error["type"] == "bool_type" for error in exc.errors())
    return True


def negative_data_rejected(ctx: Any, response: Response, case: Case) -> bool | None:
    """schemathesis' `negative_data_rejection`, less what multipart or lax booleans hide."""
    if _multipart_unobservable(case) or _lax_json_accepted(case):
        return None
    return negative_data_rejection(ctx, response, case)


CHECKS = [
    no_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejected,
]


# --- the fuzz run ----------------------------------------------------------------------------


def _prepare(case: Case, data: st.DataObject, fuzz: Fuzz) -> None:
    meta = case.meta
    caller = data.draw(st.sampled_from([TENANT, ADMIN, OTHER, None]), label="caller")
    # A deliberately invalid header set keeps whatever Authorization schemathesis made for it.
    if caller is not None and not (meta is not None and meta.is_negative_at(HEADERS)):
        case.headers = {**(case.headers or {}), "authorization": f"Key {fuzz.keys[caller]}"}
    for name in ("request_id", "job_id"):
        if case.path_parameters and name in case.path_parameters:
            generated = case.path_parameters[name]
            case.path_parameters[name] = data.draw(st.sampled_from([generated, *fuzz.job_ids]),
                                                   label=name)
    result_op = case.operation.label == "GET /v1/jobs/{job_id}/result"
    if result_op and data.draw(st.booleans(), label="token"):
        case.query = {**(case.query or {}), "token": fuzz.token}
    if case.query and isinstance(case.query.get("fal_webhook"), str) and data.draw(
        st.booleans(), label="webhook"
    ):
        case.query["fal_webhook"] = LOOPBACK_HOOK
    image_url = st.sampled_from([None, PNG_URI, LOOPBACK_URL])
    # Only valid bodies get a real image: a swap could make a deliberately invalid one valid.
    body = None if meta is None or meta.is_negative_at(BODY) else case.body
    if isinstance(body, dict) and isinstance(body.get("image_url"), str):
        if (url := data.draw(image_url, label="image_url")) is not None:
            body["image_url"] = url
    if isinstance(body, dict) and isinstance(body.get("items"), list):
        for item in body["items"]:
            if isinstance(item, dict) and isinstance(item.get("image_url"), str):
                if (url := data.draw(image_url, label="items[].image_url")) is not None:
                    item["image_url"] = url
    _ = case.meta  # schemathesis re-classifies the case (valid or not) after these edits


@schema.parametrize()
@schema.given(data=st.data())
# `fuzz` (app, database, keys, seeded jobs) is set up once per operation and shared by its
# examples on purpose: what one request leaves behind (a cancel, a retry, a new job) is part of
# what the later ones meet.
@hypothesis.settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
def test_fuzz_api(case: Case, data: st.DataObject, fuzz: Fuzz) -> None:
    _prepare(case, data, fuzz)
    API_ERRORS.clear()
    try:
        case.call_and_validate(app=fuzz.app, checks=CHECKS)
    except BaseException as exc:
        for error in API_ERRORS:
            exc.add_note(f"\nTraceback in the API:\n{error}")
        raise


def test_openapi_json_is_what_the_fuzzer_read(fuzz: Fuzz) -> None:
    """The app under test serves the schema the fuzz run was generated from."""
    with get_client(fuzz.app) as client:
        assert client.get("/openapi.json").json() == schema.raw_schema


# --- what the fuzzer found: the 500s, now fixed --------------------------------------------


def test_result_token_with_non_ascii_characters_is_a_404_not_a_500(fuzz: Fuzz) -> None:
    """Was a 500 for anyone who knows a job id, no key needed: hmac.compare_digest(str, str)
    raises TypeError on non-ASCII text."""
    with get_client(fuzz.app) as client:
        for job_id in fuzz.job_ids:
            API_ERRORS.clear()
            reply = client.get(f"/v1/jobs/{job_id}/result", params={"token": "\u00e9"})
            assert reply.status_code == 404, (job_id, reply.status_code, API_ERRORS)


NUL_REQUESTS = {
    "list-backend": ("GET", "/v1/jobs", TENANT, {"params": {"backend": "\x00"}}),
    "list-client": ("GET", "/v1/jobs", ADMIN, {"params": {"client": "\x00"}}),
    "upload-filename": ("POST", "/v1/uploads", TENANT, {"files": {"files": ("a\x00.png", b"x")}}),
    "submit-url": ("POST", "/fal-ai/imageutils/rembg", TENANT,
                   {"json": {"image_url": "http://127.0.0.1:9/a\x00.png"}}),
    "batch-url": ("POST", "/v1/batches", TENANT,
                  {"json": {"items": [{"image_url": "http://127.0.0.1:9/a\x00.png"}]}}),
    "submit-webhook": ("POST", "/fal-ai/imageutils/rembg", TENANT,
                       {"json": {"image_url": LOOPBACK_URL},
                        "params": {"fal_webhook": "http://127.0.0.1:9/hook\x00"}}),
}


@pytest.mark.parametrize("name", NUL_REQUESTS)
def test_nul_characters_are_not_a_500(fuzz: Fuzz, name: str) -> None:
    """Were 500s: psycopg refuses NUL in a text column (a filter, a file name, a URL)."""
    method, path, caller, kwargs = NUL_REQUESTS[name]
    API_ERRORS.clear()
    with get_client(fuzz.app) as client:
        reply = client.request(method, path, headers={"Authorization": f"Key {fuzz.keys[caller]}"},
                               **kwargs)
    assert reply.status_code < 500 and not API_ERRORS, (reply.status_code, reply.text, API_ERRORS)
