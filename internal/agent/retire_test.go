package agent

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/doctor"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/taskmetrics"
)

// TestRetireNameKey: an agent before reports were keyed by swarm node ID
// kept its node's doctor report and task metrics under the node's name;
// once upgraded, its agent publishes under the ID, and the name's key
// stayed for ever. The agent now deletes it once it published under its
// ID, when it is its node's for sure: it names the node's ID, or names
// none and no other live node (facts refreshed lately) has the name.
// Otherwise it stays, for node rm of its node. Another live node of the
// name that publishes its own under its ID has an upgraded agent, which
// writes no name key: it keeps none (two nodes of one name upgraded one
// after the other left the name's key for ever).
func TestRetireNameKey(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name      string
		doc       string
		other     time.Duration // how long ago another node of the name refreshed its facts (0: there is none)
		otherByID string        // the other's report under its ID ("": none)
		goes      bool
	}{
		{"names this node", `{"node":"n1","node_id":"ida"}`, time.Second, "", true},
		{"names no node, alone", `{"node":"n1"}`, 0, "", true},
		{"names no node, the other's facts stale", `{"node":"n1"}`, time.Hour, "", true},
		{"unreadable, alone", `{`, 0, "", false}, // no agent wrote it: doctor names it, with its fix
		{"names no node, another live", `{"node":"n1"}`, time.Second, "", false},
		{"names no node, another stamped ahead", `{"node":"n1"}`, -time.Minute, "", false},
		{"names no node, another live publishes under its ID", `{"node":"n1"}`, time.Second, `{"node":"n1","node_id":"idb"}`, true},
		{"names no node, another live's report under its ID names another", `{"node":"n1"}`, time.Second, `{"node":"n1","node_id":"idc"}`, false},
		{"names the other node", `{"node":"n1","node_id":"idb"}`, time.Hour, "", false},
		{"names the other node, alone", `{"node":"n1","node_id":"idb"}`, 0, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			kv := kvtest.New()
			facts := func(id string, at time.Time) {
				kv.Put(ctx, "underlay/nodes/"+id, fmt.Appendf(nil, `{"id":%q,"node":"n1","interfaces":["eth0"],"holder":{"instance":"agent-%s"},"updated_at":%q}`, id, id, at.Format(time.RFC3339Nano)))
			}
			facts("ida", now)
			if tc.other != 0 {
				facts("idb", now.Add(-tc.other))
			}
			for _, k := range []struct{ key, byID string }{{doctor.KVPrefix + "n1", doctor.IDPrefix}, {taskmetrics.KVPrefix + "n1", taskmetrics.IDPrefix}} {
				key := k.key
				kv.Put(ctx, key, []byte(tc.doc))
				if tc.otherByID != "" {
					kv.Put(ctx, k.byID+"idb", []byte(tc.otherByID))
				}
				retireNameKey(ctx, kv, key, k.byID, "n1", "ida", now, slog.New(slog.DiscardHandler))
				if _, present, _ := kv.Get(ctx, key); present == tc.goes {
					t.Errorf("%s present after: %v, want %v", key, present, !tc.goes)
				}
			}
		})
	}
}
