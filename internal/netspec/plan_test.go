package netspec

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/shellword"
)

// netipOpts lets cmp compare netip values, whose fields are unexported.
var netipOpts = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func aux(kv ...string) map[string]netip.Addr {
	m := map[string]netip.Addr{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = netip.MustParseAddr(kv[i+1])
	}
	return m
}

// smallSpec is 10.0.0.0/28 in blocks of 4, gateway 10.0.0.1.
func smallSpec(auxAddrs map[string]netip.Addr) Spec {
	return Spec{
		Name:        "small",
		Subnet:      netip.MustParsePrefix("10.0.0.0/28"),
		Gateway:     netip.MustParseAddr("10.0.0.1"),
		Parent:      "eth0",
		Aux:         auxAddrs,
		IPAM:        PerNode,
		PerNodeSize: 4,
	}
}

func TestBlocks(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec Spec
		want []netip.Prefix
	}{
		{
			name: "/24 in blocks of 64",
			spec: validSpec(),
			want: prefixes("192.168.10.0/26", "192.168.10.64/26", "192.168.10.128/26", "192.168.10.192/26"),
		},
		{
			name: "zero size means the default",
			spec: func() Spec { s := validSpec(); s.PerNodeSize = 0; return s }(),
			want: prefixes("192.168.10.0/26", "192.168.10.64/26", "192.168.10.128/26", "192.168.10.192/26"),
		},
		{
			name: "/24 in blocks of 128",
			spec: func() Spec { s := validSpec(); s.PerNodeSize = 128; return s }(),
			want: prefixes("192.168.10.0/25", "192.168.10.128/25"),
		},
		{
			name: "one block the size of the subnet",
			spec: func() Spec { s := validSpec(); s.PerNodeSize = 256; return s }(),
			want: prefixes("192.168.10.0/24"),
		},
		{
			name: "ip range limits the blocks",
			spec: func() Spec {
				s := validSpec()
				s.IPRange, s.PerNodeSize = netip.MustParsePrefix("192.168.10.128/25"), 32
				return s
			}(),
			want: prefixes("192.168.10.128/27", "192.168.10.160/27", "192.168.10.192/27", "192.168.10.224/27"),
		},
		{
			name: "ip range in the middle of a larger subnet",
			spec: Spec{
				Subnet: netip.MustParsePrefix("10.1.0.0/16"), Gateway: netip.MustParseAddr("10.1.0.1"),
				IPRange: netip.MustParsePrefix("10.1.4.0/23"), PerNodeSize: 256, IPAM: PerNode,
			},
			want: prefixes("10.1.4.0/24", "10.1.5.0/24"),
		},
		{
			name: "size larger than the range",
			spec: func() Spec { s := validSpec(); s.PerNodeSize = 512; return s }(),
			want: nil,
		},
		{
			name: "no aux: every /30 of a /28 has a free address",
			spec: smallSpec(nil),
			want: prefixes("10.0.0.0/30", "10.0.0.4/30", "10.0.0.8/30", "10.0.0.12/30"),
		},
		{
			name: "first block all reserved: network, gateway and two aux",
			spec: smallSpec(aux("a", "10.0.0.2", "b", "10.0.0.3")),
			want: prefixes("10.0.0.4/30", "10.0.0.8/30", "10.0.0.12/30"),
		},
		{
			name: "middle block all aux",
			spec: smallSpec(aux("a", "10.0.0.8", "b", "10.0.0.9", "c", "10.0.0.10", "d", "10.0.0.11")),
			want: prefixes("10.0.0.0/30", "10.0.0.4/30", "10.0.0.12/30"),
		},
		{
			name: "last block all reserved: three aux and broadcast",
			spec: smallSpec(aux("a", "10.0.0.12", "b", "10.0.0.13", "c", "10.0.0.14")),
			want: prefixes("10.0.0.0/30", "10.0.0.4/30", "10.0.0.8/30"),
		},
		{
			name: "ip range wholly reserved",
			spec: func() Spec {
				s := smallSpec(aux("a", "10.0.0.2", "b", "10.0.0.3"))
				s.IPRange = netip.MustParsePrefix("10.0.0.0/30")
				return s
			}(),
			want: nil,
		},
		{
			name: "gateway in a later block does not hide it",
			spec: Spec{
				Subnet: netip.MustParsePrefix("10.0.0.0/28"), Gateway: netip.MustParseAddr("10.0.0.14"),
				PerNodeSize: 4, IPAM: PerNode,
			},
			want: prefixes("10.0.0.0/30", "10.0.0.4/30", "10.0.0.8/30", "10.0.0.12/30"),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Blocks(tc.spec)
			if d := cmp.Diff(tc.want, got, netipOpts); d != "" {
				t.Errorf("Blocks() (-want +got):\n%s", d)
			}
		})
	}
}

