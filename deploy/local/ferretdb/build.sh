#!/usr/bin/env bash
# Build the pinned FerretDB (a MongoDB wire-protocol server) from the Go module proxy, once.
#
#   deploy/local/ferretdb/build.sh [DEST_DIR]     (default: $PROJECT_ROOT/.local/ferretdb/$FERRETDB_VERSION)
#
# `go install ...@version` builds a binary that panics at start: FerretDB embeds its version from
# build/version/version.txt, which the module zip leaves empty. So the module is downloaded, copied
# to a writable folder, the version written, and `go build` run there. Go's own module and build
# caches are used (a second checkout builds in seconds); only the binary lives in the project.
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
PROJECT_ROOT=$(cd "$SCRIPT_DIR/../../.." && pwd -P)
# The version is pinned in services.env (the environment wins, as for every setting there).
FERRETDB_VERSION=${FERRETDB_VERSION:-$(sed -n 's/^FERRETDB_VERSION=//p' "$SCRIPT_DIR/../services.env")}
[[ -n $FERRETDB_VERSION ]] || { echo "ferretdb: FERRETDB_VERSION is not set in services.env" >&2; exit 1; }
DEST=${1:-$PROJECT_ROOT/.local/ferretdb/$FERRETDB_VERSION}
BIN=$DEST/ferretdb

if [[ -x $BIN ]] && "$BIN" --version 2>/dev/null | grep -qx "version: $FERRETDB_VERSION"; then
    exit 0
fi
command -v go >/dev/null 2>&1 || { echo "ferretdb: Go is required to build FerretDB (apt-get install golang)" >&2; exit 1; }

export GOFLAGS=-buildvcs=false GOTOOLCHAIN=local
start=${EPOCHREALTIME/,/.}
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$DEST"
log=$DEST/build.log
module_dir=$(cd "$work" && go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" 2>"$log" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[[ -n $module_dir && -d $module_dir ]] || { echo "ferretdb: could not download the module $FERRETDB_VERSION" >&2; exit 1; }
cp -r "$module_dir" "$work/src"
chmod -R u+w "$work/src"
echo "$FERRETDB_VERSION" >"$work/src/build/version/version.txt"
(cd "$work/src" && go build -trimpath -o "$BIN.tmp" ./cmd/ferretdb) >>"$log" 2>&1 \
    || { tail -n 30 "$log" >&2; echo "ferretdb: build failed (log: $log)" >&2; exit 1; }
mv "$BIN.tmp" "$BIN"
awk -v a="$start" -v b="${EPOCHREALTIME/,/.}" -v v="$FERRETDB_VERSION" \
    'BEGIN { printf "ferretdb   built %s in %.0f s\n", v, b - a }'
