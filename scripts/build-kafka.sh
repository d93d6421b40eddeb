#!/usr/bin/env bash
# Fetch the jars of a local Kafka broker (KRaft, no ZooKeeper) from Maven Central into a
# version-keyed cache OUTSIDE the repo: ~/.cache/recops/kafka-<version>/libs/*.jar.
# Refetched only when missing. Prints the directory on the last line of stdout.
# Needs java (17) and mvn: scripts/system-deps.sh installs both.
set -euo pipefail
KAFKA_V=${RECOPS_KAFKA_VERSION:-4.1.1}
LOG4J_V=${RECOPS_LOG4J_VERSION:-2.24.3}
OUT=${RECOPS_KAFKA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/recops/kafka-$KAFKA_V}
HERE=$(cd "$(dirname "$0")" && pwd)
if [ -f "$OUT/.complete" ]; then echo "$OUT"; exit 0; fi
[ -n "${RECOPS_PRINT_ONLY:-}" ] && exit 1
mkdir -p "$OUT"
log=$OUT/build.log
echo "build-kafka: fetching Kafka $KAFKA_V jars with Maven (~20 s; log: $log)" >&2
rm -rf "$OUT/libs.tmp"
if ! mvn -B -q -f "$HERE/maven/kafka-pom.xml" -Dkafka.version="$KAFKA_V" -Dlog4j.version="$LOG4J_V" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$OUT/libs.tmp" >"$log" 2>&1; then
  echo "build-kafka: FAILED; read $log" >&2; tail -n 20 "$log" >&2; exit 1
fi
rm -rf "$OUT/libs" && mv "$OUT/libs.tmp" "$OUT/libs"
ls "$OUT/libs" | grep -q "^kafka_2.13-$KAFKA_V.jar$" || { echo "build-kafka: kafka_2.13-$KAFKA_V.jar missing" >&2; exit 1; }
touch "$OUT/.complete"
echo "$OUT"
