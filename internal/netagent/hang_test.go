package netagent

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/testconsul"
	"github.com/underlay/underlay/internal/testlog"
)

// readsTold is a KV that tells each Get as it begins.
type readsTold struct {
	netspec.KV
	gets chan struct{}
}

func (k readsTold) Get(ctx context.Context, key string) (kvstore.Pair, bool, error) {
	select {
	case k.gets <- struct{}{}:
	default:
	}
	return k.KV.Get(ctx, key)
}

// TestHeartbeatGivesUpOnConsulThatDoesNotAnswer: a Consul agent that
// accepts the connection and never answers held the facts' heartbeat for
// good: no heartbeat more, the facts going stale (the node looked down
// to every other), and, as the heartbeat holds the facts' lock, the
// network sync's publish of them stuck behind it. The heartbeat now gives
// up within its period (kvstore.WriteContext) with a deadline error
// naming it, and the next one runs.
func TestHeartbeatGivesUpOnConsulThatDoesNotAnswer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := testlog.NewRecords(64)
	kv := readsTold{consul.NewKV(testconsul.Hung(t)), make(chan struct{}, 64)}
	f := &Facts{Store: netspec.NewStore(kv), ID: "id1", Node: "n1", Holder: netspec.Holder{Instance: "x"}, Log: slog.New(logs)}
	go f.Run(ctx, 20*time.Millisecond)
	testconsul.GivesUp(t, "the facts' heartbeat", "refresh facts of node n1", func() error { return logs.Err("cannot refresh this node's facts") })
	// Each heartbeat begins with a read of the facts, the one that hangs:
	// a second read is the next heartbeat.
	for range 2 {
		select {
		case <-kv.gets:
		case <-time.After(time.Minute):
			t.Fatal("no heartbeat after the one that hung, after a minute")
		}
	}
}
