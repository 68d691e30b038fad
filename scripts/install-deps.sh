#!/usr/bin/env bash
# Installs every real component the tests use, idempotently and quickly when already present:
#   - Debian's etcd-server and etcd-client (etcd 3.4), protobuf-compiler and libprotobuf-dev (etcd-client's build
#     needs protoc and the well-known .proto files);
#   - MinIO, the S3-compatible server, built from its Go module into a cache outside the repo.
# Prints `export` lines for the paths the tests read (MINIO_BIN).
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
if [[ ! -x $MINIO_DIR/minio ]]; then
  command -v go >/dev/null || { log "Go is needed to build MinIO"; exit 1; }
  log "building MinIO $MINIO_VERSION (a few minutes, once)"
  mkdir -p "$MINIO_DIR"
  CGO_ENABLED=0 GOBIN=$MINIO_DIR.tmp go install -trimpath "github.com/minio/minio@$MINIO_VERSION"
  mv "$MINIO_DIR.tmp/minio" "$MINIO_DIR/minio"
  rmdir "$MINIO_DIR.tmp"
fi

echo "export MINIO_BIN=$MINIO_DIR/minio"
