#!/usr/bin/env bash
# The test command: installs what the tests need (idempotent), checks formatting and lints, runs every test of
# the workspace (unit tests; integration tests against real etcd and MinIO), then brings up the Kubernetes test
# bed (tests/e2e/up.sh: built from upstream Go modules on first use, cached after), builds this commit's images
# and runs every end-to-end suite (each `[[test]]` of tests/Cargo.toml that requires the `e2e` feature) against
# its real API server, one suite after another; a failing suite does not stop the others, and the run ends with
# a summary and fails if any failed.
# KEC_SKIP_E2E=1 stops after the integration tests (for people; ignored when CI is set).
# KEC_E2E_BUDGET (seconds, default 4800: CI stops a run at 90 minutes) bounds the whole run, counted from this
# script's start, so that a bad run still prints its summary and takes the test bed down: each suite gets at
# most what is left of it (and its own cap); a suite that finds the budget spent is not started and counts as failed.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "test.sh: $*" >&2; exit 1; }
SECONDS=0
budget=${KEC_E2E_BUDGET:-4800}
[[ $budget =~ ^[0-9]+$ ]] || fail "KEC_E2E_BUDGET must be a number of seconds (got '$budget')"

# The Debian packages first (compiling the workspace needs protoc); every Go build (MinIO, Helm and promtool for
# the tests; Kubernetes and etcd 3.5-3.7 for the test bed: many minutes cold, nothing when cached) runs beside the
# Rust build below, niced, in a session of its own (so that stopping it stops every `go build` it started), and is
# waited for before the tests run: the Rust build leaves a core idle for much of its time.
scripts/install-deps.sh --packages || fail "scripts/install-deps.sh --packages failed (its output is above)"
gobuild_log=$(mktemp)
deps_file=$(mktemp)
bed=0
if [[ ${KEC_SKIP_E2E:-0} != 1 || -n ${CI:-} ]]; then bed=1; fi
setsid --wait bash -c 'scripts/install-deps.sh >"$1" || exit 1
  if (($2)); then
    tests/e2e/build.sh >/dev/null && for minor in 3.5 3.6 3.7; do tests/e2e/build.sh "etcd-$minor" >/dev/null; done
  fi' gobuild "$deps_file" "$bed" >"$gobuild_log" 2>&1 &
gobuild=$!
trap 'kill -- "-$gobuild" 2>/dev/null || true; rm -f "$gobuild_log" "$deps_file"' EXIT

