#!/usr/bin/env bash
# Brings the test bed up, idempotently: certificates, an etcd for the API server, kube-apiserver,
# kube-controller-manager, kube-scheduler, CoreDNS, a volume provisioner (local-path, the default StorageClass) and a
# kube-proxy for this machine's own connections on an address of a bridge this script creates, then three nodes
# kec-a, kec-b and kec-c (node.sh: each in its own network namespace with its own containerd, kubelet and kube-proxy;
# zones a, b, c). Prints the KUBECONFIG export and the test bed's idle CPU and memory.
#   tests/e2e/up.sh
# State and logs live in $KEC_CACHE/testbed (logs/*.log); tests/e2e/down.sh stops it all, tests/e2e/fault.sh
# powers nodes off and on and partitions them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
KEC_CACHE=${KEC_CACHE:-$HOME/.cache/kec}
STATE=$KEC_CACHE/testbed
PKI=$STATE/pki
LOGS=$STATE/logs
# Every binary the nodes need too, and etcd 3.5, 3.6 and 3.7 for their images: built here, once, before node.sh runs three times
# side by side (three concurrent builds of one binary would race for its file).
BIN=$("$here/build.sh" kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
for minor in 3.5 3.6 3.7; do "$here/build.sh" "etcd-$minor" >/dev/null; done
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
# A single-node test bed of earlier versions (node kec-node in this machine's own network) is taken down first.
if [[ -f $STATE/pids/kubelet ]]; then
  log "an older single-node test bed is up: taking it down first"
  "$here/down.sh"
fi
mkdir -p "$PKI" "$LOGS" "$STATE/pids" "$STATE/args"

# --- packages -------------------------------------------------------------------------------------------------
need=()
# The nodes' packages too: node.sh runs three times side by side, and apt does not.
for pkg in openssl etcd-server iproute2 curl containerd runc containernetworking-plugins iptables conntrack catatonit \
  busybox-static; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -F "install ok installed" >/dev/null || need+=("$pkg")
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
ip addr show dev "$BRIDGE" | grep -F "$NODE_IP/24" >/dev/null || ip addr add "$NODE_IP/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
# Service addresses are routed onto the bridge, which has no uplink: kube-proxy translates them to pod addresses
# on the way out, and anything it does not translate dies there. (A blackhole route would also stop the node's own
# connections to services, which are routed before they are translated.)
ip route show "$SERVICE_CIDR" | grep -F "dev $BRIDGE" >/dev/null || ip route replace "$SERVICE_CIDR" dev "$BRIDGE"

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
# A process adopted from an earlier bring-up is restarted when its command line changed (a flag added here).
start() { # name command...
  local name=$1 args
  shift
  args=$(printf '%q ' "$@")
  if running "$name"; then
    [[ -f $STATE/args/$name && $(cat "$STATE/args/$name") == "$args" ]] && return
    local pid
    pid=$(cat "$STATE/pids/$name")
    # Only the process this script started (a pid file kept over a reboot may name another one by now).
    if [[ $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) == "$1 "* ]]; then
      log "restarting $name: its command line changed"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    else
      log "starting $name (its pid file named another process)"
    fi
  else
    log "starting $name"
  fi
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/pids/$name"
  printf '%s' "$args" >"$STATE/args/$name"
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
  --default-not-ready-toleration-seconds 30 --default-unreachable-toleration-seconds 30 \
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
  --service-cluster-ip-range "$SERVICE_CIDR" --use-service-account-credentials \
  --node-monitor-period 2s --node-monitor-grace-period 16s

start kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$STATE/scheduler.kubeconfig" \
  --authentication-kubeconfig "$STATE/scheduler.kubeconfig" --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --leader-elect=false

# Running is not enough: a process adopted from an earlier bring-up must also answer.
wait_for kube-controller-manager curl -sfk https://127.0.0.1:10257/healthz
wait_for kube-scheduler curl -sfk https://127.0.0.1:10259/healthz

# --- cluster DNS: CoreDNS on this machine's bridge address, behind the kube-dns service -----------------------------
COREDNS_VERSION=v1.14.7
COREDNS=$KEC_CACHE/coredns/$COREDNS_VERSION/coredns
DNS_IP=10.215.0.10
if [[ ! -x $COREDNS ]]; then
  log "building CoreDNS $COREDNS_VERSION"
  mkdir -p "$(dirname "$COREDNS")"
  CGO_ENABLED=0 GOBIN=$(dirname "$COREDNS") nice -n 10 go install -trimpath "github.com/coredns/coredns@$COREDNS_VERSION"
fi
kubeconfig_for() { # name subject
  local name=$1 subject=$2
  if [[ ! -f $PKI/$name.crt ]]; then
    openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -subj "$subject" -out "$PKI/$name.csr" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >"$PKI/$name.ext"
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 3650 \
      -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  fi
  kubeconfig "$STATE/$name.kubeconfig" "$name"
}
# CoreDNS reads services and endpoints as a member of system:masters would; the test bed has no other tenants.
kubeconfig_for coredns "/O=system:masters/CN=coredns"
kubeconfig_for kube-proxy "/CN=system:kube-proxy"
# A config file is rewritten only when its content changes, and then the component that reads it restarts.
config() { # name file < content
  local name=$1 file=$2 tmp
  tmp=$(mktemp "$file.XXXXXX")
  cat >"$tmp"
  if [[ -f $file ]] && cmp -s "$tmp" "$file"; then rm -f "$tmp"; return; fi
  mv "$tmp" "$file"
  if running "$name"; then
    log "restarting $name: its configuration changed"
    # Until it has exited (the local-path provisioner takes over a second), or start would find it running.
    local pid
    pid=$(cat "$STATE/pids/$name")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
}
config coredns "$STATE/Corefile" <<COREFILE
.:53 {
    bind $NODE_IP
    errors
    health 127.0.0.1:18080
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $STATE/coredns.kubeconfig kec
        pods insecure
    }
    cache 5
}
COREFILE
# No forward plugin: names outside cluster.local get no answer, and no query ever leaves the machine.
start coredns "$COREDNS" -conf "$STATE/Corefile"
wait_for CoreDNS curl -sf --max-time 2 http://127.0.0.1:18080/health
"$BIN/kubectl" --kubeconfig "$STATE/kubeconfig" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata: { name: kube-dns, namespace: kube-system, labels: { k8s-app: kube-dns } }
spec:
  clusterIP: $DNS_IP
  ports: [{ name: dns, port: 53, protocol: UDP }, { name: dns-tcp, port: 53, protocol: TCP }]
