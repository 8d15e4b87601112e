package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/decommission"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netagent"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/testconsul"
	"github.com/underlay/underlay/internal/testlog"
)

// TestClaimSaysNodeRemIsRemovingTheNode: an agent starting while
// `underlay node rm` removes its node's records waited for the claim with
// nothing in its log but a claim under way, then ran afresh under an
// identity the swarm no longer lists. It now says, naming the node, that
// node rm is removing it; the claim lands once node rm is done.
func TestClaimSaysNodeRemIsRemovingTheNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	kv := kvtest.New()
	key := netspec.NodesKVPrefix + "abc123"
	doc := fmt.Sprintf(`{"id":"abc123","node":"n1","holder":{"instance":%q},"updated_at":%q}`, decommission.Remover, time.Now().UTC().Format(time.RFC3339Nano))
	kv.Put(ctx, key, []byte(doc))
	recs := testlog.NewRecords(64)
	facts := &netagent.Facts{Store: netspec.NewStore(kv), ID: "abc123", Node: "n1", Holder: netspec.Holder{Instance: "agent-1"}}
	done := make(chan error, 1)
	go func() { done <- claim(ctx, facts, slog.New(recs), func(error) {}, claimWait) }()
	r := recs.Await(t, 10*time.Second, func(r slog.Record) bool { return strings.Contains(r.Message, "node rm") })
	if r.Level != slog.LevelWarn || testlog.Attr(r, "node_id") != "abc123" {
		t.Errorf("record %q at %s, node_id %q; want a warning naming swarm node abc123", r.Message, r.Level, testlog.Attr(r, "node_id"))
	}
	// node rm done: the claim lands.
	kv.Delete(ctx, key)
	if err := <-done; err != nil {
		t.Fatalf("claim once node rm was done: %v", err)
	}
}

// TestClaimRefusedForARemovedNode: an agent starting under an identity
// `underlay node rm` removed (the node left the swarm for good, and node
// rm recorded it) retried its claim for ever, warning at each try. The
// claim now fails at once with netspec.ErrNodeRemoved, for the agent to
// wait for a new swarm node ID, its facts not written.
func TestClaimRefusedForARemovedNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	kv := kvtest.New()
	const id = "x7kq2m9v0c4n8b1z5d3f6h2j0"
	st := netspec.NewStore(kv)
	if _, err := st.DeleteFacts(ctx, id, 0, netspec.NodeRemoval{ID: id, Node: "n1", RemovedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	facts := &netagent.Facts{Store: st, ID: id, Node: "n1", Holder: netspec.Holder{Instance: "agent-1"}}
	done := make(chan error, 1)
	go func() { done <- claim(ctx, facts, slog.New(slog.DiscardHandler), func(error) {}, claimWait) }()
	select {
	case err := <-done:
		if !errors.Is(err, netspec.ErrNodeRemoved) {
			t.Errorf("claim = %v, want %v", err, netspec.ErrNodeRemoved)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the claim of a removed node's identity is still retried")
	}
	if _, ok, _ := kv.Get(ctx, netspec.NodesKVPrefix+id); ok {
		t.Errorf("the removed node's facts were written")
	}
}

// TestClaimGivesUpOnConsulThatDoesNotAnswer: the claim of the node's
// identity ran under the agent's context with no deadline: a Consul agent
// that accepted its read and never answered held the agent's start for
// good, nothing logged but a claim under way, no claim tried again. Each
// claim is now given up after its bound, with a deadline error naming the
// read, and tried again.
func TestClaimGivesUpOnConsulThatDoesNotAnswer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	c, requests := testconsul.Counted(t)
	facts := &netagent.Facts{Store: netspec.NewStore(consul.NewKV(c)), ID: "abc123", Node: "n1", Holder: netspec.Holder{Instance: "agent-1"}}
	notes := make(chan error, 64)
	done := make(chan error, 1)
	go func() {
		done <- claim(ctx, facts, slog.New(slog.DiscardHandler), func(err error) { notes <- err }, 2*time.Second)
	}()
	defer func() { cancel(); <-done }()
	<-notes // the claim under way
	testconsul.GivesUp(t, "the claim's read of the node's facts", "read facts of node abc123", func() error { return <-notes })
	// Drain the requests made so far; one more is the claim tried again.
	for len(requests) > 0 {
		<-requests
	}
	select {
	case <-requests:
	case <-time.After(time.Minute):
		t.Fatal("the claim was not tried again after its read that hung, after a minute")
	}
}
