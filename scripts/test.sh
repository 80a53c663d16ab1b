#!/usr/bin/env bash
# The README's test command (CI runs it through .ci/run): lint and strict types first (any
# finding fails the run), then the suite against the machine's real PostgreSQL and Redis with
# coverage of orchestrator/, worker/API subprocesses included (pyproject.toml [tool.coverage]).
# Arguments go to pytest; a run narrowed by arguments is not held to the whole suite's floor.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check orchestrator tests migrations benchmarks
.venv/bin/mypy orchestrator
bash scripts/services.sh
floor=()
if [ "$#" -gt 0 ]; then
    floor=(--cov-fail-under=0)
fi
rm -f .coverage .coverage.*
exec .venv/bin/python -m pytest --cov --cov-report=term "${floor[@]}" "$@"
