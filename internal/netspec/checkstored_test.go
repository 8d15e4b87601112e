package netspec

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// checkStoredPairwise is CheckStored as it was: every spec validated
// against every other. It is the reference CheckStored must agree with.
func checkStoredPairwise(specs []Spec) map[string]error { return checkStoredWith(specs, Validate) }

// checkStoredWith is CheckStored's loop as it was, validating each spec
// with validate against every other.
func checkStoredWith(specs []Spec, validate func(Spec, []Spec) error) map[string]error {
	out := map[string]error{}
	for i, s := range specs {
		if s.Deleting {
			if !nameRE.MatchString(s.Name) {
				out[s.Name] = fmt.Errorf("network name %q: want 1 to 48 letters, digits, '_', '.' or '-', starting with a letter or digit", s.Name)
			}
			continue
		}
		others := slices.Concat(specs[:i:i], specs[i+1:])
		if err := validate(s, others); err != nil {
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

// randomSpecs are up to 15 specs that share names (and config-only
// network names), shim names, subnets (overlapping, equal, not masked, of
// the other family, missing, /0, 4-in-6), IPv6 subnets and parents (equal,
// or one VLAN spelt two ways); some are being deleted.
func randomSpecs(r *rand.Rand) []Spec {
	names := []string{"a", "b", "a-config", "b-config", "a-config-config", "n512789", "n749192", "bad name", "c"} // n512789 and n749192: one shim name
	parents := []string{"eth0", "eth1", "bond0.40", "bond0.040", "bond0.41", "eth0.4095", "lo", "eth1.7", "bond0.0040"}
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
	specs := make([]Spec, r.IntN(16))
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
	return specs
}

// TestCheckStoredAsPairwise: CheckStored refuses exactly the specs the
// pairwise check refuses, with the same errors, on random sets of specs.
func TestCheckStoredAsPairwise(t *testing.T) {
	for seed := range uint64(3000) {
		specs := randomSpecs(rand.New(rand.NewPCG(seed, 1)))
		got, want := CheckStored(specs), checkStoredPairwise(specs)
		if !sameErrors(got, want) {
			t.Fatalf("seed %d: specs %+v:\nCheckStored %v\npairwise    %v", seed, specs, got, want)
		}
	}
}

// TestCheckStoredRefusesAsBefore: reporting each kind of conflict once
// (naming the first networks, counting the others) refuses the same specs
// as reporting each conflict did, and Validate refuses the same specs:
// checkStoredBefore is CheckStored as it was.
func TestCheckStoredRefusesAsBefore(t *testing.T) {
	for seed := range uint64(3000) {
		specs := randomSpecs(rand.New(rand.NewPCG(seed, 2)))
		got, want := CheckStored(specs), checkStoredBefore(specs)
		if !slices.Equal(slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want))) {
			t.Fatalf("seed %d: specs %+v:\nCheckStored refuses %v\nbefore, refused     %v", seed, specs, got, want)
		}
		for i, s := range specs {
			others := slices.Concat(specs[:i:i], specs[i+1:])
			if (Validate(s, others) == nil) != (validateBefore(s, others) == nil) {
				t.Fatalf("seed %d: spec %+v against %+v: Validate %v, before %v", seed, s, others, Validate(s, others), validateBefore(s, others))
			}
		}
	}
}

// oneParent is n specs written past `network create` on one parent.
func oneParent(n int) []Spec {
	specs := manySpecs(n)
	for i := range specs {
		specs[i].Parent = "eth0"
	}
	return specs
}

// TestCheckStoredNamesFewConflicts: 2000 specs written on one parent
// each carried 1999 problems, one per other network: half a gigabyte of
// text, made at every sync of every agent. Each is refused with one
// problem naming the first networks and counting the others.
func TestCheckStoredNamesFewConflicts(t *testing.T) {
	specs := oneParent(2000)
	refused := CheckStored(specs)
	if len(refused) != len(specs) {
		t.Fatalf("refused %d of %d specs on one parent, want all", len(refused), len(specs))
	}
	total := 0
	for _, err := range refused {
		total += len(err.Error())
	}
	if perSpec := total / len(specs); perSpec > 300 {
		t.Errorf("refusals of %d specs on one parent hold %d bytes, %d per spec, want at most 300: %.300s", len(specs), total, perSpec, refused["net-0000"])
	}
	want := `parent eth0 already carries networks "net-0001", "net-0002", "net-0003" and 1996 others: Docker allows one macvlan or ipvlan network per parent interface`
	if got := refused["net-0000"].Error(); got != want {
		t.Errorf("net-0000 refused with %.300q, want %q", got, want)
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

// checkStoredBefore, validateBefore and checkPairBefore are CheckStored,
// Validate and the pair check as they were before each kind of conflict
// was reported once: a problem per conflicting network.
func checkStoredBefore(specs []Spec) map[string]error { return checkStoredWith(specs, validateBefore) }

func validateBefore(s Spec, existing []Spec) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if checkOwn(s, bad) {
		for _, o := range existing {
			checkPairBefore(s, o, bad)
		}
	}
	return errors.Join(errs...)
}

func checkPairBefore(s, o Spec, bad func(string, ...any)) {
	if o.Name == s.Name {
		bad("network %q already exists", s.Name)
		return
	}
	if s.Name == ConfigNetworkName(o.Name) {
		bad("network name %q is the name of network %q's config-only network: choose another name", s.Name, o.Name)
	}
	if o.Name == ConfigNetworkName(s.Name) {
		bad("network %q's config-only network would be named %s, as network %q is: choose another name", s.Name, o.Name, o.Name)
	}
	if o.Subnet.Overlaps(s.Subnet) {
		bad("subnet %s overlaps network %q (%s)", s.Subnet, o.Name, o.Subnet)
	}
	if s.IPv6Subnet.IsValid() && o.IPv6Subnet.IsValid() && o.IPv6Subnet.Overlaps(s.IPv6Subnet) {
		bad("IPv6 subnet %s overlaps network %q (%s)", s.IPv6Subnet, o.Name, o.IPv6Subnet)
	}
	if o.Parent == s.Parent {
		bad("parent %s already carries network %q: Docker allows one macvlan or ipvlan network per parent interface", s.Parent, o.Name)
	} else if lower, vid, ok := VLANParent(s.Parent); ok {
		if ol, ov, ook := VLANParent(o.Parent); ook && ol == lower && ov == vid {
			bad("parent %s is VLAN %d on %s, as network %q's parent %s is: a device carries one link per VLAN, and Docker one network per parent", s.Parent, vid, lower, o.Name, o.Parent)
		}
	}
	if shim := ShimLinkName(s.Name); shim == ShimLinkName(o.Name) {
		bad("host shim link %s is also network %q's (the names hash alike): choose another name", shim, o.Name)
	}
}

func BenchmarkCheckStored(b *testing.B) {
	specs := manySpecs(2000)
	for b.Loop() {
		if refused := CheckStored(specs); len(refused) != 0 {
			b.Fatalf("refused %d specs: %v", len(refused), refused)
		}
	}
}

// BenchmarkCheckStoredOneParent: the worst case, 2000 specs written on
// one parent, every one refused for every other.
func BenchmarkCheckStoredOneParent(b *testing.B) {
	specs := oneParent(2000)
	for b.Loop() {
		if refused := CheckStored(specs); len(refused) != len(specs) {
			b.Fatalf("refused %d specs, want %d", len(refused), len(specs))
		}
	}
}
