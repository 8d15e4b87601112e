package ipam

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/netspec"
)

var (
	t0    = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	pool8 = Pool{Network: "net", Prefix: netip.MustParsePrefix("10.1.0.0/24"), Range: netip.MustParsePrefix("10.1.0.0/27"), BlockBits: 29,
		Reserved: map[netip.Addr]bool{netip.MustParseAddr("10.1.0.1"): true, netip.MustParseAddr("10.1.0.9"): true}}
)

func addr(s string) netip.Addr     { return netip.MustParseAddr(s) }
func block(s string) netip.Prefix  { return netip.MustParsePrefix(s) }
func task(node string) Alloc       { return Alloc{Node: node, At: t0, Kind: KindTask} }
func spare(node, gen string) Alloc { return Alloc{Node: node, At: t0, Kind: KindSpare, Gen: gen} }

func doc(node string, allocs map[string]Alloc) BlockDoc {
	if allocs == nil {
		allocs = map[string]Alloc{}
	}
	return BlockDoc{Node: node, Allocs: allocs}
}

func TestFill(t *testing.T) {
	// Block 10.1.0.0/29: .0 is the network address and .1 the gateway.
	d, got := fill(pool8, block("10.1.0.0/29"), doc("", nil), "n1", []Alloc{task("n1"), task("n1")}, reuse{})
	if fmt.Sprint(got) != "[10.1.0.2 10.1.0.3]" || d.Node != "n1" {
		t.Errorf("fill of a free block: %v, affinity %q; want .2 .3 and the block claimed by n1", got, d.Node)
	}
	// Another node's block is borrowed, not claimed; .9 is reserved.
	d, got = fill(pool8, block("10.1.0.8/29"), doc("n2", map[string]Alloc{"10.1.0.8": task("n2")}), "n1", []Alloc{task("n1"), task("n1"), task("n1")}, reuse{})
	if fmt.Sprint(got) != "[10.1.0.10 10.1.0.11 10.1.0.12]" || d.Node != "n2" {
		t.Errorf("borrow: %v, affinity %q", got, d.Node)
	}
	// Beyond the range: nothing.
	if _, got := fill(pool8, block("10.1.0.32/29"), doc("", nil), "n1", []Alloc{task("n1")}, reuse{}); len(got) != 0 {
		t.Errorf("allocated %v outside the range", got)
	}
}

func TestCandidates(t *testing.T) {
	full := map[string]Alloc{}
	for a := addr("10.1.0.16"); block("10.1.0.16/29").Contains(a); a = a.Next() {
		full[a.String()] = task("n1")
	}
	v := view{
		docs: map[netip.Prefix]BlockDoc{
			block("10.1.0.0/29"):  doc("n2", map[string]Alloc{"10.1.0.2": task("n2")}),
			block("10.1.0.16/29"): doc("n1", full),
			block("10.1.0.24/29"): doc("n1", map[string]Alloc{"10.1.0.24": task("n1")}),
		},
		// 10.1.0.8/29 has an unreadable document: never claimed.
		taken: map[netip.Prefix]bool{block("10.1.0.0/29"): true, block("10.1.0.8/29"): true, block("10.1.0.16/29"): true, block("10.1.0.24/29"): true},
	}
	if got := fmt.Sprint(candidates(pool8, v, "n1", true, reuse{})); got != "[10.1.0.24/29 10.1.0.0/29]" {
		t.Errorf("n1's candidates %s: want its own block with room, then n2's (no free block: the unreadable one is taken)", got)
	}
	if got := fmt.Sprint(candidates(pool8, v, "n1", false, reuse{})); got != "[10.1.0.24/29]" {
		t.Errorf("n1's candidates without borrowing: %s", got)
	}
	delete(v.taken, block("10.1.0.8/29"))
	if got := fmt.Sprint(candidates(pool8, v, "n3", true, reuse{})); got != "[10.1.0.8/29 10.1.0.0/29 10.1.0.24/29]" {
		t.Errorf("n3's candidates %s: want the free block first, then others' in address order", got)
	}
	if !anyFree(pool8, v, reuse{}) {
		t.Error("anyFree: false with free addresses")
	}
}

// TestClaimOrder: a node tries free blocks from a place hashed from its
// identity, wrapping around: every block once, in address order from
// there. Even with two free blocks, nodes start apart (all starting at
// the lowest, every node needing a block at once races for one). The
// order is a list of its own: the caller's appending to the list it
// passed, which has room to spare when built by append, changes nothing
// in it.
func TestClaimOrder(t *testing.T) {
	blocks := []netip.Prefix{block("10.1.0.0/29"), block("10.1.0.8/29"), block("10.1.0.16/29")}
	for n := 2; n <= len(blocks); n++ {
		first := map[netip.Prefix]bool{}
		for i := range 20 {
			node := fmt.Sprintf("node-%d", i)
			free := make([]netip.Prefix, n, n+4)
			copy(free, blocks)
			got := claimOrder(free, node)
			start := slices.Index(blocks, got[0])
			var want []netip.Prefix
			for k := range n {
				want = append(want, blocks[(start+k)%n])
			}
			if !slices.Equal(got, want) {
				t.Fatalf("%s's order of %v: %v, want a rotation of it", node, blocks[:n], got)
			}
			free = append(free, block("10.1.0.24/29"), block("10.1.0.32/29"), block("10.1.0.40/29"), block("10.1.0.48/29"))
			if !slices.Equal(got, want) {
				t.Fatalf("%s's order changed to %v when the caller appended to its list %v, want %v", node, got, free, want)
			}
			first[got[0]] = true
		}
		if len(first) != n {
			t.Errorf("20 nodes with %d free blocks start at %v only, want every block", n, slices.SortedFunc(maps.Keys(first), comparePrefix))
		}
	}
}

