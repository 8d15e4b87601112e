package adapter

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/testconsul"
)

// waitFor polls cond until it holds, failing the test after a minute:
// the election tells of its state only through Leading.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s after a minute", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runLeader runs l until the test ends, and returns the function that
// stops it and waits for Run to return.
func runLeader(t *testing.T, l *ConsulLeader) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Fatal("Run still running a minute after its context ended")
		}
	}
	t.Cleanup(stop)
	return stop
}

// logLines sends each record's level, message and attributes on ch,
// dropping them when ch is full.
type logLines struct{ ch chan string }

func (h logLines) Enabled(context.Context, slog.Level) bool { return true }
func (h logLines) Handle(_ context.Context, r slog.Record) error {
	line := r.Level.String() + " " + r.Message
	r.Attrs(func(a slog.Attr) bool {
		line += " " + a.String()
		return true
	})
	select {
	case h.ch <- line:
	default:
	}
	return nil
}
func (h logLines) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h logLines) WithGroup(string) slog.Handler      { return h }

// waitLog waits for a line on lines holding every one of want.
func waitLog(t *testing.T, lines <-chan string, want ...string) {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case line := <-lines:
			missing := false
			for _, w := range want {
				missing = missing || !strings.Contains(line, w)
			}
			if !missing {
				return
			}
		case <-timeout:
			t.Fatalf("no log line with %q after a minute", want)
		}
	}
}

func leading(l *ConsulLeader) bool {
	_, ok := l.Leading()
	return ok
}

// TestLeaderGivesUpOnConsulThatDoesNotAnswer: Consul's lock took no
// context and control's Consul client has no timeout, so an agent that
// accepted the session's creation (or the lock's read, or the acquire)
// and never answered held the election for good: control never led
// again, and the end of its context did not stop Run (shutdown hung).
// Each call is now given up with a deadline error naming it, the election
// tries again, and Run returns when its context ends.
func TestLeaderGivesUpOnConsulThatDoesNotAnswer(t *testing.T) {
	c, requests := testconsul.Counted(t)
	l := NewConsulLeader(LeaderConfig{Advertise: "10.0.0.1:8000", SessionTTL: time.Second}, c, slog.New(slog.DiscardHandler))
	testconsul.GivesUp(t, "the election's session create", "session", func() error {
		_, err := l.holdOnce(context.Background())
		return err
	})
	for len(requests) > 0 {
		<-requests
	}
	stop := runLeader(t, l)
	for i := range 2 {
		select {
		case <-requests:
		case <-time.After(time.Minute):
			t.Fatalf("the election asked Consul %d times, then no more for a minute", i)
		}
	}
	stop() // while a call is held: Run returns all the same
	if leading(l) {
		t.Error("leading with a Consul agent that never answered")
	}
}

// TestLeaderWaitingGivesUpOnConsulThatDoesNotAnswer: an instance waits
// for the lock another holds when its Consul agent stops answering (the
// lock's blocking read held, the session's renewals too). Its round of
// the election ends once its session can no longer be proven alive, and
// it tries again, each call given up in turn; Run returns when its
// context ends. The other instance leads on.
func TestLeaderWaitingGivesUpOnConsulThatDoesNotAnswer(t *testing.T) {
	f := newFakeLock(t)
	cfg := func(name string) LeaderConfig {
		return LeaderConfig{Advertise: name + ":8000", SessionTTL: time.Second, LockDelay: 100 * time.Millisecond}
	}
	b := NewConsulLeader(cfg("b"), f.client(t, "b", nil), slog.New(slog.DiscardHandler))
	runLeader(t, b)
	waitFor(t, "b leading", func() bool { return leading(b) })
	hang := make(chan struct{})
	lines := make(chan string, 64)
	a := NewConsulLeader(cfg("a"), f.client(t, "a", hang), slog.New(logLines{lines}))
	stop := runLeader(t, a)
	waitFor(t, "a waiting for the lock", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		for id := range f.sessions {
			if strings.HasPrefix(id, "a-") {
				return true
			}
		}
		return false
	})
	close(hang)
	waitLog(t, lines, "leader election failed; retrying", "no renewal of session")
	waitLog(t, lines, "leader election failed; retrying", "create a session", "context deadline exceeded")
	stop()
	if leading(a) || !leading(b) {
		t.Errorf("a leading %v, b leading %v; want b alone", leading(a), leading(b))
	}
}

