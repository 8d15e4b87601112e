package ipam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/testmetrics"
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

// TestRemovedPoolForgotten: the store kept what it had read of a pool for
// as long as the agent ran, also once its network was removed: its block
// documents, and its bad keys, which underlay_ipam_skipped_documents went
// on counting for good (an alert on it never cleared). A sweep now drops
// what the store holds of the pools no spec serves any more.
func TestRemovedPoolForgotten(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st, p := clusterNet(t, kv)
	kv.Put(ctx, poolPrefix(p)+"stray", []byte("hello"))
	a := newAllocator(kv, "n1", "g", func() time.Time { return t0 }, nil)
	reg := prometheus.NewRegistry()
	NewMetrics(reg, a)
	if _, err := a.Allocate(ctx, p, netip.Addr{}, KindTask); err != nil {
		t.Fatal(err)
	}
	r := &Reclaimer{Alloc: a, Pools: SpecPools{Store: st}, Held: noHeld{}, Cluster: fakeCluster{ready: []string{"n1"}},
		Grace: time.Hour, NodeTimeout: time.Hour, Fresh: time.Hour}
	if err := r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if v := testmetrics.Gauge(t, reg, "underlay_ipam_skipped_documents"); v != 1 {
		t.Fatalf("underlay_ipam_skipped_documents %v with the stray key, want 1", v)
	}
	// network rm: the spec and the pool's keys go.
	if err := kv.DeleteTree(ctx, netspec.KVPrefix+p.Network+"/"); err != nil {
		t.Fatal(err)
	}
	if err := kv.DeleteTree(ctx, NetworkPrefix(p.Network)); err != nil {
		t.Fatal(err)
	}
	if err := r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if v := testmetrics.Gauge(t, reg, "underlay_ipam_skipped_documents"); v != 0 {
		t.Errorf("underlay_ipam_skipped_documents %v after the network was removed, want 0", v)
	}
	s := a.store
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.docs) != 0 || len(s.bad) != 0 || len(s.scanned) != 0 || len(s.logged) != 0 {
		t.Errorf("after the network was removed the store holds %d documents, bad keys of %d pools, %d scanned pools, %d logged keys; want none",
			len(s.docs), len(s.bad), len(s.scanned), len(s.logged))
	}
}

// TestRefusedSpecErrorQuotesTheName: the error Docker shows for a pool
// whose spec the agents refuse ends with the command that removes the
// network, and named the network there as the spec's key gives it, which
// any agent's Consul token may write: an operator running the command ran
// what followed a ; in the key. The command is now netspec.RemoveFix's,
// which quotes it (or deletes the keys of a name rm refuses).
func TestRefusedSpecErrorQuotesTheName(t *testing.T) {
	name := "x; touch /tmp/pwned"
	err := refusedSpec(name, errors.New("bad"))
	if want := netspec.RemoveFix(name); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not hold %s", err, want)
	}
	if strings.Contains(err.Error(), "rm x; touch") {
		t.Errorf("error %q names the network unquoted in the command", err)
	}
}

// TestRecordsWithInvisibleCharactersAreBad: a block document's node,
// kind and generation texts, which any agent's token may write, were read
// whatever characters they held, and `underlay ips` and the dashboard
// showed them: a record naming its node with a right-to-left override
// (U+202E), an escape sequence or a line separator reordered or broke
// what they print. No node identity, kind or generation the agents write
// has a character that is not graphic: such a document is now set apart
// as one that does not decode, naming its key and the text; its block,
// and the addresses it records, are still never handed out.
func TestRecordsWithInvisibleCharactersAreBad(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := netip.MustParsePrefix("10.2.0.32/28")
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"node", `{"node":"n2","allocs":{"10.2.0.33":{"node":"n2\u202e1","at":"2026-03-01T12:00:00Z","kind":"task"}}}`,
			`allocation 10.2.0.33: node "n2\u202e1" has a character that is not graphic`},
		{"kind", `{"node":"n2","allocs":{"10.2.0.33":{"node":"n2","at":"2026-03-01T12:00:00Z","kind":"task\u001b[2J"}}}`,
			`allocation 10.2.0.33: kind "task\x1b[2J" has a character that is not graphic`},
		{"gen", `{"node":"n2","allocs":{"10.2.0.33":{"node":"n2","at":"2026-03-01T12:00:00Z","kind":"task","gen":"g\u2028x"}}}`,
			`allocation 10.2.0.33: gen "g\u2028x" has a character that is not graphic`},
		{"block node", `{"node":"n2\n10.2.0.34 n3","allocs":{"10.2.0.33":{"node":"n2","at":"2026-03-01T12:00:00Z","kind":"task"}}}`,
			`node "n2\n10.2.0.34 n3" has a character that is not graphic`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kv := kvtest.New()
			key := blockPath(pool26, b)
			kv.Put(ctx, key, []byte(tc.doc))
			c, err := Inspect(ctx, kv, pool26)
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Allocs) != 0 || len(c.Blocks) != 0 {
				t.Errorf("allocations %v, blocks %v read; want none", c.Allocs, c.Blocks)
			}
			if len(c.Bad) != 1 || c.Bad[0].Key != key || !strings.Contains(c.Bad[0].Err.Error(), tc.want) {
				t.Errorf("bad documents %+v; want %s with %q", c.Bad, key, tc.want)
			}
			// The record's address stays taken: its block is never claimed.
			a := newAllocator(kv, "n1", "g", func() time.Time { return t0 }, nil)
			if _, err := a.Allocate(ctx, pool26, netip.MustParseAddr("10.2.0.33"), KindTask); !errors.Is(err, ErrBadDocument) {
				t.Errorf("10.2.0.33 asked for: %v, want ErrBadDocument", err)
			}
			for {
				addr, err := a.Allocate(ctx, pool26, netip.Addr{}, KindTask)
				if errors.Is(err, ErrPoolExhausted) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if b.Contains(addr) {
					t.Fatalf("%s handed out of the block with the bad record", addr)
				}
			}
		})
	}
}