func TestReleaseOwn(t *testing.T) {
	d := doc("n1", map[string]Alloc{"10.1.0.2": task("n1"), "10.1.0.3": task("n2"), "10.1.0.4": {Node: "n1", Kind: KindShim},
		"10.1.0.5": spare("n1", "g"), "10.1.0.7": spare("n1", "g"), "10.1.0.8": spare("n1", "old")})
	all := []netip.Addr{addr("10.1.0.2"), addr("10.1.0.3"), addr("10.1.0.4"), addr("10.1.0.5"), addr("10.1.0.6"), addr("10.1.0.7"), addr("10.1.0.8")}
	got, refused, unhanded, freed := releaseOwn(d.clone(), "n1", "g", all, map[netip.Addr]bool{addr("10.1.0.5"): true})
	if fmt.Sprint(freed) != "[10.1.0.2 10.1.0.5 10.1.0.8]" || fmt.Sprint(got.addrs()) != "[10.1.0.3 10.1.0.4 10.1.0.7]" {
		t.Errorf("freed %v, left %v; want n1's task and its handed and earlier spares freed, n2's task, n1's shim and the spare never handed out left", freed, got.addrs())
	}
	if len(refused) != 2 || refused[addr("10.1.0.3")].Node != "n2" || refused[addr("10.1.0.4")].Kind != KindShim {
		t.Errorf("refused %v, want n2's address and the shim", refused)
	}
	if fmt.Sprint(unhanded) != "[10.1.0.7]" {
		t.Errorf("unhanded %v, want the spare of this generation never handed out (an earlier generation's may be Docker's)", unhanded)
	}
	if _, _, _, freed := releaseOwn(d.clone(), "n3", "g", []netip.Addr{addr("10.1.0.2")}, nil); len(freed) > 0 {
		t.Error("n3 released n1's address")
	}
}

func TestReclaimOnlyWhatWasObserved(t *testing.T) {
	later := Alloc{Node: "n1", At: t0.Add(time.Minute), Kind: KindTask}
	d := doc("n1", map[string]Alloc{"10.1.0.2": task("n1"), "10.1.0.3": later})
	got, freed := reclaim(d, map[netip.Addr]Alloc{addr("10.1.0.2"): task("n1"), addr("10.1.0.3"): task("n1"), addr("10.1.0.4"): task("n1")})
	if fmt.Sprint(freed) != "[10.1.0.2]" || fmt.Sprint(got.addrs()) != "[10.1.0.3]" {
		t.Errorf("freed %v, left %v: want only the allocation observed (.3 was allocated again since)", freed, got.addrs())
	}
}

// TestReclaimOnlyTheGenerationObserved: a spare observed as an earlier
// agent's, given back and claimed again as a spare by the agent now
// running, with the same time stamp (a coarse or a stopped clock), is
// another allocation: only its generation tells them apart, and it stays.
func TestReclaimOnlyTheGenerationObserved(t *testing.T) {
	d := doc("n1", map[string]Alloc{"10.1.0.2": spare("n1", "now")})
	got, freed := reclaim(d, map[netip.Addr]Alloc{addr("10.1.0.2"): spare("n1", "old")})
	if len(freed) != 0 || fmt.Sprint(got.addrs()) != "[10.1.0.2]" {
		t.Errorf("freed %v, left %v: want the spare of generation now kept (the one observed was generation old's)", freed, got.addrs())
	}
}

// TestForgetKeepsAnotherNodesAffinity: forgetting a departed node frees
// its allocations in a block another node has affinity for, and leaves
// that affinity alone: the block is still the live node's, not one any
// node would claim.
func TestForgetKeepsAnotherNodesAffinity(t *testing.T) {
	d := doc("n2", map[string]Alloc{"10.1.0.2": task("gone"), "10.1.0.3": task("n2")})
	got, freed, disowned := forget(d, map[netip.Addr]Alloc{addr("10.1.0.2"): task("gone")}, "gone")
	if fmt.Sprint(freed) != "[10.1.0.2]" || got.Node != "n2" || disowned {
		t.Errorf("freed %v, affinity %q, disowned %v: want gone's address freed and n2's affinity kept", freed, got.Node, disowned)
	}
	got, _, disowned = forget(doc("gone", map[string]Alloc{"10.1.0.3": task("n2")}), nil, "gone")
	if got.Node != "" || !disowned {
		t.Errorf("affinity %q, disowned %v: want gone's affinity given up", got.Node, disowned)
	}
}