// TestBlocksDisjoint checks, for many shapes, that blocks are aligned, of
// PerNodeSize addresses, inside the range, in order and pairwise disjoint.
func TestBlocksDisjoint(t *testing.T) {
	for _, tc := range []struct {
		subnet, ipRange, gateway string
		size                     int
		aux                      map[string]netip.Addr
	}{
		{"192.168.10.0/24", "", "192.168.10.1", 64, nil},
		{"192.168.10.0/24", "", "192.168.10.1", 4, aux("a", "192.168.10.2", "b", "192.168.10.3")},
		{"192.168.10.0/24", "192.168.10.64/26", "192.168.10.1", 8, nil},
		{"10.0.0.0/16", "", "10.0.0.1", 256, nil},
		{"10.0.0.0/16", "10.0.128.0/17", "10.0.0.1", 1024, aux("x", "10.0.200.7")},
		{"10.0.0.0/8", "", "10.0.0.1", 65536, nil},
		{"10.9.9.0/29", "", "10.9.9.1", 8, nil},
	} {
		name := fmt.Sprintf("%s range %s size %d", tc.subnet, tc.ipRange, tc.size)
		t.Run(name, func(t *testing.T) {
			s := Spec{
				Subnet: netip.MustParsePrefix(tc.subnet), Gateway: netip.MustParseAddr(tc.gateway),
				Aux: tc.aux, PerNodeSize: tc.size, IPAM: PerNode,
			}
			if tc.ipRange != "" {
				s.IPRange = netip.MustParsePrefix(tc.ipRange)
			}
			blocks := Blocks(s)
			if len(blocks) == 0 {
				t.Fatal("Blocks() is empty")
			}
			rng := s.Range()
			total := 1 << (32 - rng.Bits())
			if fit := total / tc.size; len(blocks) > fit {
				t.Errorf("%d blocks, more than %d that fit", len(blocks), fit)
			}
			wantBits := 32
			for n := tc.size; n > 1; n >>= 1 {
				wantBits--
			}
			for i, b := range blocks {
				if b.Bits() != wantBits {
					t.Errorf("block %s: /%d, want /%d (%d addresses)", b, b.Bits(), wantBits, tc.size)
				}
				if b != b.Masked() {
					t.Errorf("block %s is not aligned", b)
				}
				if !contains(rng, b) {
					t.Errorf("block %s is outside range %s", b, rng)
				}
				if i > 0 && !blocks[i-1].Addr().Less(b.Addr()) {
					t.Errorf("blocks %s and %s out of order", blocks[i-1], b)
				}
				for _, c := range blocks[i+1:] {
					if b.Overlaps(c) {
						t.Errorf("blocks %s and %s overlap", b, c)
					}
				}
			}
		})
	}
}

// TestBlocksOfAHugeRange: agents list a network's ranges at every sync
// (Lease), so the list is bounded whatever the range; and each range's
// node gets an IPv6 /80 of its own, by a 16-bit index.
func TestBlocksOfAHugeRange(t *testing.T) {
	s := Spec{
		Name: "big", Subnet: netip.MustParsePrefix("10.0.0.0/12"), Gateway: netip.MustParseAddr("10.0.0.1"),
		Parent: "eth0", IPAM: PerNode, PerNodeSize: 4, IPv6Subnet: netip.MustParsePrefix("fd00::/64"),
	}
	if err := Validate(s, nil); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	blocks := Blocks(s)
	if len(blocks) > MaxBlocks {
		t.Errorf("Blocks(%s in ranges of %d) = %d ranges, want at most %d", s.Subnet, s.PerNodeSize, len(blocks), MaxBlocks)
	}
	if len(blocks) < MaxBlocks {
		t.Errorf("Blocks(%s in ranges of %d) = %d ranges, want %d: they fit", s.Subnet, s.PerNodeSize, len(blocks), MaxBlocks)
	}
	seen := map[netip.Prefix]netip.Prefix{}
	for i, b := range blocks {
		p, err := NodePlanFor(s, "n", b, i)
		if err != nil {
			t.Fatal(err)
		}
		if o, ok := seen[p.IPv6]; ok {
			t.Fatalf("ranges %s and %s both get IPv6 range %s", o, b, p.IPv6)
		}
		seen[p.IPv6] = b
	}
}