---
apiVersion: v1
kind: Endpoints
metadata: { name: kube-dns, namespace: kube-system }
subsets:
  - addresses: [{ ip: $NODE_IP }]
    ports: [{ name: dns, port: 53, protocol: UDP }, { name: dns-tcp, port: 53, protocol: TCP }]
YAML

# --- storage: the local-path provisioner on this machine, and the default StorageClass ------------------------------
# A claim of class local-path (the default) gets a directory on the disk of the node its first pod is scheduled to,
# $STATE/nodes/<x>/local-path/<pv>_<namespace>_<claim>, and a PersistentVolume pinned to that node (as a zonal disk
# is): the volume never moves. Helper pods (busybox, imported by images.sh base) create and remove the directories
# on the node; deleting the claim deletes the volume and its data.
LOCAL_PATH_VERSION=v0.0.30
LOCAL_PATH=$KEC_CACHE/local-path-provisioner/$LOCAL_PATH_VERSION/local-path-provisioner
LOCAL_PATH_NAMESPACE=local-path-storage
BUSYBOX_IMAGE=kec.local/busybox:1
if [[ ! -x $LOCAL_PATH ]]; then
  log "building local-path-provisioner $LOCAL_PATH_VERSION"
  mkdir -p "$(dirname "$LOCAL_PATH")"
  CGO_ENABLED=0 GOBIN=$(dirname "$LOCAL_PATH") nice -n 10 go install -trimpath \
    -ldflags "-X main.VERSION=$LOCAL_PATH_VERSION" "github.com/rancher/local-path-provisioner@$LOCAL_PATH_VERSION"
