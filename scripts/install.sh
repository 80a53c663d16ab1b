#!/usr/bin/env bash
# Create .venv (if missing) and install the orchestrator with the local backend, test, lint/type
# and ops tools.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[local,test,ops,dev,docs]'
# rembg imports pymatting, whose numba functions compile on first import (~35 s) into numba's
# on-disk cache (pymatting uses cache=True): pay that here, once, not in the first worker's
# start (which would hold the first cut-out of a fresh install that long). Cheap when warm.
.venv/bin/python -c "import rembg" >/dev/null 2>&1 \
    || echo "note: importing rembg failed; the local backend will say why when it starts" >&2
# `docker-compose config` validates docker-compose.yml in the tests; Debian packages it. On CI
# (CI set) the compose check fails rather than skips without it, so install it there for sure.
if ! command -v docker-compose >/dev/null 2>&1 && command -v apt-get >/dev/null; then
    as_root=()
    if [ "$(id -u)" != 0 ]; then
        as_root=(sudo -n)
    fi
    if [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; then
        ("${as_root[@]}" apt-get install -y -qq docker-compose >/dev/null 2>&1 \
            || { "${as_root[@]}" apt-get update -qq >/dev/null 2>&1 \
                 && "${as_root[@]}" apt-get install -y -qq docker-compose >/dev/null 2>&1; }) \
            || echo "note: could not install docker-compose; the compose file check will be" \
                    "skipped (and fail on CI)" >&2
    else
        echo "note: docker-compose is missing and installing it needs root; the compose file" \
             "check will be skipped (and fail on CI)" >&2
    fi
fi
# The console's browser tests drive Debian's Chromium through Playwright (Playwright cannot
# download its own browser here): install it when missing.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get install -y -qq chromium >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; }) \
        || echo "note: could not install chromium; the console's browser tests will be skipped" >&2
fi