# Every e2e_* file is a suite that needs the test bed: it must be declared with `required-features = ["e2e"]`,
# or `cargo test --workspace` would run it without one.
mapfile -t suites < <(awk '
  /^\[\[test\]\]/ { name = ""; next }
  /^name *=/ { name = $0; sub(/^name *= *"/, "", name); sub(/".*/, "", name) }
  /^required-features *=.*"e2e"/ { print name }' tests/Cargo.toml)
for file in tests/tests/e2e_*.rs; do
  name=$(basename "$file" .rs)
  printf '%s\n' "${suites[@]}" | grep -x "$name" >/dev/null ||
    fail "$file is not declared in tests/Cargo.toml as a [[test]] with required-features = [\"e2e\"]"
done
((${#suites[@]})) || fail "no end-to-end suite found in tests/Cargo.toml"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -q -- -D warnings
cargo test --workspace --no-run -q
if ! wait "$gobuild"; then
  cat "$gobuild_log" >&2
  fail "building the Go tools (scripts/install-deps.sh) or the test bed's binaries (tests/e2e/build.sh) failed (the output is above)"
fi
cat "$gobuild_log"
echo "test.sh: Go builds done at $SECONDS s"
# Not `eval "$(install-deps.sh)"`: eval of an empty string succeeds, which would hide a failed install.
deps=$(cat "$deps_file")
eval "$deps"
[[ -x ${MINIO_BIN:-} ]] || fail "install-deps.sh printed no usable MINIO_BIN (got '${MINIO_BIN:-}')"
for tool in HELM_BIN PROMTOOL_BIN; do
  [[ -x ${!tool:-} ]] || fail "install-deps.sh printed no usable $tool (got '${!tool:-}')"
done
export MINIO_BIN HELM_BIN PROMTOOL_BIN
cargo test --workspace --no-fail-fast

if [[ ${KEC_SKIP_E2E:-0} == 1 ]]; then
  if [[ -n ${CI:-} ]]; then
    echo "test.sh: KEC_SKIP_E2E is ignored because CI is set: the end-to-end suite runs" >&2
  else
    echo "test.sh: end-to-end suite skipped (KEC_SKIP_E2E=1)"
    exit 0
  fi
fi
start=$SECONDS
trap 'tests/e2e/down.sh' EXIT
# Not `eval "$(up.sh)"`, for the same reason as above.
if ! up_env=$(tests/e2e/up.sh); then
  echo "test.sh: the test bed did not come up; the tail of each of its logs follows" >&2
  for f in "${KEC_CACHE:-$HOME/.cache/kec}"/testbed/logs/*.log; do
    [[ -f $f ]] && { echo "--- $f" >&2; tail -n 30 "$f" >&2; }
  done
  exit 1
fi
eval "$up_env"
[[ -n ${KUBECONFIG:-} ]] || fail "up.sh printed no KUBECONFIG"
echo "test.sh: test bed up in $((SECONDS - start)) s"
images=$(tests/e2e/app-images.sh) || fail "building this commit's images failed"
eval "$images"
[[ -n ${KEC_CONTROLLER_IMAGE:-} && -n ${KEC_SIDECAR_IMAGE:-} ]] || fail "app-images.sh printed no image names"
KUBECTL=$("$PWD/tests/e2e/build.sh" kubectl)/kubectl
etcd35=$(tests/e2e/build.sh etcd-3.5)
# The e2e suite restores snapshots of the clusters it runs (etcd 3.5) with etcd 3.5's own tools.
# The kubectl plugin the suites run: `cargo test --workspace` above built it (its CLI test runs the binary; a
# separate `cargo build -p kubectl-etcd` would build its dependencies again with other features).
KUBECTL_ETCD=$PWD/target/debug/kubectl-etcd
[[ -x $KUBECTL_ETCD ]] || fail "cargo test --workspace built no $KUBECTL_ETCD"
export KUBECTL ETCD_BIN=$etcd35/etcd ETCDCTL_BIN=$etcd35/etcdctl KEC_CONTROLLER_IMAGE KEC_SIDECAR_IMAGE KUBECTL_ETCD
# Only the suites: the other tests were built and run above.
# shellcheck disable=SC2046 # one `--test NAME` pair per suite
cargo build -q -p system-tests --features e2e $(printf -- '--test %s ' "${suites[@]}")

# A hung suite must not take the whole run past CI's limit: each has a cap, and none runs past the budget.
suite_cap() {
  case $1 in
    e2e_recovery) echo 1200 ;;
    e2e_nodes | e2e_deployed) echo 900 ;;
    *) echo 600 ;;
  esac
}

failed=()
summary=()
for suite in "${suites[@]}"; do
  left=$((budget - SECONDS))
  if ((left <= 0)); then
    echo "test.sh: === $suite SKIPPED: the budget of $budget s (KEC_E2E_BUDGET) is spent" >&2
    summary+=("$(printf '%-16s SKIPPED (budget spent)' "$suite")")
    failed+=("$suite")
    continue
  fi
  cap=$(suite_cap "$suite")
  ((cap < left)) || cap=$left
  echo "test.sh: === $suite (at most $cap s; $left s of the budget left)"
  began=$SECONDS
  ok=0
  timeout "$cap" cargo test -q -p system-tests --features e2e --test "$suite" -- --nocapture --test-threads 1 || ok=$?
  # A suite that died without undoing its node faults (killed, timed out, aborted) must not leave a node off or
  # partitioned for the next one.
  tests/e2e/fault.sh reset >/dev/null 2>&1 || echo "test.sh: fault.sh reset failed after $suite" >&2
  if ((ok == 0)); then
    summary+=("$(printf '%-16s passed in %4d s' "$suite" $((SECONDS - began)))")
  else
    how=FAILED
    ((ok != 124)) || how="FAILED (timed out at $cap s)"
    summary+=("$(printf '%-16s %s after %4d s' "$suite" "$how" $((SECONDS - began)))")
    failed+=("$suite")
    echo "test.sh: $suite failed; the deployed controller's log (if any) and every pod follow" >&2
    "$KUBECTL" -n etcd-controller logs -l app.kubernetes.io/name=etcd-controller --prefix --tail 80 >&2 || true
    "$KUBECTL" get pods -A -o wide >&2 || true
    "$KUBECTL" get nodes -o wide >&2 || true
  fi
  # Nor leave its clusters running to load the next one. Not waited for: every suite makes its namespace with
  # support::fresh_namespace, which waits until one of the same name is gone.
  leftover=$("$KUBECTL" get namespaces -o name | sed -n 's|^namespace/\(e2e-.*\)$|\1|p') ||
    echo "test.sh: listing namespaces failed after $suite" >&2
  for ns in $leftover; do
    "$KUBECTL" delete namespace "$ns" --wait=false >/dev/null ||
      echo "test.sh: deleting namespace $ns failed after $suite" >&2
  done
done
echo "test.sh: end-to-end suites (test bed and images $((SECONDS - start)) s in all):"
printf '  %s\n' "${summary[@]}"
((${#failed[@]} == 0)) || fail "failed end-to-end suites: ${failed[*]}"
