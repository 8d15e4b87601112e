package dashboard

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// refreshedSince waits for a refresh that began after the call (the
// second one to end from then on), what naming it in a failure.
func (ts *testServer) refreshedSince(t *testing.T, what string) {
	t.Helper()
	for range 2 {
		done := *ts.refreshed.Load()
		waitFor(t, func() bool {
			signal(ts.kick)
			select {
			case <-done:
				return true
			default:
				return false
			}
		}, what)
	}
}

// refreshAt moves the clock to at and waits for a refresh that began after
// it, and returns its snapshot.
func (ts *testServer) refreshAt(t *testing.T, clock *atomic.Int64, at time.Time) Snapshot {
	t.Helper()
	clock.Store(at.UnixNano())
	ts.refreshedSince(t, fmt.Sprintf("a refresh at %s", at))
	var snap Snapshot
	if err := json.Unmarshal(ts.Snapshot(), &snap); err != nil {
		t.Fatal(err)
	}
	return snap
}

func agentStates(snap Snapshot) map[string]Agent {
	out := map[string]Agent{}
	for _, n := range snap.Nodes {
		out[n.Name] = n.Agent
	}
	return out
}

// TestKVOutageBlamesNoAgent: the dashboard cannot read Consul KV for ten
// minutes while both agents are up. It says since when, and shows the
// agents' states as unknown (with the state they had), not every agent
// stale: it cannot tell. Once it reads again, an agent that reports is up,
// and one that does not is unknown until its period has passed since the
// reads came back (it could not report either, when Consul was down), then
// stale. Before, every agent turned stale 90 s into the outage.
func TestKVOutageBlamesNoAgent(t *testing.T) {
	var clock atomic.Int64
	clock.Store(t0.UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()).UTC() }
	in := cardsInput()
	// A new slice each time: the server keeps the last one it read.
	agents := func(node1 time.Time) []AgentInput {
		return []AgentInput{{Node: "node1", FactsAt: node1}, {Node: "node2", FactsAt: t0.Add(-20 * time.Second)}}
	}
	in.Agents = agents(t0.Add(-10 * time.Second))
	ts := startServer(t, Config{Now: now}, in)
	before := ts.refreshAt(t, &clock, t0)
	for name, a := range agentStates(before) {
		if a.State != AgentUp {
			t.Fatalf("before the outage: %s's agent is %s, want up", name, a.State)
		}
	}

	down := t0.Add(30 * time.Second)
	// Every refresh begun with the clock before down over first: one
	// that read the failure with the clock at t0 said failing since t0.
	ts.refreshAt(t, &clock, down)
	ts.src.fail("kv", errors.New("dial tcp 127.0.0.1:8500: connect: connection refused"))
	for _, after := range []time.Duration{0, 2 * time.Minute, 10 * time.Minute} {
		snap := ts.refreshAt(t, &clock, down.Add(after))
		for name, a := range agentStates(snap) {
			if a.State != AgentUnknown || a.LastState != AgentUp {
				t.Errorf("%s into the outage: %s's agent is %s (last %q), want unknown (last up)", after, name, a.State, a.LastState)
			}
		}
		if len(snap.Sources) != 1 || snap.Sources[0].Source != "kv" || !snap.Sources[0].Since.Equal(down) {
			t.Errorf("%s into the outage: sources %+v, want kv failing since %s", after, snap.Sources, down)
		}
	}
	var blamed []string
	for _, e := range ts.Events() {
		if strings.Contains(e.Message, "underlay agent") {
			blamed = append(blamed, e.Message)
		}
	}
	if len(blamed) > 0 {
		t.Errorf("events during the outage blame agents: %q", blamed)
	}

	// Back: node1's agent publishes again, node2's does not.
	back := down.Add(10 * time.Minute)
	in.Agents = agents(back)
	ts.src.set(in)
	ts.src.fail("kv", nil)
	for _, tt := range []struct {
		after time.Duration
		node2 string
	}{{0, AgentUnknown}, {agentStaleAfter, AgentUnknown}, {agentStaleAfter + 5*time.Second, AgentStale}} {
		if tt.after > 0 {
			in.Agents = agents(back.Add(tt.after))
			ts.src.set(in)
		}
		snap := ts.refreshAt(t, &clock, back.Add(tt.after))
		st := agentStates(snap)
		if st["node1"].State != AgentUp {
			t.Errorf("%s after the outage: node1's agent, reporting, is %s", tt.after, st["node1"].State)
		}
		if st["node2"].State != tt.node2 {
			t.Errorf("%s after the outage: node2's agent, silent, is %s, want %s", tt.after, st["node2"].State, tt.node2)
		}
		if len(snap.Sources) != 0 {
			t.Errorf("%s after the outage: sources %+v, want none", tt.after, snap.Sources)
		}
	}
}

// TestSourceOutageMarksNoMismatch: while the swarm or Consul's catalog
// cannot be read, the cards compare one source's last answer with the
// other's current one: a task started since is not "unlisted in Consul",
// an instance registered since is not "unknown to Swarm". Such cards are
// not marked mismatched until both are read again; before, they were,
// 20 s into the outage.
func TestSourceOutageMarksNoMismatch(t *testing.T) {
	mismatched := func(snap Snapshot) []string {
		var out []string
		for _, n := range snap.Nodes {
			for _, c := range n.Tasks {
				if c.Mismatch {
					out = append(out, c.Kind+" "+c.ID)
				}
			}
		}
		return out
	}
	in := cardsInput()
	if got := mismatched(Build(in)); len(got) == 0 {
		t.Fatal("cardsInput has no mismatched card to test with")
	}
	for _, source := range []string{"consul", "docker"} {
		in := cardsInput()
		in.Errors = map[string]string{source: "connection refused"}
		snap := Build(in)
		for _, n := range snap.Nodes {
			for _, c := range n.Tasks {
				if slices.ContainsFunc(c.Problems, func(p string) bool {
					return strings.Contains(p, "Consul lists it") || strings.Contains(p, "Consul does not list it")
				}) {
					t.Errorf("%s cannot be read: card %s %s says %q", source, c.Kind, c.ID, c.Problems)
				}
			}
		}
		if got := mismatched(snap); len(got) > 0 {
			t.Errorf("%s cannot be read: cards marked mismatched: %v", source, got)
		}
		if snap.Summary.Mismatches != 0 {
			t.Errorf("%s cannot be read: summary counts %d mismatches", source, snap.Summary.Mismatches)
		}
	}
}
