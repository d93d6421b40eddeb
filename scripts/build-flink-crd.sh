#!/usr/bin/env bash
# The Apache Flink Kubernetes Operator's CRDs (flink.apache.org), as its API jar from Maven Central
# carries them, cached OUTSIDE the repo by version: ~/.cache/recops/flink-operator-<version>/crds/.
# The stream e2e (tests/operator/test_stream_e2e.py) installs the real FlinkDeployment CRD from
# there, so the API server checks the operator's rendered FlinkDeployment against the Flink
# operator's own schema. Rebuilt only when missing. Prints the crds directory on the last line.
set -euo pipefail
V=${RECOPS_FLINK_OPERATOR_VERSION:-1.10.0}
OUT=${XDG_CACHE_HOME:-$HOME/.cache}/recops/flink-operator-$V
HERE=$(cd "$(dirname "$0")" && pwd)
CRD=flinkdeployments.flink.apache.org-v1.yml
if [ -f "$OUT/crds/$CRD" ]; then echo "$OUT/crds"; exit 0; fi
mkdir -p "$OUT"
log=$OUT/build.log
: >"$log"
echo "build-flink-crd: fetching flink-kubernetes-operator-api $V (log: $log)" >&2
rm -rf "$OUT/jar.tmp" "$OUT/crds.tmp"
mvn -B -q -f "$HERE/maven/flink-operator-api-pom.xml" -Dflink.operator.version="$V" \
  dependency:copy-dependencies -DexcludeTransitive=true -DoutputDirectory="$OUT/jar.tmp" >>"$log" 2>&1 ||
  { echo "build-flink-crd: FAILED fetching the operator API jar; read $log" >&2; tail -n 20 "$log" >&2; exit 1; }
# the apiextensions.k8s.io/v1 CRDs (*-v1.yml; the *-v1beta1.yml files are the pre-1.16 form)
python3 - "$OUT/jar.tmp/flink-kubernetes-operator-api-$V.jar" "$OUT/crds.tmp" <<'PY'
import sys, zipfile, pathlib
out = pathlib.Path(sys.argv[2]); out.mkdir(parents=True)
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in z.namelist():
        if name.startswith("META-INF/fabric8/") and name.endswith("-v1.yml"):
            (out / pathlib.Path(name).name).write_bytes(z.read(name))
PY
rm -rf "$OUT/crds" "$OUT/jar.tmp" && mv "$OUT/crds.tmp" "$OUT/crds"
echo "$OUT/crds"
