#!/usr/bin/env bash
# The test command: installs what the tests need (idempotent), checks formatting and lints, runs every test of
# the workspace (unit tests; integration tests against real etcd and MinIO), then brings up the Kubernetes test
# bed (tests/e2e/up.sh: built from upstream Go modules on first use, cached after) and runs the end-to-end suite
# against its real API server. Set KEC_SKIP_E2E=1 to stop after the integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/install-deps.sh)"
export MINIO_BIN
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -q -- -D warnings
cargo test --workspace --no-fail-fast

if [[ ${KEC_SKIP_E2E:-0} == 1 ]]; then
  echo "test.sh: end-to-end suite skipped (KEC_SKIP_E2E=1)"
  exit 0
fi
start=$SECONDS
trap 'tests/e2e/down.sh' EXIT
# Not `eval "$(up.sh)"`: eval of an empty string succeeds, which would hide a failed bring-up.
if ! up_env=$(tests/e2e/up.sh); then
  echo "test.sh: the test bed did not come up; the tail of each of its logs follows" >&2
  for f in "${KEC_CACHE:-$HOME/.cache/kec}"/testbed/logs/*.log; do
    [[ -f $f ]] && { echo "--- $f" >&2; tail -n 30 "$f" >&2; }
  done
  exit 1
fi
eval "$up_env"
[[ -n ${KUBECONFIG:-} ]] || { echo "test.sh: up.sh printed no KUBECONFIG" >&2; exit 1; }
echo "test.sh: test bed up in $((SECONDS - start)) s"
tests/e2e/app-images.sh
KUBECTL=$("$PWD/tests/e2e/build.sh" kubectl)/kubectl
etcd35=$(tests/e2e/build.sh etcd-3.5)
# The e2e suite restores snapshots of the clusters it runs (etcd 3.5) with etcd 3.5's own tools.
export KUBECTL ETCD_BIN=$etcd35/etcd ETCDCTL_BIN=$etcd35/etcdctl
if ! cargo test -p system-tests --features e2e --test e2e_api --test e2e_controller --test e2e_lifecycle \
  --test e2e_leader --test e2e_deployed --test e2e_recovery -- --nocapture --test-threads 1; then
  echo "test.sh: the end-to-end suite failed; the deployed controller's log, if any, follows" >&2
  "$KUBECTL" -n etcd-controller logs deployment/etcd-controller --tail 80 >&2 || true
  "$KUBECTL" get pods -A -o wide >&2 || true
  exit 1
fi