// TestBlocksLeaveAnAddressForContainers checks that every block Blocks
// returns still holds an address for a container once the node's host shim
// has taken its own (the first free one).
func TestBlocksLeaveAnAddressForContainers(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec Spec
	}{
		// 10.0.0.0/30: .0 network, .1 gateway, .2 aux; .3 alone is free,
		// and the shim takes it.
		{"one free address in first block", smallSpec(aux("a", "10.0.0.2"))},
		// 10.0.0.12/30: .12 and .13 aux, .15 broadcast; .14 alone is free.
		{"one free address in last block", smallSpec(aux("a", "10.0.0.12", "b", "10.0.0.13"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reserved := tc.spec.reserved()
			for _, b := range Blocks(tc.spec) {
				shim, err := Shim(tc.spec, b)
				if err != nil {
					t.Errorf("Shim(%s) = %v", b, err)
					continue
				}
				free := 0
				for a := b.Addr(); b.Contains(a); a = a.Next() {
					if !reserved[a] && a != shim {
						free++
					}
				}
				if free == 0 {
					t.Errorf("block %s is in Blocks() but after shim %s no address is left for containers", b, shim)
				}
			}
		})
	}
}

func TestShim(t *testing.T) {
	for _, tc := range []struct {
		name    string
		spec    Spec
		block   string
		want    string // empty: an error naming the block
		wantErr string
	}{
		{name: "skips network address and gateway", spec: validSpec(), block: "192.168.10.0/26", want: "192.168.10.2"},
		{name: "skips aux", spec: func() Spec { s := validSpec(); s.Aux = aux("a", "192.168.10.2"); return s }(),
			block: "192.168.10.0/26", want: "192.168.10.3"},
		{name: "skips several aux in a row", spec: func() Spec {
			s := validSpec()
			s.Aux = aux("a", "192.168.10.2", "b", "192.168.10.3", "c", "192.168.10.4")
			return s
		}(), block: "192.168.10.0/26", want: "192.168.10.5"},
		{name: "first address of a later block", spec: validSpec(), block: "192.168.10.64/26", want: "192.168.10.64"},
		{name: "gateway at the start of a later block", spec: func() Spec {
			s := validSpec()
			s.Gateway = netip.MustParseAddr("192.168.10.64")
			return s
		}(), block: "192.168.10.64/26", want: "192.168.10.65"},
		{name: "gateway and aux at the start of a later block", spec: func() Spec {
			s := validSpec()
			s.Gateway, s.Aux = netip.MustParseAddr("192.168.10.128"), aux("a", "192.168.10.129")
			return s
		}(), block: "192.168.10.128/26", want: "192.168.10.130"},
		{name: "network address of the subnet, not of the block", spec: func() Spec {
			s := validSpec()
			s.IPRange = netip.MustParsePrefix("192.168.10.0/25")
			return s
		}(), block: "192.168.10.0/25", want: "192.168.10.2"},
		{name: "only the broadcast address is left", spec: smallSpec(aux("a", "10.0.0.12", "b", "10.0.0.13", "c", "10.0.0.14")),
			block: "10.0.0.12/30", wantErr: "range 10.0.0.12/30 has no free address"},
		{name: "all reserved", spec: smallSpec(aux("a", "10.0.0.2", "b", "10.0.0.3")),
			block: "10.0.0.0/30", wantErr: "range 10.0.0.0/30 has no free address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Shim(tc.spec, netip.MustParsePrefix(tc.block))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Shim() = %s, %v; want an error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Shim() = %v", err)
			}
			if want := netip.MustParseAddr(tc.want); got != want {
				t.Errorf("Shim() = %s, want %s", got, want)
			}
		})
	}
}

