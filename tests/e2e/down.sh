#!/usr/bin/env bash
# Stops everything tests/e2e/up.sh and node.sh started and removes its state; keeps the build cache.
set -euo pipefail
KEC_CACHE=${KEC_CACHE:-$HOME/.cache/kec}
STATE=$KEC_CACHE/testbed

stop() {
  local pidfile=$STATE/pids/$1
  [[ -f $pidfile ]] || return 0
  local pid
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

# The kubelets first, so nothing restarts the containers; then every container process (they live under each node's
# cgroup root, /kec-<node>), their shims, the containerds.
for node in a b c; do stop "$node-kubelet"; done
stop kubelet # a single-node test bed of earlier versions
for procs in /sys/fs/cgroup/pids/kec-? /sys/fs/cgroup/memory/kec-? /sys/fs/cgroup/pids/kubepods /sys/fs/cgroup/memory/kubepods; do
  [[ -d $procs ]] && find "$procs" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null || true
done
pkill -9 -f "containerd-shim-runc-v2 .*-address $STATE/" 2>/dev/null || true
for node in a b c; do stop "$node-containerd"; stop "$node-kube-proxy"; done
stop containerd
for name in local-path-provisioner kube-proxy coredns kube-scheduler kube-controller-manager kube-apiserver etcd; do
  stop "$name"
done
# Mounts the kubelet and containerd left (volumes, rootfs, shm), deepest first.
awk -v state="$STATE" 'index($2, state) == 1 { print $2 }' /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
for netns in $(ip netns list 2>/dev/null | awk '/^cni-/ { print $1 }'); do
  ip netns delete "$netns" 2>/dev/null || true
done
ip link del kecpods0 2>/dev/null || true
# The nodes' namespaces (their veths and bridges go with them) and the routes to their pods.
for node in a b c; do
  ip netns delete "kec-$node" 2>/dev/null || true
  ip link del "kec$node-h" 2>/dev/null || true
done
for i in 1 2 3; do ip route del "10.214.$i.0/24" 2>/dev/null || true; done
# The nodes' cgroups, deepest first (the kubelets leave their QoS and pod cgroups behind).
for hierarchy in /sys/fs/cgroup/*/; do
  find "$hierarchy"kec-? -depth -type d -exec rmdir {} \; 2>/dev/null || true
done
# kube-proxy's rules: its chains are all named KUBE-*.
for table in nat filter mangle; do
  iptables-save -t "$table" 2>/dev/null | grep ':KUBE-' >/dev/null || continue
  iptables-save -t "$table" | grep -v -- '-j KUBE-\|^:KUBE-\|-A KUBE-' | iptables-restore -T "$table" 2>/dev/null || true
done
ip route del 10.215.0.0/16 2>/dev/null || true
ip link del kecbr0 2>/dev/null || true
rm -rf "$STATE"
echo "down.sh: test bed stopped and its state removed" >&2
