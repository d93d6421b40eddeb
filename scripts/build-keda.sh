#!/usr/bin/env bash
# Build KEDA (operator + external-metrics adapter) from the Go module proxy into a version-keyed
# cache OUTSIDE the repo, and copy its CRDs next to the binaries. Rebuilt only when missing.
#   github.com/kedacore/keda/v2 cmd/operator -> keda, cmd/adapter -> keda-adapter, crds/*.yaml
# `go install ...@v` refuses KEDA (its go.mod carries replace/exclude directives), so a wrapper
# module requires it, repeats KEDA's own replace/exclude lines, and lists both commands as tools.
# Cold: 32 min measured on 2 shared cores with downloads (~3 GB module cache). Prints the directory on the last line.
set -euo pipefail
if [ -n "${RECOPS_KEDA_ASSETS:-}" ]; then echo "$RECOPS_KEDA_ASSETS"; exit 0; fi  # prebuilt elsewhere
KEDA_V=${RECOPS_KEDA_VERSION:-v2.21.0}
OUT=${RECOPS_KEDABIN:-${XDG_CACHE_HOME:-$HOME/.cache}/recops/keda-$KEDA_V}
LOGDIR=$OUT/build-logs
# Every CRD KEDA ships, eventing.keda.sh included: the operator's CloudEventSource controllers exit
# without theirs (the CRDs are installed, the feature is not used).
bins() { [ -x "$OUT/keda" ] && [ -x "$OUT/keda-adapter" ]; }
crds() { [ -s "$OUT/crds/keda.sh_scaledobjects.yaml" ] && [ -s "$OUT/crds/eventing.keda.sh_cloudeventsources.yaml" ]; }
complete() { bins && crds; }
if [ -n "${RECOPS_PRINT_ONLY:-}" ]; then complete || exit 1; echo "$OUT"; exit 0; fi
if complete; then echo "$OUT"; exit 0; fi
mkdir -p "$OUT" "$LOGDIR"
export GOWORK=off GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
copy_crds() {  # from the module (config/crd/bases) in the module cache
  local tmp dir
  tmp=$(mktemp -d -t recops-keda-crds.XXXXXX)
  printf 'module local.invalid/keda-crds\n\ngo 1.26.0\n' > "$tmp/go.mod"
  dir=$(cd "$tmp" && go mod download -json "github.com/kedacore/keda/v2@$KEDA_V" |
    python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
  rm -rf "$tmp"
  mkdir -p "$OUT/crds"
  install -m 0644 "$dir"/config/crd/bases/*.yaml "$OUT/crds/"
}
if bins; then copy_crds; complete; echo "$OUT"; exit 0; fi  # a cache from before the eventing CRDs
log=$LOGDIR/keda.log
echo "build-keda: building KEDA $KEDA_V operator + adapter (cold build took 32 min on 2 shared cores, downloads included; log: $log)" >&2
(
  set -euo pipefail
  work=$(mktemp -d -t recops-keda.XXXXXX)
  cd "$work"
  printf 'module local.invalid/keda-testbin\n\ngo 1.26.0\n' > go.mod
  info=$(go mod download -json "github.com/kedacore/keda/v2@$KEDA_V")
  gomod=$(python3 -c 'import json,sys;print(json.loads(sys.argv[1])["GoMod"])' "$info")
  dir=$(python3 -c 'import json,sys;print(json.loads(sys.argv[1])["Dir"])' "$info")
  # KEDA's own replace and exclude directives (ignored when it is a dependency) repeated here.
  go mod edit -json "$gomod" | python3 -c '
import json, sys
m = json.load(sys.stdin)
for r in m.get("Replace") or []:
    old, new = r["Old"], r["New"]
    if new["Path"].startswith("."):
        continue
    o = old["Path"] + ("@" + old["Version"] if old.get("Version") else "")
    print("-replace=%s=%s@%s" % (o, new["Path"], new["Version"]))
for e in m.get("Exclude") or []:
    print("-exclude=%s@%s" % (e["Path"], e["Version"]))' > directives
  xargs -r go mod edit < directives
  go mod edit -require="github.com/kedacore/keda/v2@$KEDA_V" \
    -tool=github.com/kedacore/keda/v2/cmd/operator -tool=github.com/kedacore/keda/v2/cmd/adapter
  cat go.mod
  go mod tidy
  ldf="-s -w -X=github.com/kedacore/keda/v2/version.Version=${KEDA_V#v} -X=github.com/kedacore/keda/v2/version.GitCommit=module"
  go build -p 2 -trimpath -ldflags="$ldf" -o "$OUT/keda" github.com/kedacore/keda/v2/cmd/operator
  go build -p 2 -trimpath -ldflags="$ldf" -o "$OUT/keda-adapter" github.com/kedacore/keda/v2/cmd/adapter
  mkdir -p "$OUT/crds"
  install -m 0644 "$dir"/config/crd/bases/*.yaml "$OUT/crds/"
  rm -rf "$work"
) >"$log" 2>&1 || { echo "build-keda: FAILED; read $log" >&2; tail -n 20 "$log" >&2; exit 1; }
complete
echo "$OUT"
