#!/usr/bin/env bash
# Builds the release binaries of the controller and the backup sidecar and imports them into the test bed's
# containerd as the images the manifests name: kube-etcd-controller/etcd-controller:<version> (as in
# example/etcd-controller.yaml) and kube-etcd-controller/etcd-backup-sidecar:<version> (the controller's default
# sidecar image). Re-imports every time, so the images always hold the current code.
#   tests/e2e/app-images.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
cargo build --release -q -p controller -p backup-sidecar
"$here/images.sh" rust "kube-etcd-controller/etcd-controller:$version" target/release/etcd-controller
"$here/images.sh" rust "kube-etcd-controller/etcd-backup-sidecar:$version" target/release/etcd-backup-sidecar
