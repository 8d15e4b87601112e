package adapter

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/unregistered"
)

// TestStoreReadsUnregisteredReports: the nodes' reports of the tasks
// their agents leave out of Consul are read, and one readers refuse (it
// names another node than its key's) set apart, hiding no other.
func TestStoreReadsUnregisteredReports(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	const id, other = "n1n1n1n1n1n1n1n1n1n1n1n1n", "n2n2n2n2n2n2n2n2n2n2n2n2n"
	r, _ := unregistered.Build("node1", id, []unregistered.Task{{TaskID: "t1t1t1t1t1t1t1t1t1t1t1t1t", ContainerID: "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0", Reason: "no port", NodeID: id}})
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{unregistered.KVPrefix + id, unregistered.KVPrefix + other} {
		if err := kv.Put(ctx, k, b); err != nil {
			t.Fatal(err)
		}
	}
	got, bad, err := NewStore(memKV{kv}, "").Unregistered(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].NodeID != id || len(got[0].Tasks) != 1 || got[0].Tasks[0].Reason != "no port" {
		t.Errorf("read %+v, want node1's report alone", got)
	}
	if len(bad) != 1 || bad[0].Key != unregistered.KVPrefix+other {
		t.Errorf("refused %+v, want the report under %s", bad, other)
	}
}