// TestLeaderStepsDownWhenItsConsulAgentStopsAnswering: two instances, each
// with its own Consul agent, over one Consul. The leader's agent stops
// answering: its session's renewals and the lock's watch went through it
// unanswered, the lock was never seen lost, and the leader went on leading
// while Consul let the session's TTL run out and gave the lock to the
// other instance: two leaders scaling at once. A leader now stops leading
// when no renewal of its session has succeeded for most of the TTL, before
// Consul can invalidate the session; no instance is granted the lock while
// another leads.
func TestLeaderStepsDownWhenItsConsulAgentStopsAnswering(t *testing.T) {
	f := newFakeLock(t)
	names := []string{"a", "b"}
	hang := map[string]chan struct{}{}
	leaders := map[string]*ConsulLeader{}
	for _, name := range names {
		hang[name] = make(chan struct{})
		cfg := LeaderConfig{Advertise: name + ":8000", SessionTTL: 2 * time.Second, LockDelay: 200 * time.Millisecond}
		leaders[name] = NewConsulLeader(cfg, f.client(t, name, hang[name]), slog.New(slog.DiscardHandler))
	}
	var violations []string // guarded by f.mu, under which granted runs
	f.granted = func(frontend, id string) {
		for name, l := range leaders {
			if name != frontend && leading(l) {
				violations = append(violations, fmt.Sprintf("%s leading when %s was granted the lock (session %s)", name, frontend, id))
			}
		}
	}
	for _, name := range names {
		runLeader(t, leaders[name])
	}
	var first, second string
	waitFor(t, "leading", func() bool {
		for i, name := range names {
			if leading(leaders[name]) {
				first, second = name, names[1-i]
				return true
			}
		}
		return false
	})
	close(hang[first])
	waitFor(t, second+" leading after "+first+"'s Consul agent stopped answering", func() bool { return leading(leaders[second]) })
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range violations {
		t.Error(v)
	}
	if leading(leaders[first]) {
		t.Errorf("%s still leading, its Consul agent not answering, while %s leads", first, second)
	}
}

// TestLeaderHandsOverOnStop: a leader whose context ends releases the
// lock, and the other instance takes it at once: with sessions that live
// an hour, nothing else could give it the lock.
func TestLeaderHandsOverOnStop(t *testing.T) {
	f := newFakeLock(t)
	cfg := func(name string) LeaderConfig {
		return LeaderConfig{Advertise: name + ":8000", SessionTTL: time.Hour, LockDelay: time.Hour}
	}
	a := NewConsulLeader(cfg("a"), f.client(t, "a", nil), slog.New(slog.DiscardHandler))
	stopA := runLeader(t, a)
	waitFor(t, "a leading", func() bool { return leading(a) })
	b := NewConsulLeader(cfg("b"), f.client(t, "b", nil), slog.New(slog.DiscardHandler))
	runLeader(t, b)
	stopA()
	if leading(a) {
		t.Error("a still leading after its Run returned")
	}
	waitFor(t, "b leading after a stopped", func() bool { return leading(b) })
	if v, err := b.Leader(context.Background()); err != nil || v != "b:8000" {
		t.Errorf("Leader() = %q, %v; want b:8000", v, err)
	}
}

// TestLeaderLosesLockWithItsSession: the leader's session is invalidated
// under it (a node's failed check, an operator): it stops leading, and,
// alone, leads again in a new term once the lock delay has passed.
func TestLeaderLosesLockWithItsSession(t *testing.T) {
	f := newFakeLock(t)
	l := NewConsulLeader(LeaderConfig{Advertise: "a:8000", SessionTTL: time.Hour, LockDelay: 100 * time.Millisecond},
		f.client(t, "a", nil), slog.New(slog.DiscardHandler))
	runLeader(t, l)
	waitFor(t, "leading", func() bool { return leading(l) })
	term, _ := l.Leading()
	f.mu.Lock()
	f.invalidateLocked(f.pairs[DefaultLeaderKey].Session)
	f.mu.Unlock()
	waitFor(t, "leading in a new term", func() bool {
		now, ok := l.Leading()
		return ok && now > term
	})
}

// TestLeaderReadGivesUpOnConsulThatDoesNotAnswer: a follower's read of
// who leads (GET /v1/leader, the scaling routes' 503) went to Consul under
// its caller's context alone: the API's leader route passes the request's,
// so a Consul agent that never answered held each such request for as
// long as its client waited. It is now given up on its own.
func TestLeaderReadGivesUpOnConsulThatDoesNotAnswer(t *testing.T) {
	l := NewConsulLeader(LeaderConfig{Advertise: "10.0.0.1:8000", SessionTTL: time.Second}, testconsul.Hung(t), slog.New(slog.DiscardHandler))
	testconsul.GivesUp(t, "the read of who leads", "get", func() error {
		_, err := l.Leader(context.Background())
		return err
	})
}
