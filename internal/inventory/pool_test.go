package inventory

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

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
	inv := []Entry{{IP: held.String(), Network: "web", Node: "n1", Container: "c1"}}
	out, bad, err := PoolAddresses(ctx, kv, inv)
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
	want := map[string]string{"10.9.0.1": StateGateway, "10.9.0.2": StateAuxPfx + "dns", shim.String(): StateShim, leaked.String(): StateLeak}
	for ip, st := range want {
		if got[ip] != st {
			t.Errorf("%s: state %q, want %q", ip, got[ip], st)
		}
	}
	if st, ok := got[held.String()]; ok {
		t.Errorf("held address %s listed again by the pool, as %q", held, st)
	}
}
