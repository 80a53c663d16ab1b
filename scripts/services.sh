#!/usr/bin/env bash
# Start the machine's PostgreSQL and Redis if they are down, then wait until both answer.
set -euo pipefail

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    echo "starting PostgreSQL" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "starting Redis" >&2
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
# SeaweedFS (the object store of ORCH_OBJECT_STORE_URL; the `weed` binary comes with the test
# extra): S3 on 127.0.0.1:8333, everything bound to loopback, telemetry off, one identity.
WEED="$(dirname "$0")/../.venv/bin/weed"
if [ -x "$WEED" ] && ! (exec 3<>/dev/tcp/127.0.0.1/8333) 2>/dev/null; then
    echo "starting SeaweedFS" >&2
    mkdir -p /var/lib/seaweedfs /var/log/seaweedfs
    AWS_ACCESS_KEY_ID="${S3_ACCESS_KEY:-orchestrator}" \
    AWS_SECRET_ACCESS_KEY="${S3_SECRET_KEY:-orchestrator-secret}" \
        nohup "$WEED" mini -dir=/var/lib/seaweedfs -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -master.telemetry=false -webdav=false -s3.port=8333 -s3.port.iceberg=0 \
        -s3.port.lance=0 -admin.ui=false >/var/log/seaweedfs/weed.log 2>&1 &
fi
for _ in $(seq 1 60); do
    if pg_isready -h 127.0.0.1 -p 5432 -q && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
        exit 0
    fi
    sleep 1
done
echo "PostgreSQL or Redis did not come up" >&2
exit 1
