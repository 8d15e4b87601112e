package adapter

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/underlay/underlay/internal/dashboard"
	"github.com/underlay/underlay/internal/doctor"
	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

// memKV is the in-memory store, with blocking queries that never fire.
type memKV struct{ *kvtest.KV }

func (memKV) Watch(context.Context, string) <-chan struct{} { return nil }

// listCounter counts the listings of each prefix of a store.
type listCounter struct {
	mu     sync.Mutex
	listed map[string]int
}

func countLists(kv *kvtest.KV) *listCounter {
	c := &listCounter{listed: map[string]int{}}
	kv.Hook = func(call string, keys []string) error {
		if call == "list" {
			c.mu.Lock()
			c.listed[keys[0]]++
			c.mu.Unlock()
		}
		return nil
	}
	return c
}

func (c *listCounter) get(prefix string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.listed[prefix]
}

// runRefreshes runs a dashboard server over st until it has refreshed at
// least once (listed the doctor reports), and returns once it stopped.
func runRefreshes(t *testing.T, st *Store, lists *listCounter) {
	t.Helper()
	srv, err := dashboard.New(dashboard.Config{Sources: dashboard.Sources{Store: st}, Refresh: time.Hour, IdleRefresh: time.Hour},
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for lists.get(doctor.KVPrefix) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no refresh within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A refresh under way when Run ends reads every source to the end.
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestStoreReadsNodeFactsOncePerRefresh: each refresh listed the node
// facts twice, to check the inventories and to judge the agents: a node
// publishing between the two reads made them disagree (an inventory
// checked against facts the agents' list did not have), and every refresh
// loaded Consul twice. The facts are now read once per refresh and handed
// to both.
func TestStoreReadsNodeFactsOncePerRefresh(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	kv.Put(ctx, netspec.NodesKVPrefix+"id1", []byte(`{"id":"id1","node":"n1","interfaces":["eth0"],"updated_at":"2026-12-03T12:00:00Z"}`))
	if err := inventory.Publish(ctx, kv, "id1", []inventory.Entry{{IP: "10.0.0.5", Node: "n1", Network: "lan", Container: "a"}}); err != nil {
		t.Fatal(err)
	}
	lists := countLists(kv)
	runRefreshes(t, NewStore(memKV{kv}, ""), lists)
	facts, invs := lists.get(netspec.NodesKVPrefix), lists.get(inventory.KVPrefix)
	if invs == 0 || facts != invs {
		t.Errorf("%d refresh(es) (listings of %s) listed %s %d times, want once each", invs, inventory.KVPrefix, netspec.NodesKVPrefix, facts)
	}
}
