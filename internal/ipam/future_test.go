package ipam

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// TestPlanSweepFutureDated: an allocation dated in the future (this node's
// clock set back, a key written by hand) was never reclaimed while a start
// was under way on the node, however many starts came and went: a start
// may hold what was allocated since its container was created, and a date
// ahead of every start's was taken at its word. One dated over the grace
// ahead is now taken as allocated when the sweep first saw it: it was
// allocated by then. So it is reclaimed once the oldest start under way
// began after that, and kept, as before, while a start begun earlier is
// under way: that start may hold it.
func TestPlanSweepFutureDated(t *testing.T) {
	const grace = time.Minute
	first := t0.Add(time.Hour)
	ahead := first.Add(24 * time.Hour)
	allocs := map[netip.Addr]Alloc{
		addr("10.1.0.2"): {Node: "n1", At: ahead, Kind: KindTask}, // this node's
		addr("10.1.0.3"): {At: ahead, Kind: KindTask},             // no node's
	}
	for _, c := range []struct {
		name   string
		starts func(now time.Time) []Start
		freed  bool
	}{
		// A start always under way, each begun half a minute before a sweep.
		{"starts come and go", func(now time.Time) []Start { return []Start{{Since: now.Add(-30 * time.Second)}} }, true},
		// One start under way since before it was first seen, hung.
		{"a start under way since before", func(time.Time) []Start { return []Start{{Since: first.Add(-time.Minute)}} }, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var prev sweepPlan
			leaked, orphaned := false, false
			for i := range 20 {
				now := first.Add(time.Duration(i) * grace)
				p := planSweep(sweepInput{Node: "n1", Gen: "g", Allocs: allocs, Leader: true, Gone: map[string]bool{},
					Unheld: prev.Unheld, Nodeless: prev.Nodeless, Future: prev.Future, NodeTimeout: 3 * grace,
					Starts: c.starts(now), Now: now, Grace: grace})
				if d := p.Future[addr("10.1.0.2")]; (!d.Seen.Equal(first) || !d.At.Equal(ahead)) && !leaked {
					t.Errorf("sweep %d: 10.1.0.2 dated %v first seen %v, want %v first seen %v", i, d.At, d.Seen, ahead, first)
				}
				_, l := p.Leaked[addr("10.1.0.2")]
				_, o := p.Orphaned[addr("10.1.0.3")]
				leaked, orphaned = leaked || l, orphaned || o
				prev = p
			}
			if leaked != c.freed || orphaned != c.freed {
				t.Errorf("this node's reclaimed %t, no node's %t; want %t", leaked, orphaned, c.freed)
			}
		})
	}
}

// TestPlanSweepFutureDatedOverGrace: an allocation counts as dated in the
// future (Future, and allocated when first seen) once dated over Grace
// ahead, not at it, as allocatedBefore counts it old.
func TestPlanSweepFutureDatedOverGrace(t *testing.T) {
	const grace = time.Minute
	now := t0.Add(time.Hour)
	for _, c := range []struct {
		ahead  time.Duration
		future bool
	}{
		{grace, false},
		{grace + time.Nanosecond, true},
	} {
		a := addr("10.1.0.2")
		in := sweepInput{Node: "n1", Gen: "g", Allocs: map[netip.Addr]Alloc{a: {Node: "n1", At: now.Add(c.ahead), Kind: KindTask}},
			Held: map[netip.Addr]bool{a: true}, Now: now, Grace: grace}
		if _, future := planSweep(in).Future[a]; future != c.future {
			t.Errorf("dated %s ahead (grace %s): future %t, want %t", c.ahead, grace, future, c.future)
		}
	}
}

// startsAlways is a node whose containers hold nothing on network net, and
// on which a container start is always under way, begun 5 s before now.
type startsAlways struct{ now func() time.Time }

func (s startsAlways) HeldAddresses(context.Context) (Local, error) {
	return Local{Starts: map[string][]Start{"net": {{Since: s.now().Add(-5 * time.Second)}}}}, nil
}

// TestSweepReclaimsFutureDatedLeak: the sweep of a node on which a start
// is always under way never reclaimed its leak dated a day ahead; it now
// does, once unheld for the grace twice, warning once that it is dated in
// the future, naming it.
func TestSweepReclaimsFutureDatedLeak(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st, p := clusterNet(t, kv)
	clock := t0
	now := func() time.Time { return clock }
	const leak = "10.2.0.17"
	raw := fmt.Sprintf(`{"node":"n1","allocs":{%q:{"node":"n1","at":%q,"kind":"task"}}}`, leak, t0.Add(24*time.Hour).Format(time.RFC3339Nano))
	if err := kv.Put(ctx, blockPath(p, p.Block(netip.MustParseAddr(leak))), []byte(raw)); err != nil {
		t.Fatal(err)
	}
	logs := &logCounter{}
	r := &Reclaimer{Alloc: newAllocator(kv, "n1", "g", now, nil), Pools: SpecPools{Store: st}, Held: startsAlways{now},
		Grace: 10 * time.Second, Log: slog.New(logs)}
	if all := sweepFor(ctx, t, kv, p, &clock, 5*time.Minute, r); len(all) != 0 {
		t.Errorf("after 5 min of sweeps with a start always under way: %v still allocated, want %s reclaimed", all, leak)
	}
	const msg = "an address is allocated with a date in the future (this node's clock set back, or a key written by hand): taken as allocated now, when first seen, to judge whether a container start under way may hold it"
	if out := logs.buf.String(); logs.count(msg) != 1 || !strings.Contains(out, "addr="+leak+" ") {
		t.Errorf("%q logged %d times, want once, naming %s:\n%s", msg, logs.count(msg), leak, out)
	}
}
