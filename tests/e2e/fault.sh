#!/usr/bin/env bash
# Node faults of the test bed, each undoable:
#   fault.sh poweroff X         node kec-X loses power: its network goes dark at once, then its kubelet, containerd,
#                               kube-proxy, shims, every container and every other process in its network namespace
#                               are SIGKILLed and its runtime state (what a reboot clears: containerd's state dir,
#                               the kubelet's tmpfs mounts) is gone
#   fault.sh poweron X          boots it again on its disk (containerd's images and metadata, the kubelet's root
#                               dir, emptyDir data), as a reboot would
#   fault.sh partition X [WHAT] drops every packet between node kec-X (and its pods) and WHAT, a comma list of:
#                               nodes (the other nodes and their pods), a, b or c (one other node and its pods),
#                               apiserver (the API server's port), host (this machine's bridge address: the API
#                               server, CoreDNS, in-process controllers and the tests) or all (nodes and host; the
#                               default). Rules sit in the node's own namespace (raw table, chain KEC-PARTITION), so
#                               nothing outside the node changes; partitioning again replaces the rules.
#   fault.sh heal X             removes the partition
#   fault.sh slow X RATE        limits the node's link to RATE (tc tbf, both directions, e.g. 1mbit; the kernel
#                               here has no netem, so latency comes only from the queue)
#   fault.sh fast X             removes the limit
#   fault.sh reset              every node powered on, healed and unlimited
#   fault.sh status             each node: on or off, partitioned or not, limited or not
set -euo pipefail
KEC_CACHE=${KEC_CACHE:-$HOME/.cache/kec}
STATE=$KEC_CACHE/testbed
here=$(cd "$(dirname "$0")" && pwd)
log() { echo "fault.sh: $*" >&2; }
usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

