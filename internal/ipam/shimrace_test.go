package ipam

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// meetKV holds the first two listings of prefix's keys until both have
// been read, or until let is closed: two of the node's goroutines that
// read the pool before either writes.
type meetKV struct {
	KV
	prefix string
	let    chan struct{}

	mu      sync.Mutex // guards following fields
	readers int
	met     chan struct{} // closed when the second reader arrives
}

func (kv *meetKV) KeysIndex(ctx context.Context, prefix string) ([]string, uint64, error) {
	keys, index, err := kv.KV.KeysIndex(ctx, prefix)
	if !strings.HasPrefix(prefix, kv.prefix) {
		return keys, index, err
	}
	kv.mu.Lock()
	kv.readers++
	n := kv.readers
	if n == 2 {
		close(kv.met)
	}
	kv.mu.Unlock()
	if n <= 2 {
		select {
		case <-kv.met:
		case <-kv.let:
		}
	}
	return keys, index, err
}

// TestConcurrentFirstShimCallsShareOneAddress: the network sync and a
// plugin request racing at the agent's start both ask for the node's
// shim address in a pool where it has none yet. Each read the pool, found
// no shim, and allocated one: the node had two shim records, one used by
// the host's shim and one leaked for good (ReleaseShim frees both only
// when the network leaves). Now one node has exactly one shim address per
// pool, and both calls answer it.
func TestConcurrentFirstShimCallsShareOneAddress(t *testing.T) {
	ctx := context.Background()
	base := kvtest.New()
	_, p := clusterNet(t, base)
	kv := &meetKV{KV: base, prefix: poolPrefix(p), let: make(chan struct{}), met: make(chan struct{})}
	a := newAllocator(kv, "n1", "g", time.Now, nil)
	var wg sync.WaitGroup
	got := make([]netip.Addr, 2)
	errs := make([]error, 2)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = a.Shim(ctx, p)
		}()
	}
	// Both read the pool before either writes, unless the second waits
	// for the pool's lock while the first reads: then the first is let
	// go. Either event must come; no time decides which.
	for waiting := false; !waiting; {
		select {
		case <-kv.met:
			waiting = true
		case <-time.After(time.Millisecond):
			if a.shimLocks.users(p.ID()) == 2 {
				close(kv.let)
				waiting = true
			}
		}
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	all, err := Allocations(ctx, base, p)
	if err != nil {
		t.Fatal(err)
	}
	var shims []netip.Addr
	for addr, al := range all {
		if al.Node == "n1" && al.Kind == KindShim {
			shims = append(shims, addr)
		}
	}
	if len(shims) != 1 {
		t.Errorf("n1 has %d shim addresses recorded (%v), want one", len(shims), shims)
	}
	if got[0] != got[1] {
		t.Errorf("the two Shim calls answered %s and %s, want one address", got[0], got[1])
	}
}

// users is how many hold or await id's lock (for tests that wait for a
// waiter).
func (l *poolLocks) users(id string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if pl := l.held[id]; pl != nil {
		return pl.users
	}
	return 0
}
