package inventory

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

// createWeb stores the cluster-IPAM network web, 10.9.0.0/24 on eth1,
// and returns its IPv4 pool.
func createWeb(t *testing.T, kv *kvtest.KV) ipam.Pool {
	t.Helper()
	s := netspec.Spec{Name: "web", Subnet: netip.MustParsePrefix("10.9.0.0/24"), Gateway: netip.MustParseAddr("10.9.0.1"),
		Parent: "eth1", IPAM: netspec.Cluster}
	if err := netspec.NewStore(kv).Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	pool, _ := ipam.PoolOf(s, false)
	return pool
}

// TestPoolAddresses: a cluster-IPAM pool's gateway, aux addresses, shims
// and addresses no container holds are listed with their states; a held
// address is listed once, by the container's entry, marked in use.
func TestPoolAddresses(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	s := netspec.Spec{Name: "web", Subnet: netip.MustParsePrefix("10.9.0.0/24"), Gateway: netip.MustParseAddr("10.9.0.1"),
		Parent: "eth1", IPAM: netspec.Cluster, Aux: map[string]netip.Addr{"dns": netip.MustParseAddr("10.9.0.2")}}
	if err := netspec.NewStore(kv).Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	pool, _ := ipam.PoolOf(s, false)
	alloc := ipam.NewAllocator(kv, "node-id-1", slog.New(slog.NewTextHandler(io.Discard, nil)))
	held, err := alloc.Allocate(ctx, pool, netip.Addr{}, ipam.KindTask)
	if err != nil {
		t.Fatal(err)
	}
	leaked, err := alloc.Allocate(ctx, pool, netip.Addr{}, ipam.KindTask)
	if err != nil {
		t.Fatal(err)
	}
	shim, err := alloc.Shim(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	// Another node allocated an address for a container whose start is
	// still under way: its agent's sweep keeps it, and says so in Consul.
	other := ipam.NewAllocator(kv, "node-id-2", slog.New(slog.NewTextHandler(io.Discard, nil)))
	starting, err := other.Allocate(ctx, pool, netip.Addr{}, ipam.KindTask)
	if err != nil {
		t.Fatal(err)
	}
	sweep := func(starts ...ipam.Start) {
		t.Helper()
		r := &ipam.Reclaimer{Alloc: other, Pools: ipam.SpecPools{Store: netspec.NewStore(kv)},
			Held: startsHeld{"web": starts}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		if err := r.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
	}
	sweep(ipam.Start{Since: time.Now().Add(-time.Minute)})
	inv := []Entry{{IP: held.String(), Network: "web", Node: "n1", Container: "c1"}}
	out, bad, err := PoolAddresses(ctx, kv, inv, nil)
	if err != nil || len(bad) != 0 {
		t.Fatalf("PoolAddresses: %v, bad %v", err, bad)
	}
	if inv[0].State != StateInUse {
		t.Errorf("container's entry state %q, want %q", inv[0].State, StateInUse)
	}
	got := map[string]string{}
	for _, e := range out {
		got[e.IP] = e.State
	}
	want := map[string]string{"10.9.0.1": StateGateway, "10.9.0.2": StateAuxPfx + "dns", shim.String(): StateShim,
		leaked.String(): StateLeak, starting.String(): StateStarting}
	for ip, st := range want {
		if got[ip] != st {
			t.Errorf("%s: state %q, want %q", ip, got[ip], st)
		}
	}
	// The start is over (it failed, or the container is gone): the next
	// sweep keeps nothing, and the address shows as what it now is.
	sweep()
	out, _, err = PoolAddresses(ctx, kv, inv, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range out {
		if e.IP == starting.String() && e.State != StateLeak {
			t.Errorf("%s after the start: state %q, want %q", e.IP, e.State, StateLeak)
		}
	}
	if st, ok := got[held.String()]; ok {
		t.Errorf("held address %s listed again by the pool, as %q", held, st)
	}
}

// TestPoolAddressesIPv6Gateway: on a dual-stack cluster-IPAM network
// the IPv6 pool's gateway (its first address, which the pool never hands
// out) is listed as reserved, as the IPv4 one is. It was left out, so
// `underlay ips` did not show every address of the pool with its state.
func TestPoolAddressesIPv6Gateway(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	s := netspec.Spec{Name: "web", Subnet: netip.MustParsePrefix("10.9.0.0/24"), Gateway: netip.MustParseAddr("10.9.0.1"),
		IPv6Subnet: netip.MustParsePrefix("fd00:9::/64"), Parent: "eth1", IPAM: netspec.Cluster}
	if err := netspec.NewStore(kv).Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	out, _, err := PoolAddresses(ctx, kv, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range out {
		got[e.IP] = e.State
	}
	if want := map[string]string{"10.9.0.1": StateGateway, "fd00:9::1": StateGateway}; !maps.Equal(got, want) {
		t.Errorf("pool addresses %v, want %v", got, want)
	}
}

// startsHeld is a node whose containers hold nothing and whose starts are
// those given, by network.
type startsHeld map[string][]ipam.Start

func (h startsHeld) HeldAddresses(context.Context) (ipam.Local, error) {
	return ipam.Local{Starts: h}, nil
}

// TestPoolAddressesSkipsRefusedSpecs: the pool of a spec every agent
// refuses (written past `network create`) is not listed as a network's:
// ips showed an "invalid IP" as its gateway. It is named apart, with
// its problem and fix, and the other networks are listed as before.
func TestPoolAddressesSkipsRefusedSpecs(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	createWeb(t, kv)
	kv.Put(ctx, netspec.KVPrefix+"x/spec", []byte(`{"name":"x","ipam":"cluster","parent":"eth2"}`))
	kv.Put(ctx, netspec.KVPrefix+"y/spec", []byte(`{"name":"y","ipam":"cluster"`))
	out, bad, err := PoolAddresses(ctx, kv, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var nets []string
	for _, e := range out {
		nets = append(nets, e.Network+" "+e.IP)
	}
	if want := []string{"web 10.9.0.1"}; !slices.Equal(nets, want) {
		t.Errorf("listed %q, want only %q", nets, want)
	}
	var skipped []string
	for _, b := range bad {
		skipped = append(skipped, b.Network)
		if b.Key != netspec.KVPrefix+b.Network+"/spec" || b.Problem == "" || !strings.Contains(b.Fix, "underlay network rm "+b.Network) {
			t.Errorf("bad document %+v: want the spec's key, its problem and the fix", b)
		}
	}
	if want := []string{"x", "y"}; !slices.Equal(skipped, want) {
		t.Errorf("skipped specs %q, want %q", skipped, want)
	}
}

// TestPoolAddressesMarksAddressesOutsideTheSubnet: an inventory entry
// whose address is outside its network's subnets (another subnet, or the
// family the network has none of) was listed as in use like any, though
// Docker gives no such address: `underlay ips` showed 192.168.7.7 and
// fd00::7 on a 10.9.0.0/24 network as held there. They are now marked as
// outside, which names the inventory stale or forged; entries of networks
// without a spec are not judged.
func TestPoolAddressesMarksAddressesOutsideTheSubnet(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	for _, s := range []netspec.Spec{
		{Name: "web", Subnet: netip.MustParsePrefix("10.9.0.0/24"), Gateway: netip.MustParseAddr("10.9.0.1"), Parent: "eth1", IPAM: netspec.PerNode, PerNodeSize: 64},
		{Name: "dual", Subnet: netip.MustParsePrefix("10.8.0.0/24"), Gateway: netip.MustParseAddr("10.8.0.1"),
			IPv6Subnet: netip.MustParsePrefix("fd00:8::/64"), Parent: "eth2", IPAM: netspec.Cluster},
	} {
		if err := netspec.NewStore(kv).Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	inv := []Entry{
		{IP: "10.9.0.5", Network: "web", Node: "n1", Container: "in"},
		{IP: "192.168.7.7", Network: "web", Node: "n1", Container: "other-subnet"},
		{IP: "fd00::7", Network: "web", Node: "n1", Container: "v6-on-v4-only"},
		{IP: "10.8.0.5", Network: "dual", Node: "n1", Container: "in4"},
		{IP: "fd00:8::5", Network: "dual", Node: "n1", Container: "in6"},
		{IP: "fd00:9::5", Network: "dual", Node: "n1", Container: "other-v6-subnet"},
		{IP: "172.17.0.5", Network: "not-underlays", Node: "n1", Container: "unjudged"},
	}
	if _, _, err := PoolAddresses(ctx, kv, inv, nil); err != nil {
		t.Fatal(err)
	}
	outside := map[string]bool{"other-subnet": true, "v6-on-v4-only": true, "other-v6-subnet": true}
	for _, e := range inv {
		in := e.State == StateInUse
		if in == outside[e.Container] || (!in && !strings.Contains(e.State, "outside the network's subnets")) {
			t.Errorf("%s (%s on %s): state %q", e.Container, e.IP, e.Network, e.State)
		}
	}
}

// TestPoolAddressesListsAllocationsOfOtherNodes: an allocation whose
// address a container holds was left out as listed by the container's
// entry, whatever node it names: an address the pool gives to n1 (a
// container there, or a spare) and a container on n2 holds, or the host
// shim of n2 that a container there holds too, showed as one container's
// address in use, the clash merged away. Such an allocation is now listed
// as well, so that Check flags both; one of the holder's node is not.
func TestPoolAddressesListsAllocationsOfOtherNodes(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	pool := createWeb(t, kv)
	discard := slog.New(slog.DiscardHandler)
	n1, n2 := ipam.NewAllocator(kv, "id-1", discard), ipam.NewAllocator(kv, "id-2", discard)
	ofN1, err := n1.Allocate(ctx, pool, netip.Addr{}, ipam.KindTask)
	if err != nil {
		t.Fatal(err)
	}
	own, err := n2.Allocate(ctx, pool, netip.Addr{}, ipam.KindTask)
	if err != nil {
		t.Fatal(err)
	}
	shim, err := n2.Shim(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	facts := []netspec.NodeFacts{{ID: "id-1", Node: "n1"}, {ID: "id-2", Node: "n2"}}
	var inv []Entry
	for i, a := range []netip.Addr{ofN1, own, shim} {
		inv = append(inv, Entry{IP: a.String(), Network: "web", Node: "n2", Container: fmt.Sprint("c", i)})
	}
	out, _, err := PoolAddresses(ctx, kv, inv, facts)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range out {
		if e.State != StateGateway {
			got = append(got, e.IP+" "+e.Node+" "+e.State)
		}
	}
	slices.Sort(got)
	want := []string{ofN1.String() + " n1 " + StateLeak, shim.String() + " n2 " + StateShim}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("pool lists %q, want %q", got, want)
	}
	all := append(inv, out...)
	if n := Check(all); n != 4 {
		t.Errorf("Check = %d duplicates, want 4 (%s and %s, each twice): %+v", n, ofN1, shim, all)
	}
}

// TestPoolAddressesTellsSameNameNodesApart: an allocation was taken as
// listed by the container holding its address when the container's node
// had the allocation's node's name: with two swarm nodes named n1, an
// address the pool gives to one and a container on the other holds showed
// as that container's, the clash merged away. Entries now give their
// node's ID, and such an allocation is listed, naming its node's ID, so
// that Check flags both; one held on its own node is not, nor one held by
// an entry naming no ID (an older agent's), which cannot be told apart.
func TestPoolAddressesTellsSameNameNodesApart(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	pool := createWeb(t, kv)
	discard := slog.New(slog.DiscardHandler)
	a1, a2 := ipam.NewAllocator(kv, "id-1", discard), ipam.NewAllocator(kv, "id-2", discard)
	var ofID1, ofID2 []netip.Addr
	for range 2 {
		a, err := a1.Allocate(ctx, pool, netip.Addr{}, ipam.KindTask)
		if err != nil {
			t.Fatal(err)
		}
		ofID1 = append(ofID1, a)
	}
	own, err := a2.Allocate(ctx, pool, netip.Addr{}, ipam.KindTask)
	if err != nil {
		t.Fatal(err)
	}
	ofID2 = append(ofID2, own)
	facts := []netspec.NodeFacts{{ID: "id-1", Node: "n1"}, {ID: "id-2", Node: "n1"}}
	inv := []Entry{
		{IP: ofID1[0].String(), Network: "web", Node: "n1", NodeID: "id-2", Container: "c0"}, // id-1's, held on id-2
		{IP: ofID2[0].String(), Network: "web", Node: "n1", NodeID: "id-2", Container: "c1"}, // id-2's, held there
		{IP: ofID1[1].String(), Network: "web", Node: "n1", Container: "c2"},                 // an older agent's entry
	}
	out, _, err := PoolAddresses(ctx, kv, inv, facts)
	if err != nil {
		t.Fatal(err)
	}
	got := poolRows(out)
	if want := []string{ofID1[0].String() + " n1 id-1 " + StateLeak}; !slices.Equal(got, want) {
		t.Errorf("pool lists %q, want %q", got, want)
	}
	if n := Check(append(inv, out...)); n != 2 {
		t.Errorf("Check = %d duplicates, want 2 (%s, held on id-2 and id-1's)", n, ofID1[0])
	}
}

// TestPoolAddressesKnowsOlderAgentsNodes: an older agent's allocations
// name its node by name, and its facts, naming no swarm node ID, are
// keyed by that name. PoolAddresses mapped the facts' IDs to names, so
// an older agent's facts named the ID "" and its own name was taken for
// a node without facts: its allocation that a container of another node
// held was taken as listed by that container's entry, the clash merged
// away (the dashboard, reading names with NodeNames, showed it). Such an
// allocation is now listed, so that Check flags both.
func TestPoolAddressesKnowsOlderAgentsNodes(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	pool := createWeb(t, kv)
	old := ipam.NewAllocator(kv, "old1", slog.New(slog.DiscardHandler))
	a, err := old.Allocate(ctx, pool, netip.Addr{}, ipam.KindTask)
	if err != nil {
		t.Fatal(err)
	}
	facts := []netspec.NodeFacts{{Node: "old1"}, {ID: "id-2", Node: "n2"}}
	inv := []Entry{{IP: a.String(), Network: "web", Node: "n2", NodeID: "id-2", Container: "c0"}}
	out, _, err := PoolAddresses(ctx, kv, inv, facts)
	if err != nil {
		t.Fatal(err)
	}
	got := poolRows(out)
	if want := []string{a.String() + " old1  " + StateLeak}; !slices.Equal(got, want) {
		t.Errorf("pool lists %q, want %q", got, want)
	}
	if n := Check(append(inv, out...)); n != 2 {
		t.Errorf("Check = %d duplicates, want 2 (%s, held on n2 and old1's)", n, a)
	}
}

// poolRows are PoolAddresses' entries but the gateway, each as
// "IP NODE NODEID STATE".
func poolRows(out []Entry) []string {
	var rows []string
	for _, e := range out {
		if e.State != StateGateway {
			rows = append(rows, e.IP+" "+e.Node+" "+e.NodeID+" "+e.State)
		}
	}
	return rows
}

// TestPoolAddressesListsThePoolsPastOneUnreadable: one pool whose read
// failed (Consul's answer too large, a timeout, a 500) failed the whole
// listing: `underlay ips` printed no address of any network, though every
// other pool and every inventory was read. That pool is now named in the
// bad documents with its error, and the others are listed as before.
func TestPoolAddressesListsThePoolsPastOneUnreadable(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	web := createWeb(t, kv)
	db := netspec.Spec{Name: "db", Subnet: netip.MustParsePrefix("10.8.0.0/24"), Gateway: netip.MustParseAddr("10.8.0.1"),
		Parent: "eth2", IPAM: netspec.Cluster}
	if err := netspec.NewStore(kv).Create(ctx, db); err != nil {
		t.Fatal(err)
	}
	alloc := ipam.NewAllocator(kv, "node-id-1", slog.New(slog.NewTextHandler(io.Discard, nil)))
	leaked, err := alloc.Allocate(ctx, web, netip.Addr{}, ipam.KindTask)
	if err != nil {
		t.Fatal(err)
	}
	dbPool, _ := ipam.PoolOf(db, false)
	if _, err := alloc.Allocate(ctx, dbPool, netip.Addr{}, ipam.KindTask); err != nil {
		t.Fatal(err)
	}
	kv.Hook = func(call string, keys []string) error {
		if call == "list" && strings.HasPrefix(keys[0], ipam.NetworkPrefix("db")) {
			return errors.New("Unexpected response code: 500 (rpc error)")
		}
		return nil
	}
	out, bad, err := PoolAddresses(ctx, kv, nil, nil)
	if err != nil {
		t.Fatalf("PoolAddresses with db's pool unreadable: %v; want web's listed and db's named bad", err)
	}
	got := map[string]string{}
	for _, e := range out {
		got[e.Network+" "+e.IP] = e.State
	}
	if got["web "+leaked.String()] != StateLeak || got["web 10.9.0.1"] != StateGateway {
		t.Errorf("web's pool listed %v; want its gateway and leak %s", got, leaked)
	}
	if len(bad) != 1 || bad[0].Pool != dbPool.ID() || bad[0].Key != ipam.NetworkPrefix("db")+dbPool.Family()+"/" ||
		!strings.Contains(bad[0].Problem, "rpc error") || bad[0].Effect == "" {
		t.Errorf("bad documents %+v; want db's pool, its key, the error and its effect", bad)
	}
	// A listing given up (ctx ended) is no one pool's problem: it fails.
	cctx, cancel := context.WithCancel(ctx)
	kv.Hook = func(call string, keys []string) error {
		if call == "list" && strings.HasPrefix(keys[0], ipam.NetworkPrefix("db")) {
			cancel()
			return cctx.Err()
		}
		return nil
	}
	if _, _, err := PoolAddresses(cctx, kv, nil, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("PoolAddresses given up: %v, want %v", err, context.Canceled)
	}
}
