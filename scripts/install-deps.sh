#!/usr/bin/env bash
# Installs every real component the tests use, idempotently and quickly when already present:
#   - Debian's etcd-server and etcd-client (etcd 3.4), protobuf-compiler and libprotobuf-dev (etcd-client's build
#     needs protoc and the well-known .proto files);
#   - MinIO, the S3-compatible server, built from its Go module into a cache outside the repo;
#   - Helm (the chart's lint and template tests, the rendered manifests, e2e_deployed's install) and promtool (the
#     alert rules' checks and unit tests), built from their Go modules the same way.
# Prints `export` lines for the paths the tests read (MINIO_BIN, HELM_BIN, PROMTOOL_BIN).
# `install-deps.sh --packages` installs the Debian packages only (scripts/test.sh builds the Go tools beside the
# Rust build).
set -euo pipefail

KEC_CACHE=${KEC_CACHE:-$HOME/.cache/kec}
# MinIO publishes no semver tags; this pseudo-version is the commit the suite was verified with.
MINIO_VERSION=${MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}
MINIO_DIR=$KEC_CACHE/minio/$MINIO_VERSION

log() { echo "install-deps: $*" >&2; }

missing=()
for pkg in etcd-server etcd-client protobuf-compiler libprotobuf-dev curl time ca-certificates openssl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -F "install ok installed" >/dev/null || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# --packages: the Debian packages only (what compiling the workspace needs: protoc), nothing printed.
[[ ${1:-} == --packages ]] && exit 0

if [[ ! -x $MINIO_DIR/minio ]]; then
  command -v go >/dev/null || { log "Go is needed to build MinIO"; exit 1; }
  log "building MinIO $MINIO_VERSION (a few minutes, once)"
  mkdir -p "$MINIO_DIR"
  CGO_ENABLED=0 GOBIN=$MINIO_DIR.tmp nice -n 10 go install -trimpath "github.com/minio/minio@$MINIO_VERSION"
  mv "$MINIO_DIR.tmp/minio" "$MINIO_DIR/minio"
  rmdir "$MINIO_DIR.tmp"
fi

# Go tools: name, module package, version; each built once into $KEC_CACHE/<name>/<version>.
HELM_VERSION=v4.3.2
PROMETHEUS_VERSION=v0.316.0
go_tool() {
  local name=$1 package=$2 version=$3 dir=$KEC_CACHE/$1/$3
  if [[ ! -x $dir/$name ]]; then
    command -v go >/dev/null || { log "Go is needed to build $name"; exit 1; }
    log "building $name $version (once)"
    mkdir -p "$dir"
    CGO_ENABLED=0 GOBIN=$dir.tmp nice -n 10 go install -trimpath -ldflags "-s -w" "$package@$version"
    mv "$dir.tmp/$name" "$dir/$name"
    rmdir "$dir.tmp"
  fi
  echo "$dir/$name"
}
helm=$(go_tool helm helm.sh/helm/v4/cmd/helm "$HELM_VERSION")
promtool=$(go_tool promtool github.com/prometheus/prometheus/cmd/promtool "$PROMETHEUS_VERSION")

echo "export MINIO_BIN=$MINIO_DIR/minio"
echo "export HELM_BIN=$helm"
echo "export PROMTOOL_BIN=$promtool"
