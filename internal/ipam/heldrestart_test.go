package ipam

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

// startUnderWay is a node on network net whose containers hold nothing
// yet, one start under way since since; its listing cancels the test's
// context: Run then ends right after its first.
type startUnderWay struct {
	since  time.Time
	cancel context.CancelFunc
}

func (h startUnderWay) HeldAddresses(context.Context) (Local, error) {
	h.cancel()
	return Local{Starts: map[string][]Start{"net": {{Since: h.since}}}}, nil
}

// restartDuringStart is node n1's agent started again as generation gen,
// a container's start under way since since: its reclaimer's Run, ended
// right after its first listing.
func restartDuringStart(t *testing.T, kv *kvtest.KV, st *netspec.Store, gen string, since time.Time) *Allocator {
	t.Helper()
	n1 := newAllocator(kv, "n1", gen, time.Now, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // bounded: a Run that never lists would never end
	defer cancel()
	r := &Reclaimer{Alloc: n1, Pools: SpecPools{Store: st}, Held: startUnderWay{since, cancel}, Grace: 10 * time.Second}
	r.Run(ctx, time.Hour)
	return n1
}

// loseHeld has Consul lose x, which n1's container holds (the leader
// reclaims it, n1 taken for departed), and checks that n1 hands it out
// neither when asked for it nor in its next more requests.
func loseHeld(t *testing.T, kv *kvtest.KV, p Pool, n1 *Allocator, x netip.Addr, more int) {
	t.Helper()
	ctx := context.Background()
	all, err := Allocations(ctx, kv, p)
	if err != nil {
		t.Fatal(err)
	}
	if freed, err := newAllocator(kv, "n0", "g0", time.Now, nil).reclaimObserved(ctx, p, map[netip.Addr]Alloc{x: all[x]}); err != nil || len(freed) != 1 {
		t.Fatalf("reclaim %s: freed %v, %v", x, freed, err)
	}
	if got, err := n1.Allocate(ctx, p, x, KindTask); err == nil {
		t.Fatalf("n1 handed out %s again, which its container holds", got)
	}
	for range more {
		if got := taskAddr(t, n1, p); got == x {
			t.Fatalf("n1 handed out %s again, which its container holds", got)
		}
	}
}

// TestRestartPassesOverAStartsAddressInAnotherNodesBlock: the model test,
// with Consul losing running containers' addresses, found a node handing
// a second local container an address: "DUPLICATE: 10.3.0.25 held by a
// container of n0 and by a container starting on n0". The node's agent
// had handed it out for a start, in a block of another node's affinity,
// and restarted before the start was done: its first listing showed the
// start, not the address, and only the addresses its own blocks recorded
// were taken as its earlier agent's handouts, at its first allocation.
// The start done, Consul lost the address (the node taken for departed,
// a stray release), and the node's next request was given it. Every
// block is now read for them, as the reclaimer starts, before its first
// listing: what Consul loses after is passed over.
func TestRestartPassesOverAStartsAddressInAnotherNodesBlock(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st, p := clusterNet(t, kv)
	n2 := newAllocator(kv, "n2", "g2", time.Now, nil)
	x := taskAddr(t, n2, p).Next() // in n2's block
	since := time.Now()
	if _, err := newAllocator(kv, "n1", "g1", time.Now, nil).Allocate(ctx, p, x, KindTask); err != nil {
		t.Fatal(err)
	}
	// n1's agent restarts, the container's start under way.
	n1 := restartDuringStart(t, kv, st, "g1b", since)
	// The start is done; Consul loses x: the leader reclaims it, n1
	// taken for departed.
	loseHeld(t, kv, p, n1, x, 4)
}

// TestRestartPassesOverAStartsSpare: the model test then found "DUPLICATE:
// 10.3.0.28 held by a container of n0 and by a container starting on n0":
// the node's earlier agent had handed the address out of its spares for a
// start and stopped before recording it as a task. Consul recorded it as
// that agent's spare, which the restarted agent did not take for a
// handout; the start done, Consul lost it, and the node's next request
// was given it. An earlier agent's spare is now taken as handed out when
// the agent starts, kept while a start begun before is under way.
func TestRestartPassesOverAStartsSpare(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st, p := clusterNet(t, kv)
	n1 := newAllocator(kv, "n1", "g1", time.Now, nil)
	n1.spares.enable(2, nil)
	keptSpares(t, n1, p)
	since := time.Now()
	x, err := n1.Allocate(ctx, p, netip.Addr{}, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	if all, _ := Allocations(ctx, kv, p); all[x].Kind != KindSpare {
		t.Fatalf("%s recorded as %+v, want still g1's spare", x, all[x])
	}
	// n1's agent restarts, the container's start under way, x still
	// recorded as the earlier agent's spare.
	n1 = restartDuringStart(t, kv, st, "g2", since)
	loseHeld(t, kv, p, n1, x, 4)
}

// TestRestartReadsHandoutsBeforeListing: the model test then found the
// same duplicate with Consul out of reach as the agent started: its read
// of what the earlier agent handed out failed, the listing went ahead,
// and an address Consul lost before the pool's first allocation was
// missed. The reclaimer now retries the read before it lists the
// containers; until both are done the plugin serves nothing (see
// Listed).
func TestRestartReadsHandoutsBeforeListing(t *testing.T) {
	kv := kvtest.New()
	st, p := clusterNet(t, kv)
	since := time.Now()
	x := taskAddr(t, newAllocator(kv, "n1", "g1", time.Now, nil), p)
	failed := false
	kv.Hook = func(call string, keys []string) error {
		if !failed && (call == "list" || call == "keys") && strings.HasPrefix(keys[0], poolPrefix(p)) {
			failed = true
			return kvtest.ErrUnreachable
		}
		return nil
	}
	n1 := restartDuringStart(t, kv, st, "g2", since)
	if !failed {
		t.Fatal("set-up: no read of the pool failed")
	}
	loseHeld(t, kv, p, n1, x, 0)
}
