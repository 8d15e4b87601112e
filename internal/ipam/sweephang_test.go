package ipam

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/testconsul"
)

// keysHangOnce is an in-memory KV whose first listing of a pool's keys
// (KeysIndex: a sweep's scan, the start's read of what the node handed
// out) once hang is closed goes to a Consul agent that never answers: its
// error on errs as it ends. Each later listing is told on after.
type keysHangOnce struct {
	*kvtest.KV
	hung  KV
	hang  chan struct{}
	once  *sync.Once
	errs  chan error
	after chan struct{}
}

func (k keysHangOnce) KeysIndex(ctx context.Context, prefix string) ([]string, uint64, error) {
	select {
	case <-k.hang:
	default:
		return k.KV.KeysIndex(ctx, prefix)
	}
	first := false
	k.once.Do(func() { first = true })
	if !first {
		select {
		case k.after <- struct{}{}:
		default:
		}
		return k.KV.KeysIndex(ctx, prefix)
	}
	keys, index, err := k.hung.KeysIndex(ctx, prefix)
	k.errs <- err
	return keys, index, err
}

func newKeysHangOnce(t *testing.T, base *kvtest.KV) keysHangOnce {
	return keysHangOnce{KV: base, hung: consul.NewKV(testconsul.Hung(t)), hang: make(chan struct{}), once: &sync.Once{},
		errs: make(chan error, 1), after: make(chan struct{}, 64)}
}

// TestSweepGivesUpOnConsulThatDoesNotAnswer: every Consul call of a sweep
// ran under the reclaimer's context, with no deadline: one call to a
// Consul agent that accepted it and never answered held the reclaimer for
// good, no later sweep run (lost addresses never recorded again, leaks
// and departed nodes' addresses never reclaimed). A sweep is now given up
// after its bound, and the next one runs.
func TestSweepGivesUpOnConsulThatDoesNotAnswer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	base := kvtest.New()
	st, p := clusterNet(t, base)
	kv := newKeysHangOnce(t, base)
	a := NewAllocator(kv, "n1", nil)
	addr, err := a.Allocate(ctx, p, netip.Addr{}, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	r := &Reclaimer{Alloc: a, Pools: SpecPools{Store: st}, Held: heldSet{addr: true}, Grace: time.Minute,
		Log: slog.New(slog.DiscardHandler), wait: 2 * time.Second}
	done := make(chan struct{})
	go func() { r.Run(ctx, 50*time.Millisecond); close(done) }()
	defer func() { cancel(); <-done }()
	<-r.Listed()
	close(kv.hang) // the next sweep's scan hangs
	testconsul.GivesUp(t, "a sweep's listing of the pool", "kv keys "+poolPrefix(p), func() error { return <-kv.errs })
	select {
	case <-kv.after:
	case <-time.After(time.Minute):
		t.Fatal("no sweep listed the pool after the listing that hung, after a minute")
	}
}

// TestReclaimerStartGivesUpOnConsulThatDoesNotAnswer: the reclaimer's
// start reads what the node's earlier agents handed out before its first
// sweep; that read, unbounded, held the reclaimer for good (no sweep ever,
// the plugin served only once the listing wait was over). It is given up
// under a sweep's bound, and read again.
func TestReclaimerStartGivesUpOnConsulThatDoesNotAnswer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	base := kvtest.New()
	st, p := clusterNet(t, base)
	// An earlier agent of the node handed an address out.
	addr, err := NewAllocator(base, "n1", nil).Allocate(ctx, p, netip.Addr{}, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	kv := newKeysHangOnce(t, base)
	close(kv.hang)
	r := &Reclaimer{Alloc: NewAllocator(kv, "n1", nil), Pools: SpecPools{Store: st}, Held: heldSet{addr: true}, Grace: time.Minute,
		Log: slog.New(slog.DiscardHandler), wait: 2 * time.Second}
	done := make(chan struct{})
	go func() { r.Run(ctx, 50*time.Millisecond); close(done) }()
	defer func() { cancel(); <-done }()
	testconsul.GivesUp(t, "the reclaimer's start's read of the pool", "kv keys "+poolPrefix(p), func() error { return <-kv.errs })
	select {
	case <-r.Listed():
	case <-time.After(time.Minute):
		t.Fatal("the reclaimer's start not done after its read that hung, after a minute")
	}
}