node_index() {
  case $1 in a) echo 1 ;; b) echo 2 ;; c) echo 3 ;; *) log "no node '$1' (a, b or c)"; exit 2 ;; esac
}
NETNS_PREFIX=kec-
in_node() { local x=$1; shift; nsenter --net="/run/netns/$NETNS_PREFIX$x" "$@"; }
# netns_of X: the identity of node kec-X's network namespace, as /proc/PID/ns/net shows it.
netns_of() { echo "net:[$(stat -L -c %i "/run/netns/$NETNS_PREFIX$1")]"; }
# kill_in X: SIGKILLs every process in node kec-X's network namespace (what runs on a machine dies with it: its
# kubelet, containerd and kube-proxy, and anything started there by hand or by a test), until none is left. A pid
# file is never trusted: a stale one may name another process by now.
kill_in() {
  local netns proc pid left
  netns=$(netns_of "$1")
  for _ in $(seq 1 50); do
    left=
    for proc in /proc/[0-9]*; do
      if [[ $(readlink "$proc/ns/net" 2>/dev/null) == "$netns" ]]; then
        pid=${proc#/proc/}
        left+=" $pid"
        kill -9 "$pid" 2>/dev/null || true
      fi
    done
    [[ -z $left ]] && return 0
    sleep 0.1
  done
  log "processes in the network of kec-$1 survived SIGKILL:$left"
  return 1
}

poweroff() {
  local x=$1 node=kec-$1 nstate=$STATE/nodes/$1
  [[ -d $nstate ]] || { log "node $node was never brought up"; exit 1; }
  touch "$nstate/off"
  # Dark first: from now on nothing reaches the node or its pods, and nothing leaves them (a machine without power
  # answers nothing: connections time out instead of being refused).
  ip link set "kec$x-h" down
  kill_in "$x"
  rm -f "$STATE/pids/$x-kubelet" "$STATE/pids/$x-kube-proxy" "$STATE/pids/$x-containerd"
  pkill -9 -f "containerd-shim-runc-v2 .*-address $nstate/" 2>/dev/null || true
  # Every container process of the node lives under its cgroup root; kill until none is left (a process forked
  # while the others die is killed on the next pass).
  local left
  # Without the node's cgroup there is no list of its containers, and a power-off that killed none is no power-off.
  [[ -d /sys/fs/cgroup/pids/$node ]] || { log "no cgroup /sys/fs/cgroup/pids/$node: cannot kill $node's containers"; exit 1; }
  for _ in $(seq 1 50); do
    left=$(find "/sys/fs/cgroup/pids/$node" -name cgroup.procs -exec cat {} + 2>/dev/null | tr '\n' ' ')
    [[ -z ${left// /} ]] && break
    # shellcheck disable=SC2086 # a list of PIDs
    kill -9 $left 2>/dev/null || true
    sleep 0.1
  done
  [[ -z ${left// /} ]] || { log "processes of $node survived SIGKILL: $left"; exit 1; }
  # What a reboot clears: the runtime's state (and the container root filesystems mounted there), the kubelet's
  # tmpfs volumes.
  awk -v a="$nstate/containerd/state" -v b="$nstate/kubelet/root" \
    'index($2, a) == 1 || (index($2, b) == 1 && $3 == "tmpfs") { print $2 }' /proc/mounts |
    sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$nstate/containerd/state"
  log "node $node powered off"
}

poweron() {
  local x=$1 node=kec-$1 nstate=$STATE/nodes/$1
  [[ -f $nstate/off ]] || { log "node $node is not powered off"; return 0; }
  ip link set "kec$x-h" up
  # The mark goes only once the node is up: a power-on that failed can be tried again.
  KEC_POWERING_ON=1 "$here/node.sh" "$x"
  rm -f "$nstate/off"
  log "node $node powered on"
}

# Every node powered on, healed and unlimited (after a test that could not undo its faults).
reset() {
  local x
  for x in a b c; do
    [[ -d $STATE/nodes/$x ]] || continue
    heal "$x"
    fast "$x"
    poweron "$x"
  done
}

partition() {
  local x=$1 what=${2:-all} i j part rules=()
  i=$(node_index "$x")
  for part in ${what//,/ }; do
    case $part in
      all) part=nodes,host ;;
    esac
    for part in ${part//,/ }; do
      case $part in
        nodes | a | b | c)
          for j in 1 2 3; do
            ((j == i)) && continue
            [[ $part == nodes || $(node_index "$part") == "$j" ]] || continue
            rules+=("-s 10.213.0.1$j" "-d 10.213.0.1$j" "-s 10.214.$j.0/24" "-d 10.214.$j.0/24")
          done
          ;;
        host) rules+=("-s 10.213.0.1/32" "-d 10.213.0.1/32") ;;
        apiserver) rules+=("-s 10.213.0.1/32 -p tcp --sport 6443" "-d 10.213.0.1/32 -p tcp --dport 6443") ;;
        *) log "partition from what? a comma list of nodes, a, b, c, apiserver, host or all (got '$part')"; exit 2 ;;
      esac
    done
  done
  in_node "$x" iptables -t raw -N KEC-PARTITION 2>/dev/null || in_node "$x" iptables -t raw -F KEC-PARTITION
  local rule
  for rule in "${rules[@]}"; do
    # shellcheck disable=SC2086 # each rule is a list of arguments
    in_node "$x" iptables -t raw -A KEC-PARTITION $rule -j DROP
  done
  for chain in PREROUTING OUTPUT; do
    in_node "$x" iptables -t raw -C "$chain" -j KEC-PARTITION 2>/dev/null || in_node "$x" iptables -t raw -I "$chain" -j KEC-PARTITION
  done
  log "node kec-$x partitioned from $what"
}

heal() {
  local x=$1 chain
  for chain in PREROUTING OUTPUT; do
    while in_node "$x" iptables -t raw -D "$chain" -j KEC-PARTITION 2>/dev/null; do :; done
  done
  in_node "$x" iptables -t raw -F KEC-PARTITION 2>/dev/null || true
  in_node "$x" iptables -t raw -X KEC-PARTITION 2>/dev/null || true
  log "node kec-$x healed"
}

slow() {
  local x=$1 rate=${2:?fault.sh slow X RATE (e.g. 1mbit)}
  tc qdisc replace dev "kec$x-h" root tbf rate "$rate" burst 16kb latency 500ms
  in_node "$x" tc qdisc replace dev eth0 root tbf rate "$rate" burst 16kb latency 500ms
  log "node kec-$x limited to $rate"
}

fast() {
  local x=$1
  tc qdisc del dev "kec$x-h" root 2>/dev/null || true
  in_node "$x" tc qdisc del dev eth0 root 2>/dev/null || true
  log "node kec-$x unlimited"
}

status() {
  local x
  for x in a b c; do
    [[ -d $STATE/nodes/$x ]] || { echo "kec-$x: never brought up"; continue; }
    local power=on part=no limit=no
    [[ -f $STATE/nodes/$x/off ]] && power=off
    in_node "$x" iptables -t raw -S KEC-PARTITION 2>/dev/null | grep DROP >/dev/null && part=yes
    tc qdisc show dev "kec$x-h" 2>/dev/null | grep tbf >/dev/null && limit=yes
    echo "kec-$x: power $power, partitioned $part, limited $limit"
  done
}

case ${1:-} in
  poweroff | poweron | heal | fast) [[ -n ${2:-} ]] || usage; node_index "$2" >/dev/null; "$1" "$2" ;;
  partition | slow) [[ -n ${2:-} ]] || usage; node_index "$2" >/dev/null; "$1" "$2" "${3:-}" ;;
  status) status ;;
  reset) reset ;;
  *) usage ;;
esac
