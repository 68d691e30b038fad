#!/usr/bin/env bash
# Brings up one node of the test bed on top of the control plane that up.sh started, idempotently:
#   tests/e2e/node.sh a|b|c
# Node kec-<x> lives in its own network namespace kec-<x> (address 10.213.0.1<i> on the bridge kecbr0, pod range
# 10.214.<i>.0/24 on its own bridge kecpods0), with its own containerd (root, state and socket under
# $STATE/nodes/<x>), its own kubelet (cgroup root /kec-<x>, zone label topology.kubernetes.io/zone=<x>) and its own
# kube-proxy. Its processes share this machine's mounts and PIDs; only the network is theirs. A node powered off by
# fault.sh stays off: node.sh refuses to start it (fault.sh poweron does).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
KEC_CACHE=${KEC_CACHE:-$HOME/.cache/kec}
STATE=$KEC_CACHE/testbed
PKI=$STATE/pki
LOGS=$STATE/logs
x=${1:?usage: node.sh a|b|c}
case $x in a) i=1 ;; b) i=2 ;; c) i=3 ;; *) echo "node.sh: no node '$x' (a, b or c)" >&2; exit 2 ;; esac
NODE=kec-$x
NETNS=kec-$x
NODE_STATE=$STATE/nodes/$x
NODE_IP=10.213.0.1$i
HOST_IP=10.213.0.1
POD_SUBNET=10.214.$i.0/24
SERVICE_CIDR=10.215.0.0/16
DNS_IP=10.215.0.10
PAUSE_IMAGE=kec.local/pause:3.10
SOCK=$NODE_STATE/containerd/containerd.sock
BIN=$("$here/build.sh" kubelet kube-proxy kubectl)

log() { echo "node.sh $x: $*" >&2; }
fail() { log "$*; see $LOGS/$x-*.log"; exit 1; }
if [[ -f $NODE_STATE/off && -z ${KEC_POWERING_ON:-} ]]; then
  fail "node $NODE is powered off (tests/e2e/fault.sh poweron $x starts it)"
fi
in_node() { nsenter --net="/run/netns/$NETNS" "$@"; }
running() { [[ -f $STATE/pids/$1 ]] && kill -0 "$(cat "$STATE/pids/$1")" 2>/dev/null; }
# Components whose configuration write_config changed: start restarts them if they run (a reused test bed must
# come out as a fresh one would), and nothing else touches a running component's files (kube-proxy exits when its
# configuration file is written at all).
changed=()
write_config() { # component file < content
  local component=$1 file=$2 tmp
  tmp=$(mktemp "$file.XXXXXX")
  cat >"$tmp"
  if [[ -f $file ]] && cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
  else
    mv "$tmp" "$file"
    changed+=("$component")
  fi
}
stop() {
  local pid
  running "$1" || return 0
  pid=$(cat "$STATE/pids/$1")
  log "restarting $1: its configuration changed"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}
start() { # name command... (run inside the node's network namespace)
  local name=$1
  shift
  if [[ " ${changed[*]} " == *" $name "* ]]; then stop "$name"; fi
  running "$name" && return
  log "starting $name"
  # Never with the kubelet start lock (fd 9): a component holding it would hold every other node's bring-up.
  setsid nsenter --net="/run/netns/$NETNS" "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$STATE/pids/$name"
}
# healthy NAME START CHECK...: true once CHECK succeeds. A component that died meanwhile is started again with
# the function START, up to twice (systemd restarts a node's kubelet the same way); each failed wait shows the end
# of its log, so a failure says why.
healthy() {
  local name=$1 start_fn=$2 try
  shift 2
  for try in 1 2 3; do
    wait_until "$@" && return 0
    log "$name does not answer (wait $try of 3); the end of its log:"
    tail -n 25 "$LOGS/$name.log" >&2 || true
    if ! running "$name"; then
      log "$name is not running: starting it again"
      "$start_fn"
    fi
  done
  return 1
}
# wait_until COMMAND...: true once COMMAND succeeds, false after 60 s.
wait_until() {
  for _ in $(seq 1 240); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  return 1
}

