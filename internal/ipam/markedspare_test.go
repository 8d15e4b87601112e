package ipam

import (
	"context"
	"net/netip"
	"testing"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

// TestNoSpareOfANetworkMarkedForRemoval: a request reads its pool from
// the newest listing of the specs, then takes a spare. `network rm`'s
// mark, read into the listing between the two, did not stop the keeper:
// it handed out a spare of a network the nodes were taking apart (the
// plugin refuses such a request once the listing it reads shows the
// mark; the keeper's take looked at nothing). The keeper now checks the
// newest listing before it hands out a spare, and once the listing shows
// the mark it keeps no spare of the pool: a sync gives them back, with
// no request needed.
func TestNoSpareOfANetworkMarkedForRemoval(t *testing.T) {
	for _, how := range []string{"request", "sync"} {
		t.Run(how, func(t *testing.T) {
			ctx := context.Background()
			kv := kvtest.New()
			st := netspec.NewStore(kv)
			a := NewAllocator(kv, "n1", nil, WithSpecs(st))
			a.spares.enable(3, nil)
			p := servedLan(t, st) // the pool as a request read it, before the mark
			spares := keptSpares(t, a, p)
			if err := st.MarkDeleting(ctx, lanSpec.Name); err != nil {
				t.Fatal(err)
			}
			// The agent's reconciler reads the specs at every change.
			if _, err := st.ReadListing(ctx); err != nil {
				t.Fatal(err)
			}
			if how == "sync" {
				if _, err := a.spares.syncAll(ctx, false, false); err != nil {
					t.Fatal(err)
				}
				if n := a.spares.count(); n != 0 {
					t.Errorf("%d spares kept of a network marked for removal after a sync, want 0", n)
				}
			}
			got, err := a.Allocate(ctx, p, netip.Addr{}, KindTask)
			if spares[got] {
				t.Fatalf("spare %s handed out of the network marked for removal, the newest listing showing the mark", got)
			}
			if !notServed(err) {
				t.Errorf("request in the network marked for removal: %v %v, want refused", got, err)
			}
			if _, err := a.spares.syncAll(ctx, false, false); err != nil {
				t.Fatal(err)
			}
			if n := a.spares.count(); n != 0 {
				t.Errorf("%d spares kept of a network marked for removal, want 0", n)
			}
			// Refused, as bound to the spec before the mark, their give-back
			// ends with the removal's delete of the tree, their records with it.
			if err := st.Delete(ctx, lanSpec.Name, NetworkPrefix(lanSpec.Name)); err != nil {
				t.Fatal(err)
			}
			if _, err := a.spares.syncAll(ctx, false, false); err != nil {
				t.Fatal(err)
			}
			if left := a.spares.known(p); len(left) != 0 {
				t.Errorf("spares %v still known after the network's removal, want none", left)
			}
		})
	}
}