fi
# It creates PersistentVolumes and helper pods with a certificate in system:masters, as CoreDNS reads with one; the
# test bed has no other tenants.
kubeconfig_for local-path-provisioner "/O=system:masters/CN=local-path-provisioner"
# The namespace of its helper pods, their service account (no token: they never call the API), the scripts they run
# (the provisioner mounts the setup and teardown keys of this ConfigMap at /script), and the default class.
"$BIN/kubectl" --kubeconfig "$STATE/kubeconfig" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata: { name: $LOCAL_PATH_NAMESPACE }
---
apiVersion: v1
kind: ServiceAccount
metadata: { name: local-path-helper, namespace: $LOCAL_PATH_NAMESPACE }
automountServiceAccountToken: false
---
apiVersion: v1
kind: ConfigMap
metadata: { name: local-path-config, namespace: $LOCAL_PATH_NAMESPACE }
data:
  setup: |-
    #!/bin/sh
    set -eu
    mkdir -m 0777 -p "\$VOL_DIR"
  teardown: |-
    #!/bin/sh
    set -eu
    rm -rf "\$VOL_DIR"
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-path
  annotations: { storageclass.kubernetes.io/is-default-class: "true" }
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
allowVolumeExpansion: false
YAML
mkdir -p "$STATE/local-path"
# One directory per node, on that node's disk; a node not listed gets no volume.
config local-path-provisioner "$STATE/local-path/config.json" <<JSON
{
  "nodePathMap": [
    { "node": "kec-a", "paths": ["$STATE/nodes/a/local-path"] },
    { "node": "kec-b", "paths": ["$STATE/nodes/b/local-path"] },
    { "node": "kec-c", "paths": ["$STATE/nodes/c/local-path"] }
  ],
  "cmdTimeoutSeconds": 120
}
JSON
# The helper pods' template: the image is this one (v0.0.30 reads no other; --helper-image is required but unused).
# The provisioner adds the node, the command, the volumes and a toleration of every taint.
config local-path-provisioner "$STATE/local-path/helper-pod.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata: { name: helper-pod }
spec:
  containers:
    - name: helper-pod
      image: $BUSYBOX_IMAGE
      imagePullPolicy: IfNotPresent
YAML
start local-path-provisioner "$LOCAL_PATH" start --kubeconfig "$STATE/local-path-provisioner.kubeconfig" \
  --provisioner-name rancher.io/local-path --namespace "$LOCAL_PATH_NAMESPACE" \
  --config "$STATE/local-path/config.json" --helper-pod-file "$STATE/local-path/helper-pod.yaml" \
  --configmap-name local-path-config --service-account-name local-path-helper --helper-image "$BUSYBOX_IMAGE"

# This machine's own connections to service addresses (the tests, an in-process controller) go through a kube-proxy
# of its own; it is not a node, and no pod runs here.
KUBE_PROXY=$("$here/build.sh" kube-proxy)/kube-proxy
config kube-proxy "$STATE/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: { kubeconfig: $STATE/kube-proxy.kubeconfig }
mode: iptables
clusterCIDR: 10.214.0.0/16
hostnameOverride: kec-host
bindAddress: $NODE_IP
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
conntrack: { maxPerCore: 0 }
YAML
# It waits 30 s for a node of its name before it programs anything: the nodes come up meanwhile, and it is checked
# after them (/livez: /healthz says 503 for a kube-proxy whose node does not exist).
start kube-proxy "$KUBE_PROXY" --config "$STATE/kube-proxy.yaml"
sysctl -qw net.ipv4.ip_forward=1
mount --make-rshared /

# --- the nodes, side by side ---------------------------------------------------------------------------------------
pids=()
for node in a b c; do
  if [[ -f $STATE/nodes/$node/off ]]; then
    log "node kec-$node is powered off (tests/e2e/fault.sh poweron $node); leaving it off"
    continue
  fi
  "$here/node.sh" "$node" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || { log "a node did not come up; see $LOGS"; exit 1; }; done
"$BIN/kubectl" --kubeconfig "$STATE/kubeconfig" get nodes -L topology.kubernetes.io/zone >&2
wait_for kube-proxy curl -sf --max-time 2 http://127.0.0.1:10256/livez
# The provisioner serves no health check; one that could not start (a bad config file, no API server) has exited by
# now, after the nodes' bring-up.
running local-path-provisioner || { log "local-path-provisioner exited; see $LOGS/local-path-provisioner.log"; exit 1; }

# --- what the test bed costs while idle ------------------------------------------------------------------------------
# CPU over 5 s (utime + stime from /proc/PID/stat, in clock ticks) and resident memory of every test bed process:
# the control plane, the three nodes' kubelets, containerds and kube-proxies, and the containers' shims.
idle() {
  local ticks pids_now
  pids_now=$(cat "$STATE"/pids/* 2>/dev/null; pgrep -f "containerd-shim-runc-v2 .*-address $STATE/" || true)
  ticks() { for p in $pids_now; do awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null; done | awk '{ s += $1 } END { print s + 0 }'; }
  local before after rss
  before=$(ticks)
  sleep 5
  after=$(ticks)
  rss=$(for p in $pids_now; do awk '/^VmRSS/ { print $2 }' "/proc/$p/status" 2>/dev/null; done | awk '{ s += $1 } END { print int(s / 1024) }')
  log "idle: $(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.0f", t / hz / 5 * 1000 }') millicores of 2000, ${rss} MiB resident ($(echo "$pids_now" | wc -w) processes)"
}
[[ ${KEC_IDLE:-1} == 0 ]] || idle

log "up: API server at https://$NODE_IP:$APISERVER_PORT"
echo "export KUBECONFIG=$STATE/kubeconfig"