need=()
for pkg in containerd runc containernetworking-plugins iptables conntrack catatonit busybox-static; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -F "install ok installed" >/dev/null || need+=("$pkg")
done
if ((${#need[@]})); then
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --- the node's network: a namespace on the bridge, routes to the other nodes' pods and nowhere else -------------
[[ -e /run/netns/$NETNS ]] || ip netns add "$NETNS"
if ! ip link show "kec$x-h" >/dev/null 2>&1; then
  ip link add "kec$x-h" type veth peer name "kec$x-n"
  ip link set "kec$x-n" netns "$NETNS"
fi
ip link set "kec$x-h" master kecbr0 up
in_node ip link set lo up
in_node ip link show eth0 >/dev/null 2>&1 || in_node ip link set "kec$x-n" name eth0
in_node ip addr show dev eth0 | grep "$NODE_IP/24" >/dev/null || in_node ip addr add "$NODE_IP/24" dev eth0
in_node ip link set eth0 up
# No default route: the node reaches the bridge's /24 (the API server, CoreDNS, the other nodes), the other nodes'
# pod ranges through them, and the service range through the host (kube-proxy translates service addresses before
# the packet leaves; what it does not translate dies on the host's bridge, which has no uplink).
for j in 1 2 3; do
  ((j == i)) && continue
  in_node ip route replace "10.214.$j.0/24" via "10.213.0.1$j" dev eth0
done
in_node ip route replace "$SERVICE_CIDR" via "$HOST_IP" dev eth0
ip route replace "$POD_SUBNET" via "$NODE_IP" dev kecbr0
in_node sysctl -qw net.ipv4.ip_forward=1
in_node sysctl -qw net.bridge.bridge-nf-call-iptables=1

# --- cgroups: every pod of this node under /kec-<x>, so three kubelets never share a hierarchy -------------------
for hierarchy in /sys/fs/cgroup/*/; do
  [[ $hierarchy == */unified/ ]] && continue
  mkdir -p "$hierarchy$NODE"
done
# A cpuset cgroup takes no task until it has CPUs and memory nodes.
[[ -s /sys/fs/cgroup/cpuset/$NODE/cpuset.cpus ]] || cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset/$NODE/cpuset.cpus"
[[ -s /sys/fs/cgroup/cpuset/$NODE/cpuset.mems ]] || cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset/$NODE/cpuset.mems"

# --- containerd --------------------------------------------------------------------------------------------------
# local-path: the node's disk for dynamically provisioned volumes (up.sh's local-path provisioner).
mkdir -p "$NODE_STATE/containerd" "$NODE_STATE/cni" "$NODE_STATE/kubelet" "$NODE_STATE/pod-logs" "$NODE_STATE/local-path"
write_config "$x-containerd" "$NODE_STATE/containerd/config.toml" <<TOML
version = 2
root = "$NODE_STATE/containerd/root"
state = "$NODE_STATE/containerd/state"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # This sandbox may not lower a process's OOM score below its own (the kubelet asks -998 for pause
  # containers): clamp instead of failing every pod.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_STATE/cni"
TOML
# Pods get addresses on the node's bridge and routes only to the node, the bridge's /24, the other pods and the
# service range: no default route, so nothing in a pod can reach beyond this machine.
write_config "$x-containerd" "$NODE_STATE/cni/10-kec.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "kec",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "kecpods0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$POD_SUBNET" }]],
        "routes": [{ "dst": "$SERVICE_CIDR" }, { "dst": "10.213.0.0/24" }, { "dst": "10.214.0.0/16" }],
        "dataDir": "$NODE_STATE/cni/ipam"
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
JSON
running "$x-containerd" || rm -f "$SOCK"
# No registry is reachable, and none may be tried: every image the test bed uses is imported by images.sh. An
# image that is missing must fail at once instead of being looked up: containerd's registry client goes through
# this proxy, a closed loopback port, so no name is resolved and nothing leaves the machine.
start_containerd() {
  start "$x-containerd" env HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY= \
    containerd --config "$NODE_STATE/containerd/config.toml"
}
start_containerd
healthy "$x-containerd" start_containerd ctr --address "$SOCK" version || fail "containerd does not answer on $SOCK"
KEC_NODES=$x "$here/images.sh" base

# --- kubelet -----------------------------------------------------------------------------------------------------
if [[ ! -f $PKI/kubelet-$x.crt ]]; then
  openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/kubelet-$x.key" -subj "/O=system:nodes/CN=system:node:$NODE" \
    -out "$PKI/kubelet-$x.csr" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth,serverAuth\nsubjectAltName=IP:%s,DNS:%s\n' "$NODE_IP" "$NODE" >"$PKI/kubelet-$x.ext"
  openssl x509 -req -in "$PKI/kubelet-$x.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -days 3650 \
    -extfile "$PKI/kubelet-$x.ext" -out "$PKI/kubelet-$x.crt" 2>/dev/null
fi
if [[ ! -f $NODE_STATE/kubelet.kubeconfig ]]; then
  k() { "$BIN/kubectl" config --kubeconfig "$NODE_STATE/kubelet.kubeconfig" "$@" >/dev/null; }
  k set-cluster kec --server "https://$HOST_IP:6443" --certificate-authority "$PKI/ca.crt" --embed-certs
  k set-credentials kubelet --client-certificate "$PKI/kubelet-$x.crt" --client-key "$PKI/kubelet-$x.key" --embed-certs
  k set-context kec --cluster kec --user kubelet
  k use-context kec
fi
# Pods resolve through the cluster DNS only, never through this machine's resolver.
write_config "$x-kubelet" "$NODE_STATE/resolv.conf" < <(printf 'nameserver %s\nsearch cluster.local\noptions ndots:5\n' "$DNS_IP")
# Status every 4 s and a lease renewed every 3 s, so that the controller-manager (grace period 16 s) marks a
# silent node NotReady within about 20 s. Pods synced every 10 s (default 1m), so that a Secret's new contents
# reach the pods within about 15 s (the in-process controllers are told so: --secret-propagation).
write_config "$x-kubelet" "$NODE_STATE/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
readOnlyPort: 0
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: false }
  x509: { clientCAFile: $PKI/ca.crt }
