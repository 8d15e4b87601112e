package ipam

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// TestBadKeysForgottenWhenGone: the store remembers which bad keys it
// logged, so that each is logged once, but it kept every key it had ever
// seen: stray keys under a pool's blocks/, which any agent's token may
// write and delete, grew every agent's memory without bound. It now keeps
// only the bad keys of each pool's last listing.
func TestBadKeysForgottenWhenGone(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	logs := &logCounter{}
	s := newStore(kv, slog.New(logs))
	const rounds, perRound = 5, 50
	for r := range rounds {
		var keys []string
		for i := range perRound {
			k := poolPrefix(pool26) + fmt.Sprintf("junk-%d-%d", r, i)
			kv.Put(ctx, k, []byte("x"))
			keys = append(keys, k)
		}
		if _, err := s.scan(ctx, pool26); err != nil {
			t.Fatal(err)
		}
		if _, err := s.scan(ctx, pool26); err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			kv.Delete(ctx, k)
		}
	}
	const msg = "skipping a bad document in the address pool: nothing is allocated from it"
	if n := logs.count(msg); n != rounds*perRound {
		t.Errorf("logged %d times, want once per bad key (%d)", n, rounds*perRound)
	}
	if _, err := s.scan(ctx, pool26); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	n := len(s.logged)
	s.mu.Unlock()
	if n != 0 {
		t.Errorf("%d bad keys remembered after every one was deleted, want 0", n)
	}
}
