#!/usr/bin/env bash
# Local services for development and CI: PostgreSQL 15, MariaDB 10.11, Apache Kafka 4 (KRaft),
# Apicurio Registry 3 (the streams' schema registry, Confluent's API), Redis 7 (online feature
# store), the MLflow tracking server (PostgreSQL backend), FerretDB (the document store, MongoDB's
# wire protocol) and the demo REST API.
#
#   deploy/local/services.sh up|down|status [postgres|mariadb|kafka|registry|redis|mlflow|documents|demo-api ...]   (default: all)
#   deploy/local/services.sh up|down|status s3      (moto's S3 server with the lake's bucket; only when named)
#   deploy/local/services.sh install         (Debian packages; from Maven Central: Apache Kafka's jars,
#                                             Apicurio Registry, Spark's s3a and Kafka connector jars;
#                                             FerretDB built from the Go module proxy)
#
# Settings come from deploy/local/services.env; a variable already set in the environment wins.
# All state (data, logs, pid files, config) lives under $PROJECT_ROOT/.local/services/<name>/
# (git-ignored), or under $SERVICES_STATE_DIR/<name>/ when that is set.
# Works as root (CI: PostgreSQL runs as the postgres user, MariaDB with user=root) and as a normal user.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
PROJECT_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd -P)
ENV_FILE="$SCRIPT_DIR/services.env"
ALL_SERVICES=(postgres mariadb kafka registry redis mlflow documents demo-api)   # start order; `down` stops in reverse
OPTIONAL_SERVICES=(s3)   # started only when named (an object-store lake is opt-in)
READY_TIMEOUT=${SERVICES_READY_TIMEOUT:-30}   # seconds to wait for a server to answer
# MLflow imports its whole stack and migrates its database on a first start (about 10 s here): allow more.
MLFLOW_READY_TIMEOUT=$((READY_TIMEOUT > 90 ? READY_TIMEOUT : 90))
# Kafka's JVM starts in about 8 s here, 25 s on a busy machine: allow 90.
KAFKA_READY_TIMEOUT=$((READY_TIMEOUT > 90 ? READY_TIMEOUT : 90))
# The schema registry (a Quarkus JVM) answers in about 7 s here: allow as long as Kafka.
REGISTRY_READY_TIMEOUT=$KAFKA_READY_TIMEOUT
STOP_TIMEOUT=${SERVICES_STOP_TIMEOUT:-30}     # seconds to wait for a server to exit

