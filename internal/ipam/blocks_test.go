package ipam_test

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/ipam"
)

// listKV is a KV that only lists; BlockDocs needs nothing else.
type listKV struct {
	ipam.KV
	pairs []ipam.Pair
}

func (k listKV) ListPairs(_ context.Context, prefix string) ([]ipam.Pair, error) {
	var out []ipam.Pair
	for _, p := range k.pairs {
		if strings.HasPrefix(p.Key, prefix) {
			out = append(out, p)
		}
	}
	return out, nil
}

func TestBlockDocs(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	doc := func(node string, addrs ...string) []byte {
		d := ipam.BlockDoc{Node: node, Allocs: map[string]ipam.Alloc{}}
		for _, a := range addrs {
			d.Allocs[a] = ipam.Alloc{Node: node, At: at, Kind: ipam.KindTask}
		}
		b, _ := json.Marshal(d)
		return b
	}
	kv := listKV{pairs: []ipam.Pair{
		{Key: ipam.KVPrefix + "web/v4/blocks/10.0.0.0_28", Value: doc("node1", "10.0.0.2")},
		{Key: ipam.KVPrefix + "web/v4/blocks/10.0.0.16_28", Value: doc("node2", "10.0.0.17", "10.0.0.18")},
		{Key: ipam.KVPrefix + "web/v4/pressure", Value: []byte(`{}`)},
		{Key: ipam.KVPrefix + "other/v4/blocks/10.1.0.0_28", Value: doc("node3")},
	}}
	pool := ipam.Pool{Network: "web", Prefix: netip.MustParsePrefix("10.0.0.0/24")}
	got, err := ipam.BlockDocs(context.Background(), kv, pool)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d blocks, want web's 2: %v", len(got), got)
	}
	b1, b2 := got[netip.MustParsePrefix("10.0.0.0/28")], got[netip.MustParsePrefix("10.0.0.16/28")]
	if b1.Node != "node1" || len(b1.Allocs) != 1 || b2.Node != "node2" || len(b2.Allocs) != 2 {
		t.Errorf("blocks %+v, %+v", b1, b2)
	}

	kv.pairs = append(kv.pairs, ipam.Pair{Key: ipam.KVPrefix + "web/v4/blocks/10.0.0.32_28", Value: []byte("not json")})
	if _, err := ipam.BlockDocs(context.Background(), kv, pool); err == nil || !strings.Contains(err.Error(), "10.0.0.32_28") {
		t.Errorf("a corrupt block gave %v; want an error naming it", err)
	}
}
