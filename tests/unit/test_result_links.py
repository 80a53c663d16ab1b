"""Result links expire (issue 14.1): the token is an expiry and a MAC under the job's secret."""

from __future__ import annotations

import uuid

from orchestrator.results.links import link_token, result_url, token_valid

SECRET = "per-job-secret-value"
JOB = uuid.uuid4()


def test_a_fresh_token_opens_its_job_until_it_expires() -> None:
    token = link_token(SECRET, JOB, 60, now=1_000_000)
    assert token_valid(SECRET, JOB, token, now=1_000_000)
    assert token_valid(SECRET, JOB, token, now=1_000_060)
    assert not token_valid(SECRET, JOB, token, now=1_000_061)


def test_a_token_opens_no_other_job_and_cannot_be_extended_or_forged() -> None:
    token = link_token(SECRET, JOB, 60, now=1_000_000)
    assert not token_valid(SECRET, uuid.uuid4(), token, now=1_000_000)
    assert not token_valid("another-secret", JOB, token, now=1_000_000)
    expires, mac = token.split(".")
    assert not token_valid(SECRET, JOB, f"{int(expires) + 3600}.{mac}", now=1_000_000)
    for bad in ("", ".", SECRET, f"{expires}.", "x.y", "99999999999999.a", f"{expires}.é"):
        assert not token_valid(SECRET, JOB, bad, now=1_000_000)
    assert not token_valid(None, JOB, token, now=1_000_000)


def test_the_url_never_carries_the_jobs_secret() -> None:
    url = result_url("https://api.example/", JOB, SECRET, 60)
    assert url.startswith(f"https://api.example/v1/jobs/{JOB}/result?token=")
    assert SECRET not in url
