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