// TestSparesElsewhere: spares of other nodes, and of this node's earlier
// agents, might be given back; this allocator's own are not elsewhere.
func TestSparesElsewhere(t *testing.T) {
	for _, tt := range []struct {
		name string
		al   Alloc
		want bool
	}{
		{"this allocator's", spare("n1", "now"), false},
		{"this node's earlier agent's", spare("n1", "old"), true},
		{"another node's", spare("n2", "now"), true},
		{"a task", task("n2"), false},
	} {
		v := view{docs: map[netip.Prefix]BlockDoc{block("10.1.0.0/29"): doc("n1", map[string]Alloc{"10.1.0.2": tt.al})}}
		if got := sparesElsewhere(v, "n1", "now"); got != tt.want {
			t.Errorf("%s: sparesElsewhere = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestPlanSweep(t *testing.T) {
	in := sweepInput{
		Node: "n1", Gen: "now",
		Allocs: map[netip.Addr]Alloc{
			addr("10.1.0.2"):  task("n1"),                                                 // held: stays
			addr("10.1.0.3"):  task("n1"),                                                 // unheld, first seen now
			addr("10.1.0.4"):  task("n1"),                                                 // unheld for a grace: leaked
			addr("10.1.0.5"):  {Node: "n1", At: t0.Add(59 * time.Minute), Kind: KindTask}, // young: in flight
			addr("10.1.0.6"):  spare("n1", "old"),                                         // earlier agent's, held: adopted
			addr("10.1.0.7"):  spare("n1", "old"),                                         // earlier agent's, unheld: like a task
			addr("10.1.0.10"): spare("n1", "now"),                                         // this agent's: its own business
			addr("10.1.0.11"): spare("n1", "now"),                                         // this generation's, but unknown: a lost answer
			addr("10.1.0.12"): task("n2"),                                                 // another node's
			addr("10.1.0.13"): task("gone"),                                               // a departed node's
			addr("10.1.0.14"): {Node: "n1", At: t0, Kind: KindShim},
			// Dated ahead of the clock: by less than a grace, in flight;
			// by more (the clock was set back since), of unknown age.
			addr("10.1.0.15"): {Node: "n1", At: t0.Add(time.Hour + 30*time.Second), Kind: KindTask},
			addr("10.1.0.16"): {Node: "n1", At: t0.Add(3 * time.Hour), Kind: KindTask},
		},
		Held:   map[netip.Addr]bool{addr("10.1.0.2"): true, addr("10.1.0.6"): true},
		Gone:   map[string]bool{"gone": true},
		Spares: map[netip.Addr]bool{addr("10.1.0.10"): true},
		Unheld: map[netip.Addr]time.Time{addr("10.1.0.4"): t0.Add(59 * time.Minute), addr("10.1.0.7"): t0.Add(59 * time.Minute), addr("10.1.0.11"): t0.Add(59 * time.Minute),
			addr("10.1.0.15"): t0.Add(59 * time.Minute), addr("10.1.0.16"): t0.Add(59 * time.Minute)},
		Now: t0.Add(time.Hour), Grace: time.Minute,
	}
	p := planSweep(in)
	if fmt.Sprint(keys(p.Leaked)) != "[10.1.0.4 10.1.0.7 10.1.0.11 10.1.0.16]" {
		t.Errorf("leaked %v", keys(p.Leaked))
	}
	if fmt.Sprint(keys(p.Departed)) != "[10.1.0.13]" || fmt.Sprint(p.Adopt) != "[10.1.0.6]" {
		t.Errorf("departed %v, adopt %v", keys(p.Departed), p.Adopt)
	}
	if fmt.Sprint(keys(p.Unheld)) != "[10.1.0.3 10.1.0.4 10.1.0.7 10.1.0.11 10.1.0.16]" || !p.Unheld[addr("10.1.0.3")].Equal(in.Now) {
		t.Errorf("unheld %v", p.Unheld)
	}
	// The leader's own addresses are never "departed".
	in.Gone["n1"] = true
	if p := planSweep(in); len(p.Departed) != 1 {
		t.Errorf("departed %v with the sweeping node itself marked gone", keys(p.Departed))
	}
}

// TestPlanSweepStartUnderWay: Docker allocates a container's address as
// its start begins and shows it on the container only once the start is
// done, which under load took 42 s (seen in the lab), and can take longer
// on a hung dockerd. While a start is under way on the pool's network, no
// address allocated since that container was created is reclaimed, however
// long unheld: another node would be handed it while the starting
// container is about to use it. Older leaks are reclaimed meanwhile.
func TestPlanSweepStartUnderWay(t *testing.T) {
	now := t0.Add(time.Hour)
	at := func(ago time.Duration) Alloc { return Alloc{Node: "n1", At: now.Add(-ago), Kind: KindTask} }
	long := now.Add(-50 * time.Minute) // first seen unheld: long past the grace
	in := sweepInput{
		Node: "n1", Gen: "now",
		Allocs: map[netip.Addr]Alloc{
			addr("10.1.0.2"): at(5 * time.Minute),  // allocated after the starting container was created
			addr("10.1.0.3"): at(20 * time.Minute), // allocated before it: a leak whatever starts now
			addr("10.1.0.4"): spare("n1", "old"),   // an earlier agent's spare: it may have been handed to the start
		},
		Unheld: map[netip.Addr]time.Time{addr("10.1.0.2"): long, addr("10.1.0.3"): long, addr("10.1.0.4"): long},
		Now:    now, Grace: time.Minute,
	}
	cases := []struct {
		name           string
		starts         []Start
		leaked, defers string
	}{
		{"no start under way", nil, "[10.1.0.2 10.1.0.3 10.1.0.4]", "[]"},
		{"a start under way", []Start{{Since: now.Add(-6 * time.Minute)}}, "[10.1.0.3]", "[10.1.0.2 10.1.0.4]"},
		{"the oldest start counts", []Start{{Since: now.Add(-time.Minute)}, {Since: now.Add(-6 * time.Minute)}}, "[10.1.0.3]", "[10.1.0.2 10.1.0.4]"},
		// A start however long under way (dockerd holds its container).
		{"a start under way for long", []Start{{Since: now.Add(-25 * time.Minute)}}, "[]", "[10.1.0.2 10.1.0.3 10.1.0.4]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in.Starts = c.starts
			p := planSweep(in)
			if fmt.Sprint(keys(p.Leaked)) != c.leaked || fmt.Sprint(p.Deferred) != c.defers {
				t.Errorf("leaked %v, deferred %v; want leaked %s, deferred %s", keys(p.Leaked), p.Deferred, c.leaked, c.defers)
			}
			// Deferred addresses stay pending, still unheld since first seen.
			for _, a := range p.Deferred {
				if !p.Unheld[a].Equal(long) {
					t.Errorf("%s unheld since %v, want %v", a, p.Unheld[a], long)
				}
			}
		})
	}
}

// TestPlanSweepNoNodeOrKind: an allocation with no kind is its node's
// task address (a leak once unheld for the grace, deferred while a start
// under way may hold it); one naming no node is adopted by the node whose
// container holds it, else reclaimed by the leader once it has seen it for
// the node timeout, and left alone by every other node.
func TestPlanSweepNoNodeOrKind(t *testing.T) {
	now := t0.Add(time.Hour)
	old := now.Add(-50 * time.Minute)
	allocs := map[netip.Addr]Alloc{
		addr("10.1.0.2"): {Node: "n1", At: old},                        // no kind, unheld for long
		addr("10.1.0.3"): {Node: "n1", At: now.Add(-90 * time.Second)}, // no kind, allocated since the start began
		addr("10.1.0.4"): {Node: "n1", At: old},                        // no kind, held
		addr("10.1.0.5"): {At: old, Kind: KindTask},                    // no node, seen for the timeout
		addr("10.1.0.6"): {At: old},                                    // no node nor kind, first seen now
		addr("10.1.0.7"): {At: old, Kind: KindShim},                    // no node, held here
		addr("10.1.0.8"): {Node: "n2", At: old},                        // another node's, no kind
	}
	unheld := map[netip.Addr]time.Time{addr("10.1.0.2"): old, addr("10.1.0.3"): old}
	seen := map[netip.Addr]time.Time{addr("10.1.0.5"): now.Add(-10*time.Minute - time.Second)}
	for _, c := range []struct {
		name     string
		leader   bool
		starts   []Start
		leaked   string
		deferred string
		orphaned string
		nodeless string
	}{
		{"follower", false, nil, "[10.1.0.2 10.1.0.3]", "[]", "[]", "[]"},
		{"leader", true, nil, "[10.1.0.2 10.1.0.3]", "[]", "[10.1.0.5]", "[10.1.0.5 10.1.0.6]"},
		{"follower, a start under way", false, []Start{{Since: now.Add(-2 * time.Minute)}}, "[10.1.0.2]", "[10.1.0.3]", "[]", "[]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := sweepInput{Node: "n1", Gen: "g", Allocs: allocs, Held: map[netip.Addr]bool{addr("10.1.0.4"): true, addr("10.1.0.7"): true},
				Unheld: unheld, Leader: c.leader, Nodeless: seen, NodeTimeout: 10 * time.Minute, Starts: c.starts, Now: now, Grace: time.Minute}
			if c.leader {
				in.Gone = map[string]bool{}
			}
			p := planSweep(in)
			if got := fmt.Sprint(keys(p.Leaked)); got != c.leaked || fmt.Sprint(p.Deferred) != c.deferred {
				t.Errorf("leaked %s, deferred %v; want %s, %s", got, p.Deferred, c.leaked, c.deferred)
			}
			if got := fmt.Sprint(keys(p.Orphaned)); got != c.orphaned || fmt.Sprint(keys(p.Nodeless)) != c.nodeless {
				t.Errorf("orphaned %s, nodeless %v; want %s, %s", got, keys(p.Nodeless), c.orphaned, c.nodeless)
			}
			if fmt.Sprint(p.Adopt) != "[10.1.0.7]" || len(p.Departed) != 0 {
				t.Errorf("adopt %v, departed %v; want only 10.1.0.7 adopted", p.Adopt, keys(p.Departed))
			}
			if c.leader && (!p.Nodeless[addr("10.1.0.5")].Equal(seen[addr("10.1.0.5")]) || !p.Nodeless[addr("10.1.0.6")].Equal(now)) {
				t.Errorf("nodeless since %v: want kept from the last sweep, or now when first seen", p.Nodeless)
			}
		})
	}
}

