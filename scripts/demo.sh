#!/usr/bin/env bash
# The main job: remove the background from the sample photos through the whole pipeline
# (Postgres rows → Redis queue → a local rembg worker → results in Postgres), save the
# cut-outs in ./output and list the jobs with their cost.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/services.sh

DB_NAME="${DEMO_DB:-orchestrator}"
psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='${DB_NAME}'" | grep -q 1 \
    || createdb -h 127.0.0.1 -U postgres "${DB_NAME}"
export ORCH_DATABASE_URL="${ORCH_DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/${DB_NAME}}"
export ORCH_BROKER_URL="${ORCH_BROKER_URL:-redis://127.0.0.1:6379/0}"
# No internet here: use the bundled IS-Net model instead of rembg's download.
export ORCH_LOCAL_MODEL_PATH="${ORCH_LOCAL_MODEL_PATH:-../shared/models/isnet-general.onnx}"
IMAGES="${1:-../shared/images}"

.venv/bin/orchestrator migrate
.venv/bin/orchestrator worker --queues local > .demo-worker.log 2>&1 &
WORKER=$!
trap 'kill -TERM $WORKER 2>/dev/null; wait $WORKER 2>/dev/null || true' EXIT
.venv/bin/orchestrator submit "$IMAGES" --wait --output output
.venv/bin/orchestrator jobs list --limit 10
