package ipam_test

import (
	"context"
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// TestInspectBlocks: a pool's contents name each readable block with its
// node (the dashboard outlines them), leave other pools and the pressure
// key out, and set a corrupt block apart instead of failing.
func TestInspectBlocks(t *testing.T) {
	ctx := context.Background()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	doc := func(node string, addrs ...string) []byte {
		d := ipam.BlockDoc{Node: node, Allocs: map[string]ipam.Alloc{}}
		for _, a := range addrs {
			d.Allocs[a] = ipam.Alloc{Node: node, At: at, Kind: ipam.KindTask}
		}
		b, _ := json.Marshal(d)
		return b
	}
	kv := kvtest.New()
	for k, v := range map[string][]byte{
		ipam.KVPrefix + "web/v4/blocks/10.0.0.0_28":   doc("node1", "10.0.0.2"),
		ipam.KVPrefix + "web/v4/blocks/10.0.0.16_28":  doc("node2", "10.0.0.17", "10.0.0.18"),
		ipam.KVPrefix + "web/v4/pressure":             []byte(`{}`),
		ipam.KVPrefix + "other/v4/blocks/10.1.0.0_28": doc("node3"),
		ipam.KVPrefix + "web/v4/blocks/10.0.0.32_28":  []byte("not json"),
	} {
		if err := kv.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	pool := ipam.Pool{Network: "web", Prefix: netip.MustParsePrefix("10.0.0.0/24")}
	got, err := ipam.Inspect(ctx, kv, pool)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Blocks) != 2 {
		t.Fatalf("%d blocks, want web's 2 readable ones: %v", len(got.Blocks), got.Blocks)
	}
	b1, b2 := got.Blocks[netip.MustParsePrefix("10.0.0.0/28")], got.Blocks[netip.MustParsePrefix("10.0.0.16/28")]
	if b1.Node != "node1" || len(b1.Allocs) != 1 || b2.Node != "node2" || len(b2.Allocs) != 2 {
		t.Errorf("blocks %+v, %+v", b1, b2)
	}
	if len(got.Allocs) != 3 {
		t.Errorf("%d allocations, want 3: %v", len(got.Allocs), got.Allocs)
	}
	if len(got.Bad) != 1 || got.Bad[0].Key != ipam.KVPrefix+"web/v4/blocks/10.0.0.32_28" {
		t.Errorf("bad documents %+v; want the corrupt block named", got.Bad)
	}
}
