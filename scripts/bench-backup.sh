#!/usr/bin/env bash
# Benchmark: a sidecar backup against a plain `etcdctl snapshot save` of the same etcd, in the same run.
# Loads about 200 MB (150,000 keys of 1 KiB by default) into a fresh etcd on loopback, then times both and
# measures the sidecar's peak RSS. Targets: sidecar time <= 1.5x snapshot save; peak RSS < 64 MB.
#   scripts/bench-backup.sh [KEYS] [VALUE_BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${1:-150000}
SIZE=${2:-1024}
eval "$(scripts/install-deps.sh)"

cargo build --release -q -p backup-sidecar
cargo build --release -q -p system-tests --example load_etcd
work=$(mktemp -d)
port=$((20000 + RANDOM % 10000))
cleanup() { kill "$etcd_pid" 2>/dev/null || true; wait "$etcd_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
etcd --data-dir "$work/etcd" --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
  --listen-peer-urls "http://127.0.0.1:$((port + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
  --initial-cluster "default=http://127.0.0.1:$((port + 1))" --quota-backend-bytes $((4 * 1024 * 1024 * 1024)) \
  >"$work/etcd.log" 2>&1 &
etcd_pid=$!
endpoint=http://127.0.0.1:$port
for _ in $(seq 100); do ETCDCTL_API=3 etcdctl --endpoints "$endpoint" endpoint health >/dev/null 2>&1 && break; sleep 0.1; done

echo "loading $KEYS keys of $SIZE bytes..."
target/release/examples/load_etcd "$endpoint" "$KEYS" "$SIZE"
db_size=$(ETCDCTL_API=3 etcdctl --endpoints "$endpoint" endpoint status -w json | sed -n 's/.*"dbSize":\([0-9]*\).*/\1/p')
echo "etcd database: $((db_size / 1024 / 1024)) MiB"

now() { date +%s.%N; }
t0=$(now)
ETCDCTL_API=3 etcdctl --endpoints "$endpoint" snapshot save "$work/plain.db" >/dev/null 2>&1
t1=$(now)
/usr/bin/time -f "%M" -o "$work/rss" target/release/etcd-backup-sidecar backup-once \
  --etcd-endpoints "$endpoint" --storage "file://$work/backups" --cluster-name bench >"$work/backup.json" 2>"$work/sidecar.log"
t2=$(now)
plain=$(awk "BEGIN { print $t1 - $t0 }")
sidecar=$(awk "BEGIN { print $t2 - $t1 }")
ratio=$(awk "BEGIN { print $sidecar / $plain }")
rss_kib=$(tail -1 "$work/rss")
compressed=$(sed -n 's/.*"compressedSize": \([0-9]*\).*/\1/p' "$work/backup.json")
printf 'etcdctl snapshot save: %.2f s (%d MiB)\n' "$plain" "$(($(stat -c %s "$work/plain.db") / 1024 / 1024))"
printf 'sidecar backup:        %.2f s (%d MiB compressed)\n' "$sidecar" "$((compressed / 1024 / 1024))"
printf 'ratio:                 %.2f (target <= 1.5)\n' "$ratio"
printf 'sidecar peak RSS:      %d MiB (target < 64)\n' "$((rss_kib / 1024))"
