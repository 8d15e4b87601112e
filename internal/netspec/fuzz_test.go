package netspec

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/shellword"
)

// FuzzStoredSpec: whatever document sits at a network's spec key beside a
// valid network, reading the specs as agents do sets it apart or refuses
// it unless it would pass `network create`, hides no other network, and
// freezes the valid one only by conflicting with it (then both are
// refused). A spec let through gives per-node ranges inside its range and
// apart from each other, host shims on free addresses, and host commands
// whose every word a shell reads as written.
func FuzzStoredSpec(f *testing.F) {
	seed := func(s Spec) []byte {
		b, err := json.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	v := validSpec()
	f.Add("lan", seed(v))
	v6 := validSpec()
	v6.IPv6Subnet = netip.MustParsePrefix("fd00:1::/64")
	v6.Driver, v6.IPvlanMode, v6.Parent = IPvlan, IPvlanL3, "bond0.40"
	f.Add("lan", seed(v6))
	cl := validSpec()
	cl.IPAM, cl.PerNodeSize, cl.IPRange = Cluster, 0, netip.MustParsePrefix("192.168.10.128/25")
	f.Add("lan", seed(cl))
	f.Add("alias", seed(v))
	clash := validSpec()
	clash.Parent = "eth1"
	f.Add("lan", seed(clash))
	f.Add("lan", []byte(`{"name":"lan","deleting":true}`))
	f.Add("lan", []byte(`{"name":"lan","subnet":"192.168.10.0/24","gateway":"192.168.10.1","parent":"eth0;reboot","ipam":"per-node","per_node_size":64}`))
	f.Add("lan", []byte(`{"name":"lan","subnet":"192.168.10.0/30","gateway":"192.168.10.1","parent":"e","ipam":"per-node","per_node_size":4,"aux":{"a":"192.168.10.2"}}`))
	f.Add("lan", []byte(`{not json`))

	f.Fuzz(func(t *testing.T, name string, doc []byte) {
		if name == other().Name || name == "" || strings.Contains(name, "/") {
			return // the valid network's own key, or no spec key of one network
		}
		ctx := context.Background()
		kv := kvtest.New()
		base, err := json.Marshal(other())
		if err != nil {
			t.Fatal(err)
		}
		kv.Put(ctx, SpecKey(other().Name), base)
		kv.Put(ctx, SpecKey(name), doc)

		specs, bad, err := NewStore(kv).ReadSpecs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if Unlistable(name) {
			// "." or "..": its keys are redirected by Consul's paths, so
			// the listing sets it apart, never a spec nor a bad one.
			l, err := NewStore(kv).ReadListing(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(specs) != 1 || len(bad) != 0 || len(l.Unlisted) != 1 || l.Unlisted[0] != SpecKey(name) {
				t.Fatalf("%d specs, %d bad and unlisted %q from the valid key and %s", len(specs), len(bad), l.Unlisted, SpecKey(name))
			}
			return
		}
		if len(specs)+len(bad) != 2 {
			t.Fatalf("%d specs and %d bad from 2 keys", len(specs), len(bad))
		}
		refused := CheckStored(specs)
		for _, b := range bad {
			refused[b.Name] = b.Err
		}
		if refused[other().Name] != nil && refused[name] == nil {
			t.Fatalf("the valid network refused (%v) while %q passed", refused[other().Name], name)
		}
		for _, s := range specs {
			if refused[s.Name] != nil || s.Deleting || s.Name == other().Name {
				continue
			}
			if s.Name != name {
				t.Fatalf("spec at %s passed as network %q", SpecKey(name), s.Name)
			}
			if err := Validate(s, []Spec{other()}); err != nil {
				t.Fatalf("passed although network create refuses it: %v", err)
			}
			checkAccepted(t, s)
		}
	})
}

// checkAccepted checks what agents make of a spec they accept.
func checkAccepted(t *testing.T, s Spec) {
	t.Helper()
	reserved := s.reserved()
	if s.IPAM == PerNode {
		blocks := Blocks(s)
		if len(blocks) == 0 {
			t.Fatalf("per-node network passed with no range a node can take in %s", s.Range())
		}
		for i, b := range blocks {
			if b != b.Masked() || b.Bits() < s.Range().Bits() || !s.Range().Contains(b.Addr()) || !s.Subnet.Contains(b.Addr()) {
				t.Fatalf("range %s not a block inside %s", b, s.Range())
			}
			if i > 0 && blocks[i-1].Overlaps(b) {
				t.Fatalf("ranges %s and %s overlap", blocks[i-1], b)
			}
			shim, err := Shim(s, b)
			if err != nil || !b.Contains(shim) || reserved[shim] {
				t.Fatalf("shim of %s: %s, %v: outside it or reserved", b, shim, err)
			}
			if freeCount(b, reserved, 2) < 2 {
				t.Fatalf("range %s leaves no address for a container beside the shim", b)
			}
		}
		plans, err := Plan(s, []string{"n1"}[:min(1, len(blocks))])
		if err != nil {
			t.Fatalf("plan: %v", err)
		}
		for _, p := range plans {
			for _, c := range HostCommands(s, p) {
				cmd, _, _ := strings.Cut(c, "   # ")
				for _, w := range strings.Fields(cmd) {
					if shellword.Quote(w) != w {
						t.Fatalf("host command %q: word %q is not read by a shell as written", c, w)
					}
				}
			}
			if s.IPv6Subnet.IsValid() && (!s.IPv6Subnet.Contains(p.IPv6.Addr()) || p.IPv6.Bits() != 80) {
				t.Fatalf("IPv6 range %s of node n1 not a /80 inside %s", p.IPv6, s.IPv6Subnet)
			}
		}
	}
	for name, a := range s.Aux {
		if !auxRE.MatchString(name) || !s.Subnet.Contains(a) || a == s.Gateway {
			t.Fatalf("aux %s=%s passed", name, a)
		}
	}
}
