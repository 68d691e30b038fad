#!/usr/bin/env bash
# Builds the release binaries of the controller and the backup sidecar and imports them into the test bed's
# containerd under tags that change with the build: kube-etcd-controller/etcd-controller:<version>-<hash> and
# kube-etcd-controller/etcd-backup-sidecar:<version>-<hash>, <hash> being the start of the binary's SHA-256. A pod
# can therefore never run an older build under the same name (the kubelet keeps an image it already has). Also
# tags them :<version>, the names example/etcd-controller.yaml and the controller's default sidecar image use, for
# people applying the manifests by hand. Prints the export lines of both build tags:
#   eval "$(tests/e2e/app-images.sh)"   # KEC_CONTROLLER_IMAGE, KEC_SIDECAR_IMAGE
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
cargo build --release -q -p controller -p backup-sidecar
import() { # repository binary variable
  local repository=$1 binary=$2 variable=$3 hash
  hash=$(sha256sum "$binary" | cut -c1-12)
  "$here/images.sh" rust "$repository:$version-$hash,$repository:$version" "$binary" >&2
  echo "export $variable=$repository:$version-$hash"
}
import kube-etcd-controller/etcd-controller target/release/etcd-controller KEC_CONTROLLER_IMAGE
import kube-etcd-controller/etcd-backup-sidecar target/release/etcd-backup-sidecar KEC_SIDECAR_IMAGE
