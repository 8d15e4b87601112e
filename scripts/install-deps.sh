#!/usr/bin/env bash
# Installs what underlay needs on a Debian machine, idempotently: Debian's
# docker.io, iproute2, iptables and make, chromium (the dashboard's browser
# tests and `make screenshot` drive it headless), nodejs (the dashboard's
# unit tests run the page's own functions in node); qemu-system-x86,
# linux-image-amd64, busybox-static and xz-utils for `underlay lab up --vm`
# (VM nodes boot Debian's kernel under QEMU, with a busybox initramfs);
# prometheus and
# prometheus-alertmanager (whose binaries the autoscaler's integration tests
# start on loopback; this script starts neither), and Consul 1.8.7 from Debian's
# bullseye suite (fetched with apt-get download through a temporary sources
# list on this machine's own mirror, unpacked with dpkg -x; the system's
# sources are left untouched).
source "$(dirname "$0")/lib.sh"
need_root

missing_of() {
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || printf '%s\n' "$pkg"
  done
}
updated=
install_pkgs() {
  [ -n "$updated" ] || { apt-get update -qq; updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

mapfile -t missing < <(missing_of docker.io iproute2 iptables make curl ca-certificates lintian systemd chromium nodejs)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  install_pkgs "${missing[@]}"
fi

# VM lab nodes: the emulator, the kernel they boot (its modules have
# 802.1Q, ipvlan, bonding), the initramfs's shell, and xz to unpack the
# kernel into the vmlinux QEMU boots faster.
mapfile -t missing < <(missing_of qemu-system-x86 linux-image-amd64 busybox-static xz-utils)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} (for lab up --vm)"
  install_pkgs "${missing[@]}"
fi

# Tests start these themselves on loopback: keep Debian's install step from
# starting them as services (policy-rc.d answering 101 "action forbidden").
mapfile -t missing < <(missing_of prometheus prometheus-alertmanager)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} (not started as services)"
  policy=/usr/sbin/policy-rc.d
  if [ -e "$policy" ]; then
    install_pkgs "${missing[@]}"
  else
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
    install_pkgs "${missing[@]}"
    rm -f "$policy"
    trap - EXIT
  fi
fi

# debian_mirror prints the Debian archive URI this machine's apt already uses.
debian_mirror() {
  local uri
  uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
  if [ -z "$uri" ]; then
    uri=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      sed -E 's/^deb (\[[^]]*\] )?//' | awk '{print $1}' | grep -v -- '-security' | grep -i debian | head -n1 || true)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

if [ -x "$CONSUL_PREFIX/usr/bin/consul" ] && "$CONSUL_PREFIX/usr/bin/consul" version | grep -q "v$CONSUL_VERSION"; then
  :
else
  mirror=$(debian_mirror)
  log "fetching consul $CONSUL_VERSION from Debian bullseye ($mirror)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bullseye main" >"$tmp/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache" -o "APT::Sandbox::User=root")
  apt-get "${apt_opts[@]}" update -qq
  version=$(apt-cache "${apt_opts[@]}" madison consul | awk -v v="$CONSUL_VERSION" '$3 ~ "^"v {print $3; exit}')
  [ -n "$version" ] || die "consul $CONSUL_VERSION not found in bullseye on $mirror"
  (cd "$tmp" && apt-get "${apt_opts[@]}" download -qq "consul=$version")
  rm -rf "$CONSUL_PREFIX"
  mkdir -p "$CONSUL_PREFIX"
  dpkg -x "$tmp"/consul_*.deb "$CONSUL_PREFIX"
fi
ln -sf "$CONSUL_PREFIX/usr/bin/consul" /usr/local/bin/consul
log "dependencies ready: $(dockerd --version), $(consul version | head -n1)"