// TestPlanSweepNodelessAwaitsReports: every node reports the allocations
// naming no node that none of its containers holds, nor a start under way
// begun before the allocation; the leader reclaims one past the node
// timeout only once every other node that may hold it has reported that
// very allocation (not an earlier one of the address), and otherwise says
// whom it waits for.
func TestPlanSweepNodelessAwaitsReports(t *testing.T) {
	now := t0.Add(time.Hour)
	old := now.Add(-50 * time.Minute)
	allocs := map[netip.Addr]Alloc{
		addr("10.1.0.2"): {At: old, Kind: KindTask},                   // unheld everywhere
		addr("10.1.0.3"): {At: now.Add(-time.Minute), Kind: KindTask}, // allocated since a start here began
		addr("10.1.0.4"): {At: old, Kind: KindTask},                   // held here
		addr("10.1.0.5"): {Node: "n1", At: old, Kind: KindTask},       // this node's
	}
	seen := map[netip.Addr]time.Time{addr("10.1.0.2"): now.Add(-time.Hour), addr("10.1.0.3"): now.Add(-time.Hour)}
	earlier := Alloc{At: old.Add(-time.Hour), Kind: KindTask}
	for _, c := range []struct {
		name     string
		reports  map[string]map[netip.Addr]Alloc
		orphaned string
		awaiting string
	}{
		{"no report", nil, "[]", "map[10.1.0.2:[n2 n3]]"},
		{"one node reported, the other an earlier allocation", map[string]map[netip.Addr]Alloc{
			"n2": {addr("10.1.0.2"): allocs[addr("10.1.0.2")]}, "n3": {addr("10.1.0.2"): earlier}}, "[]", "map[10.1.0.2:[n3]]"},
		{"every node reported", map[string]map[netip.Addr]Alloc{
			"n2": {addr("10.1.0.2"): allocs[addr("10.1.0.2")]}, "n3": {addr("10.1.0.2"): allocs[addr("10.1.0.2")]}}, "[10.1.0.2]", "map[]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := sweepInput{Node: "n1", Gen: "g", Allocs: allocs, Held: map[netip.Addr]bool{addr("10.1.0.4"): true},
				Leader: true, Gone: map[string]bool{}, Nodeless: seen, NodeTimeout: 10 * time.Minute,
				Reporters: map[string]bool{"n1": true, "n2": true, "n3": true}, Reports: c.reports,
				Starts: []Start{{Since: now.Add(-2 * time.Minute)}}, Now: now, Grace: time.Minute}
			p := planSweep(in)
			if got := fmt.Sprint(keys(p.Orphaned)); got != c.orphaned || fmt.Sprint(p.Awaiting) != c.awaiting {
				t.Errorf("orphaned %s, awaiting %v; want %s, %s", got, p.Awaiting, c.orphaned, c.awaiting)
			}
			if got := fmt.Sprint(keys(p.Unclaimed)); got != "[10.1.0.2]" {
				t.Errorf("reported unclaimed %s, want only 10.1.0.2 (10.1.0.3 a start here may hold, 10.1.0.4 held here)", got)
			}
			if fmt.Sprint(p.Adopt) != "[10.1.0.4]" {
				t.Errorf("adopt %v, want 10.1.0.4", p.Adopt)
			}
		})
	}
}

