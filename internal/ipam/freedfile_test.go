package ipam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/testfile"
)

// TestFreedAddressesSurviveRestart: Docker's resend of a release whose
// answer it did not get reaches the node's agent after a restart, which
// has handed out addresses since: the new containers' addresses stay
// allocated, because the restarted agent read back, from its state
// directory, what the agent before it freed lately and passed it over.
// Past reuseAfter, the record is forgotten.
func TestFreedAddressesSurviveRestart(t *testing.T) {
	for _, spares := range []int{0, 4} {
		t.Run(map[int]string{0: "no spares", 4: "4 spares"}[spares], func(t *testing.T) {
			ctx := context.Background()
			kv := kvtest.New()
			dir := t.TempDir()
			clock := t0
			gens := 0
			start := func() reuseNode {
				t.Helper()
				f, err := NewFreedFile(dir, "n1")
				if err != nil {
					t.Fatal(err)
				}
				gens++
				n := reuseNode{a: newAllocator(kv, "n1", fmt.Sprintf("g%d", gens), func() time.Time { return clock }, nil, WithFreedStore(f)), clock: &clock}
				n.a.spares.enable(spares, nil)
				return n
			}
			n := start()
			n.allocate(t)
			first := n.allocate(t) // container 1
			n.release(t, first)    // served; its answer lost
			n.tick(10 * time.Second)
			n = start() // the agent restarts
			var held []netip.Addr
			for range spares + 5 {
				a := n.allocate(t)
				if a == first {
					t.Errorf("%s, freed %s before, handed out again by the restarted agent while other addresses were free", first, clock.Sub(t0))
				}
				held = append(held, a)
			}
			n.release(t, first) // Docker's resend
			all, err := Allocations(ctx, kv, pool26)
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range held {
				if al, ok := all[h]; !ok || al.Node != "n1" {
					t.Errorf("the resent release of container 1's %s freed %s, held by a container started since: Consul records %+v (found %v)", first, h, al, ok)
				}
			}
			n.tick(reuseAfter)
			n = start()
			if got := n.a.freed.all(clock); len(got.At)+len(got.Again) != 0 {
				t.Errorf("read back %v more than reuseAfter after the frees, want nothing", got)
			}
		})
	}
}

// TestFreedFile: what is saved is read back as saved, the file replaced
// whole (no temporary file left); a missing file holds nothing, and a bad
// one is an error naming the file and the bad value.
func TestFreedFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state") // made by the first save
	f, err := NewFreedFile(dir, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := f.Load(); err != nil || len(got.At)+len(got.Again) != 0 {
		t.Fatalf("Load of a missing file = %v, %v; want nothing, no error", got, err)
	}
	at := t0.Add(time.Second)
	want := Freed{
		At: map[string]map[netip.Addr]time.Time{
			"net/v4": {addr("10.2.0.5"): at, addr("10.2.0.6"): at.Add(time.Second)},
			"net/v6": {netip.MustParseAddr("fd00::5"): at},
		},
		Again: map[string]map[netip.Addr]time.Time{"net/v4": {addr("10.2.0.7"): at}},
	}
	for _, w := range []Freed{{At: map[string]map[netip.Addr]time.Time{"other/v4": {addr("10.3.0.2"): at}}}, want} {
		if err := f.Save(w); err != nil {
			t.Fatal(err)
		}
	}
	got, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("read back (-saved +read):\n%s", d)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != FreedFileName("n1") {
		t.Errorf("state directory holds %v, want only %s", entries, FreedFileName("n1"))
	}
	for _, c := range []struct{ name, content, want string }{
		{"undecodable", `{"freed":`, "decode the addresses freed lately in " + f.Path},
		{"not an address", `{"freed":{"net/v4":{"10.2.0.x":"2026-03-04T05:06:07Z"}}}`, `pool net/v4: "10.2.0.x" is not an address`},
		{"not a time", `{"freed":{"net/v4":{"10.2.0.5":"yesterday"}}}`, "decode the addresses freed lately in " + f.Path},
		{"handed out again, not an address", `{"freed":{},"again":{"net/v4":{"10.2.0.x":"2026-03-04T05:06:07Z"}}}`, `handed out again: pool net/v4: "10.2.0.x" is not an address`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := os.WriteFile(f.Path, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if got, err := f.Load(); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Load = %v, %v; want an error containing %q", got, err, c.want)
			}
		})
	}
	for _, c := range []struct{ dir, node, want string }{
		{"", "n1", "no state directory"},
		{dir, "../n1", `"../n1"`},
		{dir, "", `""`},
	} {
		if _, err := NewFreedFile(c.dir, c.node); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewFreedFile(%q, %q) = %v, want an error containing %s", c.dir, c.node, err, c.want)
		}
	}
}

