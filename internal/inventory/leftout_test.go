package inventory

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

// TestIPsShowsLeftOutAddressesAsNotReported: a node's inventory above
// Consul's value limit leaves entries out (fit), and `underlay ips`
// listed each left-out address of a cluster-IPAM pool as "allocated, no
// container": a leak, though its container runs. The inventory now
// lists what it leaves out by address (left_out), and those addresses
// show as not reported (inventory full), none as a leak.
func TestIPsShowsLeftOutAddressesAsNotReported(t *testing.T) {
	const id, n = "id10000000000000000000000", 800
	ctx := context.Background()
	kv := kvtest.New()
	s := netspec.Spec{Name: "web", Subnet: netip.MustParsePrefix("10.9.0.0/16"), Gateway: netip.MustParseAddr("10.9.0.1"),
		Parent: "eth1", IPAM: netspec.Cluster}
	if err := netspec.NewStore(kv).Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	publishFacts(ctx, t, kv, id, "n1")
	pool, _ := ipam.PoolOf(s, false)
	alloc := ipam.NewAllocator(kv, id, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var src endpointsOnce
	for i := range n {
		a, err := alloc.Allocate(ctx, pool, netip.Addr{}, ipam.KindTask)
		if err != nil {
			t.Fatal(err)
		}
		src = append(src, Entry{IP: a.String(), MAC: "02:42:0a:01:64:64", Node: "n1", Network: "web", Container: fmt.Sprintf("web.%04d.%0240d", i, i),
			ID: fmt.Sprintf("%064d", i), Service: fmt.Sprintf("web%0240d", 0), Slot: fmt.Sprintf("%04d", i), Task: fmt.Sprintf("t%024d", i), Since: time.Now().UTC()})
	}
	// The allocator's leak: its container is gone.
	leak, err := alloc.Allocate(ctx, pool, netip.Addr{}, ipam.KindTask)
	if err != nil {
		t.Fatal(err)
	}
	whole := publishFitted(t, kv, id, src)
	if whole == n {
		t.Fatal("no entry left out: the test's inventory fits whole")
	}
	inv, bad, err := load(ctx, kv)
	if err != nil || len(bad) != 0 {
		t.Fatalf("load: %v, bad %+v", err, bad)
	}
	pooled, bad, err := PoolAddresses(ctx, kv, inv, nil)
	if err != nil || len(bad) != 0 {
		t.Fatalf("PoolAddresses: %v, bad %+v", err, bad)
	}
	states := map[string]int{}
	for _, e := range append(inv, pooled...) {
		states[e.State]++
		if e.State == StateLeak && e.IP != leak.String() {
			t.Errorf("%s, its container's entry left out of the inventory, listed as %q", e.IP, e.State)
		}
	}
	if states[StateInUse] != whole || states[StateNotReported] != n-whole || states[StateLeak] != 1 {
		t.Errorf("states %v; want %d %q, %d %q and the one leak", states, whole, StateInUse, n-whole, StateNotReported)
	}
}

// publishFitted publishes src as node n1's agent (identity id) does,
// and returns how many entries it published whole.
func publishFitted(t *testing.T, kv *kvtest.KV, id string, src endpointsOnce) (whole int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pk := &putAttempts{KV: kv, errs: make(chan error, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, src, pk, "n1", id, time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	}()
	err := <-pk.errs
	cancel()
	<-done
	if err != nil {
		t.Fatalf("inventory not stored: %v", err)
	}
	es, _, err := load(context.Background(), kv)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.ID != "" {
			whole++
		}
	}
	return whole
}

// TestFitCountsWhatItCannotListByAddress: past a few thousand entries a
// node's addresses alone are above Consul's value limit. fit lists as
// many as fit by address and counts the rest on one of them (unlisted);
// Load reads the count, and the node's allocations no entry lists show
// as not reported, or a leak (they cannot be told apart), while another
// node's show as the leaks they are.
func TestFitCountsWhatItCannotListByAddress(t *testing.T) {
	const id = "id10000000000000000000000"
	var es []Entry
	allocs := map[netip.Addr]ipam.Alloc{}
	for i := range 6000 {
		a := netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)})
		es = append(es, Entry{IP: a.String(), Node: "n1", NodeID: id, Network: "web", Container: fmt.Sprintf("c%d", i), ID: fmt.Sprintf("%064d", i), Task: "t"})
		allocs[a] = ipam.Alloc{Node: id, Kind: ipam.KindTask}
	}
	kept, f := fit(es)
	if f.unlisted == 0 || len(f.leftOut) != len(es) || len(kept)+f.unlisted != len(es) {
		t.Fatalf("fit: %d kept, %d left out, %d unlisted; want every entry left out, some unlisted", len(kept), len(f.leftOut), f.unlisted)
	}
	if s := encodedSize(kept); s > kvstore.MaxValueSize {
		t.Fatalf("fitted inventory is %d bytes, above the limit", s)
	}
	ctx := context.Background()
	kv := kvtest.New()
	publishFacts(ctx, t, kv, id, "n1")
	if err := Publish(ctx, kv, id, kept); err != nil {
		t.Fatal(err)
	}
	inv, bad, err := load(ctx, kv)
	if err != nil || len(bad) != 0 {
		t.Fatalf("load: %v, bad %+v", err, bad)
	}
	other := netip.MustParseAddr("10.9.200.1")
	allocs[other] = ipam.Alloc{Node: "id20000000000000000000000", Kind: ipam.KindTask}
	states := map[string]int{}
	for _, e := range AllocationEntries("web", allocs, nil, inv, map[string]string{id: "n1", "id20000000000000000000000": "n2"}) {
		states[e.State]++
		if (e.State == StateLeak) != (e.IP == other.String()) {
			t.Errorf("%s of node %s: state %q", e.IP, e.Node, e.State)
		}
	}
	if states[StateUnlisted] != f.unlisted || states[StateLeak] != 1 {
		t.Errorf("states %v; want %d %q and one leak", states, f.unlisted, StateUnlisted)
	}
}

