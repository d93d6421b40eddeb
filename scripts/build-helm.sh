#!/usr/bin/env bash
# Build the helm CLI from the Go module proxy into a version-keyed cache OUTSIDE the repo,
# next to the control-plane binaries (same conventions as scripts/build-testbin.sh).
# helm.sh/helm/v3's go.mod has no replace directives, so a plain `go install` is reproducible.
# Prints the directory holding `helm` on the last line of stdout. Honours $RECOPS_HELM_DIR.
set -euo pipefail
if [ -n "${RECOPS_HELM_DIR:-}" ] && [ -x "$RECOPS_HELM_DIR/helm" ]; then echo "$RECOPS_HELM_DIR"; exit 0; fi
HV=${RECOPS_HELM_VERSION:-v3.22.0}
OUT=${RECOPS_HELM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/recops/tools/helm-$HV}
if [ -n "${RECOPS_PRINT_ONLY:-}" ]; then [ -x "$OUT/helm" ] || exit 1; echo "$OUT"; exit 0; fi
mkdir -p "$OUT/build-logs"
LOG=$OUT/build-logs/helm.log
export GOWORK=off GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
if [ ! -x "$OUT/helm" ]; then
  echo "build-helm: building helm $HV (cold build takes 3-8 min; log: $LOG)" >&2
  (
    set -euo pipefail
    # Like helm's Makefile: the default Kubernetes version (for .Capabilities and kubeVersion checks in
    # `helm template`/`lint`) comes from the client-go it is built with; without it helm assumes v1.20.
    gomod=$(go mod download -json "helm.sh/helm/v3@$HV" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
    cgo=$(awk '$1=="k8s.io/client-go"{print $2}' "$gomod")   # v0.MINOR.PATCH
    minor=$(echo "$cgo" | cut -d. -f2)
    ldf="-s -w -X helm.sh/helm/v3/internal/version.version=$HV -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
      ldf="$ldf -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$minor"
    done
    GOBIN="$OUT" go install -trimpath -ldflags="$ldf" "helm.sh/helm/v3/cmd/helm@$HV"
    "$OUT/helm" version --short
  ) >"$LOG" 2>&1 || {
    echo "build-helm: FAILED building helm $HV; read $LOG" >&2; tail -n 20 "$LOG" >&2 || true; exit 1; }
fi
echo "$OUT"
