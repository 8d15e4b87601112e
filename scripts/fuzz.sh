#!/usr/bin/env bash
# Runs every Go fuzz target of the repository (func FuzzX(f *testing.F) in
# a _test.go file), one after the other, for FUZZTIME each (default 10s; a
# Go duration, or Nx for N executions). CI calls it with a short budget,
# `make fuzz` with a long one. FUZZ_PACKAGES (default ./...) narrows it to
# some packages. New failing inputs are written to the package's
# testdata/fuzz/<target>/ — commit them with the fix, as regression tests.
# Needs no root, no daemon.
source "$(dirname "$0")/lib.sh"
cd "$UNDERLAY_ROOT"

FUZZTIME=${FUZZTIME:-10s}
failed=()
count=0
# shellcheck disable=SC2086 # FUZZ_PACKAGES is a list of patterns
while read -r pkg dir; do
  targets=$(grep -hoE '^func Fuzz[A-Za-z0-9_]+\([A-Za-z0-9_]+ \*testing\.F\)' "$dir"/*_test.go 2>/dev/null |
    sed -E 's/^func (Fuzz[A-Za-z0-9_]+).*/\1/' | sort -u) || true
  for target in $targets; do
    count=$((count + 1))
    log "fuzz $pkg $target for $FUZZTIME"
    if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg"; then
      failed+=("$pkg $target")
    fi
  done
done < <(go list -f '{{.ImportPath}} {{.Dir}}' ${FUZZ_PACKAGES:-./...})
[ "$count" -gt 0 ] || die "no fuzz target found"
if [ "${#failed[@]}" -gt 0 ]; then
  printf 'fuzz: %d of %d targets failed:\n' "${#failed[@]}" "$count" >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
log "fuzz: $count targets passed, $FUZZTIME each"
