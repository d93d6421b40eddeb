#!/usr/bin/env bash
# Build the local Kubernetes control-plane binaries from the Go module proxy into a
# version-keyed cache OUTSIDE the repo. Each component is rebuilt only when missing.
#   etcd (go.etcd.io/etcd/server/v3), kube-apiserver, kube-controller-manager,
#   kube-scheduler (k8s.io/kubernetes via a wrapper module), kwok (sigs.k8s.io/kwok).
# Prints the directory (the KUBEBUILDER_ASSETS value) on the last line of stdout.
set -euo pipefail
if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then echo "$KUBEBUILDER_ASSETS"; exit 0; fi  # envtest convention
KV=${RECOPS_K8S_VERSION:-v1.37.2}
ETCD_V=${RECOPS_ETCD_VERSION:-v3.6.14}
KWOK_V=${RECOPS_KWOK_VERSION:-v0.8.0}
OUT=${RECOPS_TESTBIN:-${XDG_CACHE_HOME:-$HOME/.cache}/recops/testbin/k8s-$KV-etcd-$ETCD_V-kwok-$KWOK_V}
LOGDIR=$OUT/build-logs
if [ -n "${RECOPS_PRINT_ONLY:-}" ]; then  # just say where the binaries are, if they are all there
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do [ -x "$OUT/$b" ] || exit 1; done
  echo "$OUT"; exit 0
fi
mkdir -p "$OUT" "$LOGDIR"
export GOWORK=off GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

fail() { echo "build-testbin: FAILED building $1; read $2" >&2; tail -n 20 "$2" >&2 || true; exit 1; }

build_k8s() {
  local log=$LOGDIR/kubernetes.log
  [ -x "$OUT/kube-apiserver" ] && [ -x "$OUT/kube-controller-manager" ] && [ -x "$OUT/kube-scheduler" ] && return 0
  echo "build-testbin: building kube-apiserver, kube-controller-manager, kube-scheduler $KV (cold build takes 10-25 min; log: $log)" >&2
  (
    set -euo pipefail
    local sv=v0.${KV#v1.} work
    work=$(mktemp -d -t recops-k8s-testbin.XXXXXX)
    cd "$work"
    printf 'module local.invalid/k8s-testbin\n\ngo 1.26.0\n\ngodebug default=go1.26\n' > go.mod
    gomod=$(go mod download -json "k8s.io/kubernetes@$KV" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
    for m in $(go mod edit -json "$gomod" | python3 -c '
import json,sys
for r in json.load(sys.stdin).get("Replace") or []:
    if r["New"]["Path"].startswith("./staging/"): print(r["Old"]["Path"])'); do
      go mod edit -replace="$m=$m@$sv"
    done
    go get "k8s.io/kubernetes/cmd/kube-apiserver@$KV" "k8s.io/kubernetes/cmd/kube-controller-manager@$KV" "k8s.io/kubernetes/cmd/kube-scheduler@$KV"
    minor=$(echo "$KV" | cut -d. -f2)
    ldf="-s -w"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldf="$ldf -X $p.gitVersion=$KV -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    done
    go build -p 2 -trimpath -tags=selinux,notest,grpcnotrace -ldflags="$ldf" -o "$OUT/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler
    "$OUT/kube-apiserver" --version
    rm -rf "$work"
  ) >"$log" 2>&1 || fail "kube-apiserver/kube-controller-manager/kube-scheduler" "$log"
}

build_etcd() {
  local log=$LOGDIR/etcd.log
  [ -x "$OUT/etcd" ] && return 0
  echo "build-testbin: building etcd $ETCD_V (log: $log)" >&2
  (
    set -euo pipefail
    local work; work=$(mktemp -d -t recops-etcd-testbin.XXXXXX); cd "$work"
    printf 'module local.invalid/etcd-testbin\n\ngo 1.26.0\n' > go.mod
    go get "go.etcd.io/etcd/server/v3@$ETCD_V"
    go build -trimpath -ldflags="-s -w" -o "$OUT/etcd" go.etcd.io/etcd/server/v3
    "$OUT/etcd" --version
    rm -rf "$work"
  ) >"$log" 2>&1 || fail etcd "$log"
}

build_kwok() {
  local log=$LOGDIR/kwok.log
  [ -x "$OUT/kwok" ] && return 0
  echo "build-testbin: building kwok $KWOK_V (log: $log)" >&2
  ( GOBIN="$OUT" go install -trimpath -ldflags="-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_V" && "$OUT/kwok" --version ) >"$log" 2>&1 || fail kwok "$log"
}

build_etcd
build_kwok
build_k8s
echo "$OUT"
