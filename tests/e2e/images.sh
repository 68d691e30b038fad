#!/usr/bin/env bash
# Builds container images without a registry or a Docker engine (docker-archive tarballs written by hand: one
# layer, a config, a manifest) and imports them into the k8s.io namespace of every node's containerd (KEC_NODES: the
# nodes, default every node of the test bed that is powered on).
#   images.sh base                       the pause image, the etcd images (3.4 from Debian; 3.5, 3.6, 3.7 built)
#                                        under the CRD's default repository, and a busybox image (the volume
#                                        provisioner's helper pods)
#   images.sh rust NAME:TAG[,NAME:TAG...] BINARY...
#                                        a small image of static-enough binaries (busybox for a shell), under
#                                        every name given
# Needs the nodes' containerd running (tests/e2e/node.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
KEC_CACHE=${KEC_CACHE:-$HOME/.cache/kec}
STATE=$KEC_CACHE/testbed
if [[ -z ${KEC_NODES:-} ]]; then
  KEC_NODES=
  for node in a b c; do [[ -f $STATE/nodes/$node/off ]] || KEC_NODES+=" $node"; done
fi
socks=()
for node in $KEC_NODES; do socks+=("$STATE/nodes/$node/containerd/containerd.sock"); done
PAUSE_IMAGE=${PAUSE_IMAGE:-kec.local/pause:3.10}
ETCD_REPOSITORY=${ETCD_REPOSITORY:-quay.io/coreos/etcd}
# up.sh names the same image for the local-path provisioner's helper pods.
BUSYBOX_IMAGE=${BUSYBOX_IMAGE:-kec.local/busybox:1}

# archive NAME[,NAME...] ROOTFS ENTRYPOINT_JSON -> imports the image under every name, into every node
archive() {
  local name=$1 rootfs=$2 entrypoint=$3 work tags sock
  tags=$(printf '"%s",' ${name//,/ })
  work=$(mktemp -d)
  tar -C "$rootfs" --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -cf "$work/layer.tar" .
  local diff
  diff=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
  printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":%s,"Env":["PATH=/usr/local/bin:/usr/bin:/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$entrypoint" "$diff" >"$work/config.json"
  local config
  config=$(sha256sum "$work/config.json" | cut -d' ' -f1).json
  mv "$work/config.json" "$work/$config"
  printf '[{"Config":"%s","RepoTags":[%s],"Layers":["layer.tar"]}]' "$config" "${tags%,}" >"$work/manifest.json"
  tar -C "$work" -cf "$work/image.tar" manifest.json "$config" layer.tar
  for sock in "${socks[@]}"; do
    ctr --address "$sock" -n k8s.io images import --no-unpack "$work/image.tar" >/dev/null
  done
  rm -rf "$work"
  echo "images.sh: imported $name into node(s)$KEC_NODES" >&2
}

# with_libs ROOTFS BINARY...: copies binaries into ROOTFS/usr/local/bin with the shared libraries they need
with_libs() {
  local rootfs=$1
  shift
  mkdir -p "$rootfs/usr/local/bin" "$rootfs/bin" "$rootfs/tmp"
  cp /usr/bin/busybox "$rootfs/bin/busybox"
  ln -sf busybox "$rootfs/bin/sh"
  for binary in "$@"; do
    cp "$binary" "$rootfs/usr/local/bin/"
    # A static binary has no libraries: ldd fails and grep finds nothing, which pipefail must not turn into an error.
    { ldd "$binary" 2>/dev/null || true; } | { grep -o '/[^ ]*' || true; } | while read -r lib; do
      mkdir -p "$rootfs$(dirname "$lib")"
      cp -L "$lib" "$rootfs$lib"
    done
  done
}

# has NAME: every node has the image. Not `grep -q`: it exits at the first match, ctr dies of SIGPIPE, and pipefail
# turns the match into a miss.
has() {
  local sock
  for sock in "${socks[@]}"; do
    ctr --address "$sock" -n k8s.io images ls -q | grep -x "$1" >/dev/null || return 1
  done
}

case ${1:-base} in
  base)
    if ! has "$PAUSE_IMAGE"; then
      root=$(mktemp -d)
      cp /usr/bin/catatonit "$root/pause"
      archive "$PAUSE_IMAGE" "$root" '["/pause","-P"]'
      rm -rf "$root"
    fi
    # etcd 3.5 (the CRD's default version), 3.6 and 3.7, built from their Go modules; static binaries.
    for minor in 3.5 3.6 3.7; do
      dir=$("$here/build.sh" "etcd-$minor")
      if ! has "$ETCD_REPOSITORY:$(basename "$dir")"; then
        root=$(mktemp -d)
        with_libs "$root" "$dir"/etcd*
        archive "$ETCD_REPOSITORY:$(basename "$dir")" "$root" 'null'
        rm -rf "$root"
      fi
    done
    # etcd 3.4 from Debian; dynamically linked, so its libraries come along.
    version=$(etcd --version | sed -n 's/^etcd Version: //p')
    if ! has "$ETCD_REPOSITORY:v$version"; then
      root=$(mktemp -d)
      with_libs "$root" /usr/bin/etcd /usr/bin/etcdctl
      archive "$ETCD_REPOSITORY:v$version" "$root" 'null'
      rm -rf "$root"
    fi
    # busybox (static) with a link per applet, so that `sh -c 'mkdir ...; rm ...'` finds each command on PATH: the
    # local-path provisioner's helper pods create and remove volume directories with it.
    if ! has "$BUSYBOX_IMAGE"; then
      root=$(mktemp -d)
      mkdir -p "$root/bin" "$root/tmp"
      cp /usr/bin/busybox "$root/bin/busybox"
      for applet in $(/usr/bin/busybox --list); do
        [[ $applet == busybox ]] || ln -sf busybox "$root/bin/$applet"
      done
      archive "$BUSYBOX_IMAGE" "$root" '["/bin/sh"]'
      rm -rf "$root"
    fi
    ;;
  rust)
    name=$2
    shift 2
    root=$(mktemp -d)
    with_libs "$root" "$@"
    # The CA bundle, as the real images (Dockerfile.*) have it: rustls' platform verifier refuses to build an HTTP
    # client without any root certificate, even one that only ever speaks plain http.
    mkdir -p "$root/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
    archive "$name" "$root" 'null'
    rm -rf "$root"
    ;;
  *)
    echo "usage: images.sh base | rust NAME:TAG BINARY..." >&2
    exit 2
    ;;
esac