func TestIPv6Block(t *testing.T) {
	for _, tc := range []struct {
		subnet string
		want   map[int]string
	}{
		{"fd00:1:2:3::/64", map[int]string{0: "fd00:1:2:3::/80", 1: "fd00:1:2:3:1::/80", 256: "fd00:1:2:3:100::/80"}},
		{"fd00:1:2::/48", map[int]string{0: "fd00:1:2::/80", 1: "fd00:1:2:0:1::/80", 256: "fd00:1:2:0:100::/80"}},
		{"2001:db8:aaaa:bbbb::/64", map[int]string{0: "2001:db8:aaaa:bbbb::/80", 1: "2001:db8:aaaa:bbbb:1::/80", 256: "2001:db8:aaaa:bbbb:100::/80"}},
	} {
		t.Run(tc.subnet, func(t *testing.T) {
			s := validSpec()
			s.IPv6Subnet = netip.MustParsePrefix(tc.subnet)
			for i, w := range tc.want {
				if got, want := IPv6Block(s, i), netip.MustParsePrefix(w); got != want {
					t.Errorf("IPv6Block(%d) = %s, want %s", i, got, want)
				}
			}
			seen := map[netip.Prefix]int{}
			for i := range 4096 {
				b := IPv6Block(s, i)
				if b.Bits() != 80 || b != b.Masked() {
					t.Errorf("IPv6Block(%d) = %s, want an aligned /80", i, b)
				}
				if !contains(s.IPv6Subnet, b) {
					t.Errorf("IPv6Block(%d) = %s is outside %s", i, b, s.IPv6Subnet)
				}
				if j, ok := seen[b]; ok {
					t.Errorf("IPv6Block(%d) = IPv6Block(%d) = %s", i, j, b)
				}
				seen[b] = i
			}
		})
	}
}

// planSpec is validSpec with a second aux address, so ordering shows.
func planSpec() Spec {
	s := validSpec()
	s.Aux = aux("printer", "192.168.10.250", "nas", "192.168.10.2")
	return s
}

func TestPlan(t *testing.T) {
	link := ShimLinkName("lan")
	addr := netip.MustParseAddr
	pfx := netip.MustParsePrefix
	for _, tc := range []struct {
		name    string
		spec    Spec
		nodes   []string
		want    []NodePlan
		wantErr []string
	}{
		{
			name:  "three nodes",
			spec:  planSpec(),
			nodes: []string{"n1", "n2", "n3"},
			want: []NodePlan{
				// .0 network, .1 gateway, .2 aux nas.
				{Node: "n1", Block: pfx("192.168.10.0/26"), Shim: addr("192.168.10.3"), ShimLink: link},
				{Node: "n2", Block: pfx("192.168.10.64/26"), Shim: addr("192.168.10.64"), ShimLink: link},
				{Node: "n3", Block: pfx("192.168.10.128/26"), Shim: addr("192.168.10.128"), ShimLink: link},
			},
		},
		{
			name:  "nodes keep the order given",
			spec:  planSpec(),
			nodes: []string{"zeta", "alpha"},
			want: []NodePlan{
				{Node: "zeta", Block: pfx("192.168.10.0/26"), Shim: addr("192.168.10.3"), ShimLink: link},
				{Node: "alpha", Block: pfx("192.168.10.64/26"), Shim: addr("192.168.10.64"), ShimLink: link},
			},
		},
		{
			name:  "as many nodes as blocks",
			spec:  planSpec(),
			nodes: []string{"n1", "n2", "n3", "n4"},
			want: []NodePlan{
				{Node: "n1", Block: pfx("192.168.10.0/26"), Shim: addr("192.168.10.3"), ShimLink: link},
				{Node: "n2", Block: pfx("192.168.10.64/26"), Shim: addr("192.168.10.64"), ShimLink: link},
				{Node: "n3", Block: pfx("192.168.10.128/26"), Shim: addr("192.168.10.128"), ShimLink: link},
				{Node: "n4", Block: pfx("192.168.10.192/26"), Shim: addr("192.168.10.192"), ShimLink: link},
			},
		},
		{
			name:  "ipv6",
			spec:  func() Spec { s := planSpec(); s.IPv6Subnet = pfx("fd00:1:2:3::/64"); return s }(),
			nodes: []string{"n1", "n2"},
			want: []NodePlan{
				{Node: "n1", Block: pfx("192.168.10.0/26"), Shim: addr("192.168.10.3"), ShimLink: link, IPv6: pfx("fd00:1:2:3::/80"), Shim6: addr("fd00:1:2:3:0:ffff:ffff:ffff")},
				{Node: "n2", Block: pfx("192.168.10.64/26"), Shim: addr("192.168.10.64"), ShimLink: link, IPv6: pfx("fd00:1:2:3:1::/80"), Shim6: addr("fd00:1:2:3:1:ffff:ffff:ffff")},
			},
		},
		{
			name:  "skipped reserved block is not handed out",
			spec:  smallSpec(aux("a", "10.0.0.2", "b", "10.0.0.3")),
			nodes: []string{"n1", "n2"},
			want: []NodePlan{
				{Node: "n1", Block: pfx("10.0.0.4/30"), Shim: addr("10.0.0.4"), ShimLink: ShimLinkName("small")},
				{Node: "n2", Block: pfx("10.0.0.8/30"), Shim: addr("10.0.0.8"), ShimLink: ShimLinkName("small")},
			},
		},
		{
			name:    "too many nodes",
			spec:    planSpec(),
			nodes:   []string{"n1", "n2", "n3", "n4", "n5"},
			wantErr: []string{"network lan", "5 nodes", "192.168.10.0/24", "only 4 ranges", "64 addresses"},
		},
		{
			name: "too many nodes for the ip range",
			spec: func() Spec {
				s := planSpec()
				s.IPRange, s.PerNodeSize = pfx("192.168.10.128/25"), 64
				return s
			}(),
			nodes:   []string{"n1", "n2", "n3"},
			wantErr: []string{"3 nodes", "192.168.10.128/25", "only 2 ranges"},
		},
		{
			name:    "cluster mode",
			spec:    func() Spec { s := planSpec(); s.IPAM = Cluster; return s }(),
			nodes:   []string{"n1"},
			wantErr: []string{"network lan", "per-node", "not cluster"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Plan(tc.spec, tc.nodes)
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("Plan() = %+v, want an error", got)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("Plan() error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Plan() = %v", err)
			}
			if d := cmp.Diff(tc.want, got, netipOpts); d != "" {
				t.Errorf("Plan() (-want +got):\n%s", d)
			}
		})
	}
}

