#!/usr/bin/env bash
# Builds the image underlay:VERSION (FROM scratch: the static binary, CA
# certificates, the licences; OCI labels version, revision, source) into
# the local dockerd from bin/underlay, and with --save also
# dist/underlay_VERSION_image.tar (docker save; load it with docker load, or
# tag and push it to your registry). No registry is used.
source "$(dirname "$0")/lib.sh"
cd "$UNDERLAY_ROOT"

bin=${UNDERLAY_BIN:-bin/underlay}
dist=${DIST:-dist}
[ -x "$bin" ] || die "$bin missing: run scripts/build.sh first"
version=$("$bin" version) && version=${version#underlay }
[ -r /etc/ssl/certs/ca-certificates.crt ] || die "/etc/ssl/certs/ca-certificates.crt missing: apt-get install ca-certificates"

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/underlay"
cp deploy/Dockerfile /etc/ssl/certs/ca-certificates.crt "$ctx/"
cat LICENSE > "$ctx/LICENSE"
third_party_licenses >>"$ctx/LICENSE"
docker build -q --build-arg "VERSION=$version" --build-arg "REVISION=$(underlay_revision)" \
  -t "underlay:$version" "$ctx" >/dev/null
log "built image underlay:$version"

if [ "${1:-}" = "--save" ]; then
  mkdir -p "$dist"
  docker save -o "$dist/underlay_${version}_image.tar" "underlay:$version"
  log "saved $dist/underlay_${version}_image.tar"
fi
