#!/usr/bin/env bash
# Builds dist/underlay_VERSION_amd64.deb with dpkg-deb from bin/underlay and
# deploy/: the binary, the systemd units (agent, its IPAM socket, control),
# the default settings /etc/underlay/*.env as conffiles, the Consul ACL
# policies under /usr/share/underlay/consul/, and the copyright file made
# from LICENSE (plus the licences of every Go module linked in).
source "$(dirname "$0")/lib.sh"
cd "$UNDERLAY_ROOT"

bin=${UNDERLAY_BIN:-bin/underlay}
dist=${DIST:-dist}
[ -x "$bin" ] || die "$bin missing: run scripts/build.sh first"
version=$("$bin" version) && version=${version#underlay }
[[ $version =~ ^[0-9] ]] || die "$bin is version $version, not a release: build it with scripts/build.sh"
debversion=${version/-/\~}
head -n 4 LICENSE | grep -q 'Apache License' || die "LICENSE is not the Apache License 2.0"

root=$(mktemp -d)
chmod 0755 "$root"
trap 'rm -rf "$root"' EXIT
install -D -m 0755 "$bin" "$root/usr/bin/underlay"
for unit in deploy/systemd/*; do
  install -D -m 0644 "$unit" "$root/lib/systemd/system/$(basename "$unit")"
done
for env in deploy/etc/*.env; do
  install -D -m 0600 "$env" "$root/etc/underlay/$(basename "$env")"
done
# The prerm's reader of the agent's unit files (awk, data to the prerm).
install -D -m 0644 deploy/debian/unit-env.awk "$root/usr/share/underlay/unit-env.awk"
for policy in deploy/consul/*.hcl; do
  install -D -m 0644 "$policy" "$root/usr/share/underlay/consul/$(basename "$policy")"
done

doc=$root/usr/share/doc/underlay
install -d -m 0755 "$doc"
{
  cat <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: underlay
Upstream-Contact: https://github.com/underlay/underlay/issues
Source: https://github.com/underlay/underlay
Comment: The binary statically links Go modules under their own licences;
 their texts are in /usr/share/doc/underlay/third-party-licenses.gz.

Files: *
Copyright: 2026 The underlay authors
License: Apache-2.0

License: Apache-2.0
COPYRIGHT
  # The licence's summary, as the LICENSE file's appendix words it.
  sed -n '/Licensed under the Apache License/,/limitations under the License./p' LICENSE |
    sed -e 's/^ *//' -e 's/^$/./' -e 's/^/ /'
  printf ' .\n On Debian systems, the full text of the Apache License 2.0 can be found in\n /usr/share/common-licenses/Apache-2.0.\n'
} >"$doc/copyright"
third_party_licenses | gzip -9n >"$doc/third-party-licenses.gz"
date=$(git log -1 --format=%aD 2>/dev/null || date -R)
cat <<CHANGELOG | gzip -9n >"$doc/changelog.gz"
underlay ($debversion) unstable; urgency=medium

  * Built from $(underlay_revision).

 -- underlay maintainers <maintainers@underlay.invalid>  $date
CHANGELOG
install -D -m 0644 /dev/stdin "$root/usr/share/lintian/overrides/underlay" <<'OVERRIDES'
# A static Go binary, as every Go program Debian ships.
underlay: statically-linked-binary [usr/bin/underlay]
# `underlay --help` and `underlay COMMAND --help` are the manual.
underlay: no-manual-page [usr/bin/underlay]
# The settings hold Consul ACL tokens: root's only.
underlay: non-standard-file-perm 0600 != 0644 [etc/underlay/agent.env]
underlay: non-standard-file-perm 0600 != 0644 [etc/underlay/control.env]
OVERRIDES
chmod 0644 "$doc"/*

install -d -m 0755 "$root/DEBIAN"
for s in postinst prerm postrm; do
  install -m 0755 "deploy/debian/$s" "$root/DEBIAN/$s"
done
(cd "$root" && find etc -type f | sed 's|^|/|' | sort) >"$root/DEBIAN/conffiles"
(cd "$root" && find usr lib -type f -print0 | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: underlay
Version: $debversion
Architecture: amd64
Maintainer: underlay maintainers <maintainers@underlay.invalid>
Installed-Size: $size
Depends: init-system-helpers (>= 1.54~)
Recommends: docker.io (>= 20.10) | docker-ce (>= 20.10)
Section: net
Priority: optional
Homepage: https://github.com/underlay/underlay
Description: routable Docker Swarm containers on the networks you already have
 underlay gives Docker Swarm containers real addresses on existing VLANs and
 subnets (macvlan), registers them in Consul and scales them on an HTTP call,
 with no overlay network, no NAT and no proxy.
 .
 This package holds the underlay binary, the systemd units of the node agent
 (with a socket unit that keeps the cluster IPAM plugin's socket ready
 before dockerd starts) and of the autoscaler, their settings under
 /etc/underlay, and least-privilege Consul ACL policies.
CONTROL

mkdir -p "$dist"
out=$dist/underlay_${debversion}_amd64.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
log "built $out"
