#!/usr/bin/env bash
# Builds the test bed's Kubernetes binaries from the k8s.io/kubernetes Go module (through the wrapper module in
# tests/e2e/k8s) into a cache outside the repo, keyed by version. Idempotent: what exists is not built again.
#   tests/e2e/build.sh [component...]     (default: all six)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
KEC_CACHE=${KEC_CACHE:-$HOME/.cache/kec}
K8S_VERSION=$(sed -n 's/^require k8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$here/k8s/go.mod")
BIN=$KEC_CACHE/k8s/$K8S_VERSION/bin
components=("$@")
((${#components[@]})) || components=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

major=${K8S_VERSION#v}; major=${major%%.*}
minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

mkdir -p "$BIN"
cd "$here/k8s"
for component in "${components[@]}"; do
  if [[ -x $BIN/$component ]]; then
    continue
  fi
  echo "build.sh: building $component $K8S_VERSION" >&2
  start=$SECONDS
  # nice: the machine has two cores, and the Rust build may be running beside this.
  CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$BIN/$component.tmp" "k8s.io/kubernetes/cmd/$component"
  mv "$BIN/$component.tmp" "$BIN/$component"
  echo "build.sh: $component took $((SECONDS - start)) s" >&2
done
echo "$BIN"
