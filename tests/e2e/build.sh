#!/usr/bin/env bash
# Builds the test bed's Kubernetes binaries from the k8s.io/kubernetes Go module (through the wrapper module in
# tests/e2e/k8s) into a cache outside the repo, keyed by version. Idempotent: what exists is not built again.
#   tests/e2e/build.sh [component...]     (default: all six)
#   tests/e2e/build.sh etcd-3.5           etcd, etcdctl and etcdutl 3.5 into $KEC_CACHE/etcd/<version>
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

# etcd 3.5 for the etcd images: its own wrapper module (etcd's modules carry replace directives too).
build_etcd35() {
  local version dir
  version=$(sed -n 's/^\tgo.etcd.io\/etcd\/server\/v3 \(v[0-9.]*\)$/\1/p' "$here/etcd-3.5/go.mod")
  dir=$KEC_CACHE/etcd/$version
  mkdir -p "$dir"
  for tool in etcd:server etcdctl:etcdctl etcdutl:etcdutl; do
    local name=${tool%%:*} module=${tool#*:}
    [[ -x $dir/$name ]] && continue
    echo "build.sh: building $name $version" >&2
    (cd "$here/etcd-3.5" && CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "-s -w" -o "$dir/$name.tmp" "go.etcd.io/etcd/$module/v3")
    mv "$dir/$name.tmp" "$dir/$name"
  done
  echo "$dir"
}
if [[ ${components[0]} == etcd-3.5 ]]; then
  build_etcd35
  exit 0
fi

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
