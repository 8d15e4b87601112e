package netspec

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// checkStoredPairwise is CheckStored as it was: every spec validated
// against every other. It is the reference CheckStored must agree with.
func checkStoredPairwise(specs []Spec) map[string]error {
	out := map[string]error{}
	for i, s := range specs {
		if s.Deleting {
			if !nameRE.MatchString(s.Name) {
				out[s.Name] = fmt.Errorf("network name %q: want 1 to 48 letters, digits, '_', '.' or '-', starting with a letter or digit", s.Name)
			}
			continue
		}
		others := slices.Concat(specs[:i:i], specs[i+1:])
		if err := Validate(s, others); err != nil {
			out[s.Name] = err
		}
	}
	return out
}

// manySpecs is n specs an operator might hold: each its own name, /24,
// IPv6 /64 and VLAN parent, none refused.
func manySpecs(n int) []Spec {
	specs := make([]Spec, n)
	for i := range specs {
		sub := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
		specs[i] = Spec{Name: fmt.Sprintf("net-%04d", i), Subnet: sub, Gateway: sub.Addr().Next(), Parent: fmt.Sprintf("eth%d.%d", i/4000, i%4000+1),
			IPAM: PerNode, PerNodeSize: 64, IPv6Subnet: netip.PrefixFrom(netip.AddrFrom16([16]byte{0: 0xfd, 2: byte(i >> 8), 3: byte(i)}), 64)}
	}
	return specs
}

// TestCheckStoredScales: CheckStored validated every spec against every
// other, ShimLinkName and VLANParent (a formatted string, a regular
// expression) on each pair: 2000 networks took seconds of CPU, on every
// agent at every sync. It now compares each spec only with those that
// share something with it. Its allocations, which each pair made some
// of, stand for the work.
func TestCheckStoredScales(t *testing.T) {
	specs := manySpecs(2000)
	var refused map[string]error
	allocs := testing.AllocsPerRun(1, func() { refused = CheckStored(specs) })
	if len(refused) != 0 {
		t.Fatalf("refused %d of the specs, want none: %v", len(refused), refused)
	}
	if perSpec := allocs / float64(len(specs)); perSpec > 100 {
		t.Errorf("%.0f allocations for %d specs, %.0f per spec: it grows with the pairs", allocs, len(specs), perSpec)
	}
}

// TestCheckStoredAsPairwise: CheckStored refuses exactly the specs the
// pairwise check refuses, with the same errors, on random sets of specs
// that share names (and config-only network names), shim names, subnets
// (overlapping, equal, not masked, of the other family, missing), IPv6
// subnets and parents (equal, or one VLAN spelt two ways).
func TestCheckStoredAsPairwise(t *testing.T) {
	names := []string{"a", "b", "a-config", "b-config", "a-config-config", "n512789", "n749192", "bad name", "c"} // n512789 and n749192: one shim name
	parents := []string{"eth0", "eth1", "bond0.40", "bond0.040", "bond0.41", "eth0.4095", "lo", "eth1.7"}
	v4 := func(r *rand.Rand) netip.Prefix {
		switch r.IntN(12) {
		case 0:
			return netip.Prefix{}
		case 1:
			return netip.MustParsePrefix("fd00::/64")
		case 2:
			return netip.MustParsePrefix("0.0.0.0/0")
		case 3:
			return netip.MustParsePrefix("::ffff:10.0.0.0/120")
		}
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(r.IntN(2)), byte(r.IntN(4) * 64), byte(r.IntN(4) * 64)}), 14+r.IntN(17))
		if r.IntN(4) > 0 {
			p = p.Masked()
		}
		return p
	}
	v6 := func(r *rand.Rand) netip.Prefix {
		switch r.IntN(8) {
		case 0, 1:
			return netip.Prefix{}
		case 2:
			return netip.MustParsePrefix("10.0.0.0/24")
		case 3:
			return netip.MustParsePrefix("::/0")
		case 4:
			return netip.MustParsePrefix("::ffff:10.0.0.0/104")
		}
		p := netip.PrefixFrom(netip.AddrFrom16([16]byte{0: 0xfd, 7: byte(r.IntN(4) * 64), 8: byte(r.IntN(2) * 128)}), 40+r.IntN(30))
		if r.IntN(4) > 0 {
			p = p.Masked()
		}
		return p
	}
	for seed := range uint64(3000) {
		r := rand.New(rand.NewPCG(seed, 1))
		specs := make([]Spec, r.IntN(12))
		for i := range specs {
			s := Spec{Name: names[r.IntN(len(names))], Subnet: v4(r), Parent: parents[r.IntN(len(parents))], IPAM: PerNode, PerNodeSize: 64,
				IPv6Subnet: v6(r), Deleting: r.IntN(10) == 0}
			if r.IntN(3) == 0 {
				s.Name = fmt.Sprintf("n%d", r.IntN(20))
			}
			if s.Subnet.IsValid() {
				s.Gateway = s.Subnet.Masked().Addr().Next()
			}
			specs[i] = s
		}
		got, want := CheckStored(specs), checkStoredPairwise(specs)
		if !sameErrors(got, want) {
			t.Fatalf("seed %d: specs %+v:\nCheckStored %v\npairwise    %v", seed, specs, got, want)
		}
	}
}

// sameErrors reports whether a and b refuse the same names with the same
// errors.
func sameErrors(a, b map[string]error) bool {
	if len(a) != len(b) {
		return false
	}
	for k, ea := range a {
		eb, ok := b[k]
		if !ok || (ea == nil) != (eb == nil) || ea != nil && ea.Error() != eb.Error() {
			return false
		}
	}
	return true
}

func BenchmarkCheckStored(b *testing.B) {
	specs := manySpecs(2000)
	for b.Loop() {
		if refused := CheckStored(specs); len(refused) != 0 {
			b.Fatalf("refused %d specs: %v", len(refused), refused)
		}
	}
}