// TestPlanSweepNodelessAtTheTimeout: an allocation naming no node is
// reclaimed once seen so for longer than NodeTimeout, not at it, as a
// departed node's addresses are.
func TestPlanSweepNodelessAtTheTimeout(t *testing.T) {
	now := t0.Add(time.Hour)
	a := addr("10.1.0.2")
	for _, c := range []struct {
		seen     time.Duration
		orphaned string
	}{
		{10 * time.Minute, "[]"},
		{10*time.Minute + time.Nanosecond, "[10.1.0.2]"},
	} {
		in := sweepInput{Node: "n1", Gen: "g", Allocs: map[netip.Addr]Alloc{a: {At: t0, Kind: KindTask}},
			Leader: true, Nodeless: map[netip.Addr]time.Time{a: now.Add(-c.seen)}, NodeTimeout: 10 * time.Minute, Now: now, Grace: time.Minute}
		if got := fmt.Sprint(keys(planSweep(in).Orphaned)); got != c.orphaned {
			t.Errorf("seen naming no node for %s (timeout 10m): orphaned %s, want %s", c.seen, got, c.orphaned)
		}
	}
}

// TestPlanDepartedFreshAtTheLimit: facts last heard exactly fresh ago
// are still fresh: the node is not counted missing. A node is judged
// only once its facts are older than fresh, as every timeout of the
// sweep counts.
func TestPlanDepartedFreshAtTheLimit(t *testing.T) {
	now := t0.Add(time.Hour)
	const fresh = 30 * time.Second
	for _, c := range []struct {
		age     time.Duration
		missing bool
	}{
		{fresh, false},
		{fresh + time.Nanosecond, true},
	} {
		facts := []netspec.NodeFacts{{ID: "n2", Node: "host2", UpdatedAt: now.Add(-c.age)}}
		_, w := planDeparted(facts, nil, nil, departWatch{}, now, 10*time.Minute, fresh)
		if _, missing := w.Missing["n2"]; missing != c.missing {
			t.Errorf("facts heard %s ago (fresh %s): missing %v, want %v", c.age, fresh, missing, c.missing)
		}
	}
}

// TestPlanDepartedAtTheTimeout: a node missing for exactly timeout has
// not departed; a moment later it has, and its addresses are reclaimed.
// Departure counts as the sweep's other timeouts do: over the limit, not
// at it.
func TestPlanDepartedAtTheTimeout(t *testing.T) {
	now := t0.Add(time.Hour)
	const timeout = 10 * time.Minute
	for _, c := range []struct {
		missing time.Duration
		gone    bool
	}{
		{timeout, false},
		{timeout + time.Nanosecond, true},
	} {
		facts := []netspec.NodeFacts{{ID: "n2", Node: "host2", UpdatedAt: t0}}
		w := departWatch{Missing: map[string]time.Time{"n2": now.Add(-c.missing)}}
		if gone, _ := planDeparted(facts, nil, nil, w, now, timeout, 30*time.Second); gone["n2"] != c.gone {
			t.Errorf("missing for %s (timeout %s): gone %v, want %v", c.missing, timeout, gone["n2"], c.gone)
		}
	}
}

// TestWriteSparesDropsOnlyItsOwn: a spare being given back is freed only
// while Consul holds it as this allocator's spare: reclaimed meanwhile
// (its node looked departed) and allocated to another node, or to this
// node's task, the address is that allocation's, and stays.
func TestWriteSparesDropsOnlyItsOwn(t *testing.T) {
	d := doc("n1", map[string]Alloc{"10.1.0.2": task("n2"), "10.1.0.3": task("n1"), "10.1.0.4": spare("n1", "old"), "10.1.0.5": spare("n1", "g")})
	drop := []netip.Addr{addr("10.1.0.2"), addr("10.1.0.3"), addr("10.1.0.4"), addr("10.1.0.5")}
	w := writeSpares(pool8, block("10.1.0.0/29"), d, "n1", "g", nil, drop, nil, 0, t0, reuse{})
	if fmt.Sprint(w.Dropped) != "[10.1.0.5]" || fmt.Sprint(w.doc.addrs()) != "[10.1.0.2 10.1.0.3 10.1.0.4]" {
		t.Errorf("dropped %v, left %v: want only this allocator's spare .5 given back", w.Dropped, w.doc.addrs())
	}
}

// TestWriteSparesRecordsNoReservedAddress: a handed spare whose record
// is gone is recorded again only if the pool may hand it out: an address
// it reserves (the gateway) is never written as an allocation, and is
// reported lost.
func TestWriteSparesRecordsNoReservedAddress(t *testing.T) {
	record := map[netip.Addr]Alloc{addr("10.1.0.1"): task("n1"), addr("10.1.0.2"): task("n1")}
	w := writeSpares(pool8, block("10.1.0.0/29"), doc("", nil), "n1", "g", record, nil, nil, 0, t0, reuse{})
	if fmt.Sprint(w.Recorded) != "[10.1.0.2]" || fmt.Sprint(w.Lost) != "[10.1.0.1]" || fmt.Sprint(w.doc.addrs()) != "[10.1.0.2]" {
		t.Errorf("recorded %v, lost %v, allocated %v: want the gateway .1 lost, .2 recorded", w.Recorded, w.Lost, w.doc.addrs())
	}
}

func TestReporters(t *testing.T) {
	facts := []netspec.NodeFacts{{ID: "facts"}, {Node: "legacy"}, {ID: "self"}, {ID: "gone"}}
	got := reporters(facts, map[string]bool{"holder": true, "": true, "gone": true, "self": true}, map[string]bool{"gone": true}, "self")
	if fmt.Sprint(got) != "map[facts:true holder:true]" {
		t.Errorf("reporters %v, want the node with facts and the holder: not the sweeping node, a departed one, nor facts with no identity", got)
	}
}

