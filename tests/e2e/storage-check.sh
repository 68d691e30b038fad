#!/usr/bin/env bash
# Checks the test bed's volume provisioner end to end, and leaves nothing behind:
#   tests/e2e/storage-check.sh
# A claim without a class (so of the default class, local-path) and a pod that writes a file to it: the claim binds,
# its volume is pinned to the pod's node, and the file is on that node's disk, $STATE/nodes/<x>/local-path; then
# pod and claim are deleted, and the volume and its directory go. Needs the test bed up (up.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
KEC_CACHE=${KEC_CACHE:-$HOME/.cache/kec}
STATE=$KEC_CACHE/testbed
BIN=$("$here/build.sh" kubectl)
NS=kec-storage-check
log() { echo "storage-check.sh: $*" >&2; }
k() { "$BIN/kubectl" --kubeconfig "$STATE/kubeconfig" "$@"; }
fail() { log "FAILED: $*"; exit 1; }
# until SECONDS COMMAND...: true once COMMAND succeeds, false after SECONDS.
until_ok() {
  local limit=$1
  shift
  for _ in $(seq 1 $((limit * 2))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  return 1
}
cleanup() { k delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true; }
trap cleanup EXIT

k delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
k create namespace "$NS" >/dev/null
k apply -n "$NS" -f - >/dev/null <<'YAML'
apiVersion: v1
kind: PersistentVolumeClaim
metadata: { name: data }
spec:
  accessModes: [ReadWriteOnce]
  resources: { requests: { storage: 16Mi } }
---
apiVersion: v1
kind: Pod
metadata: { name: writer }
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 0
  containers:
    - name: writer
      image: kec.local/busybox:1
      imagePullPolicy: IfNotPresent
      command: [sh, -c, 'echo written-by-$(hostname) >/data/hello']
      volumeMounts: [{ name: data, mountPath: /data }]
  volumes: [{ name: data, persistentVolumeClaim: { claimName: data } }]
YAML

class=$(k get pvc -n "$NS" data -o jsonpath='{.spec.storageClassName}')
[[ $class == local-path ]] || fail "the claim got class '$class', not the default local-path"
phase() { [[ $(k get pod -n "$NS" writer -o jsonpath='{.status.phase}') == Succeeded ]]; }
until_ok 120 phase || { k describe pod -n "$NS" writer >&2; fail "the writer pod did not succeed"; }
bound() { [[ $(k get pvc -n "$NS" data -o jsonpath='{.status.phase}') == Bound ]]; }
until_ok 10 bound || fail "the claim is not Bound"
pv=$(k get pvc -n "$NS" data -o jsonpath='{.spec.volumeName}')
node=$(k get pod -n "$NS" writer -o jsonpath='{.spec.nodeName}')
pinned=$(k get pv "$pv" -o jsonpath='{.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}')
path=$(k get pv "$pv" -o jsonpath='{.spec.hostPath.path}')
log "claim $NS/data Bound to $pv (class $class), pinned to $pinned; the pod ran on $node; data at $path"
[[ $pinned == "$node" ]] || fail "the volume is pinned to '$pinned', the pod ran on '$node'"
[[ $path == "$STATE/nodes/${node#kec-}/local-path/${pv}_${NS}_data" ]] || fail "the volume is at $path, not on $node's disk"
content=$(cat "$path/hello")
log "$path/hello: $content"
[[ $content == "written-by-writer" ]] || fail "unexpected content '$content'"

k delete pod -n "$NS" writer --wait=true >/dev/null
k delete pvc -n "$NS" data --wait=true >/dev/null
gone() { ! k get pv "$pv" >/dev/null 2>&1; }
until_ok 120 gone || fail "the volume $pv was not deleted"
[[ ! -e $path ]] || fail "$path is still there"
log "claim deleted: the volume $pv and $path are gone"
log "passed"
