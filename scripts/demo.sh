#!/usr/bin/env bash
# The main job on the embedded default: `orchestrator dev` (SQLite database and broker in
# ./orchestrator-data, the API over TLS, a local rembg worker) takes the sample photos into
# ./output, then prints what each job cost. Needs only Python: no Postgres, no Redis.
# With ORCH_DATABASE_URL and ORCH_BROKER_URL set, the same run uses those servers instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh

# No internet here: use the bundled IS-Net model instead of rembg's download.
export ORCH_LOCAL_MODEL_PATH="${ORCH_LOCAL_MODEL_PATH:-../shared/models/isnet-general.onnx}"
IMAGES="${1:-../shared/images}"
PORT="${DEMO_PORT:-$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
ORCH=.venv/bin/orchestrator

rm -f .demo-dev.json
"$ORCH" dev --port "$PORT" --json > .demo-dev.json 2> .demo-dev.log &
DEV=$!
trap 'kill -INT $DEV 2>/dev/null && wait $DEV 2>/dev/null || true' EXIT
until [ -s .demo-dev.json ]; do  # one JSON line once the API answers
    kill -0 "$DEV" 2>/dev/null || { cat .demo-dev.log >&2; exit 1; }
    sleep 0.5
done
echo "orchestrator dev is up: $(cat .demo-dev.json)" >&2

eval "$("$ORCH" dev --print-env)"   # the CLI below talks to the same database and broker
status=0
"$ORCH" submit "$IMAGES" --wait --output output --json > .demo-jobs.jsonl || status=$?
cat .demo-jobs.jsonl
.venv/bin/python -c 'import json, sys; [print(json.loads(l)["id"]) for l in sys.stdin if l.strip()]' \
    < .demo-jobs.jsonl | while read -r id; do "$ORCH" jobs show "$id" --json; done \
    | .venv/bin/python scripts/job_costs.py
if "$ORCH" report costs --help > /dev/null 2>&1; then
    "$ORCH" report costs
fi
exit "$status"
