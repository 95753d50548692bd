#!/usr/bin/env bash
# Run a command with the local services up; afterwards (or on Ctrl-C) stop only the services that
# were not already running before, so a developer's running demo is left alone.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
SERVICES=(postgres mariadb kafka registry redis mlflow documents demo-api)
started=()
for s in "${SERVICES[@]}"; do
    bash "$HERE/services.sh" status "$s" | grep -q ' running' || started+=("$s")
done
stop_started() {
    trap - EXIT INT TERM
    if ((${#started[@]})); then bash "$HERE/services.sh" down "${started[@]}"; fi
}
trap stop_started EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
bash "$HERE/services.sh" up "${SERVICES[@]}" || exit 1
"$@"
