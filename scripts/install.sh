#!/usr/bin/env bash
# Create .venv (if missing) and install the orchestrator with the local backend, test, lint/type
# and ops tools.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[local,test,ops,dev]'
# `docker-compose config` validates docker-compose.yml in the tests; Debian packages it.
if ! command -v docker-compose >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get install -y -qq docker-compose >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq docker-compose >/dev/null 2>&1; }) \
        || echo "note: could not install docker-compose; the compose file check will be skipped" >&2
fi
