#!/usr/bin/env bash
# Create .venv (if missing) and install the orchestrator with the local backend, test, ops and
# docs tools.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[local,test,ops,docs]'
# `docker-compose config` validates docker-compose.yml in the tests; Debian packages it.
if ! command -v docker-compose >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get install -y -qq docker-compose >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq docker-compose >/dev/null 2>&1; }) \
        || echo "note: could not install docker-compose; the compose file check will be skipped" >&2
fi
# The console's browser tests drive Debian's Chromium through Playwright (Playwright cannot
# download its own browser here): install it when missing.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get install -y -qq chromium >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; }) \
        || echo "note: could not install chromium; the console's browser tests will be skipped" >&2
fi