func TestPlanNoNodes(t *testing.T) {
	got, err := Plan(planSpec(), nil)
	if err != nil || len(got) != 0 {
		t.Errorf("Plan(no nodes) = %+v, %v; want nothing, nil", got, err)
	}
}

// TestPlanDeterministic runs Plan and the renderers repeatedly; map
// iteration order over Aux must not show.
func TestPlanDeterministic(t *testing.T) {
	s := planSpec()
	s.Aux = aux("e", "192.168.10.250", "d", "192.168.10.251", "c", "192.168.10.252", "b", "192.168.10.253", "a", "192.168.10.254")
	s.IPv6Subnet = netip.MustParsePrefix("fd00::/64")
	nodes := []string{"n1", "n2", "n3", "n4"}
	first, err := Plan(s, nodes)
	if err != nil {
		t.Fatal(err)
	}
	firstScript := Script(s, first, "n1")
	for range 50 {
		got, err := Plan(s, nodes)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(first, got, netipOpts); d != "" {
			t.Fatalf("Plan() changed between calls (-first +now):\n%s", d)
		}
		if d := cmp.Diff(firstScript, Script(s, got, "n1")); d != "" {
			t.Fatalf("Script() changed between calls (-first +now):\n%s", d)
		}
	}
}

func TestNodePlanFor(t *testing.T) {
	s := planSpec()
	s.IPv6Subnet = netip.MustParsePrefix("fd00::/64")
	got, err := NodePlanFor(s, "n7", netip.MustParsePrefix("192.168.10.192/26"), 3)
	if err != nil {
		t.Fatal(err)
	}
	want := NodePlan{
		Node: "n7", Block: netip.MustParsePrefix("192.168.10.192/26"), Shim: netip.MustParseAddr("192.168.10.192"),
		ShimLink: ShimLinkName("lan"), IPv6: netip.MustParsePrefix("fd00:0:0:0:3::/80"),
		// The last of the /80: Docker hands out a range from its start.
		Shim6: netip.MustParseAddr("fd00::3:ffff:ffff:ffff"),
	}
	if d := cmp.Diff(want, got, netipOpts); d != "" {
		t.Errorf("NodePlanFor() (-want +got):\n%s", d)
	}

	full := smallSpec(aux("a", "10.0.0.2", "b", "10.0.0.3"))
	_, err = NodePlanFor(full, "n9", netip.MustParsePrefix("10.0.0.0/30"), 0)
	for _, w := range []string{"network small", "n9", "10.0.0.0/30"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("NodePlanFor(all reserved) = %v, want an error containing %q", err, w)
		}
	}
}