// TestPlanSweepUnknownKind: an allocation of a kind this agent does not
// know (a newer version's, a hand edit) is its node's task address, as one
// with no kind is: reclaimed once unheld for the grace, kept while a local
// container holds it, and, since it may have been claimed ahead of a start
// as a spare is, deferred while any start is under way, however old.
// Another node's is left to that node.
func TestPlanSweepUnknownKind(t *testing.T) {
	now := t0.Add(time.Hour)
	old := now.Add(-50 * time.Minute)
	allocs := map[netip.Addr]Alloc{
		addr("10.1.0.2"): {Node: "n1", At: old, Kind: "reserved"}, // unheld for long
		addr("10.1.0.3"): {Node: "n1", At: old, Kind: "reserved"}, // held
		addr("10.1.0.4"): {Node: "n1", At: old, Kind: "reserved"}, // first seen unheld now
		addr("10.1.0.5"): {Node: "n2", At: old, Kind: "reserved"}, // another node's
	}
	unheld := map[netip.Addr]time.Time{addr("10.1.0.2"): old}
	for _, c := range []struct {
		name             string
		starts           []Start
		leaked, deferred string
	}{
		{"no start under way", nil, "[10.1.0.2]", "[]"},
		{"a start under way since after the allocation", []Start{{Since: now.Add(-time.Minute)}}, "[]", "[10.1.0.2]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := sweepInput{Node: "n1", Gen: "g", Allocs: allocs, Held: map[netip.Addr]bool{addr("10.1.0.3"): true},
				Unheld: unheld, Starts: c.starts, Now: now, Grace: time.Minute}
			p := planSweep(in)
			if got := fmt.Sprint(keys(p.Leaked)); got != c.leaked || fmt.Sprint(p.Deferred) != c.deferred {
				t.Errorf("leaked %s, deferred %v; want leaked %s, deferred %s", got, p.Deferred, c.leaked, c.deferred)
			}
			if got := fmt.Sprint(keys(p.Unheld)); got != "[10.1.0.2 10.1.0.4]" || !p.Unheld[addr("10.1.0.4")].Equal(now) {
				t.Errorf("unheld %v, want 10.1.0.2 (since %v) and 10.1.0.4 (since now)", p.Unheld, old)
			}
			if len(p.Adopt)+len(p.Departed)+len(p.Orphaned) != 0 {
				t.Errorf("adopt %v, departed %v, orphaned %v; want none", p.Adopt, keys(p.Departed), keys(p.Orphaned))
			}
		})
	}
}

func keys[V any](m map[netip.Addr]V) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func TestPlanRecord(t *testing.T) {
	v := view{docs: map[netip.Prefix]BlockDoc{block("10.1.0.0/29"): doc("n1", nil)},
		taken: map[netip.Prefix]bool{block("10.1.0.0/29"): true, block("10.1.0.8/29"): true}}
	held := map[netip.Addr]bool{addr("10.1.0.2"): true, addr("10.1.0.3"): true, addr("10.1.0.10"): true, addr("10.1.0.1"): true, addr("10.1.0.4"): true}
	allocs := map[netip.Addr]Alloc{addr("10.1.0.4"): task("n1")}
	record, next := planRecord(pool8, v, held, allocs, map[netip.Addr]bool{addr("10.1.0.2"): true})
	// .2 seen before: recorded; .3 seen once; .10 in an unreadable block and
	// .1 the gateway: left alone; .4 recorded already.
	if fmt.Sprint(record) != "[10.1.0.2]" || fmt.Sprint(keys(next)) != "[10.1.0.3]" {
		t.Errorf("record %v, seen once %v", record, keys(next))
	}
}

func TestPlanDeparted(t *testing.T) {
	now := t0.Add(time.Hour)
	// Three nodes named alike (cloned VMs, or one --node everywhere): only
	// identities matter.
	facts := []netspec.NodeFacts{
		{ID: "ready", Node: "same", UpdatedAt: t0},
		{ID: "fresh", Node: "same", UpdatedAt: now.Add(-10 * time.Second)},
		{ID: "dead", Node: "same", UpdatedAt: t0},
		{ID: "dying", Node: "same", UpdatedAt: t0},
		{Node: "legacy", UpdatedAt: t0}, // no identity: never judged
	}
	ready := map[string]bool{"ready": true, "same": true, "ready-no-facts": true}
	// Holders of addresses with no facts (deleted, unreadable, lost):
	// judged as facts never fresh, unless ready, or named like an older
	// agent's facts (whose allocations named nodes by name).
	holders := map[string]bool{"ready": true, "dead": true, "ghost": true, "ghost-new": true, "ready-no-facts": true, "legacy": true}
	missing := map[string]time.Time{"dead": now.Add(-11 * time.Minute), "fresh": now.Add(-time.Hour), "ghost": now.Add(-11 * time.Minute)}
	gone, w := planDeparted(facts, ready, holders, departWatch{Missing: missing}, now, 10*time.Minute, 30*time.Second)
	if fmt.Sprint(gone) != "map[dead:true ghost:true]" {
		t.Errorf("gone %v, want dead and ghost", gone)
	}
	next := w.Missing
	if _, ok := next["fresh"]; ok || !next["dying"].Equal(now) || !next["dead"].Equal(missing["dead"]) || !next["ghost-new"].Equal(now) {
		t.Errorf("missing since %v", next)
	}
	for _, id := range []string{"ready-no-facts", "legacy"} {
		if _, ok := next[id]; ok {
			t.Errorf("%s judged missing: %v", id, next)
		}
	}
}

// TestPlanDepartedByTheLeadersClock: whether a node's facts are fresh is
// judged by when the leader saw them change, not by the stamp the node's
// clock wrote. A live node whose clock is an hour behind, heartbeating, is
// never judged departed (its addresses reclaimed while its containers hold
// them would be handed out again: duplicates); a dead node whose last
// facts were stamped a year ahead departs after fresh and timeout, as any.
func TestPlanDepartedByTheLeadersClock(t *testing.T) {
	const timeout, fresh, sweep = 10 * time.Minute, 30 * time.Second, 10 * time.Second
	now := t0
	dead := now.AddDate(1, 0, 0)
	var w departWatch
	var gone map[string]bool
	deadSince := time.Duration(0)
	for i := range 120 { // 20 minutes of sweeps
		facts := []netspec.NodeFacts{
			{ID: "behind", Node: "a", UpdatedAt: now.Add(-time.Hour)}, // heartbeats, an hour behind
			{ID: "ahead", Node: "b", UpdatedAt: dead},                 // stopped, a year ahead
		}
		gone, w = planDeparted(facts, nil, map[string]bool{"behind": true, "ahead": true}, w, now, timeout, fresh)
		if gone["behind"] {
			t.Fatalf("sweep %d: the live node with its clock behind is judged departed (watch %+v)", i, w)
		}
		if _, ok := w.Missing["behind"]; ok && i > 0 {
			t.Fatalf("sweep %d: the live node with its clock behind is judged missing (watch %+v)", i, w)
		}
		if gone["ahead"] && deadSince == 0 {
			deadSince = now.Sub(t0)
		}
		now = now.Add(sweep)
	}
	if deadSince == 0 || deadSince > fresh+timeout+2*sweep {
		t.Errorf("the dead node stamped a year ahead departed after %v, want within fresh+timeout (%v) and a sweep or two", deadSince, fresh+timeout)
	}
}

