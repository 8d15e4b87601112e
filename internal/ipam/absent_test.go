package ipam

import (
	"bytes"
	"context"
	"log/slog"
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
