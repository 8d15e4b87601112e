package agent

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/doctor"
	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/taskmetrics"
)

// TestNoWriteOfARemovedNodeLands: an agent cut off from Consul while
// `underlay node rm` removed its node learnt it at its next heartbeat,
// up to netagent.Heartbeat after it came back; its other parts wrote
// meanwhile under the removed swarm node ID — network reports, range
// leases, cluster-IPAM addresses, inventory, doctor report, task
// metrics — and what they wrote stayed, the node looking alive on its
// networks and its old addresses held again. Every write through the
// node's KV store is now refused once the record of the removal exists,
// naming netspec.ErrNodeRemoved, and nothing lands.
func TestNoWriteOfARemovedNodeLands(t *testing.T) {
	ctx := context.Background()
	const id = "gone000000000000000000000"
	raw := kvtest.New()
	st := netspec.NewStore(raw)
	lan := netspec.Spec{Name: "lan", Subnet: netip.MustParsePrefix("192.168.10.0/24"), Gateway: netip.MustParseAddr("192.168.10.1"),
		Parent: "eth0", IPAM: netspec.PerNode, PerNodeSize: 64}
	pool := netspec.Spec{Name: "pool", Subnet: netip.MustParsePrefix("10.20.0.0/16"), Gateway: netip.MustParseAddr("10.20.0.1"),
		Parent: "eth1", IPAM: netspec.Cluster}
	for _, s := range []netspec.Spec{lan, pool} {
		if err := st.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	// The agent's report on lan, from before it was cut off: node rm
	// removed it, as the rest, and recorded the removal.
	if deleted, err := st.DeleteFacts(ctx, id, 0, netspec.NodeRemoval{ID: id, Node: "n1", RemovedAt: time.Now()}); err != nil || !deleted {
		t.Fatalf("node rm's record: %v, %v", deleted, err)
	}
	before := raw.Index()

	kv := nodeKV(raw, id)
	nst := netspec.NewStore(kv)
	p, _ := ipam.PoolOf(pool, false)
	for _, w := range []struct {
		what  string
		write func() error
	}{
		{"network report", func() error {
			return nst.Report(ctx, lan.Name, netspec.NodeState{ID: id, Node: "n1", State: netspec.StateReady})
		}},
		{"range lease", func() error { _, _, err := nst.Lease(ctx, lan, id); return err }},
		{"cluster-IPAM address", func() error {
			_, err := ipam.NewAllocator(kv, id, nil).Allocate(ctx, p, netip.Addr{}, ipam.KindTask)
			return err
		}},
		{"inventory", func() error { return inventory.Publish(ctx, kv, id, nil) }},
		{"doctor report", func() error {
			return doctor.Publish(ctx, kv, doctor.Report{Node: "n1", NodeID: id, At: time.Now(), Every: time.Minute})
		}},
		{"task metrics", func() error { return kv.Put(ctx, taskmetrics.IDPrefix+id, []byte(`{}`)) }},
		{"deletion of a report", func() error { return nst.DeleteReport(ctx, pool.Name, id) }},
		{"deletion of a tree", func() error { return kv.DeleteTree(ctx, ipam.KVPrefix+pool.Name+"/v4/kept/"+id) }},
	} {
		if err := w.write(); !errors.Is(err, netspec.ErrNodeRemoved) {
			t.Errorf("%s of the removed node: %v, want %v", w.what, err, netspec.ErrNodeRemoved)
		}
	}
	if after := raw.Index(); after != before {
		keys, _ := raw.Keys(ctx, "")
		t.Errorf("the removed node's agent wrote (store index %d, was %d): %q", after, before, keys)
	}
}
