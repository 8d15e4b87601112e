package ipam

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

// TestLeaderKeepsDepartedReportsWhileSpecUnreadable: the leader deletes a
// departed node's report under a network with no spec listed; Consul 1.8
// lists no key the token may not read, with no error, so a spec the
// leader's token lost read rights on was taken for one deleted by hand,
// and the report went. Now the spec key is read first: refused, the
// report stays, and the key is warned of once.
func TestLeaderKeepsDepartedReportsWhileSpecUnreadable(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st, _ := clusterNet(t, kv)
	clock := t0
	now := func() time.Time { return clock }
	for _, id := range []string{sid("live"), sid("dead")} {
		if err := st.PublishNode(ctx, netspec.NodeFacts{ID: id, Node: id, Holder: netspec.Holder{Instance: id}}); err != nil {
			t.Fatal(err)
		}
		if err := st.Report(ctx, "hidden", netspec.NodeState{ID: id, Node: id, State: netspec.StateReady}); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Put(ctx, netspec.SpecKey("hidden"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	kv.DenyRead(netspec.SpecKey("hidden"))
	var logs bytes.Buffer
	r := departedReclaimer(newAllocator(kv, sid("live"), "g", now, nil), st, sid("live"))
	r.Log = slog.New(slog.NewTextHandler(&logs, nil))
	sweepPastNodeTimeout(ctx, t, r, &clock)
	reports, err := st.Reports(ctx, "hidden")
	if err != nil {
		t.Fatal(err)
	}
	if len(reports) != 2 {
		t.Errorf("%d reports left under a network whose spec is unreadable, want both: the departed node's kept", len(reports))
	}
	if n := strings.Count(logs.String(), "key="+netspec.SpecKey("hidden")); n != 1 {
		t.Errorf("want one warning naming %s, got %d:\n%s", netspec.SpecKey("hidden"), n, logs.String())
	}
}

// TestDepartedNotJudgedWhileFactsUnreadable: a node holding addresses
// whose facts are not listed is judged as one whose facts are never
// fresh, and reclaimed once NodeTimeout has passed with its swarm node
// not Ready. Consul 1.8 lists no key the token may not read, with no
// error: once the leader's token lost read rights on underlay/nodes/, a
// node alive by its facts (fresh, its swarm node down: partitioned from
// the managers, not from Consul) had its addresses freed under its
// running containers. Now a holder without listed facts is judged only
// once a direct read of its facts key answers; refused, it is not, and
// the key is warned of once.
func TestDepartedNotJudgedWhileFactsUnreadable(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st, p := clusterNet(t, kv)
	clock := time.Now()
	now := func() time.Time { return clock }
	leaderID, deadID := sid("leader"), sid("dead")
	held := map[string]netip.Addr{}
	for _, id := range []string{leaderID, deadID} {
		held[id] = taskAddr(t, newAllocator(kv, id, "g", now, nil), p)
	}
	publish := func() {
		for _, id := range []string{leaderID, deadID} {
			doc := fmt.Sprintf(`{"id":%q,"node":%q,"updated_at":%q}`, id, id, clock.Format(time.RFC3339Nano))
			if err := kv.Put(ctx, netspec.NodesKVPrefix+id, []byte(doc)); err != nil {
				t.Fatal(err)
			}
		}
	}
	var logs bytes.Buffer
	r := departedReclaimer(newAllocator(kv, leaderID, "g", now, nil), st, leaderID)
	r.Log = slog.New(slog.NewTextHandler(&logs, nil))
	kv.DenyRead(netspec.NodesKVPrefix)
	for range 4 {
		publish() // fresh, as the agent keeps them
		if err := r.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		clock = clock.Add(4 * time.Second)
	}
	wantHeld(ctx, t, kv, p, held)
	if n := strings.Count(logs.String(), "key="+netspec.NodesKVPrefix+deadID); n != 1 {
		t.Errorf("want one warning naming %s, got %d:\n%s", netspec.NodesKVPrefix+deadID, n, logs.String())
	}
	// Readable again, and gone for real: the node is judged.
	kv.DenyRead()
	if err := kv.Delete(ctx, netspec.NodesKVPrefix+deadID); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if err := r.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		clock = clock.Add(4 * time.Second)
	}
	wantHeld(ctx, t, kv, p, held, deadID)
}