func TestHostCommands(t *testing.T) {
	s := planSpec()
	p := NodePlan{Node: "n1", Block: netip.MustParsePrefix("192.168.10.64/26"), Shim: netip.MustParseAddr("192.168.10.64"), ShimLink: "ul-56608010"}
	want := []string{
		"ip link set eth0 up promisc on",
		"ip link add ul-56608010 link eth0 type macvlan mode bridge",
		"ip addr add 192.168.10.64/32 dev ul-56608010",
		"ip link set ul-56608010 up",
		"ip route add 192.168.10.64/26 dev ul-56608010",
	}
	if d := cmp.Diff(want, HostCommands(s, p)); d != "" {
		t.Errorf("HostCommands() (-want +got):\n%s", d)
	}

	// Dual stack: the host reaches its containers' IPv6 addresses through
	// the shim too, its route winning over the parent's to the subnet.
	s.IPv6Subnet = netip.MustParsePrefix("fd00:1:2:3::/64")
	p, err := NodePlanFor(s, "n1", p.Block, 1)
	if err != nil {
		t.Fatal(err)
	}
	want = []string{
		"ip link set eth0 up promisc on",
		"ip link add ul-56608010 link eth0 type macvlan mode bridge",
		"ip addr add 192.168.10.64/32 dev ul-56608010",
		"ip -6 addr add fd00:1:2:3:1:ffff:ffff:ffff/128 dev ul-56608010 nodad",
		"ip link set ul-56608010 up",
		"ip route add 192.168.10.64/26 dev ul-56608010",
		"ip -6 route add fd00:1:2:3:1::/80 dev ul-56608010 metric 1",
	}
	if d := cmp.Diff(want, HostCommands(s, p)); d != "" {
		t.Errorf("HostCommands() of a dual-stack network (-want +got):\n%s", d)
	}
}

