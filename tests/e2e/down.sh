#!/usr/bin/env bash
# Stops everything tests/e2e/up.sh started and removes its state; keeps the build cache.
set -euo pipefail
KEC_CACHE=${KEC_CACHE:-$HOME/.cache/kec}
STATE=$KEC_CACHE/testbed
for name in kube-controller-manager kube-apiserver etcd; do
  pidfile=$STATE/pids/$name
  if [[ -f $pidfile ]]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  fi
done
ip route del blackhole 10.215.0.0/16 2>/dev/null || true
ip link del kecbr0 2>/dev/null || true
rm -rf "$STATE"
echo "down.sh: test bed stopped and its state removed" >&2
