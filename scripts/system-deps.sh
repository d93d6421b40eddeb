#!/usr/bin/env bash
# Debian packages the tests, benchmarks and the demo run for real: Redis (feature store),
# Prometheus (+promtool), wrk (load generator for bench/), Java 17 + Maven (Kafka, Flink).
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v prometheus >/dev/null && command -v promtool >/dev/null || need+=(prometheus)
command -v openssl >/dev/null || need+=(openssl)
command -v wrk >/dev/null || need+=(wrk)  # HTTP load for bench/
# Kafka broker and Flink (scripts/build-kafka.sh, build-flink.sh): Java 17 and Maven to fetch their jars
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "system-deps: installing ${need[*]}" >&2
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# The packages' own services are not needed (tests start their own on free ports); stop them if started.
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
for s in redis-server prometheus; do $SUDO service "$s" stop >/dev/null 2>&1 || true; done