func TestPlanSpares(t *testing.T) {
	now := t0.Add(time.Hour)
	st := spareState{
		Free:   []netip.Addr{addr("10.1.0.2"), addr("10.1.0.3")},
		Handed: map[netip.Addr]Alloc{addr("10.1.0.4"): {At: now.Add(-time.Second)}, addr("10.1.0.5"): {At: now}},
		Target: 4, Dropping: []netip.Addr{addr("10.1.0.6")},
	}
	p := planSpares(st, 4, now, false, false)
	if fmt.Sprint(keys(p.Record)) != "[10.1.0.4]" || p.Need != 2 || fmt.Sprint(p.Drop) != "[10.1.0.6]" || len(p.Keep) != 2 {
		t.Errorf("plain sync: %+v", p)
	}
	if p := planSpares(st, 4, now, true, false); len(p.Record) != 2 || len(p.Drop) != 3 || p.Need != 0 {
		t.Errorf("stopping: %+v, want everything recorded and given back", p)
	}
	st.HoldUntil = now.Add(time.Second)
	if p := planSpares(st, 4, now, false, false); len(p.Drop) != 3 || p.Need != 0 {
		t.Errorf("another node short: %+v, want spares given back", p)
	}
	st.HoldUntil, st.Target, st.Busy = time.Time{}, 1, false
	if p := planSpares(st, 1, now, false, false); fmt.Sprint(p.Keep) != "[10.1.0.2]" || fmt.Sprint(p.Drop) != "[10.1.0.6 10.1.0.3]" {
		t.Errorf("over target: %+v", p)
	}
	st.Target = 16
	if p := planSpares(st, 4, now, false, true); p.Target != 8 || len(p.Record) != 2 {
		t.Errorf("quiet check: target %d, want halved to 8; %+v", p.Target, p)
	}
}

// TestPlanSparesRecordsAtTheDelay: a handed spare is recorded as its
// allocation once recordDelay old, not a moment later: until then Consul
// holds it as a spare, not as the allocation Docker was given.
func TestPlanSparesRecordsAtTheDelay(t *testing.T) {
	now := t0.Add(time.Hour)
	st := spareState{Handed: map[netip.Addr]Alloc{
		addr("10.1.0.2"): {At: now.Add(-recordDelay)},
		addr("10.1.0.3"): {At: now.Add(-recordDelay + time.Nanosecond)},
	}, Target: 4}
	if p := planSpares(st, 4, now, false, false); fmt.Sprint(keys(p.Record)) != "[10.1.0.2]" {
		t.Errorf("handed exactly recordDelay (%s) ago and a nanosecond less: recorded %v, want only 10.1.0.2", recordDelay, keys(p.Record))
	}
}

func TestWriteSpares(t *testing.T) {
	now := t0.Add(time.Hour)
	b := block("10.1.0.0/29")
	d := doc("n1", map[string]Alloc{
		"10.1.0.2": spare("n1", "g"), // handed: recorded
		"10.1.0.3": task("n2"),       // handed, but Consul says n2's: lost
		"10.1.0.4": spare("n1", "g"), // dropped
		"10.1.0.5": spare("n1", "g"), // free, checked: confirmed
		"10.1.0.6": spare("n1", "x"), // free here, but another generation's: unconfirmed
	})
	record := map[netip.Addr]Alloc{addr("10.1.0.2"): task("n1"), addr("10.1.0.3"): task("n1"), addr("10.1.0.12"): task("n1")}
	w := writeSpares(pool8, b, d, "n1", "g", record, []netip.Addr{addr("10.1.0.4")}, []netip.Addr{addr("10.1.0.5"), addr("10.1.0.6")}, 5, now, reuse{})
	if fmt.Sprint(w.Recorded, w.Lost, w.Dropped, w.Unconfirmed) != "[10.1.0.2] [10.1.0.3] [10.1.0.4] [10.1.0.6]" {
		t.Errorf("recorded %v lost %v dropped %v unconfirmed %v", w.Recorded, w.Lost, w.Dropped, w.Unconfirmed)
	}
	// Room: .4 (just dropped) and .7; .0 and .1 are reserved.
	if fmt.Sprint(w.Added) != "[10.1.0.4 10.1.0.7]" || !w.changed || w.doc.Allocs["10.1.0.7"].Gen != "g" || w.doc.Allocs["10.1.0.2"].Kind != KindTask {
		t.Errorf("added %v, doc %v", w.Added, w.doc.Allocs)
	}
	// Spares are never claimed in another node's block.
	w = writeSpares(pool8, b, doc("n2", map[string]Alloc{"10.1.0.2": task("n2")}), "n1", "g", nil, nil, nil, 3, now, reuse{})
	if len(w.Added) != 0 || w.changed {
		t.Errorf("spares claimed in n2's block: %v", w.Added)
	}
}

// TestWriteSparesRecordsReclaimedHandout: a spare handed to Docker whose
// record the swarm leader reclaimed meanwhile (the node was frozen past the
// node timeout; issue 14's soak found it) is held by a container and by no
// one else: it is recorded again as its task, never claimed afresh as a
// free spare — which the next request would hand to a second container.
func TestWriteSparesRecordsReclaimedHandout(t *testing.T) {
	now := t0.Add(time.Hour)
	b := block("10.1.0.0/29")
	record := map[netip.Addr]Alloc{addr("10.1.0.2"): task("n1")}
	w := writeSpares(pool8, b, doc("", map[string]Alloc{}), "n1", "g", record, nil, nil, 4, now, reuse{})
	if fmt.Sprint(w.Recorded, w.Lost) != "[10.1.0.2] []" || w.doc.Allocs["10.1.0.2"].Kind != KindTask {
		t.Errorf("recorded %v lost %v, doc %v; want 10.1.0.2 recorded as n1's task", w.Recorded, w.Lost, w.doc.Allocs)
	}
	if slices.Contains(w.Added, addr("10.1.0.2")) {
		t.Errorf("10.1.0.2, held by a container, claimed again as a free spare: added %v", w.Added)
	}
}

