#!/usr/bin/env bash
# Spark's connector jars (hadoop-aws + the AWS SDK bundle for s3a://, spark-sql-kafka-0-10 for
# Structured Streaming from Kafka), resolved from Maven Central once, pinned in pom.xml beside this.
#
#   deploy/local/spark/install.sh [DEST_DIR]      (default: $PROJECT_ROOT/.local/spark-jars)
#
# Run by `deploy/local/services.sh install`. Maven resolves the pom into its own repository
# (~/.m2, shared with every checkout); the jars are then hard-linked (copied across filesystems)
# into DEST_DIR, so the 690 MB SDK bundle is on disk once. A marker holding the pom's checksum makes a
# second run a no-op; a changed pom installs afresh. resources/spark.py puts DEST_DIR/*.jar on
# `spark.jars` when the folder is there.
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
PROJECT_ROOT=$(cd "$SCRIPT_DIR/../../.." && pwd -P)
POM=$SCRIPT_DIR/pom.xml
DEST=${1:-$PROJECT_ROOT/.local/spark-jars}
MARKER=$DEST/.installed
say() { printf '%-10s %s\n' spark "$*"; }
die() { printf '%-10s %s\n' spark "$*" >&2; exit 1; }

sum=$(sha256sum "$POM" | cut -d' ' -f1)
installed() { [[ -f $MARKER && $(<"$MARKER") == "$sum" ]]; }
if installed; then
    say "connector jars already installed ($DEST)"
    exit 0
fi
command -v java >/dev/null || die "Java 17 is needed (apt-get install openjdk-17-jre-headless)"
command -v mvn >/dev/null || die "Maven is needed to fetch Spark's connectors (apt-get install maven)"
mkdir -p "$(dirname "$DEST")"
exec {fd}>"$DEST.lock"
flock -w 900 "$fd" || die "could not lock $DEST.lock"
installed && exit 0  # another caller installed them while we waited

start=${EPOCHREALTIME/,/.}
tmp=$DEST.tmp
log=$(dirname "$DEST")/spark-jars-install.log
rm -rf "$tmp"
mkdir -p "$tmp"
say "resolving Spark connectors from Maven Central (log $log) ..."
mvn -B -q -f "$POM" dependency:build-classpath -DincludeScope=runtime -Dmdep.outputFile="$tmp/classpath.txt" \
    >"$log" 2>&1 || { tail -n 30 "$log" >&2; die "Maven could not resolve $POM (log: $log)"; }
IFS=: read -r -a jars <"$tmp/classpath.txt" || true  # one line, no newline at its end
for jar in "${jars[@]}"; do
    [[ -f $jar ]] || die "Maven listed $jar but it is not there"
    ln -f "$jar" "$tmp/" 2>/dev/null || cp "$jar" "$tmp/"
done
rm "$tmp/classpath.txt"
for want in hadoop-aws- bundle- spark-sql-kafka-0-10_; do
    compgen -G "$tmp/$want*.jar" >/dev/null || die "$want*.jar missing after Maven (log: $log)"
done
printf '%s\n' "$sum" >"$tmp/.installed"
rm -rf "$DEST"
mv "$tmp" "$DEST"
awk -v a="$start" -v b="${EPOCHREALTIME/,/.}" -v n="${#jars[@]}" -v s="$(du -sh "$DEST" | cut -f1)" \
    'BEGIN { printf "spark      %d connector jars installed in %.1f s (%s)\n", n, b - a, s }'
