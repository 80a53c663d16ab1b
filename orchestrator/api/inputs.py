"""Turn a request's ``image_url`` (a data URI or an http(s) URL) into a producer Source,
refusing what can never work before anything is queued or paid for."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
from collections.abc import Sequence
from urllib.parse import SplitResult, unquote_to_bytes, urlsplit

from orchestrator.api.resolve import Resolved, Target, resolve_all
from orchestrator.errors import InputError, InputTooLarge, InputUnreachable, UnsupportedFormat
from orchestrator.images.allow import AllowList
from orchestrator.images.fetch import is_forbidden_address
from orchestrator.jobs.producer import Source
from orchestrator.settings import Settings

log = logging.getLogger("orchestrator.api.inputs")

IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)


def sniff_image(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, name in IMAGE_MAGIC:
        if data.startswith(magic):
            return name
    return None


def decode_data_uri(uri: str, *, max_bytes: int) -> bytes:
    header, sep, payload = uri.partition(",")
    if not sep:
        raise InputUnreachable("the data URI has no ',' separating its header from its data")
    if len(payload) * 3 // 4 > max_bytes + 3:
        raise InputTooLarge(f"the image is larger than the limit of {max_bytes:,} bytes")
    try:
        data = base64.b64decode(payload, validate=True) if header.endswith(";base64") else unquote_to_bytes(payload)
    except (binascii.Error, ValueError):
        raise InputUnreachable("the data URI's base64 data is invalid") from None
    if len(data) > max_bytes:
        raise InputTooLarge(f"the image is {len(data):,} bytes, over the limit of {max_bytes:,}")
    if sniff_image(data) is None:
        raise UnsupportedFormat("the data URI does not hold a PNG, JPEG, WebP, GIF, BMP or TIFF image")
    return data


def split_url(url: str, field: str) -> SplitResult:
    """``urlsplit`` that answers a malformed URL (``http://[::1/x``, port 99999) with a 422."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is what raises on a bad one
    except ValueError:
        raise InputUnreachable(f"{field} is not a valid URL") from None
    return parts


def _target(url: str, settings: Settings, field: str, allow: AllowList | None) -> Target | None:
    """The (host, port) to check, or None when the allow list trusts it."""
    parts = split_url(url, field)
    host = (parts.hostname or "").lower()
    if not host:
        raise InputUnreachable(f"the {field} has no host")
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    allow = allow if allow is not None else AllowList(settings.inputs.fetch_allow_hosts)
    return None if allow.trusts(host, port) else (host, port)


def _judge(target: Target, addresses: list[str] | None, field: str) -> None:
    """Refuse a target that did not resolve or resolves inside the network.

    The caller gets one generic refusal whether the name does not resolve or resolves to an
    internal address, so the API cannot be used to map internal DNS; the detail is logged."""
    host = target[0]
    refused = InputUnreachable(
        f"the {field}'s host cannot be reached from this service "
        "(only public addresses are fetched); refused"
    )
    if addresses is None:
        log.warning("%s refused: host %r does not resolve (or not in time)", field, host)
        raise refused
    for address in addresses:
        reason = is_forbidden_address(ipaddress.ip_address(address.split("%", 1)[0]))
        if reason:
            log.warning("%s refused: host %r resolves to %s, %s", field, host, address, reason)
            raise refused


def _resolve(settings: Settings, targets: list[Target]) -> Resolved:
    return resolve_all(targets, timeout=settings.inputs.url_check_timeout_seconds,
                       concurrency=settings.inputs.url_check_concurrency)


def check_url_target(url: str, settings: Settings, field: str = "image_url",
                     allow: AllowList | None = None) -> None:
    """Refuse a URL whose host resolves inside the network, before queueing it. The worker's
    fetch checks the address it actually connects to again (DNS may change in between)."""
    target = _target(url, settings, field, allow)
    if target is not None:
        _judge(target, _resolve(settings, [target])[target], field)


def check_webhook_url(url: str, settings: Settings) -> None:
    """A webhook is a URL the orchestrator will POST to: refuse what points inside the network,
    and refuse webhooks when no signing key is configured (receivers could not verify them)."""
    if settings.api.webhook_signing_key is None:
        raise InputUnreachable("fal_webhook needs the orchestrator's ORCH_WEBHOOK_SIGNING_KEY to be set")
    if split_url(url, "fal_webhook").scheme.lower() not in ("http", "https"):
        raise InputUnreachable("fal_webhook must be an http(s) URL")
    check_url_target(url, settings, "fal_webhook", AllowList(settings.inputs.webhook_allow_hosts))


def _parse_image_url(image_url: str, settings: Settings, *, name: str) -> Source:
    """The source for an image_url, its host not yet checked."""
    if image_url.startswith("data:"):
        return Source(name=name, data=decode_data_uri(image_url, max_bytes=settings.inputs.max_bytes),
                      origin="data URI")
    scheme = split_url(image_url, "image_url").scheme.lower()
    if scheme not in ("http", "https"):
        raise InputUnreachable("image_url must be an http(s) URL or a data: URI")
    if len(image_url) > 2048:
        raise InputUnreachable("image_url is longer than 2,048 characters")
    return Source(name=name, url=image_url, origin=image_url)


def source_from_image_url(image_url: str, settings: Settings, *, name: str) -> Source:
    source = _parse_image_url(image_url, settings, name=name)
    if source.url is not None:
        check_url_target(source.url, settings)
    return source


def sources_from_image_urls(image_urls: Sequence[str], settings: Settings,
                            names: Sequence[str]) -> list[Source | InputError]:
    """A batch's sources, or why each was refused; the URLs' hosts are resolved concurrently,
    all within ``ORCH_URL_CHECK_TIMEOUT_SECONDS`` (see orchestrator.api.resolve)."""
    out: list[Source | InputError] = []
    targets: list[Target | None] = []
    for image_url, name in zip(image_urls, names, strict=True):
        try:
            source = _parse_image_url(image_url, settings, name=name)
            target = _target(source.url, settings, "image_url", None) if source.url else None
        except InputError as exc:
            out.append(exc)
            targets.append(None)
            continue
        out.append(source)
        targets.append(target)
    resolved = _resolve(settings, [t for t in targets if t is not None])
    for index, target in enumerate(targets):
        if target is not None:
            try:
                _judge(target, resolved[target], "image_url")
            except InputError as exc:
                out[index] = exc
    return out


__all__ = ["InputError", "decode_data_uri", "sniff_image", "source_from_image_url",
           "sources_from_image_urls"]
