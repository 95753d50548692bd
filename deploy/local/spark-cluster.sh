#!/usr/bin/env bash
# A Spark standalone cluster on this machine: one master and one worker, from the pyspark package
# itself (no separate Spark download), to run the platform's Spark assets as on a real cluster.
#
#   deploy/local/spark-cluster.sh up|down|status
#
# Then point the platform at it:  SPARK_MASTER=spark://127.0.0.1:$SPARK_CLUSTER_PORT
#
# Settings (environment, with defaults):
#   SPARK_CLUSTER_PORT=27077            master RPC port
#   SPARK_CLUSTER_WEBUI_PORT=28070      master web UI (its JSON at /json/ is the readiness check)
#   SPARK_CLUSTER_WORKER_PORT=27078     worker RPC port
#   SPARK_CLUSTER_WORKER_WEBUI_PORT=28071
#   SPARK_CLUSTER_CORES=1  SPARK_CLUSTER_MEMORY=1g   what the worker offers to executors
#   SPARK_CLUSTER_DIR=.local/spark-cluster            logs, pids and the worker's work folder
#   SPARK_CLUSTER_READY_TIMEOUT=60                    seconds to wait for the worker to register
#   PYSPARK_PYTHON                                    Python of the executors (default: the project's venv)
# Each daemon runs in its own session (setsid), so `down` stops it with its children (executors,
# Python workers) by killing the process group: nothing is left behind.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
PROJECT_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd -P)
PORT=${SPARK_CLUSTER_PORT:-27077}
WEBUI_PORT=${SPARK_CLUSTER_WEBUI_PORT:-28070}
WORKER_PORT=${SPARK_CLUSTER_WORKER_PORT:-27078}
WORKER_WEBUI_PORT=${SPARK_CLUSTER_WORKER_WEBUI_PORT:-28071}
CORES=${SPARK_CLUSTER_CORES:-1}
MEMORY=${SPARK_CLUSTER_MEMORY:-1g}
STATE_DIR=${SPARK_CLUSTER_DIR:-$PROJECT_ROOT/.local/spark-cluster}
READY_TIMEOUT=${SPARK_CLUSTER_READY_TIMEOUT:-60}
PYTHON=${PYSPARK_PYTHON:-$PROJECT_ROOT/.venv/bin/python}
MASTER_URL="spark://127.0.0.1:$PORT"
JSON_URL="http://127.0.0.1:$WEBUI_PORT/json/"

die() { printf 'spark-cluster.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf '%-8s %s\n' "$1" "$2"; }

# True when PID is a live process (a zombie counts as dead).
alive() {
    local stat
    [[ $1 =~ ^[0-9]+$ ]] || return 1
    stat=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ -n $stat && $stat != Z* ]]
}

pid_of() { [[ -f $STATE_DIR/$1.pid ]] && cat "$STATE_DIR/$1.pid" || true; }

# Alive workers the master lists (0 when the master does not answer).
alive_workers() {
    curl -fsS --max-time 2 "$JSON_URL" 2>/dev/null | "$PYTHON" -c \
        'import json,sys; print(sum(w["state"] == "ALIVE" for w in json.load(sys.stdin)["workers"]))' 2>/dev/null \
        || echo 0
}

spark_home() {
    "$PYTHON" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))' \
        || die "pyspark is not importable with $PYTHON (run make install)"
}

# start NAME CLASS ARGS...: a daemon in its own session, output to NAME.log, pid in NAME.pid.
start() {
    local name=$1; shift
    setsid "$SPARK_HOME/bin/spark-class" "$@" >"$STATE_DIR/$name.log" 2>&1 </dev/null &
    echo $! >"$STATE_DIR/$name.pid"
}

up() {
    mkdir -p "$STATE_DIR/work"
    if alive "$(pid_of master)" && alive "$(pid_of worker)" && [[ $(alive_workers) -ge 1 ]]; then
        say cluster "already up: $MASTER_URL (web UI http://127.0.0.1:$WEBUI_PORT)"
        return
    fi
    down >/dev/null  # a half-started cluster: start again from nothing
    SPARK_HOME=$(spark_home)
    export SPARK_HOME PYSPARK_PYTHON=$PYTHON SPARK_LOCAL_IP=127.0.0.1 SPARK_WORKER_DIR="$STATE_DIR/work"
    export SPARK_LOG_DIR=$STATE_DIR SPARK_PID_DIR=$STATE_DIR
    local started=$SECONDS
    start master org.apache.spark.deploy.master.Master \
        --host 127.0.0.1 --port "$PORT" --webui-port "$WEBUI_PORT"
    start worker org.apache.spark.deploy.worker.Worker "$MASTER_URL" \
        --host 127.0.0.1 --port "$WORKER_PORT" --webui-port "$WORKER_WEBUI_PORT" \
        --cores "$CORES" --memory "$MEMORY" --work-dir "$STATE_DIR/work"
    local deadline=$((SECONDS + READY_TIMEOUT))
    until [[ $(alive_workers) -ge 1 ]]; do
        for name in master worker; do
            alive "$(pid_of $name)" || { tail -n 40 "$STATE_DIR/$name.log" >&2; down >/dev/null; die "the $name exited"; }
        done
        if ((SECONDS >= deadline)); then
            tail -n 20 "$STATE_DIR/master.log" "$STATE_DIR/worker.log" >&2
            down >/dev/null
            die "no worker registered with $MASTER_URL within $READY_TIMEOUT s"
        fi
        sleep 0.5
    done
    say cluster "up: $MASTER_URL, 1 worker ($CORES core, $MEMORY) in $((SECONDS - started)) s; web UI http://127.0.0.1:$WEBUI_PORT, logs $STATE_DIR"
}

# Stop the worker first (its executors go with its process group), then the master.
down() {
    local name pid i
    for name in worker master; do
        pid=$(pid_of $name)
        if alive "$pid"; then
            kill -TERM -- "-$pid" 2>/dev/null || true
            for i in $(seq 1 40); do alive "$pid" || break; sleep 0.25; done
            if alive "$pid"; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
            say "$name" "stopped (pid $pid)"
        else
            say "$name" "not running"
        fi
        # Children that outlived the leader (an executor mid-shutdown) share its process group.
        [[ $pid =~ ^[0-9]+$ ]] && pkill -KILL -g "$pid" 2>/dev/null || true
        rm -f "$STATE_DIR/$name.pid"
    done
}

status() {
    local name pid rc=0
    for name in master worker; do
        pid=$(pid_of $name)
        if alive "$pid"; then say "$name" "running (pid $pid)"; else say "$name" "stopped"; rc=1; fi
    done
    say workers "$(alive_workers) alive at $MASTER_URL"
    return $rc
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) status ;;
    *) die "usage: $0 up|down|status" ;;
esac
