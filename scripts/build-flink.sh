#!/usr/bin/env bash
# PyFlink for the stream job, in its OWN venv cached OUTSIDE the repo by version:
#   ~/.cache/recops/flink-<version>/venv   (apache-flink pins pyarrow/pandas/numpy versions that
#                                           conflict with the project's, so it never joins .venv)
#   ~/.cache/recops/flink-<version>/jars   (connector jars from Maven Central, by version)
# plus redis-py (the job writes features itself: no Redis connector for Flink 2.x). Rebuilt only
# when missing. Prints the directory on the last line of stdout. Needs java (17), mvn, python3.11.
set -euo pipefail
FLINK_V=${RECOPS_FLINK_VERSION:-2.3.0}
KAFKA_CONN_V=${RECOPS_FLINK_KAFKA_CONNECTOR_VERSION:-5.0.0-2.2}
REDIS_PY_V=${RECOPS_FLINK_REDIS_PY_VERSION:-8.1.0}
PYTHON=${PYTHON:-python3.11}
OUT=${RECOPS_FLINK_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/recops/flink-$FLINK_V}
HERE=$(cd "$(dirname "$0")" && pwd)
STAMP=$OUT/.complete-kafka-$KAFKA_CONN_V-redis-$REDIS_PY_V
if [ -f "$STAMP" ]; then echo "$OUT"; exit 0; fi
[ -n "${RECOPS_PRINT_ONLY:-}" ] && exit 1
mkdir -p "$OUT"
log=$OUT/build.log
: >"$log"
if [ ! -x "$OUT/venv/bin/python" ] || ! "$OUT/venv/bin/python" -c "import pyflink, redis" 2>/dev/null; then
  echo "build-flink: installing apache-flink==$FLINK_V into $OUT/venv (~1 min, ~850 MB; log: $log)" >&2
  rm -rf "$OUT/venv"
  { "$PYTHON" -m venv "$OUT/venv" &&
    "$OUT/venv/bin/pip" install --quiet --upgrade pip &&
    "$OUT/venv/bin/pip" install --quiet "apache-flink==$FLINK_V" "redis==$REDIS_PY_V"; } >>"$log" 2>&1 ||
    { echo "build-flink: FAILED installing PyFlink; read $log" >&2; tail -n 20 "$log" >&2; exit 1; }
fi
echo "build-flink: fetching flink-sql-connector-kafka $KAFKA_CONN_V (log: $log)" >&2
rm -rf "$OUT/jars.tmp"
mvn -B -q -f "$HERE/maven/flink-connectors-pom.xml" -Dkafka.connector.version="$KAFKA_CONN_V" \
  dependency:copy-dependencies -DexcludeTransitive=true -DoutputDirectory="$OUT/jars.tmp" >>"$log" 2>&1 ||
  { echo "build-flink: FAILED fetching connector jars; read $log" >&2; tail -n 20 "$log" >&2; exit 1; }
rm -rf "$OUT/jars" && mv "$OUT/jars.tmp" "$OUT/jars"
rm -f "$OUT"/.complete-* && touch "$STAMP"
echo "$OUT"
