package ipam

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

type kvPair struct{ key, value string }

func toPairs(in []kvPair) []kvstore.Pair {
	out := make([]kvstore.Pair, len(in))
	for i, p := range in {
		out[i] = kvstore.Pair{Key: p.key, Value: []byte(p.value), Index: uint64(i + 1), CreateIndex: uint64(i + 1)}
	}
	return out
}

// putSpecs stores specs in kv as `underlay network create` does, for the
// pools served from them (their blocks are claimed only while their spec
// stands).
func putSpecs(t *testing.T, kv *kvtest.KV, specs ...netspec.Spec) {
	t.Helper()
	for _, s := range specs {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := kv.Put(context.Background(), netspec.KVPrefix+s.Name+"/spec", b); err != nil {
			t.Fatal(err)
		}
	}
}

// taskAddr allocates a task's address of p from a, or fails the test.
func taskAddr(t testing.TB, a *Allocator, p Pool) netip.Addr {
	t.Helper()
	addr, err := a.Allocate(context.Background(), p, netip.Addr{}, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// keptSpares has a take an address of p, for which its keeper claims
// spares in the same block, syncs the keeper once, and returns the spares
// it then keeps of p; none kept fails the test.
func keptSpares(t testing.TB, a *Allocator, p Pool) map[netip.Addr]bool {
	t.Helper()
	taskAddr(t, a, p)
	if _, err := a.spares.syncAll(context.Background(), false, false); err != nil {
		t.Fatal(err)
	}
	kept := a.spares.known(p)
	if len(kept) == 0 {
		t.Fatal("no spares kept")
	}
	return kept
}

// sid pads s (lowercase letters and digits) with zeros to a swarm node
// ID's 25 characters: an identity every reader takes
// (netspec.CheckNodeID).
func sid(s string) string { return s + strings.Repeat("0", netspec.NodeIDLen-len(s)) }