// TestFreedRestore: what an earlier agent saved is passed over for what is
// left of reuseAfter since each address was freed; an entry dated after
// now (the clock was set back) for reuseAfter from now, no longer.
func TestFreedRestore(t *testing.T) {
	now := t0.Add(time.Hour)
	var f freedAddrs
	n := f.restore(Freed{
		At: map[string]map[netip.Addr]time.Time{
			pool26.ID(): {
				addr("10.2.0.2"): now.Add(-reuseAfter),               // forgotten
				addr("10.2.0.3"): now.Add(-reuseAfter + time.Second), // a second left
				addr("10.2.0.4"): now.Add(time.Hour),                 // ahead of the clock
			},
			"gone/v4": {addr("10.9.0.2"): now.Add(-time.Hour)},
		},
		Again: map[string]map[netip.Addr]time.Time{
			pool26.ID(): {
				addr("10.2.0.5"): now.Add(-reuseAfter), // forgotten
				addr("10.2.0.6"): now.Add(time.Hour),   // ahead of the clock
			},
		},
	}, now)
	want := Freed{
		At:    map[string]map[netip.Addr]time.Time{pool26.ID(): {addr("10.2.0.3"): now.Add(-reuseAfter + time.Second), addr("10.2.0.4"): now}},
		Again: map[string]map[netip.Addr]time.Time{pool26.ID(): {addr("10.2.0.6"): now}},
	}
	if d := cmp.Diff(want, f.all(now)); d != "" || n != 3 {
		t.Errorf("restored %d (-want +got):\n%s", n, d)
	}
}

// failingStore is a FreedStore whose saves fail and whose load fails with
// loadErr.
type failingStore struct {
	loadErr error
	saves   int
}

func (s *failingStore) Load() (Freed, error) { return Freed{}, s.loadErr }
func (s *failingStore) Save(Freed) error {
	s.saves++
	return errors.New("disk full")
}

// TestFreedStoreFailuresAreNotFatal: an unreadable record is logged and
// taken as empty, a failed save is logged once (not at every release),
// and neither fails a request or a release.
func TestFreedStoreFailuresAreNotFatal(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	logs := &logCounter{}
	s := &failingStore{loadErr: errors.New("decode the addresses freed lately in /state/x: unexpected end of JSON input")}
	a := NewAllocator(kv, "n1", slog.New(logs), WithFreedStore(s))
	if n := logs.count("cannot read back the addresses this node freed lately: they may be handed out again at once"); n != 1 ||
		!strings.Contains(logs.buf.String(), "/state/x") {
		t.Errorf("unreadable record logged %d times, want once naming the file:\n%s", n, logs.buf.String())
	}
	for range 3 {
		addr := taskAddr(t, a, pool26)
		if err := a.Release(ctx, pool26, addr); err != nil {
			t.Errorf("release of %s with its record unsaved: %v", addr, err)
		}
	}
	const msg = "cannot save the addresses this node freed lately: a restarted agent may hand them out again at once"
	if n := logs.count(msg); s.saves != 3 || n != 1 {
		t.Errorf("%d saves, failure logged %d times; want 3 saves, logged once:\n%s", s.saves, n, logs.buf.String())
	}
	// An unreadable file, as the agent finds it: taken as empty, and
	// written whole again at the next release.
	dir := t.TempDir()
	f, err := NewFreedFile(dir, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.Path, []byte("\x00\x00"), 0o600); err != nil {
		t.Fatal(err)
	}
	a = NewAllocator(kv, "n1", nil, WithFreedStore(f))
	addr := taskAddr(t, a, pool26)
	if err := a.Release(ctx, pool26, addr); err != nil {
		t.Fatal(err)
	}
	freedAt := a.freed.recent(pool26, a.now())[addr]
	if got, err := f.Load(); err != nil || freedAt.IsZero() || !got.At[pool26.ID()][addr].Equal(freedAt) {
		t.Errorf("after a release, the file reads %v, %v; want %s freed", got, err, addr)
	}
}

// TestFreedFileNotAFile: a freed-addresses file that is a named pipe (or
// a link to one) had the allocator's start, and with it the IPAM plugin's
// first answers to dockerd, wait for ever for a writer; one that is a
// link to an endless device was read without end. Only a regular file is
// read now; anything else is an error naming the file, which loadFreed
// warns of (never fatal).
func TestFreedFileNotAFile(t *testing.T) {
	dir := t.TempDir()
	f, err := NewFreedFile(dir, "n1")
	if err != nil {
		t.Fatal(err)
	}
	testfile.RefusesFIFO(t, "a freed-addresses file", f.Path, func() error {
		_, err := f.Load()
		return err
	})
}
