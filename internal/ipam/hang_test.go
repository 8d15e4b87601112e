package ipam

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/testconsul"
)

// txnHangsOn is an in-memory KV whose transactions on key go to a Consul
// agent that never answers: each told on begun as it starts, and its
// error on errs as it ends.
type txnHangsOn struct {
	*kvtest.KV
	hung  KV
	key   string
	begun chan struct{}
	errs  chan error
}

func (k txnHangsOn) Txn(ctx context.Context, ops []kvstore.Op) (kvstore.Result, error) {
	if len(ops) == 0 || ops[0].Key != k.key {
		return k.KV.Txn(ctx, ops)
	}
	select {
	case k.begun <- struct{}{}:
	default:
	}
	res, err := k.hung.Txn(ctx, ops)
	select {
	case k.errs <- err:
	default:
	}
	return res, err
}

// TestSparesWatchGivesUpOnConsulThatDoesNotAnswer: the spares keeper's
// watch of a pool's pressure key first makes sure the key exists, with a
// write; a Consul agent that accepted it and never answered held the
// watch for good: no other node's ask for spares heard, and no spare
// suspended when Consul was lost and back. The write is now given up
// after kvstore.WriteWait with a deadline error naming it, and the watch
// goes on (here: the key still missing, it writes it again).
func TestSparesWatchGivesUpOnConsulThatDoesNotAnswer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	key := pressureKey(pool26)
	kv := txnHangsOn{KV: kvtest.New(), hung: consul.NewKV(testconsul.Hung(t)), key: key, begun: make(chan struct{}, 64), errs: make(chan error, 64)}
	a := NewAllocator(kv, "n1", nil)
	if _, err := a.Allocate(ctx, pool26, netip.Addr{}, KindTask); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { a.KeepSpares(ctx, 2, slog.New(slog.DiscardHandler)); close(done) }()
	defer func() { cancel(); <-done }()
	testconsul.GivesUp(t, "the spares watch's write of the pressure key", "kv txn on "+key, func() error { return <-kv.errs })
	for range 2 {
		select {
		case <-kv.begun:
		case <-time.After(time.Minute):
			t.Fatal("the spares watch wrote the pressure key no more after the write that hung, after a minute")
		}
	}
}

// getHangsOn is an in-memory KV whose reads of key go, once hang is
// closed, to a Consul agent that never answers: each read's error on errs
// as it ends.
type getHangsOn struct {
	*kvtest.KV
	hung KV
	key  string
	hang chan struct{}
	errs chan error
}

func (k getHangsOn) Get(ctx context.Context, key string) (kvstore.Pair, bool, error) {
	select {
	case <-k.hang:
	default:
		return k.KV.Get(ctx, key)
	}
	if key != k.key {
		return k.KV.Get(ctx, key)
	}
	p, ok, err := k.hung.Get(ctx, key)
	select {
	case k.errs <- err:
	default:
	}
	return p, ok, err
}

// TestSparesWatchGivesUpOnSpecReadThatDoesNotAnswer: before it writes the
// pressure key, the spares watch reads the pool's spec (the write checks
// it stands); that read, unbounded, held the watch for good as the write
// did. It is given up under the write's bound.
func TestSparesWatchGivesUpOnSpecReadThatDoesNotAnswer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	spec := netspec.Spec{Name: "net", Subnet: netip.MustParsePrefix("10.2.0.0/24"), Gateway: netip.MustParseAddr("10.2.0.1"),
		Parent: "eth1", IPAM: netspec.Cluster}
	mem := kvtest.New()
	st := netspec.NewStore(mem)
	if err := st.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	// As the agent's: a pool read from its spec, whose writes check it.
	p, _, err := SpecPools{Store: st}.PoolFor(ctx, spec.Subnet)
	if err != nil {
		t.Fatal(err)
	}
	kv := getHangsOn{KV: mem, hung: consul.NewKV(testconsul.Hung(t)), key: netspec.SpecKey("net"), hang: make(chan struct{}), errs: make(chan error, 64)}
	a := NewAllocator(kv, "n1", nil)
	if _, err := a.Allocate(ctx, p, netip.Addr{}, KindTask); err != nil {
		t.Fatal(err)
	}
	// The pressure key missing: the watch reads the spec to write it.
	if err := mem.Delete(ctx, pressureKey(p)); err != nil {
		t.Fatal(err)
	}
	close(kv.hang)
	done := make(chan struct{})
	go func() { a.KeepSpares(ctx, 2, slog.New(slog.DiscardHandler)); close(done) }()
	defer func() { cancel(); <-done }()
	testconsul.GivesUp(t, "the spares watch's read of the pool's spec", "kv get "+netspec.SpecKey("net"), func() error { return <-kv.errs })
}
