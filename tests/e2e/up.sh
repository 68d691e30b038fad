#!/usr/bin/env bash
# Brings the test bed up, idempotently: certificates, an etcd for the API server, kube-apiserver,
# kube-controller-manager and kube-scheduler on an address of a bridge this script creates, then the node
# (node.sh: containerd, CNI, kubelet, images). Prints the KUBECONFIG export.
#   tests/e2e/up.sh
# State and logs live in $KEC_CACHE/testbed (logs/*.log); tests/e2e/down.sh stops it all.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
KEC_CACHE=${KEC_CACHE:-$HOME/.cache/kec}
STATE=$KEC_CACHE/testbed
PKI=$STATE/pki
LOGS=$STATE/logs
BIN=$("$here/build.sh" kube-apiserver kube-controller-manager kube-scheduler kubectl)
# Addresses that exist only on this machine: the node's address on a bridge of our own, and a service range
# routed onto that bridge, which has no uplink.
BRIDGE=kecbr0
NODE_IP=10.213.0.1
SERVICE_CIDR=10.215.0.0/16
SERVICE_IP=10.215.0.1
ETCD_CLIENT=127.0.0.1:12379
ETCD_PEER=127.0.0.1:12380
APISERVER_PORT=6443

log() { echo "up.sh: $*" >&2; }
mkdir -p "$PKI" "$LOGS" "$STATE/pids"

# --- packages -------------------------------------------------------------------------------------------------
need=()
for pkg in openssl etcd-server iproute2 curl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --- network --------------------------------------------------------------------------------------------------
if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
  ip link add "$BRIDGE" type bridge
fi
ip addr show dev "$BRIDGE" | grep -q "$NODE_IP/24" || ip addr add "$NODE_IP/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
# Service addresses are routed onto the bridge, which has no uplink: kube-proxy translates them to pod addresses
# on the way out, and anything it does not translate dies there. (A blackhole route would also stop the node's own
# connections to services, which are routed before they are translated.)
ip route show "$SERVICE_CIDR" | grep -q "dev $BRIDGE" || ip route replace "$SERVICE_CIDR" dev "$BRIDGE"

# --- certificates ---------------------------------------------------------------------------------------------
cert() { # name subject [extensions]
  local name=$1 subject=$2 ext=${3:-}
  [[ -f $PKI/$name.crt ]] && return
  openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -subj "$subject" -out "$PKI/$name.csr" 2>/dev/null
  if [[ -n $ext ]]; then
    printf '%s\n' "$ext" >"$PKI/$name.ext"
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 3650 \
      -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  else
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 3650 \
      -out "$PKI/$name.crt" 2>/dev/null
  fi
}
if [[ ! -f $PKI/ca.crt ]]; then
  log "creating certificates"
  openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -subj "/CN=kec-testbed-ca" -days 3650 \
    -out "$PKI/ca.crt" 2>/dev/null
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
fi
cert apiserver "/CN=kube-apiserver" "subjectAltName=IP:127.0.0.1,IP:$NODE_IP,IP:$SERVICE_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth"
cert admin "/O=system:masters/CN=kec-admin" "extendedKeyUsage=clientAuth"
cert controller-manager "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
cert scheduler "/CN=system:kube-scheduler" "extendedKeyUsage=clientAuth"

kubeconfig() { # file user
  local file=$1 user=$2
  [[ -f $file ]] && return
  "$BIN/kubectl" config --kubeconfig "$file" set-cluster kec --server "https://$NODE_IP:$APISERVER_PORT" \
    --certificate-authority "$PKI/ca.crt" --embed-certs >/dev/null
  "$BIN/kubectl" config --kubeconfig "$file" set-credentials "$user" --client-certificate "$PKI/$user.crt" \
    --client-key "$PKI/$user.key" --embed-certs >/dev/null
  "$BIN/kubectl" config --kubeconfig "$file" set-context kec --cluster kec --user "$user" >/dev/null
  "$BIN/kubectl" config --kubeconfig "$file" use-context kec >/dev/null
}
kubeconfig "$STATE/kubeconfig" admin
kubeconfig "$STATE/controller-manager.kubeconfig" controller-manager
kubeconfig "$STATE/scheduler.kubeconfig" scheduler

# --- processes ------------------------------------------------------------------------------------------------
running() { [[ -f $STATE/pids/$1 ]] && kill -0 "$(cat "$STATE/pids/$1")" 2>/dev/null; }
start() { # name command...
  local name=$1
  shift
  running "$name" && return
  log "starting $name"
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/pids/$name"
}
wait_for() { # what url-or-command...
  local what=$1
  shift
  for _ in $(seq 1 120); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  log "$what did not come up; see $LOGS"
  exit 1
}

start etcd etcd --name testbed --data-dir "$STATE/etcd" \
  --listen-client-urls "http://$ETCD_CLIENT" --advertise-client-urls "http://$ETCD_CLIENT" \
  --listen-peer-urls "http://$ETCD_PEER" --initial-advertise-peer-urls "http://$ETCD_PEER" \
  --initial-cluster "testbed=http://$ETCD_PEER"
wait_for etcd curl -sf "http://$ETCD_CLIENT/health"

start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers "http://$ETCD_CLIENT" \
  --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$APISERVER_PORT" \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --service-account-issuer "https://kubernetes.default.svc.cluster.local" \
  --authorization-mode Node,RBAC --allow-privileged=true \
  --kubelet-preferred-address-types InternalIP \
  --kubelet-client-certificate "$PKI/admin.crt" --kubelet-client-key "$PKI/admin.key" \
  --kubelet-certificate-authority "$PKI/ca.crt"
wait_for kube-apiserver "$BIN/kubectl" --kubeconfig "$STATE/kubeconfig" get --raw /readyz

# The mark the suites look for before they touch anything (tests/tests/support: they delete namespaces and volumes).
"$BIN/kubectl" --kubeconfig "$STATE/kubeconfig" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: ConfigMap
metadata: { name: kec-testbed, namespace: kube-system }
data: { madeBy: tests/e2e/up.sh, state: "$STATE" }
YAML

start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig "$STATE/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --leader-elect=false \
  --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
  --service-cluster-ip-range "$SERVICE_CIDR" --use-service-account-credentials

start kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$STATE/scheduler.kubeconfig" \
  --authentication-kubeconfig "$STATE/scheduler.kubeconfig" --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --leader-elect=false

# Running is not enough: a process adopted from an earlier bring-up must also answer.
wait_for kube-controller-manager curl -sfk https://127.0.0.1:10257/healthz
wait_for kube-scheduler curl -sfk https://127.0.0.1:10259/healthz

"$here/node.sh"

log "up: API server at https://$NODE_IP:$APISERVER_PORT"
echo "export KUBECONFIG=$STATE/kubeconfig"
