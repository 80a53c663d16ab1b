#!/usr/bin/env python3
"""Rewrite flat settings access to the grouped settings (orchestrator/settings/, issue 11).

    python tools/settings_codemod.py [--check] [--receiver NAME]... FILE...

Rewrites ``<receiver>.<flat name>`` to ``<receiver>.<group>.<field>`` wherever the receiver is a
name, attribute or call whose last identifier ends in ``settings`` (``settings``,
``self.settings``, ``self._settings``, ``app.state.settings``, ``get_settings()``,
``load_settings(max_attempts=3)``), a name the same file binds to one (``s = self.settings``,
``cfg: Settings``), or one of the ``--receiver`` names (e.g. ``--receiver s``).
Reads of the two URLs become ``….database.url.get_secret_value()`` / ``….broker.url.
get_secret_value()`` (their passwords are masked in repr). The helper methods ``onnx_threads()``,
``inference_slots()``, ``concurrency()``, ``retry_countdown_cap()`` and ``accelerators()`` stay on
the root settings object, so calls to them are left as they are.

Idempotent: a rewritten path starts with a group name, which is no flat name. Keyword arguments
of ``load_settings(...)`` keep their flat names (load_settings maps them). An assignment to a
flat attribute of a URL is reported, not rewritten. Needs nothing but the standard library, so
it runs on a tree that does not import. ``--check`` only lists what it would change (exit 1).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

# flat name -> grouped path; tests/unit/test_settings.py checks it against the model.
MAPPING: dict[str, str] = {
    "database_url": "database.url",
    "db_retry_seconds": "database.retry_seconds",
    "broker_url": "broker.url",
    "visibility_timeout_seconds": "broker.visibility_timeout_seconds",
    "unacked_restore_interval_seconds": "broker.unacked_restore_interval_seconds",
    "fal_key": "fal.key",
    "fal_endpoint": "fal.endpoint",
    "fal_price_per_second": "fal.price_per_second",
    "fal_max_in_flight": "fal.max_in_flight",
    "fal_max_submits_per_second": "fal.max_submits_per_second",
    "fal_submit_timeout_seconds": "fal.submit_timeout_seconds",
    "fal_poll_initial_seconds": "fal.poll_initial_seconds",
    "fal_poll_max_seconds": "fal.poll_max_seconds",
    "fal_poll_batch": "fal.poll_batch",
    "fal_max_result_bytes": "fal.max_result_bytes",
    "fal_resubmit_after_seconds": "fal.resubmit_after_seconds",
    "fal_slot_wait_seconds": "fal.slot_wait_seconds",
    "fal_request_timeout_seconds": "fal.request_timeout_seconds",
    "fal_webhook_url": "fal.webhook_url",
    "fal_adopt_wait_seconds": "fal.adopt_wait_seconds",
    "fal_jwks_url": "fal.jwks_url",
    "fal_budget_daily_usd": "budgets.daily_usd",
    "fal_budget_monthly_usd": "budgets.monthly_usd",
    "fal_over_budget": "budgets.over_budget",
    "fal_budget_wait_seconds": "budgets.wait_seconds",
    "fal_job_cost_estimate_usd": "budgets.job_cost_estimate_usd",
    "budget_alert_webhook_url": "budgets.alert_webhook_url",
    "local_model": "local.model",
    "local_model_path": "local.model_path",
    "local_model_precision": "local.model_precision",
    "local_model_cache_dir": "local.model_cache_dir",
    "local_price_per_second": "local.price_per_second",
    "local_host_price_per_hour": "local.host_price_per_hour",
    "webhook_allow_hosts": "inputs.webhook_allow_hosts",
    "object_store_url": "storage.object_store_url",
    "s3_endpoint_url": "storage.s3_endpoint_url",
    "s3_public_endpoint_url": "storage.s3_public_endpoint_url",
    "s3_connect_timeout_seconds": "storage.s3_connect_timeout_seconds",
    "s3_read_timeout_seconds": "storage.s3_read_timeout_seconds",
    "s3_max_attempts": "storage.s3_max_attempts",
    "result_url_ttl_seconds": "storage.result_url_ttl_seconds",
    "input_retention_seconds": "retention.input_retention_seconds",
    "result_retention_days": "retention.result_retention_days",
    "orphan_grace_seconds": "retention.orphan_grace_seconds",
    "gc_interval_seconds": "retention.gc_interval_seconds",
    "api_auth_failures_per_minute": "api.auth_failures_per_minute",
    "api_auth_failure_burst": "api.auth_failure_burst",
    "api_max_small_body_bytes": "api.max_small_body_bytes",
    "api_tenant_requests_per_second": "api.tenant_requests_per_second",
    "api_max_header_bytes": "api.max_header_bytes",
    "url_check_timeout_seconds": "inputs.url_check_timeout_seconds",
    "url_check_concurrency": "inputs.url_check_concurrency",
    "tenant_max_jobs_in_flight": "inputs.tenant_max_jobs_in_flight",
    "tenant_max_stored_input_bytes": "inputs.tenant_max_stored_input_bytes",
    "metrics_key": "api.metrics_key",
    "metrics_cache_seconds": "api.metrics_cache_seconds",
    "result_link_ttl_seconds": "results.link_ttl_seconds",
    "console_session_secret": "api.console_session_secret",
    "console_session_hours": "api.console_session_hours",
    "local_onnx_threads": "local.onnx_threads",
    "local_inference_slots": "local.inference_slots",
    "local_providers": "local.providers",
    "worker_concurrency": "worker.concurrency",
    "worker_start_timeout_seconds": "worker.start_timeout_seconds",
    "worker_max_memory_mb": "worker.max_memory_mb",
    "worker_max_tasks_per_child": "worker.max_tasks_per_child",
    "default_backend": "routing.default_backend",
    "fake_backends": "routing.fake_backends",
    "auto_deadline_seconds": "routing.auto_deadline_seconds",
    "auto_local_parallelism": "routing.auto_local_parallelism",
    "auto_local_seconds_per_job": "routing.auto_local_seconds_per_job",
    "auto_fal_max_error_rate": "routing.auto_fal_max_error_rate",
    "breaker_failures": "routing.breaker_failures",
    "breaker_cooldown_seconds": "routing.breaker_cooldown_seconds",
    "log_format": "logs.format",
    "log_level": "logs.level",
    "max_input_bytes": "inputs.max_bytes",
    "max_input_pixels": "inputs.max_pixels",
    "fetch_timeout_seconds": "inputs.fetch_timeout_seconds",
    "fetch_max_redirects": "inputs.fetch_max_redirects",
    "fetch_allow_hosts": "inputs.fetch_allow_hosts",
    "dedup_window_seconds": "inputs.dedup_window_seconds",
    "max_attempts": "retries.max_attempts",
    "max_deliveries": "retries.max_deliveries",
    "retry_backoff_base_seconds": "retries.backoff_base_seconds",
    "retry_backoff_max_seconds": "retries.backoff_max_seconds",
    "lease_seconds": "retries.lease_seconds",
    "reconcile_interval_seconds": "reconciler.interval_seconds",
    "reconcile_stale_after_seconds": "reconciler.stale_after_seconds",
    "reconcile_in_worker": "reconciler.in_worker",
    "api_requests_per_second": "api.requests_per_second",
    "api_public_url": "api.public_url",
    "webhook_signing_key": "api.webhook_signing_key",
    "result_store": "results.store",
    "result_dir": "results.dir",
    "png_compress_level": "results.png_compress_level",
}
# Reads of these end in .get_secret_value(): the value is a MaskedUrl, not a str.
SECRET_URLS = frozenset({"database_url", "broker_url"})
# Methods on the root Settings: known, unchanged.
ROOT_METHODS = ("onnx_threads", "inference_slots", "concurrency", "retry_countdown_cap", "local_price",
                "accelerators")

_ATTR = re.compile(r"\.(?P<flat>" + "|".join(sorted(MAPPING, key=len, reverse=True)) + r")\b")
_IDENT_TAIL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")
_ASSIGNMENT = re.compile(r"\s*=(?!=)")
# Names a file binds to a settings object: `s = self.settings`, `cfg = get_settings()`,
# `def f(cfg: Settings)`, `s: Settings = ...`.
_ALIAS_ASSIGNED = re.compile(
    r"^[ \t]*(?P<name>[A-Za-z_]\w*)[ \t]*(?::[^=\n]+)?=[ \t]*"
    r"(?P<value>(?:[A-Za-z_][\w.]*\.)?\w*settings(?:\([^()\n]*\))?)[ \t]*(?:#.*)?$",
    re.MULTILINE | re.IGNORECASE,
)
_ALIAS_ANNOTATED = re.compile(r"\b(?P<name>[A-Za-z_]\w*)[ \t]*:[ \t]*[\"']?(?:\w+\.)*Settings\b")


def aliases(text: str) -> frozenset[str]:
    """Names bound to a settings object in ``text`` (by assignment or a ``Settings`` annotation)."""
    found = {m.group("name") for m in _ALIAS_ASSIGNED.finditer(text)}
    found |= {m.group("name") for m in _ALIAS_ANNOTATED.finditer(text)}
    return frozenset(found)


def _receiver_name(text: str, dot: int) -> str | None:
    """The last identifier of the expression that ends just before ``text[dot]``: for a call,
    the called name (``get_settings`` in ``get_settings().x``)."""
    end = dot
    if end > 0 and text[end - 1] == ")":
        depth = 0
        i = end - 1
        while i >= 0:
            if text[i] == ")":
                depth += 1
            elif text[i] == "(":
                depth -= 1
                if depth == 0:
                    break
            i -= 1
        if i < 0:
            return None
        end = i
    match = _IDENT_TAIL.search(text, 0, end)
    return match.group(0) if match else None


def _is_receiver(name: str | None, extra: frozenset[str]) -> bool:
    return name is not None and (name.lower().endswith("settings") or name in extra)


def rewrite(text: str, extra_receivers: frozenset[str] = frozenset(),
            where: str = "<text>") -> str:
    extra_receivers = extra_receivers | aliases(text)
    out: list[str] = []
    last = 0
    for match in _ATTR.finditer(text):
        flat = match.group("flat")
        if not _is_receiver(_receiver_name(text, match.start()), extra_receivers):
            continue
        new = "." + MAPPING[flat]
        if flat in SECRET_URLS:
            if _ASSIGNMENT.match(text, match.end()):
                line = text.count("\n", 0, match.start()) + 1
                print(f"{where}:{line}: assignment to .{flat} left for a person: the field is "
                      f"now {MAPPING[flat]} (a MaskedUrl)", file=sys.stderr)
                continue
            new += ".get_secret_value()"
        out.append(text[last:match.start()])
        out.append(new)
        last = match.end()
    out.append(text[last:])
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--receiver", action="append", default=[],
                        help="another name settings are held in (e.g. s); repeatable")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if needed")
    args = parser.parse_args(argv)
    extra = frozenset(args.receiver)
    changed = []
    for path in args.files:
        before = path.read_text(encoding="utf-8")
        after = rewrite(before, extra, str(path))
        if after != before:
            changed.append(path)
            if not args.check:
                path.write_text(after, encoding="utf-8")
    for path in changed:
        print(f"{'would rewrite' if args.check else 'rewrote'} {path}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    raise SystemExit(main())
