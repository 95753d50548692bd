#!/usr/bin/env bash
# An S3-compatible object store on this machine (moto's server mode, in-memory) with the lake's
# bucket, to run the platform with its lake on object storage:
#
#   deploy/local/object-store.sh up|down|status
#
# then, in the shell that runs Dagster (the settings `up` prints):
#   export AWS_ENDPOINT_URL=http://127.0.0.1:29000 AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local \
#          AWS_REGION=us-east-1 LAKE_ROOT=s3://platform-lake/lake
# Spark then reads and writes the lake through Arrow (SPARK_LAKE_ACCESS=auto picks `arrow` for s3://).
# moto keeps objects in memory: `down` forgets the lake. Settings: OBJECT_STORE_PORT (29000),
# OBJECT_STORE_BUCKET (platform-lake), OBJECT_STORE_DIR (.local/object-store: log and pid).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
PROJECT_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd -P)
PORT=${OBJECT_STORE_PORT:-29000}
BUCKET=${OBJECT_STORE_BUCKET:-platform-lake}
STATE_DIR=${OBJECT_STORE_DIR:-$PROJECT_ROOT/.local/object-store}
VENV=$PROJECT_ROOT/.venv/bin
URL="http://127.0.0.1:$PORT"

die() { printf 'object-store.sh: error: %s\n' "$*" >&2; exit 1; }
alive() { local s; [[ $1 =~ ^[0-9]+$ ]] && s=$(ps -o stat= -p "$1" 2>/dev/null) && [[ -n $s && $s != Z* ]]; }
pid() { [[ -f $STATE_DIR/moto.pid ]] && cat "$STATE_DIR/moto.pid" || true; }

up() {
    mkdir -p "$STATE_DIR"
    if ! alive "$(pid)"; then
        setsid "$VENV/moto_server" -H 127.0.0.1 -p "$PORT" >"$STATE_DIR/moto.log" 2>&1 </dev/null &
        echo $! >"$STATE_DIR/moto.pid"
        for _ in $(seq 1 60); do
            curl -fsS --max-time 1 "$URL/moto-api/" >/dev/null 2>&1 && break
            alive "$(pid)" || { tail -n 20 "$STATE_DIR/moto.log" >&2; die "moto_server exited"; }
            sleep 0.25
        done
    fi
    AWS_ENDPOINT_URL=$URL AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_REGION=us-east-1 \
        "$VENV/python" -c "import boto3, sys; s3 = boto3.client('s3'); b = sys.argv[1]
if b not in [x['Name'] for x in s3.list_buckets()['Buckets']]: s3.create_bucket(Bucket=b)" "$BUCKET" \
        || die "cannot create bucket $BUCKET at $URL (log: $STATE_DIR/moto.log)"
    echo "object store up: $URL, bucket $BUCKET (pid $(pid)). Settings:"
    echo "export AWS_ENDPOINT_URL=$URL AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_REGION=us-east-1 LAKE_ROOT=s3://$BUCKET/lake"
}

down() {
    local p; p=$(pid)
    if alive "$p"; then
        kill -TERM -- "-$p" 2>/dev/null || true
        for _ in $(seq 1 40); do alive "$p" || break; sleep 0.25; done
        alive "$p" && kill -KILL -- "-$p" 2>/dev/null || true
        echo "object store stopped (pid $p)"
    else
        echo "object store not running"
    fi
    rm -f "$STATE_DIR/moto.pid"
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) if alive "$(pid)"; then echo "object store running at $URL (pid $(pid))"; else echo "object store stopped"; exit 1; fi ;;
    *) die "usage: $0 up|down|status" ;;
esac
