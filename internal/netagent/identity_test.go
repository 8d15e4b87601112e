package netagent

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

// recordsHandler sends each record's level and message on ch.
type recordsHandler struct{ ch chan string }

func (h recordsHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordsHandler) Handle(_ context.Context, r slog.Record) error {
	line := r.Level.String() + " " + r.Message
	r.Attrs(func(a slog.Attr) bool {
		line += " " + a.String()
		return true
	})
	h.ch <- line
	return nil
}
func (h recordsHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordsHandler) WithGroup(string) slog.Handler      { return h }

// TestFactsHeartbeatFailureLogged: facts that cannot be refreshed (Consul
// out of reach, a token that may no longer write them) make the node
// look down to every other once they are StaleAfter old — `node ls`, the
// claim of another agent, `node rm` — and the heartbeat said nothing of
// it. It warns once, naming the node and the error, however many
// heartbeats fail, and says when the facts are refreshed again.
func TestFactsHeartbeatFailureLogged(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	f := &Facts{Store: st, ID: "id1", Node: "n1", Holder: netspec.Holder{Instance: "x"}}
	if err := f.Publish(ctx, true); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	failures := 0
	kv.Hook = func(call string, keys []string) error {
		mu.Lock()
		defer mu.Unlock()
		if call == "txn" && len(keys) == 1 && keys[0] == netspec.NodesKVPrefix+"id1" && failures < 3 {
			failures++
			return kvtest.ErrUnreachable
		}
		return nil
	}
	logs := make(chan string)
	f.Log = slog.New(recordsHandler{ch: logs})
	done := make(chan error)
	go func() { done <- f.Run(ctx, time.Millisecond) }()
	var got []string
	for line := range logs {
		got = append(got, line)
		if strings.HasPrefix(line, "INFO") {
			break
		}
	}
	cancel()
	go func() {
		for range logs { // records logged while Run ends
		}
	}()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil once ctx ended", err)
	}
	if len(got) != 2 || !strings.HasPrefix(got[0], "WARN") || !strings.Contains(got[0], "node_id=id1") || !strings.Contains(got[0], "connection refused") {
		t.Errorf("logs of three failed heartbeats and a good one: %q, want one warning naming id1 and the error, then the recovery", got)
	}
}

// TestFactsRunStopsOnceTheNodeIsRemoved: an agent cut off from Consul
// while `underlay node rm` removed its node wrote its facts again at the
// next heartbeat, the node looking alive. Run returns
// netspec.ErrNodeRemoved instead, the facts not written: the agent stops
// serving the identity.
func TestFactsRunStopsOnceTheNodeIsRemoved(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	const id = "x7kq2m9v0c4n8b1z5d3f6h2j0"
	f := &Facts{Store: st, ID: id, Node: "n1", Holder: netspec.Holder{Instance: "x"}}
	if err := f.Publish(ctx, true); err != nil {
		t.Fatal(err)
	}
	_, index, _, err := st.Facts(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if deleted, err := st.DeleteFacts(ctx, id, index, netspec.NodeRemoval{ID: id, Node: "n1", RemovedAt: time.Now()}); err != nil || !deleted {
		t.Fatalf("node rm's deletion: %v, %v", deleted, err)
	}
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, time.Millisecond) }()
	select {
	case err := <-done:
		if !errors.Is(err, netspec.ErrNodeRemoved) {
			t.Errorf("Run = %v, want %v", err, netspec.ErrNodeRemoved)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("Run still refreshes the facts of a removed node")
	}
	if _, ok, _ := kv.Get(ctx, netspec.NodesKVPrefix+id); ok {
		t.Errorf("the removed node's facts were written again")
	}
}
