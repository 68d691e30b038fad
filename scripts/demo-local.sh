#!/usr/bin/env bash
# The main job on this machine: a local etcd with the backup sidecar beside it taking scheduled backups into a
# local directory, and curl triggering, listing and fetching one. Stops everything at the end unless KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/install-deps.sh)"
cargo build -q -p backup-sidecar
work=${DEMO_DIR:-$(mktemp -d /tmp/kec-demo.XXXX)}
mkdir -p "$work"
etcd_port=32379
api=127.0.0.1:32999
pids=()
stop() { ((${#pids[@]})) && kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null || true; }
[[ ${KEEP:-0} == 1 ]] || trap stop EXIT

echo "== etcd on 127.0.0.1:$etcd_port (data in $work/etcd)"
etcd --name demo --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
  --initial-cluster "demo=http://127.0.0.1:$((etcd_port + 1))" >"$work/etcd.log" 2>&1 &
pids+=($!)
export ETCDCTL_API=3
for _ in $(seq 100); do etcdctl --endpoints "127.0.0.1:$etcd_port" endpoint health >/dev/null 2>&1 && break; sleep 0.1; done
for i in $(seq 1 20); do etcdctl --endpoints "127.0.0.1:$etcd_port" put "/demo/key$i" "value $i" >/dev/null; done

# A backup is the whole database: the API wants a token.
head -c 24 /dev/urandom | base64 >"$work/token"
echo "== backup sidecar on $api: every 5m, keep 10, into file://$work/backups (token in $work/token)"
target/debug/etcd-backup-sidecar serve --etcd-endpoints "http://127.0.0.1:$etcd_port" --cluster-name demo \
  --storage "file://$work/backups" --listen "$api" --every 5m --max-backups 10 \
  --auth-token-file "$work/token" >"$work/sidecar.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://$api/readyz" >/dev/null && break; sleep 0.1; done
auth=(-H "Authorization: Bearer $(cat "$work/token")")

etcdctl --endpoints "127.0.0.1:$etcd_port" put /demo/late "written after the start-up backup" >/dev/null
echo "== curl -X POST http://$api/v1/backups"
curl -sS "${auth[@]}" -X POST "http://$api/v1/backups" -w '\nHTTP %{http_code}\n'
echo "== curl http://$api/v1/backups"
curl -sS "${auth[@]}" "http://$api/v1/backups"; echo
echo "== curl -o latest.db.gz http://$api/v1/backups/latest"
curl -sS "${auth[@]}" -D - -o "$work/latest.db.gz" "http://$api/v1/backups/latest" | grep -i '^x-'
echo "== etcd-backup-sidecar restore --from http://$api --backup latest"
target/debug/etcd-backup-sidecar restore --from "http://$api" --backup latest --output "$work/restored.db" \
  --auth-token-file "$work/token"
etcdctl snapshot status "$work/restored.db" -w table
echo "== curl http://$api/v1/status"
curl -sS "${auth[@]}" "http://$api/v1/status"; echo
if [[ ${KEEP:-0} == 1 ]]; then
  echo "Still running (pids ${pids[*]}); logs in $work. Stop with: kill ${pids[*]}"
fi
