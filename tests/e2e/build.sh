#!/usr/bin/env bash
# Builds the test bed's Kubernetes binaries from the k8s.io/kubernetes Go module (through the wrapper module in
# tests/e2e/k8s) into a cache outside the repo, keyed by version. Idempotent: what exists is not built again.
#   tests/e2e/build.sh [component...]     (default: all six)
#   tests/e2e/build.sh etcd-3.5           etcd, etcdctl and etcdutl 3.5 into $KEC_CACHE/etcd/<version>
#   tests/e2e/build.sh etcd-3.6|etcd-3.7  the same for 3.6 or 3.7
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

# etcd 3.5, 3.6 and 3.7 for the etcd images: each from its own wrapper module (etcd's modules carry replace
# directives too), at the patch its go.mod pins: the server, etcdctl (3.4 members are probed with it, and keep
# that probe when they are upgraded in place) and etcdutl (restores), as in etcd's own images.
build_etcd() {
  local minor=$1 version dir tools
  [[ -f $here/etcd-$minor/go.mod ]] || { echo "build.sh: no wrapper module tests/e2e/etcd-$minor" >&2; exit 2; }
  version=$(sed -n 's/^\tgo.etcd.io\/etcd\/server\/v3 \(v[0-9.]*\)$/\1/p' "$here/etcd-$minor/go.mod")
  dir=$KEC_CACHE/etcd/$version
  mkdir -p "$dir"
  tools="etcd:server etcdctl:etcdctl etcdutl:etcdutl"
  for tool in $tools; do
    local name=${tool%%:*} module=${tool#*:}
    [[ -x $dir/$name ]] && continue
    echo "build.sh: building $name $version" >&2
    local start=$SECONDS
    (cd "$here/etcd-$minor" && CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "-s -w" -o "$dir/$name.tmp" "go.etcd.io/etcd/$module/v3")
    mv "$dir/$name.tmp" "$dir/$name"
    echo "build.sh: $name $version took $((SECONDS - start)) s" >&2
  done
  echo "$dir"
}
case ${components[0]} in
  etcd-3.5 | etcd-3.6 | etcd-3.7)
    build_etcd "${components[0]#etcd-}"
    exit 0
    ;;
esac

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