func TestShim6(t *testing.T) {
	for in, want := range map[string]string{
		"fd00:1:2:3:1::/80": "fd00:1:2:3:1:ffff:ffff:ffff",
		"fd00::/64":         "fd00::ffff:ffff:ffff:ffff",
		"2001:db8::/127":    "2001:db8::1",
	} {
		if got := Shim6(netip.MustParsePrefix(in)); got.String() != want {
			t.Errorf("Shim6(%s) = %s, want %s", in, got, want)
		}
	}
	for in, want := range map[string]string{"10.0.0.0/24": "10.0.0.255", "10.0.0.64/26": "10.0.0.127", "10.9.9.9/32": "10.9.9.9", "0.0.0.0/0": "255.255.255.255"} {
		if got := LastAddr(netip.MustParsePrefix(in)); got.String() != want {
			t.Errorf("LastAddr(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestConfigNetworkArgs(t *testing.T) {
	block := netip.MustParsePrefix("192.168.10.64/26")
	shim := netip.MustParseAddr("192.168.10.64")
	link := ShimLinkName("lan")
	for _, tc := range []struct {
		name string
		spec Spec
		plan NodePlan
		want []string
	}{
		{
			name: "no aux: only the shim",
			spec: func() Spec { s := validSpec(); s.Aux = nil; return s }(),
			plan: NodePlan{Node: "n2", Block: block, Shim: shim, ShimLink: link},
			want: []string{"network", "create", "--config-only",
				"--subnet", "192.168.10.0/24", "--gateway", "192.168.10.1", "--ip-range", "192.168.10.64/26",
				"--aux-address", "underlay-shim=192.168.10.64",
				"-o", "parent=eth0",
				"--label", "io.underlay.managed=true", "--label", "io.underlay.network=lan", "--label", "io.underlay.range=192.168.10.64/26",
				"lan-config"},
		},
		{
			name: "aux sorted by name with the shim among them",
			spec: func() Spec {
				s := validSpec()
				s.Aux = aux("zz-printer", "192.168.10.250", "nas", "192.168.10.240", "a-router", "192.168.10.254")
				return s
			}(),
			plan: NodePlan{Node: "n2", Block: block, Shim: shim, ShimLink: link},
			want: []string{"network", "create", "--config-only",
				"--subnet", "192.168.10.0/24", "--gateway", "192.168.10.1", "--ip-range", "192.168.10.64/26",
				"--aux-address", "a-router=192.168.10.254",
				"--aux-address", "nas=192.168.10.240",
				"--aux-address", "underlay-shim=192.168.10.64",
				"--aux-address", "zz-printer=192.168.10.250",
				"-o", "parent=eth0",
				"--label", "io.underlay.managed=true", "--label", "io.underlay.network=lan", "--label", "io.underlay.range=192.168.10.64/26",
				"lan-config"},
		},
		{
			name: "ipv6",
			spec: func() Spec {
				s := validSpec()
				s.Name, s.Parent = "vlan100", "eth0.100"
				s.IPv6Subnet = netip.MustParsePrefix("fd00:1:2:3::/64")
				return s
			}(),
			plan: NodePlan{Node: "n2", Block: block, Shim: shim, ShimLink: ShimLinkName("vlan100"),
				IPv6: netip.MustParsePrefix("fd00:1:2:3:1::/80"), Shim6: netip.MustParseAddr("fd00:1:2:3:1:ffff:ffff:ffff")},
			want: []string{"network", "create", "--config-only",
				"--subnet", "192.168.10.0/24", "--gateway", "192.168.10.1", "--ip-range", "192.168.10.64/26",
				"--aux-address", "printer=192.168.10.250",
				"--aux-address", "underlay-shim=192.168.10.64",
				"--ipv6", "--subnet", "fd00:1:2:3::/64", "--ip-range", "fd00:1:2:3:1::/80",
				"--aux-address", "underlay-shim6=fd00:1:2:3:1:ffff:ffff:ffff",
				"-o", "parent=eth0.100",
				"--label", "io.underlay.managed=true", "--label", "io.underlay.network=vlan100", "--label", "io.underlay.range=192.168.10.64/26",
				"vlan100-config"},
		},
		{
			name: "ipv6 subnet without a node range adds no ipv6 args",
			spec: func() Spec { s := validSpec(); s.IPv6Subnet = netip.MustParsePrefix("fd00::/64"); return s }(),
			plan: NodePlan{Node: "n2", Block: block, Shim: shim, ShimLink: link},
			want: []string{"network", "create", "--config-only",
				"--subnet", "192.168.10.0/24", "--gateway", "192.168.10.1", "--ip-range", "192.168.10.64/26",
				"--aux-address", "printer=192.168.10.250",
				"--aux-address", "underlay-shim=192.168.10.64",
				"-o", "parent=eth0",
				"--label", "io.underlay.managed=true", "--label", "io.underlay.network=lan", "--label", "io.underlay.range=192.168.10.64/26",
				"lan-config"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, ConfigNetworkArgs(tc.spec, tc.plan)); d != "" {
				t.Errorf("ConfigNetworkArgs() (-want +got):\n%s", d)
			}
		})
	}
}

func TestConfigNetworkArgsLeavesAuxAlone(t *testing.T) {
	s := validSpec()
	p := NodePlan{Block: netip.MustParsePrefix("192.168.10.64/26"), Shim: netip.MustParseAddr("192.168.10.64")}
	ConfigNetworkArgs(s, p)
	if _, ok := s.Aux[ShimAuxName]; ok || len(s.Aux) != 1 {
		t.Errorf("ConfigNetworkArgs changed the spec's Aux: %v", s.Aux)
	}
}

func TestSwarmNetworkArgs(t *testing.T) {
	want := []string{"network", "create", "-d", "macvlan", "--scope", "swarm", "--attachable",
		"--config-from", "lan-config", "lan"}
	if d := cmp.Diff(want, SwarmNetworkArgs(validSpec())); d != "" {
		t.Errorf("SwarmNetworkArgs() (-want +got):\n%s", d)
	}
}

func TestScript(t *testing.T) {
	s := planSpec()
	s.IPv6Subnet = netip.MustParsePrefix("fd00::/64")
	plans, err := Plan(s, []string{"node-a", "node-b", "node-c"})
	if err != nil {
		t.Fatal(err)
	}
	got := Script(s, plans, "node-a")

	// Every line the script must hold, in this order.
	var want []string
	want = append(want, "# underlay network plan for lan (macvlan): subnet 192.168.10.0/24, gateway 192.168.10.1, parent eth0, 64 addresses per node")
	for _, p := range plans {
		want = append(want, fmt.Sprintf("# on %s (range %s, host shim %s on %s)", p.Node, p.Block, p.Shim, p.ShimLink))
		want = append(want, HostCommands(s, p)...)
		want = append(want, "docker "+shellword.Join(ConfigNetworkArgs(s, p)))
	}
	want = append(want, "# then once, on a manager (node-a)", "docker "+shellword.Join(SwarmNetworkArgs(s)))

	var lines []string
	for _, l := range strings.Split(got, "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	if d := cmp.Diff(want, lines); d != "" {
		t.Errorf("Script() lines (-want +got):\n%s\nscript:\n%s", d, got)
	}
	for _, w := range []string{
		"ip route add 192.168.10.128/26 dev " + ShimLinkName("lan"),
		"--ip-range 192.168.10.64/26",
		"--aux-address underlay-shim=192.168.10.128",
		"--ip-range fd00::2:0:0:0/80",
		"docker network create -d macvlan --scope swarm --attachable --config-from lan-config",
	} {
		if !strings.Contains(got, w) {
			t.Errorf("Script() does not contain %q:\n%s", w, got)
		}
	}
	if !strings.HasSuffix(got, "\n") {
		t.Errorf("Script() does not end in a newline")
	}
}

func TestShimLinkName(t *testing.T) {
	// Agents find the links they made by this name, so it must not change
	// between releases.
	for name, want := range map[string]string{"lan": "ul-56608010", "other": "ul-c87d8df5", "": "ul-811c9dc5"} {
		if got := ShimLinkName(name); got != want {
			t.Errorf("ShimLinkName(%q) = %s, want %s", name, got, want)
		}
	}
	seen := map[string]string{}
	for _, name := range []string{"lan", "lan2", "a", strings.Repeat("n", 48), "prod.vlan-100_x", "lan-config"} {
		got := ShimLinkName(name)
		if len(got) > 15 {
			t.Errorf("ShimLinkName(%q) = %q: %d bytes, want at most 15", name, got, len(got))
		}
		if !parentRE.MatchString(got) || !strings.HasPrefix(got, "ul-") {
			t.Errorf("ShimLinkName(%q) = %q, not an ul- interface name", name, got)
		}
		if again := ShimLinkName(name); again != got {
			t.Errorf("ShimLinkName(%q) = %q, then %q", name, got, again)
		}
		if o, ok := seen[got]; ok {
			t.Errorf("ShimLinkName(%q) = ShimLinkName(%q) = %q", name, o, got)
		}
		seen[got] = name
	}
}

func TestConfigNetworkName(t *testing.T) {
	if got := ConfigNetworkName("lan"); got != "lan-config" {
		t.Errorf("ConfigNetworkName(lan) = %q, want lan-config", got)
	}
}

// TestIPv6RangesMatchPlans: the IPv6 range network inspect shows for a
// node's reported range is the one its plan gives (NodePlanFor, from the
// lease's index), in any order of ranges; a range that is no block of the
// network, none, or a network without per-node IPv6 ranges gives none.
func TestIPv6RangesMatchPlans(t *testing.T) {
	s := planSpec()
	s.IPv6Subnet = netip.MustParsePrefix("fd00:10::/64")
	plans, err := Plan(s, []string{"n1", "n2", "n3"})
	if err != nil {
		t.Fatal(err)
	}
	ranges := []netip.Prefix{plans[2].Block, {}, plans[0].Block, netip.MustParsePrefix("10.9.9.0/26"), plans[1].Block, plans[2].Block}
	want := []netip.Prefix{plans[2].IPv6, {}, plans[0].IPv6, {}, plans[1].IPv6, plans[2].IPv6}
	if d := cmp.Diff(want, IPv6Ranges(s, ranges), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); d != "" {
		t.Errorf("IPv6Ranges (-want +got):\n%s", d)
	}
	if plans[1].IPv6 != netip.MustParsePrefix("fd00:10:0:0:1::/80") {
		t.Errorf("n2's plan has IPv6 range %s, want the second /80", plans[1].IPv6)
	}
	for name, o := range map[string]Spec{"no IPv6": planSpec(), "cluster": func() Spec { c := s; c.IPAM = Cluster; return c }()} {
		if got := IPv6Ranges(o, ranges); slices.ContainsFunc(got, netip.Prefix.IsValid) {
			t.Errorf("%s: IPv6Ranges = %v, want none", name, got)
		}
	}
}