authorization: { mode: AlwaysAllow }
tlsCertFile: $PKI/kubelet-$x.crt
tlsPrivateKeyFile: $PKI/kubelet-$x.key
cgroupDriver: cgroupfs
cgroupRoot: /$NODE
failCgroupV1: false
containerRuntimeEndpoint: unix://$SOCK
podLogsDir: $NODE_STATE/pod-logs
failSwapOn: false
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
resolvConf: $NODE_STATE/resolv.conf
nodeStatusUpdateFrequency: 4s
syncFrequency: 10s
nodeLeaseDurationSeconds: 12
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: { memory.available: "1Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%" }
serializeImagePulls: false
YAML
start_kubelet() {
  start "$x-kubelet" "$BIN/kubelet" --config "$NODE_STATE/kubelet/config.yaml" \
    --kubeconfig "$NODE_STATE/kubelet.kubeconfig" --node-ip "$NODE_IP" --hostname-override "$NODE" \
    --node-labels "topology.kubernetes.io/zone=$x" --root-dir "$NODE_STATE/kubelet/root" --v 1
}
# Every node's kubelet binds one host path, /var/lib/kubelet/device-plugins/kubelet.sock (fixed in the kubelet,
# whatever its root dir): kubelets started at once fail with "address already in use" (seen when three powered-off
# nodes came back together). One kubelet starts at a time, until it answers; the lock goes with this script.
exec 9>"$STATE/kubelet-start.lock"
flock 9
start_kubelet

node_ready() {
  "$BIN/kubectl" --kubeconfig "$STATE/kubeconfig" get node "$NODE" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -x True >/dev/null
}
# The kubelet answers itself first (a restarted one would otherwise pass on the Ready its predecessor reported).
healthy "$x-kubelet" start_kubelet in_node curl -sf --max-time 2 http://127.0.0.1:10248/healthz ||
  fail "the kubelet does not answer its health check"
flock -u 9
exec 9>&-
if ! wait_until node_ready; then
  "$BIN/kubectl" --kubeconfig "$STATE/kubeconfig" describe node "$NODE" >&2 || true
  tail -n 30 "$LOGS/$x-kubelet.log" >&2 || true
  fail "node $NODE is not Ready"
fi

# --- kube-proxy (iptables) in the node's namespace ----------------------------------------------------------------
write_config "$x-kube-proxy" "$NODE_STATE/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: { kubeconfig: $STATE/kube-proxy.kubeconfig }
mode: iptables
clusterCIDR: 10.214.0.0/16
hostnameOverride: $NODE
bindAddress: $NODE_IP
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
conntrack: { maxPerCore: 0 }
YAML
start_kube_proxy() { start "$x-kube-proxy" "$BIN/kube-proxy" --config "$NODE_STATE/kube-proxy.yaml"; }
start_kube_proxy
healthy "$x-kube-proxy" start_kube_proxy in_node curl -sf --max-time 2 http://127.0.0.1:10256/healthz ||
  fail "kube-proxy does not answer its health check"
log "node $NODE Ready at $NODE_IP, pods $POD_SUBNET"
