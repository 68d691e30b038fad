#!/usr/bin/env bash
# Brings up the test bed's node on top of the control plane that up.sh started: containerd (cgroupfs), a CNI
# bridge for pods, the kubelet, and the base images. Idempotent. Called by up.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
KEC_CACHE=${KEC_CACHE:-$HOME/.cache/kec}
STATE=$KEC_CACHE/testbed
PKI=$STATE/pki
LOGS=$STATE/logs
BIN=$("$here/build.sh" kubelet kube-proxy kubectl)
COREDNS_VERSION=v1.14.7
COREDNS=$KEC_CACHE/coredns/$COREDNS_VERSION/coredns
NODE_NAME=kec-node
NODE_IP=10.213.0.1
POD_SUBNET=10.214.0.0/24
SERVICE_CIDR=10.215.0.0/16
DNS_IP=10.215.0.10
PAUSE_IMAGE=kec.local/pause:3.10
SOCK=$STATE/containerd/containerd.sock

log() { echo "node.sh: $*" >&2; }
fail() { log "$*; see $LOGS"; exit 1; }
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
start() {
  local name=$1
  shift
  if [[ " ${changed[*]} " == *" $name "* ]]; then stop "$name"; fi
  running "$name" && return
  log "starting $name"
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/pids/$name"
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
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The kubelet needs shared mount propagation and forwarding between the pod bridge and the node.
mount --make-rshared /
sysctl -qw net.ipv4.ip_forward=1

mkdir -p "$STATE/containerd" "$STATE/cni" "$STATE/kubelet"
write_config containerd "$STATE/containerd/config.toml" <<TOML
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
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
    conf_dir = "$STATE/cni"
TOML
# Pods get addresses on a bridge of their own and routes only to the node and the service range: no default
# route, so nothing in a pod can reach beyond this machine.
write_config cni "$STATE/cni/10-kec.conflist" <<JSON
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
        "routes": [{ "dst": "$SERVICE_CIDR" }, { "dst": "10.213.0.0/24" }],
        "dataDir": "$STATE/cni/ipam"
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
JSON
running containerd || rm -f "$SOCK"
# No registry is reachable, and none may be tried: every image the test bed uses is imported by images.sh. An
# image that is missing must fail at once instead of being looked up: containerd's registry client goes through
# this proxy, a closed loopback port, so no name is resolved and nothing leaves the machine.
start containerd env HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY= \
  containerd --config "$STATE/containerd/config.toml"
wait_until ctr --address "$SOCK" version || fail "containerd does not answer on $SOCK"
"$here/images.sh" base

if [[ ! -f $PKI/kubelet.crt ]]; then
  openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/kubelet.key" -subj "/O=system:nodes/CN=system:node:$NODE_NAME" \
    -out "$PKI/kubelet.csr" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth,serverAuth\nsubjectAltName=IP:%s,DNS:%s\n' "$NODE_IP" "$NODE_NAME" >"$PKI/kubelet.ext"
  openssl x509 -req -in "$PKI/kubelet.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 3650 \
    -extfile "$PKI/kubelet.ext" -out "$PKI/kubelet.crt" 2>/dev/null
fi
if [[ ! -f $STATE/kubelet.kubeconfig ]]; then
  k() { "$BIN/kubectl" config --kubeconfig "$STATE/kubelet.kubeconfig" "$@" >/dev/null; }
  k set-cluster kec --server "https://$NODE_IP:6443" --certificate-authority "$PKI/ca.crt" --embed-certs
  k set-credentials kubelet --client-certificate "$PKI/kubelet.crt" --client-key "$PKI/kubelet.key" --embed-certs
  k set-context kec --cluster kec --user kubelet
  k use-context kec
fi
# Pods resolve through the cluster DNS only, never through this machine's resolver.
write_config kubelet "$STATE/resolv.conf" < <(printf 'nameserver %s\nsearch cluster.local\noptions ndots:5\n' "$DNS_IP")
write_config kubelet "$STATE/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
readOnlyPort: 0
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: false }
  x509: { clientCAFile: $PKI/ca.crt }
authorization: { mode: AlwaysAllow }
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
cgroupDriver: cgroupfs
failCgroupV1: false
containerRuntimeEndpoint: unix://$SOCK
failSwapOn: false
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
resolvConf: $STATE/resolv.conf
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: { memory.available: "1Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%" }
serializeImagePulls: false
YAML
start kubelet "$BIN/kubelet" --config "$STATE/kubelet/config.yaml" --kubeconfig "$STATE/kubelet.kubeconfig" \
  --node-ip "$NODE_IP" --hostname-override "$NODE_NAME" --root-dir "$STATE/kubelet/root" --v 1

node_ready() {
  "$BIN/kubectl" --kubeconfig "$STATE/kubeconfig" get node "$NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True
}
# The kubelet answers itself first (a restarted one would otherwise pass on the Ready its predecessor reported).
wait_until curl -sf --max-time 2 http://127.0.0.1:10248/healthz || fail "the kubelet does not answer its health check"
if ! wait_until node_ready; then
  "$BIN/kubectl" --kubeconfig "$STATE/kubeconfig" describe node "$NODE_NAME" >&2 || true
  tail -n 30 "$LOGS/kubelet.log" >&2 || true
  fail "node $NODE_NAME is not Ready"
fi
"$BIN/kubectl" --kubeconfig "$STATE/kubeconfig" get node "$NODE_NAME" >&2

# --- cluster DNS: CoreDNS on the node's address, behind the kube-dns service ------------------------------------
if [[ ! -x $COREDNS ]]; then
  log "building CoreDNS $COREDNS_VERSION"
  mkdir -p "$(dirname "$COREDNS")"
  CGO_ENABLED=0 GOBIN=$(dirname "$COREDNS") nice -n 10 go install -trimpath "github.com/coredns/coredns@$COREDNS_VERSION"
fi
kubeconfig_for() { # name CN [O]
  local name=$1 subject=$2
  if [[ ! -f $PKI/$name.crt ]]; then
    openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -subj "$subject" -out "$PKI/$name.csr" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >"$PKI/$name.ext"
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 3650 \
      -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  fi
  if [[ ! -f $STATE/$name.kubeconfig ]]; then
    k() { "$BIN/kubectl" config --kubeconfig "$STATE/$name.kubeconfig" "$@" >/dev/null; }
    k set-cluster kec --server "https://$NODE_IP:6443" --certificate-authority "$PKI/ca.crt" --embed-certs
    k set-credentials "$name" --client-certificate "$PKI/$name.crt" --client-key "$PKI/$name.key" --embed-certs
    k set-context kec --cluster kec --user "$name"
    k use-context kec
  fi
}
# CoreDNS reads services and endpoints as a member of system:masters would; the test bed has no other tenants.
kubeconfig_for coredns "/O=system:masters/CN=coredns"
write_config coredns "$STATE/Corefile" <<COREFILE
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
wait_until curl -sf --max-time 2 http://127.0.0.1:18080/health || fail "CoreDNS does not answer its health check"
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

# --- kube-proxy (iptables): service addresses work from pods and from the node ----------------------------------
kubeconfig_for kube-proxy "/CN=system:kube-proxy"
write_config kube-proxy "$STATE/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: { kubeconfig: $STATE/kube-proxy.kubeconfig }
mode: iptables
clusterCIDR: 10.214.0.0/16
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
conntrack: { maxPerCore: 0 }
YAML
start kube-proxy "$BIN/kube-proxy" --config "$STATE/kube-proxy.yaml"
wait_until curl -sf --max-time 2 http://127.0.0.1:10256/healthz || fail "kube-proxy does not answer its health check"
