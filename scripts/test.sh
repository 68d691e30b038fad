#!/usr/bin/env bash
# The test command: installs what the tests need (idempotent), checks formatting and lints, and runs every test
# of the workspace (unit tests, and integration tests against real etcd and MinIO).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/install-deps.sh)"
export MINIO_BIN
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -q -- -D warnings
cargo test --workspace --no-fail-fast
