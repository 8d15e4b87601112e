package scale

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/underlay/underlay/internal/testlog"
)

// TestSettleOnce: one check of a scale-down of web from 3 to 2 writes the
// count again only when swarm still wants more tasks running than 2 and
// nobody changed the service since.
func TestSettleOnce(t *testing.T) {
	tests := []struct {
		name string
		// after the scale-down, as swarm or another writer left things
		after      func(f *fakeSwarm)
		wantDone   bool
		wantWrites int
	}{
		{"settled", func(f *fakeSwarm) {}, true, 0},
		{"a removal lost", func(f *fakeSwarm) { f.extra["web"] = 1 }, false, 1},
		{"scaled again since", func(f *fakeSwarm) {
			s := f.services["web"]
			s.Replicas = 5
			f.services["web"] = s
			f.extra["web"] = 1
		}, true, 0},
		{"updated by someone else in between", func(f *fakeSwarm) { f.extra["web"], f.conflicts = 1, 1 }, true, 0},
		{"removed since", func(f *fakeSwarm) { delete(f.services, "web") }, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			sw := newFakeSwarm(webDown(3))
			c := NewController(Config{}, sw, &memHistory{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
			if err := c.resync(ctx); err != nil {
				t.Fatal(err)
			}
			if rec, err := c.Handle(ctx, Request{Service: "web", Direction: Down}); err != nil || rec.To != 2 {
				t.Fatalf("scale down: %+v %v", rec, err)
			}
			if len(c.settleC) != 1 {
				t.Fatalf("%d checks queued after a scale-down, want 1", len(c.settleC))
			}
			sw.mu.Lock()
			tt.after(sw)
			sw.mu.Unlock()
			before, _ := sw.counts()
			done, err := c.settleOnce(ctx, settleJob{id: "web", name: "web", to: 2}, 1)
			if err != nil {
				t.Fatal(err)
			}
			after, _ := sw.counts()
			if done != tt.wantDone || after-before != tt.wantWrites {
				t.Fatalf("done %v after %d writes, want %v after %d", done, after-before, tt.wantDone, tt.wantWrites)
			}
			if done {
				return
			}
			// The write made swarm reconcile: the next check finds it settled.
			if done, err := c.settleOnce(ctx, settleJob{id: "web", name: "web", to: 2}, 2); !done || err != nil {
				t.Fatalf("second check: done %v, %v; want done", done, err)
			}
			if got := sw.replicas("web"); got != 2 {
				t.Fatalf("%d replicas after the check, want 2", got)
			}
		})
	}
}

// TestSettleNotQueued: a scale-up, a refusal and a dry run queue no check.
func TestSettleNotQueued(t *testing.T) {
	ctx := context.Background()
	for _, dry := range []bool{false, true} {
		sw := newFakeSwarm(webDown(1))
		c := NewController(Config{DryRun: dry}, sw, &memHistory{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
		if err := c.resync(ctx); err != nil {
			t.Fatal(err)
		}
		for _, dir := range []Direction{Up, Down, Down} { // the last down is refused at the minimum
			if _, err := c.Handle(ctx, Request{Service: "web", Direction: dir}); err != nil {
				t.Fatal(err)
			}
		}
		want := 1
		if dry {
			want = 0
		}
		if len(c.settleC) != want {
			t.Errorf("dry run %v: %d checks queued, want %d (the one applied scale-down)", dry, len(c.settleC), want)
		}
	}
}

// TestSettleAfterScaleDown: a running controller checks each scale-down
// it applies, writes the count again when swarm lost a removal, counts it,
// and stops once swarm wants no more than the count.
func TestSettleAfterScaleDown(t *testing.T) {
	sw := newFakeSwarm(webDown(3))
	sw.lose = 1
	logs := &testlog.Buffer{}
	c := NewController(Config{SettleAfter: 10 * time.Millisecond}, sw, &memHistory{}, slog.New(slog.NewTextHandler(logs, nil)), prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, func() bool { return c.Status().DockerConnected })
	if rec, err := c.Handle(ctx, Request{Service: "web", Direction: Down}); err != nil || rec.To != 2 {
		t.Fatalf("scale down: %+v %v", rec, err)
	}
	// The events that must happen: the check that finds swarm settled
	// after the write again (one Wanted call for each), then the end of
	// the service's check, after which nothing more is asked or written.
	waitFor(t, func() bool { _, calls := sw.counts(); return calls >= 2 })
	waitFor(t, func() bool { return len(c.settleC) == 0 && c.settling.Load() == 0 })
	if writes, calls := sw.counts(); writes != 2 || calls != 2 {
		t.Errorf("%d writes, %d checks, want 2 and 2: the scale-down and the count written again, a check of each, none once settled", writes, calls)
	}
	if l := logs.String(); strings.Contains(l, "leaving it to the next update") {
		t.Errorf("the check gave up on a scale-down it saw settled:\n%s", l)
	}
	if got := sw.replicas("web"); got != 2 {
		t.Errorf("%d replicas, want 2", got)
	}
	if got := counterValue(t, c.metrics.resettles); got != 1 {
		t.Errorf("underlay_scale_scale_down_rewrites_total %v, want 1", got)
	}
	if l := logs.String(); !strings.Contains(l, "slot 3 task web-task3") {
		t.Errorf("the warning does not name the tasks swarm still wanted:\n%s", l)
	}
}

// TestSettleGivesUp: when every write loses a removal again, the
// controller writes the count settleTries times and then leaves it.
func TestSettleGivesUp(t *testing.T) {
	sw := newFakeSwarm(webDown(3))
	sw.loseAlways = true
	logs := &testlog.Buffer{}
	c := NewController(Config{SettleAfter: 5 * time.Millisecond}, sw, &memHistory{}, slog.New(slog.NewTextHandler(logs, nil)), nil)
	ctx := context.Background()
	if err := c.resync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Handle(ctx, Request{Service: "web", Direction: Down}); err != nil {
		t.Fatal(err)
	}
	c.settle(ctx, <-c.settleC, nil)
	if writes, calls := sw.counts(); writes != 1+settleTries || calls != settleTries {
		t.Errorf("%d writes and %d checks, want %d and %d", writes, calls, 1+settleTries, settleTries)
	}
	if !strings.Contains(logs.String(), "leaving it to the next update") {
		t.Errorf("no warning that the controller gave up:\n%s", logs.String())
	}
}

// TestSettleReplacedGetsEveryTry: a scale-down that replaces the one a
// check waits on is checked settleTries times, as any, before the check
// gives up: its tries are its own, none spent by the one it replaced.
func TestSettleReplacedGetsEveryTry(t *testing.T) {
	sw := newFakeSwarm(webDown(3))
	sw.loseAlways = true
	c := NewController(Config{SettleAfter: 10 * time.Millisecond}, sw, &memHistory{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	ctx := context.Background()
	if err := c.resync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Handle(ctx, Request{Service: "web", Direction: Down}); err != nil {
		t.Fatal(err)
	}
	j := <-c.settleC
	newer := make(chan settleJob, 1)
	newer <- j // queued before the first check of the one it replaces
	c.settle(ctx, settleJob{id: j.id, name: j.name, to: j.to + 1}, newer)
	if writes, calls := sw.counts(); writes != 1+settleTries || calls != settleTries {
		t.Errorf("%d writes and %d checks, want %d and %d: every try for the scale-down that replaced the first", writes, calls, 1+settleTries, settleTries)
	}
}

// webDown is service web at replicas, autoscaled, allowed down, with no
// scale-down cooldown or stabilization to wait for.
func webDown(replicas int) Service {
	return svc("web", replicas, "orbiter", "true", LabelAllowDown, "true",
		LabelCooldownDown, "0", LabelStabilizationDown, "0")
}

// TestSettleOneCheckPerService: each scale-down started a check of its
// own, however many of one service were queued: a burst of scale-downs
// left as many goroutines waiting, each to read the service again. A
// service now has one check under way at most.
func TestSettleOneCheckPerService(t *testing.T) {
	c := NewController(Config{SettleAfter: time.Hour}, newFakeSwarm(webDown(3)), &memHistory{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	for to := 10; to > 0; to-- {
		c.queueSettle(settleJob{id: "web", name: "web", to: to})
	}
	c.queueSettle(settleJob{id: "api", name: "api", to: 1})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.settleLoop(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	// Taken off the queue, each job is counted before the next is taken.
	waitFor(t, func() bool { return len(c.settleC) == 0 && c.settling.Load() >= 2 })
	if n := c.settling.Load(); n != 2 {
		t.Errorf("%d checks under way for 10 scale-downs of web and 1 of api, want 2: one a service", n)
	}
}

// TestSettleLatestWins: a scale-down queued while its service's check
// waits replaces the check's target: the newer write is checked, the older
// one (which it replaced) not. Before, both were: the older one, no longer
// the count, was written again.
func TestSettleLatestWins(t *testing.T) {
	ctx := context.Background()
	sw := newFakeSwarm(webDown(3))
	sw.extra = map[string]int{"web": 1} // a 4th task still wanted
	c := NewController(Config{SettleAfter: 200 * time.Millisecond}, sw, &memHistory{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err := c.resync(ctx); err != nil {
		t.Fatal(err)
	}
	c.lookup("web") // its decision state, which a check takes
	c.queueSettle(settleJob{id: "web", name: "web", to: 3})
	c.queueSettle(settleJob{id: "web", name: "web", to: 2}) // a later scale-down, since replaced by hand
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { c.settleLoop(lctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, func() bool { return len(c.settleC) == 0 && c.settling.Load() == 0 })
	if writes, wanted := sw.counts(); writes != 0 || wanted != 0 {
		t.Errorf("%d writes after %d task listings, want none: the check was for 2 replicas, and web is at 3 since", writes, wanted)
	}
}
