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

# fuzz_one PKG DIR TARGET fuzzes one target. Go 1.26's fuzz coordinator
# can fail a target at the end of -fuzztime with a bare "context deadline
# exceeded" and no failing input, when a loaded machine delays its
# workers' stop (golang/go#75804, fixed in Go 1.27). Such a run, and only
# such a run, is tried once more; a failure that writes an input under
# testdata/fuzz/TARGET, or fails again, fails.
fuzz_one() {
  local pkg=$1 dir=$2 target=$3 out attempt inputs
  for attempt in 1 2; do
    inputs=$(ls "$dir/testdata/fuzz/$target" 2>/dev/null | wc -l)
    out=$(mktemp)
    if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg" 2>&1 | tee "$out"; [ "${PIPESTATUS[0]}" -eq 0 ]; then
      rm -f "$out"
      return 0
    fi
    if [ "$attempt" = 1 ] && [ "$(ls "$dir/testdata/fuzz/$target" 2>/dev/null | wc -l)" = "$inputs" ] &&
      grep -qx '[[:space:]]*context deadline exceeded' "$out" && ! grep -q 'Failing input written' "$out"; then
      log "fuzz $pkg $target: stopped by Go's fuzz coordinator (golang/go#75804), no failing input: once more"
      rm -f "$out"
      continue
    fi
    rm -f "$out"
    return 1
  done
  return 1
}
failed=()
count=0
# shellcheck disable=SC2086 # FUZZ_PACKAGES is a list of patterns
while read -r pkg dir; do
  targets=$(grep -hoE '^func Fuzz[A-Za-z0-9_]+\([A-Za-z0-9_]+ \*testing\.F\)' "$dir"/*_test.go 2>/dev/null |
    sed -E 's/^func (Fuzz[A-Za-z0-9_]+).*/\1/' | sort -u) || true
  for target in $targets; do
    count=$((count + 1))
    log "fuzz $pkg $target for $FUZZTIME"
    if ! fuzz_one "$pkg" "$dir" "$target"; then
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
