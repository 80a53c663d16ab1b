#!/usr/bin/env bash
# Run the whole test suite against the machine's real PostgreSQL and Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/services.sh
exec .venv/bin/python -m pytest "$@"