# ---------------------------------------------------------------------------------------------
# Settings: every KEY=VALUE line of services.env, unless KEY is already set in the environment
# (then the environment wins). Within the file a later line wins, as with `source`.
# Lines are read as data (never eval'ed); surrounding single or double quotes are stripped.
load_env() {
    local line key value
    local -A from_file=()
    local -a order=()
    [[ -f $ENV_FILE ]] || die "settings file missing: $ENV_FILE"
    while IFS= read -r line || [[ -n $line ]]; do
        line=${line%$'\r'}
        [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
        [[ $line =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] \
            || die "$ENV_FILE: cannot parse line: $line"
        key=${BASH_REMATCH[2]}
        value=${BASH_REMATCH[3]}
        if [[ $value =~ ^\"(.*)\"$ || $value =~ ^\'(.*)\'$ ]]; then
            value=${BASH_REMATCH[1]}
        fi
        [[ -n ${from_file[$key]+set} ]] || order+=("$key")
        from_file[$key]=$value
    done <"$ENV_FILE"
    for key in "${order[@]}"; do
        if [[ -z ${!key+set} ]]; then
            printf -v "$key" '%s' "${from_file[$key]}"
            export "${key?}"
        fi
    done
}

# ---------------------------------------------------------------------------------------------
# Helpers
die() { printf 'services.sh: error: %s\n' "$*" >&2; exit 1; }
warn() { printf 'services.sh: warning: %s\n' "$*" >&2; }
is_root() { [[ $(id -u) -eq 0 ]]; }
now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
# One output line per service: name padded to 10 columns.
say() { local name=$1; shift; printf '%-10s %s\n' "$name" "$*"; }

# A path for display: relative to the project when it is inside it.
show_path() {
    case $1 in
        "$PROJECT_ROOT"/*) printf '%s' "${1#"$PROJECT_ROOT"/}" ;;
        *) printf '%s' "$1" ;;
    esac
}

# True when PID is a live process (a zombie, state Z, counts as dead).
alive() {
    local pid=$1 stat
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    stat=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
    [[ -n $stat && $stat != Z* ]]
}

# True when PID is alive and its command line contains PATTERN (guards against reused pids).
alive_as() {
    local pid=$1 pattern=$2
    alive "$pid" || return 1
    [[ $(ps -o args= -p "$pid" 2>/dev/null) == *"$pattern"* ]]
}

read_pid() { [[ -r $1 ]] && head -n 1 "$1" | tr -dc '0-9' || true; }

# True when something accepts TCP connections on HOST:PORT.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# Wait until PID exits (zombie counts as exited); false on timeout.
wait_gone() {
    local pid=$1 timeout=$2 i
    for ((i = 0; i < timeout * 10; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    ! alive "$pid"
}

# Print the last lines of each existing log file, to stderr.
show_logs() {
    local f
    for f in "$@"; do
        [[ -s $f ]] || continue
        printf -- '----- last 30 lines of %s -----\n' "$f" >&2
        tail -n 30 "$f" >&2
        printf -- '-----\n' >&2
    done
}

# A server process died or never answered: show its logs and stop.
fail_start() {
    local name=$1 why=$2; shift 2
    show_logs "$@"
    local f shown=()
    for f in "$@"; do shown+=("$(show_path "$f")"); done
    die "$name: $why (logs: ${shown[*]})"
}

# Take an exclusive lock for one service (parallel `up`s wait for each other) on fd 9.
# The lock fd must not leak into the servers we start: every launch closes fd 9 (`9>&-`).
lock_service() {
    local dir=$1
    mkdir -p "$dir"
    exec 9>"$dir/.lock"
    flock -w 120 9 || die "could not lock $dir/.lock within 120 s (another services.sh still running?)"
}
unlock_service() { exec 9>&-; }

# State directory: $SERVICES_STATE_DIR or $PROJECT_ROOT/.local/services (made absolute).
init_state_dir() {
    STATE_DIR=${SERVICES_STATE_DIR:-$PROJECT_ROOT/.local/services}
    [[ $STATE_DIR == /* ]] || STATE_DIR=$PWD/$STATE_DIR
    mkdir -p "$STATE_DIR"
    STATE_DIR=$(cd "$STATE_DIR" && pwd -P)
}

# ---------------------------------------------------------------------------------------------
# Debian packages
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
MARIADBD=/usr/sbin/mariadbd
REDIS_SERVER=/usr/bin/redis-server

# True when a package is missing; MISSING_PACKAGES lists them (only those are installed, so that
# servers already installed, and maybe running, are never upgraded under their feet).
packages_missing() {
    local pkg f files
    MISSING_PACKAGES=()
    for pkg in postgresql mariadb-server mariadb-client redis-server prometheus chromium chromium-driver maven kcat curl wrk; do
        case $pkg in
            postgresql) files=("$PG_BIN/initdb" "$PG_BIN/pg_ctl" "$PG_BIN/pg_isready" "$PG_BIN/psql") ;;
            mariadb-server) files=("$MARIADBD" /usr/bin/mariadb-install-db) ;;
            mariadb-client) files=(/usr/bin/mariadb /usr/bin/mariadb-admin) ;;
            redis-server) files=("$REDIS_SERVER") ;;
            prometheus) files=(/usr/bin/prometheus /usr/bin/promtool) ;;  # for the monitoring tests
            chromium) files=(/usr/bin/chromium) ;;                           # for the dashboard's browser test
            chromium-driver) files=(/usr/bin/chromedriver) ;;
            maven) files=(/usr/bin/mvn) ;;                                   # fetches Apache Kafka's jars
            kcat) files=(/usr/bin/kcat) ;;                                   # the real-clients tests' Kafka client
            curl) files=(/usr/bin/curl) ;;                                   # ... and their HTTP client
            wrk) files=(/usr/bin/wrk) ;;                                     # the serving benchmark's load generator
        esac
        for f in "${files[@]}"; do
            [[ -x $f ]] || { MISSING_PACKAGES+=("$pkg"); break; }
        done
    done
    ((${#MISSING_PACKAGES[@]} > 0))
}

ensure_packages() {
    packages_missing || return 0
    local log="$STATE_DIR/install.log" start sudo=() fd
    start=$(now)
    if ! is_root; then
        command -v sudo >/dev/null || die "${MISSING_PACKAGES[*]} not installed and sudo is missing: as root run" \
            "apt-get update && apt-get install -y --no-install-recommends ${MISSING_PACKAGES[*]}"
        sudo=(sudo)
    fi
    command -v apt-get >/dev/null || die "${MISSING_PACKAGES[*]} not installed and apt-get is missing (not Debian?)"
    # One install at a time, even with parallel callers.
    exec {fd}>"$STATE_DIR/.install.lock"
    flock -w 600 "$fd" || die "could not lock $STATE_DIR/.install.lock"
    if packages_missing; then
        printf '%-10s %s\n' install "installing ${MISSING_PACKAGES[*]} (apt-get, log $(show_path "$log")) ..."
        {
            echo "=== $(date -Is) apt-get update"
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
            echo "=== $(date -Is) apt-get install"
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
                "${MISSING_PACKAGES[@]}"
        } >>"$log" 2>&1 || { show_logs "$log"; die "package install failed (log: $log)"; }
        packages_missing && { show_logs "$log"; die "packages installed but ${MISSING_PACKAGES[*]} still incomplete"; }
        say install "done in $(elapsed "$start")"
    fi
    exec {fd}>&-
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL
pg_setup_vars() {
    PG_DIR="$STATE_DIR/postgres"
    PG_DATA="$PG_DIR/data"
    PG_LOG="$PG_DIR/postgres.log"
    PG_PORT=$WAREHOUSE_PORT
    PG_SOCK_DIR="/tmp/platform-pg-$(id -u)-$PG_PORT"
}

# As root, PostgreSQL tools must run as the postgres user; as a normal user, directly.
# The service lock fd is closed so it does not leak into the server.
as_pg() {
    if is_root; then
        runuser -u postgres -- "$@" 9>&-
    else
        "$@" 9>&-
    fi
}

pg_pid() {
    local pid
    pid=$(read_pid "$PG_DATA/postmaster.pid")
    alive_as "$pid" postgres && printf '%s' "$pid"
}

# As root: the postgres user must be able to enter every parent folder of the data folder.
# Folders that this script owns (the state folder and those under the project's .local/) get o+x;
# anything else is reported, never changed.
pg_check_access() {
    is_root || return 0
    local dir=$PG_DIR
    while [[ -n $dir && $dir != / ]]; do
        if ! runuser -u postgres -- test -x "$dir" 2>/dev/null; then
            if [[ $dir == "$STATE_DIR" || $dir == "$STATE_DIR"/* || $dir == "$PROJECT_ROOT/.local" \
                || $dir == "$PROJECT_ROOT/.local/"* ]]; then
                chmod o+x "$dir"
            else
                die "postgres: the server runs as user postgres, which cannot enter $dir" \
                    "(mode $(stat -c '%A %U:%G' "$dir")). Allow it with 'chmod o+x $dir'," \
                    "or set SERVICES_STATE_DIR to a folder that user postgres can reach."
            fi
        fi
        dir=$(dirname "$dir")
    done
}

pg_prepare_dirs() {
    mkdir -p "$PG_DIR"
    if [[ ${#PG_SOCK_DIR} -gt 90 ]]; then
        die "postgres: socket folder path too long: $PG_SOCK_DIR"
    fi
    if [[ -e $PG_SOCK_DIR && ! -O $PG_SOCK_DIR ]] && ! is_root; then
        die "postgres: socket folder $PG_SOCK_DIR belongs to another user; remove it or use another WAREHOUSE_PORT"
    fi
    mkdir -p -m 700 "$PG_SOCK_DIR"
    if is_root; then
        pg_check_access
        chown postgres:postgres "$PG_DIR" "$PG_SOCK_DIR"
        chmod 700 "$PG_SOCK_DIR"
        touch "$PG_LOG"
        chown postgres:postgres "$PG_LOG"
    fi
}

pg_initdb() {
    [[ -s $PG_DATA/PG_VERSION ]] && return 0
    local pwfile="$PG_DIR/superuser.password" out
    if [[ -d $PG_DATA ]] && [[ -n $(ls -A "$PG_DATA") ]]; then
        die "postgres: $PG_DATA is not empty but has no PG_VERSION; move it away and retry"
    fi
    # The superuser connects without password over the private socket (trust); over TCP it needs
    # this random password (kept in $pwfile, readable only by the server's user).
    (umask 077 && head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$pwfile")
    mkdir -p -m 700 "$PG_DATA"
    is_root && chown postgres:postgres "$pwfile" "$PG_DATA"
    if ! out=$(as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
        -A trust --auth-host=scram-sha-256 --pwfile="$pwfile" 2>&1); then
        printf '%s\n' "$out" >&2
        die "postgres: initdb failed for $PG_DATA"
    fi
    printf '%s\n' "$out" >"$PG_DIR/initdb.log"
}

# The local CA (under $STATE_DIR/postgres/tls, where services.env points PGSSLROOTCERT and
# KAFKA_SSL_CA_LOCATION): made once, it signs the PostgreSQL server's and Kafka's certificates.
local_ca() {
    local tls="$STATE_DIR/postgres/tls"
    [[ -s $tls/ca.crt && -s $tls/ca.key ]] && return 0
    command -v openssl >/dev/null || die "openssl is needed to make the local TLS certificates"
    mkdir -p "$tls"
    (
        cd "$tls" || exit 1
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=dagster-ml-platform local CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -keyout ca.key -out ca.crt
    ) >"$tls/ca.log" 2>&1 || { show_logs "$tls/ca.log"; die "could not make the local CA"; }
    chmod 600 "$tls/ca.key"
    chmod 644 "$tls/ca.crt"
    rm -f "$tls/server.crt"  # any server certificate of a former CA is made again
}

# TLS (encryption in transit): a server certificate for 127.0.0.1 and localhost from the local CA,
# made once under $PG_DIR/tls. Clients verify the server against $PG_DIR/tls/ca.crt (services.env
# points PGSSLROOTCERT there, with PGSSLMODE=verify-full); a CA file named by the user is never
# written. Settings go to tls.conf, included from postgresql.conf, so a running server takes them on
# reload. Sets PG_TLS_MADE when it made new certificates.
pg_tls_files() {
    local tls="$PG_DIR/tls"
    PG_TLS_MADE=0
    local_ca
    if [[ ! -s $PG_DATA/server.crt || ! -s $PG_DATA/server.key || ! -s $tls/server.crt ]]; then
        mkdir -p "$tls"
        (
            cd "$tls" || exit 1
            openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key -out server.csr
            printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
            openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
                -extfile server.ext -out server.crt
        ) >"$PG_DIR/tls.log" 2>&1 || { show_logs "$PG_DIR/tls.log"; die "postgres: could not make TLS certificates"; }
        chmod 600 "$tls/server.key"
        install -m 600 "$tls/server.crt" "$PG_DATA/server.crt"
        install -m 600 "$tls/server.key" "$PG_DATA/server.key"
        is_root && chown postgres:postgres "$PG_DATA/server.crt" "$PG_DATA/server.key"
        PG_TLS_MADE=1
    fi
    printf '%s\n' "ssl = on" "ssl_cert_file = 'server.crt'" "ssl_key_file = 'server.key'" \
        "ssl_min_protocol_version = 'TLSv1.2'" >"$PG_DATA/tls.conf"
    is_root && chown postgres:postgres "$PG_DATA/tls.conf"
    grep -q "^include_if_exists = 'tls.conf'" "$PG_DATA/postgresql.conf" \
        || printf "\ninclude_if_exists = 'tls.conf'\n" >>"$PG_DATA/postgresql.conf"
}

# A server started before TLS was set up (an older checkout), or whose certificates were just
# remade, takes them on without a restart.
pg_tls_running() {
    pg_tls_files
    if [[ $PG_TLS_MADE == 1 || $(pg_super_psql -At -c 'SHOW ssl' 2>/dev/null) != on ]]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" reload >/dev/null
        sleep 0.5
        [[ $(pg_super_psql -At -c 'SHOW ssl' 2>/dev/null) == on ]] \
            || fail_start postgres "TLS did not come on after a reload (see the server log)" "$PG_LOG"
    fi
}

# psql as the superuser over the private socket.
pg_super_psql() {
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK_DIR" -p "$PG_PORT" -U postgres -d postgres "$@"
}

# Role (with password, LOGIN CREATEDB) and database (owned by it), created when missing.
# The password reaches psql through the environment (\getenv), never the command line.
pg_provision_one() {
    local user=$1 password=$2 db=$3
    PSQL_APP_PASSWORD=$password pg_super_psql -v user="$user" -v db="$db" <<'SQL'
\getenv password PSQL_APP_PASSWORD
SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', :'user', :'password')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('ALTER ROLE %I LOGIN CREATEDB PASSWORD %L', :'user', :'password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL
}

pg_provision() {
    pg_provision_one "$WAREHOUSE_USER" "$WAREHOUSE_PASSWORD" "$WAREHOUSE_DB"
    pg_provision_one "$WAREHOUSE_USER" "$WAREHOUSE_PASSWORD" "$DAGSTER_PG_DB"  # the Dagster instance's storage
    if [[ $OPS_POSTGRES_USER != "$WAREHOUSE_USER" || $OPS_POSTGRES_PASSWORD != "$WAREHOUSE_PASSWORD" \
        || $OPS_POSTGRES_DB != "$WAREHOUSE_DB" ]]; then
        [[ $OPS_POSTGRES_USER == "$WAREHOUSE_USER" && $OPS_POSTGRES_PASSWORD != "$WAREHOUSE_PASSWORD" ]] \
            && die "postgres: OPS_POSTGRES_USER = WAREHOUSE_USER but the passwords differ"
        pg_provision_one "$OPS_POSTGRES_USER" "$OPS_POSTGRES_PASSWORD" "$OPS_POSTGRES_DB"
    fi
}

# Ready: pg_isready over TCP and a real query as the app user with its password.
pg_healthy() {
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2 || return 1
    [[ $(PGPASSWORD=$WAREHOUSE_PASSWORD PGCONNECT_TIMEOUT=3 PGSSLMODE=verify-full PGSSLROOTCERT="$PG_DIR/tls/ca.crt" \
        "$PG_BIN/psql" -X -At \
        -h 127.0.0.1 -p "$PG_PORT" -U "$WAREHOUSE_USER" -d "$WAREHOUSE_DB" -c 'SELECT 1' 2>/dev/null) == 1 ]]
}

pg_up() {
    local start pid i
    start=$(now)
    pg_setup_vars
    [[ $OPS_POSTGRES_PORT == "$WAREHOUSE_PORT" ]] \
        || warn "OPS_POSTGRES_PORT ($OPS_POSTGRES_PORT) differs from WAREHOUSE_PORT ($WAREHOUSE_PORT): only $WAREHOUSE_PORT is served"
    lock_service "$PG_DIR"
    if pid=$(pg_pid); then
        local running_port
        running_port=$(sed -n 4p "$PG_DATA/postmaster.pid" 2>/dev/null || true)
        [[ -z $running_port || $running_port == "$PG_PORT" ]] \
            || die "postgres: already running on port $running_port (pid $pid), but WAREHOUSE_PORT is $PG_PORT: run 'services.sh down postgres' first"
        pg_tls_running
        # Idempotent: databases added to the settings since the server was made appear now.
        pg_provision >"$PG_DIR/provision.log" 2>&1 \
            || fail_start postgres "could not create role/databases" "$PG_DIR/provision.log" "$PG_LOG"
        pg_healthy || fail_start postgres "running (pid $pid) but not answering on 127.0.0.1:$PG_PORT" "$PG_LOG"
        say postgres "up  127.0.0.1:$PG_PORT (already running, pid $pid, data $(show_path "$PG_DIR"))"
        unlock_service
        return 0
    fi
    port_open 127.0.0.1 "$PG_PORT" \
        && die "postgres: port 127.0.0.1:$PG_PORT is used by another process (not the server of $(show_path "$PG_DATA")); stop it or set WAREHOUSE_PORT"
    pg_prepare_dirs
    pg_initdb
    if [[ -s $PG_DATA/PG_VERSION && $(<"$PG_DATA/PG_VERSION") != "$("$PG_BIN/pg_ctl" --version | awk '{ split($3, v, "."); print v[1] }')" ]]; then
        die "postgres: $PG_DATA was made by PostgreSQL $(<"$PG_DATA/PG_VERSION"), but $PG_BIN is another major version"
    fi
    pg_tls_files
    rm -f "$PG_SOCK_DIR/.s.PGSQL.$PG_PORT" "$PG_SOCK_DIR/.s.PGSQL.$PG_PORT.lock" 2>/dev/null || true
    # pg_ctl -w waits for readiness and notices a server that dies while starting.
    if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$READY_TIMEOUT" \
        -o "-p $PG_PORT -k $PG_SOCK_DIR -c listen_addresses=127.0.0.1" start >"$PG_DIR/pg_ctl.out" 2>&1; then
        fail_start postgres "server did not start" "$PG_DIR/pg_ctl.out" "$PG_LOG"
    fi
    pid=$(pg_pid) || fail_start postgres "server exited right after starting" "$PG_LOG"
    pg_provision >"$PG_DIR/provision.log" 2>&1 \
        || fail_start postgres "could not create role/databases" "$PG_DIR/provision.log" "$PG_LOG"
    for ((i = 0; i < READY_TIMEOUT * 5; i++)); do
        pg_healthy && break
        alive "$pid" || fail_start postgres "server (pid $pid) died" "$PG_LOG"
        sleep 0.2
    done
    pg_healthy || fail_start postgres "no answer as $WAREHOUSE_USER on 127.0.0.1:$PG_PORT within ${READY_TIMEOUT} s" "$PG_LOG"
    say postgres "up  127.0.0.1:$PG_PORT (started in $(elapsed "$start"), pid $pid, data $(show_path "$PG_DIR"))"
    unlock_service
}

pg_down() {
    local pid
    pg_setup_vars
    [[ -d $PG_DIR ]] || { say postgres "down (not running)"; return 0; }
    lock_service "$PG_DIR"
    if ! pid=$(pg_pid); then
        say postgres "down (not running)"
        unlock_service
        return 0
    fi
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t "$STOP_TIMEOUT" stop >"$PG_DIR/pg_ctl.out" 2>&1 \
        || { show_logs "$PG_DIR/pg_ctl.out" "$PG_LOG"; die "postgres: pg_ctl stop failed"; }
    wait_gone "$pid" "$STOP_TIMEOUT" || die "postgres: pid $pid still running after stop"
    say postgres "down (stopped pid $pid)"
    unlock_service
}

pg_status() {
    local pid
    pg_setup_vars
    if pid=$(pg_pid); then
        say postgres "running 127.0.0.1:$PG_PORT (pid $pid, data $(show_path "$PG_DIR"))"
    else
        say postgres "stopped (port $PG_PORT)"
    fi
}

# ---------------------------------------------------------------------------------------------
# MariaDB
my_setup_vars() {
    MY_DIR="$STATE_DIR/mariadb"
    MY_DATA="$MY_DIR/data"
    MY_TMP="$MY_DIR/tmp"
    MY_CNF="$MY_DIR/my.cnf"
    MY_PID_FILE="$MY_DIR/mariadbd.pid"
    MY_LOG="$MY_DIR/mariadbd.err"
    MY_OUT="$MY_DIR/mariadbd.out"
    MY_PORT=$MYSQL_PORT
    MY_SOCK_DIR="/tmp/platform-mariadb-$(id -u)-$MY_PORT"
    MY_SOCK="$MY_SOCK_DIR/mariadbd.sock"
}

# The server's whole configuration; written at each `up` so that overridden settings apply.
my_write_cnf() {
    mkdir -p "$MY_DATA" "$MY_TMP"
    mkdir -p -m 700 "$MY_SOCK_DIR"
    [[ -O $MY_SOCK_DIR ]] || die "mariadb: socket folder $MY_SOCK_DIR belongs to another user; remove it or use another MYSQL_PORT"
    cat >"$MY_CNF.tmp" <<EOF
# Written by deploy/local/services.sh at each start: edit services.env or the script, not this file.
[client]
port = $MY_PORT
socket = $MY_SOCK

[mariadbd]
$(is_root && echo "user = root")
datadir = $MY_DATA
socket = $MY_SOCK
pid-file = $MY_PID_FILE
tmpdir = $MY_TMP
log-error = $MY_LOG
port = $MY_PORT
bind-address = 127.0.0.1
skip-name-resolve
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
innodb_buffer_pool_size = 64M
innodb_log_file_size = 32M
performance_schema = OFF
max_connections = 200
EOF
    mv -f "$MY_CNF.tmp" "$MY_CNF"
}

my_pid() {
    local pid
    pid=$(read_pid "$MY_PID_FILE")
    alive_as "$pid" mariadbd && printf '%s' "$pid"
}

# SQL string literal: backslashes and single quotes escaped.
sql_str() { local s=${1//\\/\\\\}; printf "'%s'" "${s//\'/\'\'}"; }
sql_ident() { printf '`%s`' "${1//\`/\`\`}"; }

# Admin client: root (or the OS user that initialised the data) over the private socket.
# The client library reads MYSQL_HOST (set in services.env!), MYSQL_TCP_PORT, MYSQL_UNIX_PORT and
# MYSQL_PWD from the environment: admin calls must not see them.
MY_ADMIN_ENV=(env -u MYSQL_HOST -u MYSQL_TCP_PORT -u MYSQL_UNIX_PORT -u MYSQL_PWD)
my_admin_sql() { "${MY_ADMIN_ENV[@]}" /usr/bin/mariadb --defaults-file="$MY_CNF" --protocol=socket --connect-timeout=5 "$@"; }

my_provision() {
    my_admin_sql <<EOF
CREATE DATABASE IF NOT EXISTS $(sql_ident "$MYSQL_DB");
CREATE USER IF NOT EXISTS $(sql_str "$MYSQL_USER")@'127.0.0.1' IDENTIFIED BY $(sql_str "$MYSQL_PASSWORD");
ALTER USER $(sql_str "$MYSQL_USER")@'127.0.0.1' IDENTIFIED BY $(sql_str "$MYSQL_PASSWORD");
GRANT ALL PRIVILEGES ON *.* TO $(sql_str "$MYSQL_USER")@'127.0.0.1';
EOF
}

# Ready: a real query as the app user over TCP (password through MYSQL_PWD, not the command line).
my_healthy() {
    [[ $(env -u MYSQL_HOST -u MYSQL_TCP_PORT -u MYSQL_UNIX_PORT MYSQL_PWD="$MYSQL_PASSWORD" /usr/bin/mariadb --no-defaults --protocol=TCP --connect-timeout=3 \
        -h 127.0.0.1 -P "$MY_PORT" -u "$MYSQL_USER" -D "$MYSQL_DB" -N -B -e 'SELECT 1' 2>/dev/null) == 1 ]]
}

my_up() {
    local start pid i out
    start=$(now)
    my_setup_vars
    lock_service "$MY_DIR"
    if pid=$(my_pid); then
        local running_port
        running_port=$(sed -n 's/^port = //p' "$MY_CNF" 2>/dev/null | head -n 1 || true)
        [[ -z $running_port || $running_port == "$MY_PORT" ]] \
            || die "mariadb: already running on port $running_port (pid $pid), but MYSQL_PORT is $MY_PORT: run 'services.sh down mariadb' first"
        my_healthy || { my_provision >/dev/null 2>&1 && my_healthy; } \
            || fail_start mariadb "running (pid $pid) but not answering on 127.0.0.1:$MY_PORT" "$MY_LOG"
        say mariadb "up  127.0.0.1:$MY_PORT (already running, pid $pid, data $(show_path "$MY_DIR"))"
        unlock_service
        return 0
    fi
    port_open 127.0.0.1 "$MY_PORT" \
        && die "mariadb: port 127.0.0.1:$MY_PORT is used by another process (not the server of $(show_path "$MY_DATA")); stop it or set MYSQL_PORT"
    my_write_cnf
    if [[ ! -d $MY_DATA/mysql ]]; then
        if ! out=$("${MY_ADMIN_ENV[@]}" /usr/bin/mariadb-install-db --defaults-file="$MY_CNF" --skip-test-db 9>&- 2>&1); then
            printf '%s\n' "$out" >&2
            die "mariadb: mariadb-install-db failed for $MY_DATA"
        fi
        printf '%s\n' "$out" >"$MY_DIR/install-db.log"
    fi
    rm -f "$MY_PID_FILE"
    : >"$MY_OUT"
    # setsid + nohup: the server is in its own session and outlives this script.
    setsid nohup "$MARIADBD" --defaults-file="$MY_CNF" </dev/null >>"$MY_OUT" 2>&1 9>&- &
    pid=$!
    for ((i = 0; i < READY_TIMEOUT * 5; i++)); do
        if "${MY_ADMIN_ENV[@]}" /usr/bin/mariadb-admin --defaults-file="$MY_CNF" --protocol=socket --connect-timeout=2 status >/dev/null 2>&1; then
            break
        fi
        alive "$pid" || fail_start mariadb "server (pid $pid) died while starting" "$MY_OUT" "$MY_LOG"
        sleep 0.2
    done
    "${MY_ADMIN_ENV[@]}" /usr/bin/mariadb-admin --defaults-file="$MY_CNF" --protocol=socket --connect-timeout=2 status >/dev/null 2>&1 \
        || fail_start mariadb "no answer on $MY_SOCK within ${READY_TIMEOUT} s (pid $pid)" "$MY_OUT" "$MY_LOG"
    my_provision >"$MY_DIR/provision.log" 2>&1 \
        || fail_start mariadb "could not create database/user" "$MY_DIR/provision.log" "$MY_LOG"
    my_healthy || fail_start mariadb "no answer as $MYSQL_USER on 127.0.0.1:$MY_PORT" "$MY_LOG"
    say mariadb "up  127.0.0.1:$MY_PORT (started in $(elapsed "$start"), pid $pid, data $(show_path "$MY_DIR"))"
    unlock_service
}

my_down() {
    local pid
    my_setup_vars
    [[ -d $MY_DIR ]] || { say mariadb "down (not running)"; return 0; }
    lock_service "$MY_DIR"
    if ! pid=$(my_pid); then
        say mariadb "down (not running)"
        unlock_service
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$STOP_TIMEOUT"; then
        warn "mariadb: pid $pid still running after ${STOP_TIMEOUT} s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 5 || die "mariadb: pid $pid does not stop"
    fi
    say mariadb "down (stopped pid $pid)"
    unlock_service
}

my_status() {
    local pid
    my_setup_vars
    if pid=$(my_pid); then
        say mariadb "running 127.0.0.1:$MY_PORT (pid $pid, data $(show_path "$MY_DIR"))"
    else
        say mariadb "stopped (port $MY_PORT)"
    fi
}

# ---------------------------------------------------------------------------------------------
# Background processes: the demo REST API and the MLflow server (from the project's venv), Apache
# Kafka (a JVM), and Redis. Each is described by NAME, DIR, PATTERN (a unique part of its
# command line), HOST, PORT and a health function; bg_up/bg_down/bg_status do the rest. Each runs
# in its own session and process group (setsid), and `down` stops the whole group, so servers that
# spawn workers (MLflow: uvicorn) leave nothing behind.
VENV_PY="$PROJECT_ROOT/.venv/bin/python"

require_venv() {
    local name=$1
    if [[ ! -e $VENV_PY && ! -L $VENV_PY ]]; then
        die "$name: $(show_path "$VENV_PY") not found: run 'make install' first (creates the project's .venv)"
    elif [[ ! -x $VENV_PY ]]; then
        die "$name: $(show_path "$VENV_PY") is not runnable by user $(id -un) (it points to $(readlink "$VENV_PY" || echo "?"):" \
            "a folder this user cannot enter?); recreate the venv as this user with 'make install'"
    fi
}

bg_pid() {
    local dir=$1 pattern=$2 pid
    pid=$(read_pid "$dir/$(basename "$dir").pid")
    alive_as "$pid" "$pattern" && printf '%s' "$pid"
}

# bg_up NAME DIR PATTERN HOST PORT HEALTH_FN [READY_TIMEOUT] -- COMMAND...
bg_up() {
    local name=$1 dir=$2 pattern=$3 host=$4 port=$5 health=$6 timeout=$READY_TIMEOUT start pid i
    shift 6
    [[ $1 == -- ]] || { timeout=$1; shift; }
    shift
    local pid_file="$dir/$name.pid" log="$dir/$name.log"
    start=$(now)
    lock_service "$dir"
    if pid=$(bg_pid "$dir" "$pattern"); then
        "$health" || fail_start "$name" "running (pid $pid) but not answering on $host:$port" "$log"
        say "$name" "up  $host:$port (already running, pid $pid, log $(show_path "$log"))"
        unlock_service
        return 0
    fi
    case " $* " in *" $VENV_PY "*) require_venv "$name" ;; esac
    port_open "$host" "$port" && die "$name: port $host:$port is used by another process; stop it or change its port setting"
    rm -f "$pid_file"
    : >"$log"
    # setsid + nohup: the server is in its own session and outlives this script.
    (cd "$PROJECT_ROOT" && PYTHONUNBUFFERED=1 exec setsid nohup "$@" </dev/null >>"$log" 2>&1 9>&-) &
    pid=$!
    printf '%s\n' "$pid" >"$pid_file"
    for ((i = 0; i < timeout * 5; i++)); do
        "$health" && break
        alive "$pid" || { rm -f "$pid_file"; fail_start "$name" "server (pid $pid) died while starting" "$log"; }
        sleep 0.2
    done
    "$health" || fail_start "$name" "no answer on $host:$port within ${timeout} s (pid $pid)" "$log"
    say "$name" "up  $host:$port (started in $(elapsed "$start"), pid $pid, log $(show_path "$log"))"
    unlock_service
}

# Number of live (non-zombie) processes in process group PGID; group_alive: at least one.
group_size() { ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { n++ } END { print n + 0 }'; }
group_alive() { (($(group_size "$1") > 0)); }

# Wait until PID exits and, when it leads its process group, every other member of that group too.
wait_stopped() {
    local pid=$1 group=$2 timeout=$3 i
    for ((i = 0; i < timeout * 10; i++)); do
        if [[ -n $group ]]; then group_alive "$pid" || return 0; else alive "$pid" || return 0; fi
        sleep 0.1
    done
    return 1
}

bg_down() {
    local name=$1 dir=$2 pattern=$3 pid target group="" others=""
    [[ -d $dir ]] || { say "$name" "down (not running)"; return 0; }
    lock_service "$dir"
    if ! pid=$(bg_pid "$dir" "$pattern"); then
        rm -f "$dir/$name.pid"
        say "$name" "down (not running)"
        unlock_service
        return 0
    fi
    # bg_up starts each server as the leader of its own process group: signal the whole group.
    target=$pid
    if [[ $(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ') == "$pid" ]]; then
        group=1
        target=-$pid
        others=$(($(group_size "$pid") - 1))
        ((others > 0)) && others=" and $others other process(es) of its group" || others=""
    fi
    kill -TERM -- "$target" 2>/dev/null || true
    if ! wait_stopped "$pid" "$group" "$STOP_TIMEOUT"; then
        warn "$name: pid $pid ${group:+(or its process group) }still running after ${STOP_TIMEOUT} s; sending SIGKILL"
        kill -KILL -- "$target" 2>/dev/null || true
        wait_stopped "$pid" "$group" 5 || die "$name: pid $pid ${group:+(or its process group) }does not stop"
    fi
    rm -f "$dir/$name.pid"
    say "$name" "down (stopped pid $pid$others)"
    unlock_service
}

bg_status() {
    local name=$1 dir=$2 pattern=$3 host=$4 port=$5 pid
    if pid=$(bg_pid "$dir" "$pattern"); then
        say "$name" "running $host:$port (pid $pid, log $(show_path "$dir/$name.log"))"
    else
        say "$name" "stopped (port $port)"
    fi
}

# -- Demo REST API (platform_assets.demo_data.rest_api, serves GET /health)
API_MODULE=platform_assets.demo_data.rest_api

api_vars() {
    API_DIR="$STATE_DIR/demo-api"
    case $PLATFORM_DATA_DIR in
        /*) API_DATA="$PLATFORM_DATA_DIR/sources/api" ;;
        *) API_DATA="$PROJECT_ROOT/$PLATFORM_DATA_DIR/sources/api" ;;
    esac
}

# True when GET URL answers 200.
http_ok() {
    "$VENV_PY" -c 'import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)' "$1" 2>/dev/null
}

api_healthy() { http_ok "http://$DEMO_API_HOST:$DEMO_API_PORT/health"; }

api_up() {
    api_vars
    bg_up demo-api "$API_DIR" "$API_MODULE" "$DEMO_API_HOST" "$DEMO_API_PORT" api_healthy -- \
        "$VENV_PY" -m "$API_MODULE" --host "$DEMO_API_HOST" --port "$DEMO_API_PORT" --data-dir "$API_DATA"
}
api_down() { api_vars; bg_down demo-api "$API_DIR" "$API_MODULE"; }
api_status() { api_vars; bg_status demo-api "$API_DIR" "$API_MODULE" "$DEMO_API_HOST" "$DEMO_API_PORT"; }

# -- Apache Kafka (KRaft, one node that is broker and controller), jars from Maven Central.
# Listeners, all on 127.0.0.1 (ports below 32768):
#   CLIENT     KAFKA_BOOTSTRAP_SERVERS (29092)  SASL_SSL, SCRAM-SHA-512: the platform's settings
#   MTLS       KAFKA_MTLS_PORT (29093)          SSL with client certificates required (also inter-broker)
#   CONTROLLER KAFKA_CONTROLLER_PORT (29094)    SSL with client certificates required (KRaft quorum)
# Server and client certificates come from the local CA (local_ca). A certificate's CN is its
# principal (CN=platform is User:platform); super users: User:admin and the broker itself. The
# StandardAuthorizer denies what no ACL allows; deploy/local/kafka/provision.py makes the SCRAM users
# (admin, KAFKA_SASL_USERNAME), the platform user's ACLs and the catalogue's topics at each start.
KAFKA_POM="$SCRIPT_DIR/kafka/pom.xml"

kafka_vars() {
    KAFKA_DIR="$STATE_DIR/kafka"
    KAFKA_DATA="$KAFKA_DIR/kraft"
    KAFKA_TLS="$KAFKA_DIR/tls"
    KAFKA_HOST=${KAFKA_BOOTSTRAP_SERVERS%%:*}
    KAFKA_PORT=${KAFKA_BOOTSTRAP_SERVERS##*:}
    KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM")
    [[ -n $KAFKA_VERSION ]] || die "kafka: no <kafka.version> in $KAFKA_POM"
    KAFKA_HOME="$PROJECT_ROOT/.local/kafka/$KAFKA_VERSION"
    # The broker runs Java 17 next to Spark on a 2-core machine: a bounded heap (services.env).
    KAFKA_JVM_OPTS=${KAFKA_HEAP_OPTS:?KAFKA_HEAP_OPTS must be set (services.env)}
}

# A distribution resolved by Maven from Maven Central into HOME, once: a marker in HOME holds the pom's
# checksum, so a second run is a no-op and a changed pom installs afresh; a lock keeps two callers
# from installing at once; Maven writes into HOME.tmp, moved into place only when EXPECT (a file
# relative to it) is there. `{dest}` in the Maven arguments stands for that temporary folder.
#   maven_install SERVICE LABEL POM HOME EXPECT MAVEN_ARGS...
maven_install() {
    local svc=$1 label=$2 pom=$3 home=$4 expect=$5 start marker sum fd log tmp arg args=()
    shift 5
    marker="$home/.installed"
    sum=$(sha256sum "$pom" | cut -d' ' -f1)
    [[ -f $marker && $(<"$marker") == "$sum" ]] && { say "$svc" "$label already installed ($(show_path "$home"))"; return 0; }
    command -v mvn >/dev/null || die "$svc: Maven is needed to fetch $label (apt-get install maven)"
    mkdir -p "$(dirname "$home")"
    exec {fd}>"$(dirname "$home")/.install.lock"
    flock -w 600 "$fd" || die "$svc: could not lock $(dirname "$home")/.install.lock"
    if [[ ! -f $marker || $(<"$marker") != "$sum" ]]; then
        start=$(now)
        log="$(dirname "$home")/install.log"
        tmp="$home.tmp"
        rm -rf "$tmp"
        for arg in "$@"; do args+=("${arg//\{dest\}/$tmp}"); done
        say "$svc" "installing $label from Maven Central (log $(show_path "$log")) ..."
        mvn -B -q -f "$pom" "${args[@]}" >"$log" 2>&1 \
            || { show_logs "$log"; die "$svc: Maven could not resolve $label (log: $log)"; }
        [[ -f $tmp/$expect ]] || die "$svc: $expect missing after Maven (log: $log)"
        rm -rf "$home"
        mv "$tmp" "$home"
        printf '%s\n' "$sum" >"$marker"
        say "$svc" "$label installed in $(elapsed "$start") ($(du -sh "$home" | cut -f1))"
    fi
    exec {fd}>&-
}

# The jars of Apache Kafka KAFKA_VERSION (broker, controller, tools) in .local/kafka/<version>/libs,
# resolved by Maven from deploy/local/kafka/pom.xml.
kafka_install() {
    kafka_vars
    command -v java >/dev/null || die "kafka: Java 17 is needed (apt-get install openjdk-17-jre-headless)"
    maven_install kafka "Apache Kafka $KAFKA_VERSION" "$KAFKA_POM" "$KAFKA_HOME" "libs/kafka_2.13-$KAFKA_VERSION.jar" \
        dependency:copy-dependencies -DincludeScope=runtime "-DoutputDirectory={dest}/libs"
}

# One certificate signed by the local CA: kafka_cert NAME CN EXTENSIONS, into $KAFKA_TLS/NAME.{crt,key}
# (key in PKCS#8, as Kafka's PEM key stores want); remade when missing or not signed by the current CA.
kafka_cert() {
    local name=$1 cn=$2 ext=$3 ca_dir="$STATE_DIR/postgres/tls"
    [[ -s $KAFKA_TLS/$name.crt && -s $KAFKA_TLS/$name.key ]] \
        && openssl verify -CAfile "$ca_dir/ca.crt" "$KAFKA_TLS/$name.crt" >/dev/null 2>&1 \
        && [[ $(openssl x509 -noout -subject -nameopt RFC2253 -in "$KAFKA_TLS/$name.crt") == "subject=CN=$cn" ]] && return 0
    (
        cd "$KAFKA_TLS" || exit 1
        umask 077
        openssl req -newkey rsa:2048 -nodes -subj "/CN=$cn" -keyout "$name.key" -out "$name.csr"
        printf '%b\n' "$ext" >"$name.ext"
        openssl x509 -req -in "$name.csr" -CA "$ca_dir/ca.crt" -CAkey "$ca_dir/ca.key" -CAcreateserial \
            -CAserial "$KAFKA_TLS/ca.srl" -days 825 -extfile "$name.ext" -out "$name.crt"
        rm -f "$name.csr" "$name.ext"
    ) >>"$KAFKA_DIR/tls.log" 2>&1 || { show_logs "$KAFKA_DIR/tls.log"; die "kafka: could not make the $name certificate"; }
}

# The broker's certificate (server and client: it is also its own controller's client), the admin's
# and the platform user's client certificates, and the broker's PEM key store (key + certificate).
kafka_tls_files() {
    local_ca
    mkdir -p -m 700 "$KAFKA_TLS"
    kafka_cert broker kafka-broker 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth'
    kafka_cert admin admin 'extendedKeyUsage=clientAuth'
    kafka_cert platform "$KAFKA_SASL_USERNAME" 'extendedKeyUsage=clientAuth'
    (umask 077 && cat "$KAFKA_TLS/broker.key" "$KAFKA_TLS/broker.crt" >"$KAFKA_TLS/broker-keystore.pem")
}

# Written at each start from the settings: the broker's configuration, and client properties for
# Kafka's own tools (platform.properties: the platform's user; admin.properties: the super user).
kafka_write_config() {
    local ca="$STATE_DIR/postgres/tls/ca.crt" admin_pw
    admin_pw=$(<"$KAFKA_DIR/admin.password")
    (umask 077 && cat >"$KAFKA_DIR/server.properties" <<EOF
# Written by deploy/local/services.sh at each start: edit services.env or the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=CLIENT://$KAFKA_HOST:$KAFKA_PORT,MTLS://127.0.0.1:$KAFKA_MTLS_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=CLIENT://$KAFKA_HOST:$KAFKA_PORT,MTLS://127.0.0.1:$KAFKA_MTLS_PORT
listener.security.protocol.map=CLIENT:SASL_SSL,MTLS:SSL,CONTROLLER:SSL
controller.listener.names=CONTROLLER
inter.broker.listener.name=MTLS
log.dirs=$KAFKA_DATA

# TLS on every listener: the broker's certificate from the local CA, PEM files.
ssl.keystore.type=PEM
ssl.keystore.location=$KAFKA_TLS/broker-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$ca
ssl.enabled.protocols=TLSv1.3,TLSv1.2
listener.name.mtls.ssl.client.auth=required
listener.name.controller.ssl.client.auth=required
# A certificate's principal is its CN (CN=platform -> User:platform), as for SCRAM users.
ssl.principal.mapping.rules=RULE:^CN=([^,]+).*\$/\$1/,DEFAULT

# SCRAM-SHA-512 on the client listener; credentials live in the cluster metadata (provision.py).
listener.name.client.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.client.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;

# Authorization: nothing without an ACL, except for the super users.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin;User:kafka-broker
allow.everyone.if.no.acl.found=false

# One node: replication factor 1 everywhere; small internal topics; no auto-created topics.
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=6
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.partitions=1
# A 2-core machine shared with Spark, PostgreSQL and the tests.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
background.threads=4
log.retention.hours=168
EOF
    )
    local client
    for client in platform admin; do
        local user=$KAFKA_SASL_USERNAME pw=$KAFKA_SASL_PASSWORD
        [[ $client == admin ]] && user=admin pw=$admin_pw
        (umask 077 && cat >"$KAFKA_DIR/$client.properties" <<EOF
# Kafka's command-line tools as $user over SASL_SSL: --command-config $(show_path "$KAFKA_DIR/$client.properties")
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$user" password="$pw";
ssl.truststore.type=PEM
ssl.truststore.location=$ca
EOF
        )
    done
}

# deploy/local/kafka/provision.py as the admin, over mutual TLS: kafka_provision ready|apply.
kafka_provision() {
    (
        cd "$PROJECT_ROOT" || exit 1
        export KAFKA_ADMIN_BOOTSTRAP="127.0.0.1:$KAFKA_MTLS_PORT" KAFKA_ADMIN_CA="$STATE_DIR/postgres/tls/ca.crt" \
            KAFKA_ADMIN_CERT="$KAFKA_TLS/admin.crt" KAFKA_ADMIN_KEY="$KAFKA_TLS/admin.key"
        # The admin's SCRAM password reaches it through the environment, never a command line.
        [[ $1 == apply ]] && export KAFKA_ADMIN_PASSWORD="$(<"$KAFKA_DIR/admin.password")"
        exec "$VENV_PY" "$SCRIPT_DIR/kafka/provision.py" "$1" 9>&-
    )
}
kafka_healthy() { kafka_provision ready; }

kafka_up() {
    local out cluster_id pid protocol=${KAFKA_SECURITY_PROTOCOL:-} mechanism=${KAFKA_SASL_MECHANISM:-}
    kafka_vars
    require_venv kafka
    [[ ${protocol^^} == SASL_SSL && ${mechanism^^} == SCRAM-SHA-512 ]] \
        || die "kafka: the local broker serves SASL_SSL with SCRAM-SHA-512 on $KAFKA_BOOTSTRAP_SERVERS; set KAFKA_SECURITY_PROTOCOL and KAFKA_SASL_MECHANISM so (services.env)"
    [[ -n ${KAFKA_SASL_USERNAME:-} && -n ${KAFKA_SASL_PASSWORD:-} ]] || die "kafka: KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD must be set"
    [[ $KAFKA_SASL_USERNAME != admin && $KAFKA_SASL_USERNAME != kafka-broker ]] \
        || die "kafka: KAFKA_SASL_USERNAME must not be a super user (admin, kafka-broker)"
    [[ -f $KAFKA_HOME/.installed ]] || kafka_install
    lock_service "$KAFKA_DIR"   # parallel `up`s: one formats and starts, the others find it running
    # An older checkout ran a Kafka-protocol stand-in (noida-db) here: it must be stopped first.
    if pid=$(bg_pid "$KAFKA_DIR" "noida-db start"); then
        die "kafka: the former stand-in broker (noida-db, pid $pid) still runs: run 'services.sh down kafka' first"
    fi
    [[ -s $KAFKA_DIR/admin.password ]] \
        || (umask 077 && head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$KAFKA_DIR/admin.password")
    kafka_tls_files
    kafka_write_config
    if [[ ! -f $KAFKA_DATA/meta.properties ]]; then
        cluster_id=$("$VENV_PY" -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')
        if ! out=$(java -Xmx256m -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$SCRIPT_DIR/kafka/log4j2-tools.properties" \
            -cp "$KAFKA_HOME/libs/*" kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_DIR/server.properties" 2>&1); then
            printf '%s\n' "$out" >&2
            die "kafka: kafka-storage format failed for $(show_path "$KAFKA_DATA")"
        fi
        printf '%s\n' "$out" >"$KAFKA_DIR/format.log"
    fi
    # Java 17; G1 with short pauses; exit (and let `up` report it) rather than limp on when out of memory.
    # shellcheck disable=SC2086
    bg_up kafka "$KAFKA_DIR" "kafka.Kafka" "$KAFKA_HOST" "$KAFKA_PORT" kafka_healthy "$KAFKA_READY_TIMEOUT" -- \
        java $KAFKA_JVM_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$SCRIPT_DIR/kafka/log4j2.properties" -cp "$KAFKA_HOME/libs/*" \
        kafka.Kafka "$KAFKA_DIR/server.properties"
    kafka_provision apply >"$KAFKA_DIR/provision.log" 2>&1 \
        || fail_start kafka "users, ACLs or topics could not be made" "$KAFKA_DIR/provision.log" "$KAFKA_DIR/kafka.log"
    cat "$KAFKA_DIR/provision.log"
}
kafka_down() {
    kafka_vars
    # A stand-in broker (noida-db) started by an older checkout is stopped the same way.
    if bg_pid "$KAFKA_DIR" "noida-db start" >/dev/null; then bg_down kafka "$KAFKA_DIR" "noida-db start"; return; fi
    bg_down kafka "$KAFKA_DIR" "kafka.Kafka"
}
kafka_status() {
    kafka_vars
    if bg_pid "$KAFKA_DIR" "noida-db start" >/dev/null; then bg_status kafka "$KAFKA_DIR" "noida-db start" "$KAFKA_HOST" "$KAFKA_PORT"; return; fi
    bg_status kafka "$KAFKA_DIR" "kafka.Kafka" "$KAFKA_HOST" "$KAFKA_PORT"
}

# -- Redis (Debian's redis-server): the online feature store. In memory only (no RDB snapshot, no
# AOF): its data does not survive a restart. Redis rewrites its process title to
# "redis-server 127.0.0.1:PORT", so the pattern is just the program name (the pid file does the rest).
redis_vars() { REDIS_DIR="$STATE_DIR/redis"; }

# Ready: a real PING (redis-cli from redis-tools, else the venv's redis package).
redis_healthy() {
    if command -v redis-cli >/dev/null; then
        [[ $(env -u REDISCLI_AUTH redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
    else
        "$VENV_PY" -c 'import sys, redis
sys.exit(0 if redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), socket_timeout=2).ping() else 1)' "$REDIS_PORT" 2>/dev/null
    fi
}

redis_up() {
    redis_vars
    [[ -x $REDIS_SERVER ]] || die "redis: $REDIS_SERVER not found: run 'services.sh install'"
    mkdir -p "$REDIS_DIR"
    bg_up redis "$REDIS_DIR" redis-server 127.0.0.1 "$REDIS_PORT" redis_healthy -- \
        "$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$REDIS_DIR" --save "" --appendonly no \
        --logfile "$REDIS_DIR/redis.log" --daemonize no
}
redis_down() { redis_vars; bg_down redis "$REDIS_DIR" redis-server; }
redis_status() { redis_vars; bg_status redis "$REDIS_DIR" redis-server 127.0.0.1 "$REDIS_PORT"; }

# -- MLflow tracking server (the venv's mlflow): runs and the model registry in the PostgreSQL
# database MLFLOW_DB (owned by WAREHOUSE_USER, on the local postgres), artifacts served by the server
# itself (mlflow-artifacts:/ URIs) from MLFLOW_ARTIFACTS_DIR. The connection string, with the
# password, reaches the server through its environment, never its command line. Its job runner
# (seven huey consumers, ~450 MB, for GenAI jobs the platform does not use) stays off unless
# MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true is set. The server runs uvicorn as a child process.
mlflow_vars() {
    MLFLOW_DIR="$STATE_DIR/mlflow"
    case $MLFLOW_ARTIFACTS_DIR in
        /*) MLFLOW_ARTIFACTS="$MLFLOW_ARTIFACTS_DIR" ;;
        *) MLFLOW_ARTIFACTS="$PROJECT_ROOT/$MLFLOW_ARTIFACTS_DIR" ;;
    esac
}

mlflow_healthy() { http_ok "http://$MLFLOW_HOST:$MLFLOW_PORT/health"; }

mlflow_up() {
    local uri
    mlflow_vars
    pg_setup_vars
    require_venv mlflow
    pg_pid >/dev/null || die "mlflow needs postgres (not running on 127.0.0.1:$PG_PORT): services.sh up postgres mlflow"
    mkdir -p "$MLFLOW_DIR" "$MLFLOW_ARTIFACTS"
    pg_provision_one "$WAREHOUSE_USER" "$WAREHOUSE_PASSWORD" "$MLFLOW_DB" >"$MLFLOW_DIR/provision.log" 2>&1 \
        || fail_start mlflow "could not create PostgreSQL database $MLFLOW_DB" "$MLFLOW_DIR/provision.log"
    [[ ${MLFLOW_TRACKING_URI%/} == "http://$MLFLOW_HOST:$MLFLOW_PORT" ]] \
        || warn "mlflow: MLFLOW_TRACKING_URI ($MLFLOW_TRACKING_URI) is not this server (http://$MLFLOW_HOST:$MLFLOW_PORT)"
    uri=$(U=$WAREHOUSE_USER P=$WAREHOUSE_PASSWORD D=$MLFLOW_DB "$VENV_PY" -c 'import os, sys, urllib.parse
q = lambda k: urllib.parse.quote(os.environ[k], safe="")
print("postgresql+psycopg2://%s:%s@127.0.0.1:%s/%s" % (q("U"), q("P"), sys.argv[1], q("D")))' "$PG_PORT")
    local -x MLFLOW_BACKEND_STORE_URI=$uri MLFLOW_DISABLE_TELEMETRY=true
    local -x MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
    bg_up mlflow "$MLFLOW_DIR" "mlflow server" "$MLFLOW_HOST" "$MLFLOW_PORT" mlflow_healthy "$MLFLOW_READY_TIMEOUT" -- \
        env -u MLFLOW_TRACKING_URI "$VENV_PY" -m mlflow server --serve-artifacts \
        --artifacts-destination "$MLFLOW_ARTIFACTS" --host "$MLFLOW_HOST" --port "$MLFLOW_PORT" --workers 1
}
mlflow_down() { mlflow_vars; bg_down mlflow "$MLFLOW_DIR" "mlflow server"; }
mlflow_status() { mlflow_vars; bg_status mlflow "$MLFLOW_DIR" "mlflow server" "$MLFLOW_HOST" "$MLFLOW_PORT"; }

# -- Document store: FerretDB (MongoDB's wire protocol) on SQLite files in its state folder, built
# from the Go module proxy by deploy/local/ferretdb/build.sh at a pinned version (`install`).
documents_vars() {
    DOCUMENTS_DIR="$STATE_DIR/documents"
    FERRETDB_BIN="$PROJECT_ROOT/.local/ferretdb/$FERRETDB_VERSION/ferretdb"
}

documents_healthy() {
    "$VENV_PY" -c 'import sys, pymongo
c = pymongo.MongoClient(host="127.0.0.1", port=int(sys.argv[1]), serverSelectionTimeoutMS=1000)
sys.exit(0 if c.admin.command("ping").get("ok") else 1)' "$DOCUMENTS_PORT" 2>/dev/null
}

documents_up() {
    documents_vars
    require_venv documents
    [[ -x $FERRETDB_BIN ]] || die "documents: $FERRETDB_BIN not built: run 'services.sh install'"
    mkdir -p "$DOCUMENTS_DIR/data"
    bg_up documents "$DOCUMENTS_DIR" "$FERRETDB_BIN" 127.0.0.1 "$DOCUMENTS_PORT" documents_healthy -- \
        "$FERRETDB_BIN" --handler=sqlite --sqlite-url="file:$DOCUMENTS_DIR/data/" \
        --listen-addr="127.0.0.1:$DOCUMENTS_PORT" --state-dir="$DOCUMENTS_DIR" --telemetry=disable \
        --debug-addr=- --log-level=warn
}
documents_down() { documents_vars; bg_down documents "$DOCUMENTS_DIR" "$FERRETDB_BIN"; }
documents_status() { documents_vars; bg_status documents "$DOCUMENTS_DIR" "$FERRETDB_BIN" 127.0.0.1 "$DOCUMENTS_PORT"; }

# -- Schema registry: Apicurio Registry (Confluent's Schema Registry API under /apis/ccompat/v7, which
# is SCHEMA_REGISTRY_URL), Apicurio's own prebuilt Quarkus application from Maven Central, unpacked
# by `install` into .local/registry/<version> (deploy/local/registry/pom.xml pins the version). It
# needs Java 21+: REGISTRY_JAVA_HOME, else JAVA_HOME, else the newest JDK found under /usr/lib/jvm
# (the machines have Temurin 25 beside Debian's Java 17). Schemas live in an H2 file database in its
# state folder, so schema ids survive a restart; `up` registers the catalogue's stream contracts
# (platform_assets/streaming/registry.py). No authentication: it listens on 127.0.0.1 only.
REGISTRY_POM="$SCRIPT_DIR/registry/pom.xml"

registry_vars() {
    REGISTRY_DIR="$STATE_DIR/registry"
    [[ ${SCHEMA_REGISTRY_URL:-} =~ ^http://([^/:]+):([0-9]+)(/.*)?$ ]] \
        || die "registry: SCHEMA_REGISTRY_URL must be http://HOST:PORT/apis/ccompat/v7 (services.env), got '${SCHEMA_REGISTRY_URL:-}'"
    REGISTRY_HOST=${BASH_REMATCH[1]}
    REGISTRY_PORT=${BASH_REMATCH[2]}
    # Quarkus' management interface (health, metrics): its own port, on the same loopback address.
    REGISTRY_MANAGEMENT_PORT=${SCHEMA_REGISTRY_MANAGEMENT_PORT:?SCHEMA_REGISTRY_MANAGEMENT_PORT must be set (services.env)}
    [[ $REGISTRY_MANAGEMENT_PORT =~ ^[0-9]+$ ]] || die "registry: SCHEMA_REGISTRY_MANAGEMENT_PORT must be a TCP port, got '$REGISTRY_MANAGEMENT_PORT'"
    REGISTRY_VERSION=$(sed -n 's:.*<apicurio.version>\(.*\)</apicurio.version>.*:\1:p' "$REGISTRY_POM")
    [[ -n $REGISTRY_VERSION ]] || die "registry: no <apicurio.version> in $REGISTRY_POM"
    REGISTRY_HOME="$PROJECT_ROOT/.local/registry/$REGISTRY_VERSION"
    REGISTRY_JAR="$REGISTRY_HOME/quarkus-run.jar"
}

# REGISTRY_JAVA: a java of version 21 or newer (read from the JDK's `release` file, no JVM started).
registry_java() {
    local home major best="" best_major=0
    for home in ${REGISTRY_JAVA_HOME:+"$REGISTRY_JAVA_HOME"} ${JAVA_HOME:+"$JAVA_HOME"} /usr/lib/jvm/*; do
        [[ -x $home/bin/java && -r $home/release ]] || continue
        major=$(sed -n 's/^JAVA_VERSION="\([0-9]*\).*/\1/p' "$home/release")
        [[ $major =~ ^[0-9]+$ ]] && ((major >= 21)) || continue
        # An explicit REGISTRY_JAVA_HOME or JAVA_HOME wins; otherwise the newest.
        if [[ $home == "${REGISTRY_JAVA_HOME:-}" || $home == "${JAVA_HOME:-}" ]]; then best=$home; break; fi
        ((major > best_major)) && best=$home best_major=$major
    done
    [[ -n $best ]] || die "registry: Apicurio Registry $REGISTRY_VERSION needs Java 21 or newer; none found" \
        "(set REGISTRY_JAVA_HOME, or install a JDK 21+ under /usr/lib/jvm)"
    REGISTRY_JAVA="$best/bin/java"
}

# Apicurio's distribution in .local/registry/<version>, unpacked by Maven from Maven Central.
registry_install() {
    registry_vars
    maven_install registry "Apicurio Registry $REGISTRY_VERSION" "$REGISTRY_POM" "$REGISTRY_HOME" quarkus-run.jar \
        dependency:unpack "-Dregistry.home={dest}"
}

registry_healthy() { http_ok "$SCHEMA_REGISTRY_URL/subjects"; }

registry_up() {
    registry_vars
    require_venv registry
    [[ -f $REGISTRY_HOME/.installed ]] || registry_install
    registry_java
    mkdir -p "$REGISTRY_DIR/data"
    if ! bg_pid "$REGISTRY_DIR" "$REGISTRY_JAR" >/dev/null && port_open "$REGISTRY_HOST" "$REGISTRY_MANAGEMENT_PORT"; then
        die "registry: port $REGISTRY_HOST:$REGISTRY_MANAGEMENT_PORT (SCHEMA_REGISTRY_MANAGEMENT_PORT) is used by another process"
    fi
    # A bounded heap, the serial collector and C1 only: it serves a few lookups, next to Spark on 2 cores.
    # shellcheck disable=SC2086
    bg_up registry "$REGISTRY_DIR" "$REGISTRY_JAR" "$REGISTRY_HOST" "$REGISTRY_PORT" registry_healthy "$REGISTRY_READY_TIMEOUT" -- \
        "$REGISTRY_JAVA" ${REGISTRY_HEAP_OPTS:?REGISTRY_HEAP_OPTS must be set (services.env)} -XX:+UseSerialGC \
        -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dquarkus.http.host="$REGISTRY_HOST" -Dquarkus.http.port="$REGISTRY_PORT" -Dquarkus.http.access-log.enabled=false \
        -Dquarkus.management.host="$REGISTRY_HOST" -Dquarkus.management.port="$REGISTRY_MANAGEMENT_PORT" \
        -Dapicurio.datasource.url="jdbc:h2:file:$REGISTRY_DIR/data/registry" -Dapicurio.datasource.jdbc.initial-size=2 \
        -Dapicurio.datasource.jdbc.min-size=2 -Dapicurio.datasource.jdbc.max-size=10 \
        -Dapicurio.storage.snapshot.location="$REGISTRY_DIR" -jar "$REGISTRY_JAR"
    (cd "$PROJECT_ROOT" && "$VENV_PY" -m platform_assets.streaming.registry register 9>&-) >"$REGISTRY_DIR/provision.log" 2>&1 \
        || fail_start registry "the streams' schemas could not be registered" "$REGISTRY_DIR/provision.log" "$REGISTRY_DIR/registry.log"
    cat "$REGISTRY_DIR/provision.log"
}
registry_down() { registry_vars; bg_down registry "$REGISTRY_DIR" "$REGISTRY_JAR"; }
registry_status() { registry_vars; bg_status registry "$REGISTRY_DIR" "$REGISTRY_JAR" "$REGISTRY_HOST" "$REGISTRY_PORT"; }

# ---------------------------------------------------------------------------------------------
usage() {
    cat >&2 <<'EOF'
usage: deploy/local/services.sh up|down|status [postgres|mariadb|kafka|registry|redis|mlflow|documents|demo-api ...]   (default: all)
       deploy/local/services.sh install    install the Debian packages (postgresql, mariadb-server, redis-server, prometheus, chromium,
                                           maven, kcat, curl, wrk), Apache Kafka's jars and Apicurio Registry (Maven Central, into
                                           .local/kafka/<version> and .local/registry/<version>) and
                                           FerretDB (built from the Go module proxy, into .local/ferretdb/<version>)
Settings: deploy/local/services.env (environment variables win). State: .local/services/ or $SERVICES_STATE_DIR.
EOF
    exit 2
}

# -- S3-compatible object store (moto's server mode, from the venv), with the lake's bucket, to run
# the platform with its lake on object storage. In memory: `down` forgets the objects. Then, in the
# shell that runs Dagster:
#   export AWS_ENDPOINT_URL=http://127.0.0.1:$OBJECT_STORE_PORT AWS_ACCESS_KEY_ID=local \
#          AWS_SECRET_ACCESS_KEY=local AWS_REGION=us-east-1 LAKE_ROOT=s3://$OBJECT_STORE_BUCKET/lake
s3_vars() { S3_DIR="$STATE_DIR/s3"; S3_URL="http://127.0.0.1:$OBJECT_STORE_PORT"; }
s3_healthy() { http_ok "$S3_URL/moto-api/"; }

s3_up() {
    s3_vars
    mkdir -p "$S3_DIR"
    bg_up s3 "$S3_DIR" moto_server 127.0.0.1 "$OBJECT_STORE_PORT" s3_healthy -- \
        "$PROJECT_ROOT/.venv/bin/moto_server" -H 127.0.0.1 -p "$OBJECT_STORE_PORT"
    AWS_ENDPOINT_URL=$S3_URL AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_REGION=us-east-1 \
        "$VENV_PY" -c "import boto3, sys; s3 = boto3.client('s3'); b = sys.argv[1]
if b not in [x['Name'] for x in s3.list_buckets()['Buckets']]: s3.create_bucket(Bucket=b)" "$OBJECT_STORE_BUCKET" \
        || die "s3: cannot create bucket $OBJECT_STORE_BUCKET at $S3_URL"
    say s3 "bucket $OBJECT_STORE_BUCKET; lake settings: AWS_ENDPOINT_URL=$S3_URL AWS_ACCESS_KEY_ID=local" \
        "AWS_SECRET_ACCESS_KEY=local AWS_REGION=us-east-1 LAKE_ROOT=s3://$OBJECT_STORE_BUCKET/lake"
}
s3_down() { s3_vars; bg_down s3 "$S3_DIR" moto_server; }
s3_status() { s3_vars; bg_status s3 "$S3_DIR" moto_server 127.0.0.1 "$OBJECT_STORE_PORT"; }

main() {
    [[ $# -ge 1 ]] || usage
    local action=$1 svc services=() need_packages=0
    shift
    case $action in
        up | down | status | install) ;;
        -h | --help | help) usage ;;
        *) usage ;;
    esac
    load_env
    # Relative paths in the settings are relative to the project, for the servers started here too.
    [[ -z ${PGSSLROOTCERT:-} || $PGSSLROOTCERT == /* ]] || export PGSSLROOTCERT=$PROJECT_ROOT/$PGSSLROOTCERT
    [[ -z ${KAFKA_SSL_CA_LOCATION:-} || $KAFKA_SSL_CA_LOCATION == /* ]] \
        || export KAFKA_SSL_CA_LOCATION=$PROJECT_ROOT/$KAFKA_SSL_CA_LOCATION
    # Connection settings from the environment must not redirect our own client calls.
    unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS PGPASSFILE
    local var
    for var in WAREHOUSE_PORT OPS_POSTGRES_PORT MYSQL_PORT DEMO_API_PORT REDIS_PORT MLFLOW_PORT OBJECT_STORE_PORT DOCUMENTS_PORT \
        KAFKA_MTLS_PORT KAFKA_CONTROLLER_PORT; do
        [[ ${!var} =~ ^[0-9]+$ ]] && ((10#${!var} >= 1 && 10#${!var} <= 65535)) \
            || die "$var must be a TCP port number (1-65535), got '${!var}'"
    done
    init_state_dir
    if [[ $action == install ]]; then
        [[ $# -eq 0 ]] || usage
        if packages_missing; then
            ensure_packages
        else
            say install "postgresql, mariadb-server, redis-server, prometheus, chromium, maven, kcat, curl and wrk already installed"
        fi
        kafka_install
        registry_install
        bash "$SCRIPT_DIR/ferretdb/build.sh" || die "documents: could not build FerretDB"
        bash "$SCRIPT_DIR/spark/install.sh" || die "spark: could not install Spark's connector jars"
        return 0
    fi
    for svc in "$@"; do
        [[ " ${ALL_SERVICES[*]} ${OPTIONAL_SERVICES[*]} " == *" $svc "* ]] \
            || die "unknown service '$svc' (known: ${ALL_SERVICES[*]} ${OPTIONAL_SERVICES[*]})"
    done
    # The named services (default: all; `up` leaves out the optional ones), in this order (mlflow
    # needs postgres first).
    for svc in "${ALL_SERVICES[@]}" "${OPTIONAL_SERVICES[@]}"; do
        [[ $# -eq 0 && $action == up && " ${OPTIONAL_SERVICES[*]} " == *" $svc "* ]] && continue
        if [[ $# -eq 0 || " $* " == *" $svc "* ]]; then
            services+=("$svc")
            case $svc in postgres | mariadb | redis) need_packages=1 ;; esac
        fi
    done
    [[ $action == up && $need_packages -eq 1 ]] && ensure_packages
    # Stop in reverse order of start.
    if [[ $action == down ]]; then
        local reversed=()
        for ((i = ${#services[@]} - 1; i >= 0; i--)); do reversed+=("${services[i]}"); done
        services=("${reversed[@]}")
    fi
    for svc in "${services[@]}"; do
        case $action:$svc in
            up:postgres) pg_up ;;
            up:mariadb) my_up ;;
            up:demo-api) api_up ;;
            down:postgres) pg_down ;;
            down:mariadb) my_down ;;
            down:demo-api) api_down ;;
            status:postgres) pg_status ;;
            status:mariadb) my_status ;;
            status:demo-api) api_status ;;
            up:kafka) kafka_up ;;
            down:kafka) kafka_down ;;
            status:kafka) kafka_status ;;
            up:redis) redis_up ;;
            down:redis) redis_down ;;
            status:redis) redis_status ;;
            up:mlflow) mlflow_up ;;
            down:mlflow) mlflow_down ;;
            status:mlflow) mlflow_status ;;
            up:documents) documents_up ;;
            down:documents) documents_down ;;
            status:documents) documents_status ;;
            up:registry) registry_up ;;
            down:registry) registry_down ;;
            status:registry) registry_status ;;
            up:s3) s3_up ;;
            down:s3) s3_down ;;
            status:s3) s3_status ;;
        esac
    done
}

main "$@"