// TestLoadRefusesLeftOutEntriesNamingContainers: an entry left out lists
// an address, network and node only, and only such an entry counts
// unlisted ones; one that names a container, or a count elsewhere, is
// none an agent writes.
func TestLoadRefusesLeftOutEntriesNamingContainers(t *testing.T) {
	const id = "id10000000000000000000000"
	for name, e := range map[string]Entry{
		"container":          {Container: "web.1", LeftOut: true},
		"container ID":       {ID: "abc", LeftOut: true},
		"task":               {Task: "t1", LeftOut: true},
		"count not left out": {Container: "web.1", ID: "abc", Unlisted: 3},
		"negative count":     {LeftOut: true, Unlisted: -1},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			kv := kvtest.New()
			publishFacts(ctx, t, kv, id, "n1")
			e.IP, e.Node, e.NodeID, e.Network = "10.9.0.5", "n1", id, "web"
			if err := Publish(ctx, kv, id, []Entry{e}); err != nil {
				t.Fatal(err)
			}
			es, bad, err := load(ctx, kv)
			if err != nil || len(es) != 0 || len(bad) != 1 {
				t.Errorf("load = %+v, bad %+v, %v; want the inventory set apart", es, bad, err)
			}
		})
	}
}

// TestPoolAddressesMarksAddressesOnUnreadableNetworks: an address its
// node lists on a network it could not read (network_problem) is the
// node's container's, not a leak, and says its network was unreadable;
// Run warns of such networks once, while they stay so.
func TestPoolAddressesMarksAddressesOnUnreadableNetworks(t *testing.T) {
	const id = "id10000000000000000000000"
	ctx := context.Background()
	kv := kvtest.New()
	pool := createWeb(t, kv)
	publishFacts(ctx, t, kv, id, "n1")
	alloc := ipam.NewAllocator(kv, id, slog.New(slog.DiscardHandler))
	a, err := alloc.Allocate(ctx, pool, netip.Addr{}, ipam.KindTask)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	es := []Entry{{IP: a.String(), Node: "n1", NodeID: id, Network: "web", Container: "web.1", ID: "c1", NetworkProblem: "inspect network x: plugin not found"}}
	was := noteUnreadable(log, nil, es)
	was = noteUnreadable(log, was, es)
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 || !strings.Contains(logs.String(), "web: inspect network x: plugin not found") {
		t.Errorf("logs %q, want one warning naming the network and its problem", logs.String())
	}
	noteUnreadable(log, was, nil)
	if !strings.Contains(logs.String(), "level=INFO") {
		t.Errorf("logs %q, want it said once the networks read again", logs.String())
	}
	if err := Publish(ctx, kv, id, es); err != nil {
		t.Fatal(err)
	}
	inv, bad, err := load(ctx, kv)
	if err != nil || len(bad) != 0 {
		t.Fatalf("load: %v, bad %+v", err, bad)
	}
	out, _, err := PoolAddresses(ctx, kv, inv, nil)
	if err != nil {
		t.Fatal(err)
	}
	if inv[0].State != StateNetworkUnread || inv[0].NetworkProblem != es[0].NetworkProblem {
		t.Errorf("entry state %q, problem %q; want %q and its problem", inv[0].State, inv[0].NetworkProblem, StateNetworkUnread)
	}
	for _, e := range out {
		if e.IP == a.String() {
			t.Errorf("%s listed again by its pool, as %q", e.IP, e.State)
		}
	}
}