func TestDecodePoolSetsBadKeysApart(t *testing.T) {
	p := pool8
	good := `{"node":"n1","allocs":{"10.1.0.2":{"node":"n1","kind":"task"}}}`
	pairs := []struct{ key, value string }{
		{"10.1.0.0_29", good},
		{"10.1.0.8_29", `{not json`},
		{"10.1.0.16_29", `{"node":"n1","allocs":{"10.1.0.99":{"node":"n1"}}}`}, // an address of another block
		{"garbage", good},
		{"10.1.0.17_29", good}, // not a block start
		{"10.1.0.64_29", good}, // outside the range
	}
	var kvs []kvPair
	for _, pr := range pairs {
		kvs = append(kvs, kvPair{poolPrefix(p) + pr.key, pr.value})
	}
	v, bad := decodePool(p, toPairs(kvs))
	if len(v.docs) != 1 || len(bad) != 5 {
		t.Fatalf("%d readable, %d bad; want 1 and 5: %v", len(v.docs), len(bad), bad)
	}
	if !v.taken[block("10.1.0.8/29")] || !v.taken[block("10.1.0.16/29")] || v.taken[block("10.1.0.64/29")] {
		t.Errorf("taken %v: want the unreadable blocks taken (never claimed), stray keys not", v.taken)
	}
	if fix := bad[0].removal(); fix != "consul kv delete "+poolPrefix(p)+"10.1.0.16_29" {
		t.Errorf("fix %q", fix)
	}
}

// TestBlocksWithoutAffinityAreClaimed: a block holding allocations that no
// node has affinity for (its node was removed) is claimed by the node that
// allocates in it, by a request, a chosen address or a spare, and offered
// after the node's own blocks, before free ones.
func TestBlocksWithoutAffinityAreClaimed(t *testing.T) {
	unowned := func() BlockDoc { return doc("", map[string]Alloc{"10.1.0.10": task("n2")}) }
	d, got := fill(pool8, block("10.1.0.8/29"), unowned(), "n1", []Alloc{task("n1")}, reuse{})
	if fmt.Sprint(got) != "[10.1.0.8]" || d.Node != "n1" || d.Allocs["10.1.0.10"].Node != "n2" {
		t.Errorf("fill of a block without affinity: %v, affinity %q, %v; want .8, the block claimed by n1, n2's .10 kept", got, d.Node, d.Allocs)
	}
	w := writeSpares(pool8, block("10.1.0.8/29"), unowned(), "n1", "g", nil, nil, nil, 2, t0, reuse{})
	if fmt.Sprint(w.Added) != "[10.1.0.8 10.1.0.11]" || w.doc.Node != "n1" {
		t.Errorf("spares in a block without affinity: %v, affinity %q; want .8 .11 (.9 reserved, .10 n2's), the block claimed by n1", w.Added, w.doc.Node)
	}
	v := view{
		docs: map[netip.Prefix]BlockDoc{
			block("10.1.0.0/29"):  doc("n2", map[string]Alloc{"10.1.0.2": task("n2")}),
			block("10.1.0.8/29"):  unowned(),
			block("10.1.0.24/29"): doc("n1", map[string]Alloc{"10.1.0.24": task("n1")}),
		},
		taken: map[netip.Prefix]bool{block("10.1.0.0/29"): true, block("10.1.0.8/29"): true, block("10.1.0.24/29"): true},
	}
	if got := fmt.Sprint(candidates(pool8, v, "n1", true, reuse{})); got != "[10.1.0.24/29 10.1.0.8/29 10.1.0.16/29 10.1.0.0/29]" {
		t.Errorf("n1's candidates %s: want its own block, the one without affinity, the free one, then n2's", got)
	}
	if got := fmt.Sprint(candidates(pool8, v, "n1", false, reuse{})); got != "[10.1.0.24/29 10.1.0.8/29 10.1.0.16/29]" {
		t.Errorf("n1's candidates without borrowing %s: want its own block, the one without affinity, the free one", got)
	}
	// A document with no allocation (a stray write: the allocator deletes
	// those) is a free block with a key: claimed too, never passed over.
	v.docs[block("10.1.0.16/29")], v.taken[block("10.1.0.16/29")] = doc("n2", nil), true
	if got := fmt.Sprint(candidates(pool8, v, "n1", false, reuse{})); got != "[10.1.0.24/29 10.1.0.8/29 10.1.0.16/29]" {
		t.Errorf("n1's candidates without borrowing, the free block holding an empty document: %s, want it still", got)
	}
}

// TestBadDocOfARedirectedKeyGivesNoDelete: a pool's bad key with an
// empty, "." or ".." segment had `consul kv delete KEY` as its fix, whose
// path Consul's HTTP API redirects to another key: the delete misses it.
// It gives no command, and says how it goes: by a transaction naming it.
func TestBadDocOfARedirectedKeyGivesNoDelete(t *testing.T) {
	p := pool8
	var kvs []kvPair
	for _, k := range []string{"..", "x/../10.1.0.0_29", "x//y", "./10.1.0.8_29"} {
		kvs = append(kvs, kvPair{poolPrefix(p) + k, `{}`})
	}
	_, bad := decodePool(p, toPairs(kvs))
	if len(bad) != len(kvs) {
		t.Fatalf("bad keys %v, want the %d keys", bad, len(kvs))
	}
	for _, d := range bad {
		if fix, why := d.Removal(); fix != "" || !strings.Contains(why, "PUT /v1/txn") {
			t.Errorf("bad key %q removed by %q (%q); want no command, and the transaction that removes it", d.Key, fix, why)
		}
	}
}
