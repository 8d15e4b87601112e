package scale

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/underlay/underlay/internal/testclock"
)

func TestLastScaleOf(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	rec := func(s int, dir Direction, from, to int, refused, dry bool) Record {
		return Record{Time: at(s), Direction: dir, Decision: Decision{From: from, To: to, Refused: refused}, DryRun: dry}
	}
	tests := []struct {
		name    string
		records []Record
		want    LastScale
	}{
		{name: "no records", want: LastScale{}},
		{name: "latest per direction", records: []Record{rec(1, Up, 1, 2, false, false), rec(3, Up, 2, 3, false, false), rec(2, Down, 3, 2, false, false)},
			want: LastScale{Up: at(3), Down: at(2)}},
		{name: "refused, dry-run and no-op records do not count", records: []Record{
			rec(1, Up, 1, 2, false, false), rec(5, Up, 2, 2, true, false), rec(6, Up, 2, 3, false, true), rec(7, Down, 2, 2, false, false)},
			want: LastScale{Up: at(1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, LastScaleOf(tt.records)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestControllerCooldownSurvivesRestart: a second controller on the same
// history refuses inside the cooldown the first one started.
func TestControllerCooldownSurvivesRestart(t *testing.T) {
	sw := newFakeSwarm(svc("web", 1, "orbiter", "true", LabelCooldownUp, "1h"))
	hist := &memHistory{}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	req := Request{Autoscaler: AutoswarmName, Service: "web", Direction: Up}
	for i, wantRefused := range []bool{false, true} {
		c := NewController(Config{}, sw, hist, log, nil)
		if err := c.resync(context.Background()); err != nil {
			t.Fatal(err)
		}
		rec, err := c.Handle(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Refused != wantRefused {
			t.Errorf("controller %d: %+v, want refused=%v", i+1, rec.Decision, wantRefused)
		}
	}
	if got := sw.replicas("web"); got != 2 {
		t.Errorf("%d replicas, want 2", got)
	}
}

// TestControllerWaitsForHistory: while the history cannot be read, no
// decision is made (it could break a cooldown); once it can, they resume.
func TestControllerWaitsForHistory(t *testing.T) {
	sw := newFakeSwarm(svc("web", 1, "orbiter", "true"))
	hist := &memHistory{err: errors.New("consul down")}
	c := NewController(Config{}, sw, hist, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err := c.resync(context.Background()); err != nil {
		t.Fatal(err)
	}
	req := Request{Autoscaler: AutoswarmName, Service: "web", Direction: Up}
	_, err := c.Handle(context.Background(), req)
	if !errors.Is(err, ErrUnavailable) || statusOf(err) != 503 {
		t.Fatalf("err = %v, want ErrUnavailable (503)", err)
	}
	if sw.replicas("web") != 1 {
		t.Fatal("scaled without its history")
	}
	hist.mu.Lock()
	hist.err = nil
	hist.mu.Unlock()
	if rec, err := c.Handle(context.Background(), req); err != nil || rec.To != 2 {
		t.Fatalf("after the history came back: %+v %v", rec, err)
	}
}

// TestControllerBoundsLastScaleTimes: the history's last scale times only
// ever lengthen a cooldown up to one full cooldown from now. An unreadable
// record counts as a scale now (before, the KV history failed on it: a 503
// for every request on the service until someone deleted it), and so does
// a time after now (a forged record or a clock ahead: a cooldown without
// end).
func TestControllerBoundsLastScaleTimes(t *testing.T) {
	clk := testclock.New(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC))
	for _, tt := range []struct {
		name string
		hist *memHistory
	}{
		{"unreadable last scale-up", &memHistory{bad: []BadRecord{{Key: "h/web/last-up", Direction: Up, Error: "decode: EOF", Fix: "consul kv delete h/web/last-up"}}}},
		{"last scale-up a year from now", &memHistory{records: []Record{{Service: "web", Direction: Up, Decision: Decision{From: 1, To: 2}, Time: clk.Now().AddDate(1, 0, 0)}}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sw := newFakeSwarm(svc("web", 1, "orbiter", "true", LabelCooldownUp, "1m"))
			var logs strings.Builder
			reg := prometheus.NewRegistry()
			c := NewController(Config{Now: clk.Now}, sw, tt.hist, slog.New(slog.NewTextHandler(&logs, nil)), reg)
			if err := c.resync(context.Background()); err != nil {
				t.Fatal(err)
			}
			req := Request{Autoscaler: AutoswarmName, Service: "web", Direction: Up}
			rec, err := c.Handle(context.Background(), req)
			if err != nil || !rec.Refused || rec.Reason != ReasonCooldown || !strings.Contains(rec.Why, "1m0s left") {
				t.Fatalf("first request: %+v, %v; want refused for a cooldown of 1m0s from now", rec.Decision, err)
			}
			if got := counterValue(t, c.metrics.errors.WithLabelValues("history_record")); got != 1 {
				t.Errorf("history_record errors %v, want 1", got)
			}
			if want := "h/web/last-up"; len(tt.hist.bad) > 0 && (!strings.Contains(logs.String(), want) || !strings.Contains(logs.String(), "consul kv delete")) {
				t.Errorf("log does not name %s and its fix:\n%s", want, logs.String())
			}
			clk.Add(time.Minute)
			if rec, err := c.Handle(context.Background(), req); err != nil || rec.Refused || rec.To != 2 {
				t.Fatalf("once the cooldown from the read is over: %+v, %v; want scaled to 2", rec.Decision, err)
			}
		})
	}
}

// gatedSwarm holds the first Service read in inspect until the test lets
// it go: a decision then holds its service's lock for as long as the test
// wants.
type gatedSwarm struct {
	*fakeSwarm
	once    sync.Once
	held    chan struct{} // closed once the first read is held
	release chan struct{} // closed by the test to let it go
}

func (g *gatedSwarm) Service(ctx context.Context, idOrName string) (Service, error) {
	g.once.Do(func() {
		close(g.held)
		<-g.release
	})
	return g.fakeSwarm.Service(ctx, idOrName)
}

// askedLeadership tells the test when Leading has answered, after the
// answer was read.
type askedLeadership struct {
	*fakeLeadership
	asked chan struct{}
}

func (a *askedLeadership) Leading() (uint64, bool) {
	term, ok := a.fakeLeadership.Leading()
	select {
	case a.asked <- struct{}{}:
	default:
	}
	return term, ok
}

// TestControllerDecisionWaitingForTheLockRechecksLeadership: a request
// that found this instance leading, then waited for the service's decision
// lock behind another decision, must not act once the leadership was lost
// meanwhile. Before, it decided and wrote the replicas with the leadership
// it had seen before waiting: every request queued behind a slow decision
// acted for a leader that no longer was.
func TestControllerDecisionWaitingForTheLockRechecksLeadership(t *testing.T) {
	sw := &gatedSwarm{fakeSwarm: newFakeSwarm(svc("web", 1, "orbiter", "true")), held: make(chan struct{}), release: make(chan struct{})}
	l := &askedLeadership{fakeLeadership: &fakeLeadership{leading: true, term: 1}, asked: make(chan struct{}, 1)}
	c := NewController(Config{Leadership: l}, sw, &memHistory{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err := c.resync(context.Background()); err != nil {
		t.Fatal(err)
	}
	req := Request{Autoscaler: AutoswarmName, Service: "web", Direction: Up}
	type result struct {
		rec Record
		err error
	}
	first, second := make(chan result, 1), make(chan result, 1)
	go func() { rec, err := c.Handle(context.Background(), req); first <- result{rec, err} }()
	<-sw.held // the first decision holds web's lock
	<-l.asked // drain the first decision's question
	go func() { rec, err := c.Handle(context.Background(), req); second <- result{rec, err} }()
	<-l.asked // the second found this instance leading, and waits for the lock
	l.set(false, "10.0.0.9:8000")
	close(sw.release)
	if r := <-first; r.err != nil || r.rec.To != 2 {
		t.Fatalf("first decision: %+v, %v; want scaled to 2 (it was under way when the leadership was lost)", r.rec.Decision, r.err)
	}
	r := <-second
	if !errors.Is(r.err, ErrNotLeader) {
		t.Errorf("second decision: %+v, %v; want ErrNotLeader: the leadership was lost while it waited", r.rec.Decision, r.err)
	}
	if got := sw.replicas("web"); got != 2 {
		t.Errorf("%d replicas, want 2: only the decision under way when the leadership was lost may act", got)
	}
}

// listingSwarm runs afterList once the service list has been read, before
// it is returned: what happens there happens while a resync is under way.
type listingSwarm struct {
	*fakeSwarm
	afterList func()
}

func (l *listingSwarm) Services(ctx context.Context) ([]Service, error) {
	svcs, err := l.fakeSwarm.Services(ctx)
	if l.afterList != nil {
		l.afterList()
	}
	return svcs, err
}

// TestResyncKeepsServicesAddedMeanwhile: a service created after a resync
// read the list, and added from its event while the resync ran, is not in
// that list; the resync must not drop it. Before, it was forgotten as gone
// and stayed unmanaged (404 to every request) until its next event or the
// next reconnection of the event stream.
func TestResyncKeepsServicesAddedMeanwhile(t *testing.T) {
	sw := &listingSwarm{fakeSwarm: newFakeSwarm(svc("web", 1, "orbiter", "true"))}
	c := NewController(Config{}, sw, &memHistory{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	ctx := context.Background()
	sw.afterList = func() {
		sw.setQuietly(svc("api", 1, "orbiter", "true"))
		if err := c.refresh(ctx, ServiceEvent{ServiceID: "api", Action: "create"}); err != nil {
			t.Errorf("create event: %v", err)
		}
	}
	if err := c.resync(ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"web", "api"} {
		if !c.manages(name) {
			t.Errorf("%s is not managed after the resync", name)
		}
	}
	if rec, err := c.Handle(ctx, Request{Service: "api", Direction: Up}); err != nil || rec.To != 2 {
		t.Errorf("scale api up: %+v, %v; want scaled to 2", rec.Decision, err)
	}
}

// TestSettleWaitingForTheLockRechecksLeadership: the check of a
// scale-down that waited for the service's decision lock must not write
// the count again once the leadership was lost meanwhile: the new
// leader's decisions are its own to check. Before, the old leader wrote
// the count with the leadership it had seen before waiting.
func TestSettleWaitingForTheLockRechecksLeadership(t *testing.T) {
	sw := &gatedSwarm{fakeSwarm: newFakeSwarm(svc("web", 3, "orbiter", "true", LabelMax, "3")), held: make(chan struct{}), release: make(chan struct{})}
	sw.extra = map[string]int{"web": 2} // swarm lost the removal of two tasks
	l := &askedLeadership{fakeLeadership: &fakeLeadership{leading: true, term: 1}, asked: make(chan struct{}, 1)}
	c := NewController(Config{Leadership: l}, sw, &memHistory{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	ctx := context.Background()
	if err := c.resync(ctx); err != nil {
		t.Fatal(err)
	}
	decided := make(chan error, 1)
	go func() { _, err := c.Handle(ctx, Request{Service: "web", Direction: Up}); decided <- err }()
	<-sw.held // a decision holds web's lock
	<-l.asked
	settled := make(chan error, 1)
	go func() { _, err := c.settleOnce(ctx, settleJob{id: "web", name: "web", to: 3}, 1); settled <- err }()
	<-l.asked // the check found this instance leading, and waits for the lock
	l.set(false, "10.0.0.9:8000")
	close(sw.release)
	if err := <-decided; err != nil {
		t.Fatalf("decision: %v", err)
	}
	if err := <-settled; err != nil {
		t.Fatalf("settle: %v", err)
	}
	if updates, _ := sw.counts(); updates != 0 {
		t.Errorf("%d writes to the service, want none: the leadership was lost while the check waited", updates)
	}
}

// TestControllerServiceRemovedWhileScaling: a service removed between the
// controller's read and its write is not found (404), and forgotten. Before,
// the answer said a dependency was unavailable, the docker_update error
// count rose, and the service stayed listed.
func TestControllerServiceRemovedWhileScaling(t *testing.T) {
	sw := newFakeSwarm(svc("web", 1, "orbiter", "true"))
	c := NewController(Config{}, sw, &memHistory{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err := c.resync(context.Background()); err != nil {
		t.Fatal(err)
	}
	sw.mu.Lock()
	sw.removeOnWrite = true
	sw.mu.Unlock()
	_, err := c.Handle(context.Background(), Request{Autoscaler: AutoswarmName, Service: "web", Direction: Up})
	if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrUnavailable) || statusOf(err) != 404 {
		t.Fatalf("err = %v (status %d), want not found (404)", err, statusOf(err))
	}
	if got := c.Services(); len(got) != 0 {
		t.Errorf("the removed service is still listed: %+v", got)
	}
}

// TestResyncIsNoOlderThanEvents: a resync's list read before a service
// was removed, or before its labels changed, does not bring it back or
// put back its old policy. Before, a stale list re-added the removed
// service and overwrote the policy its update event had just read.
func TestResyncIsNoOlderThanEvents(t *testing.T) {
	ctx := context.Background()
	web := svc("web", 1, "orbiter", "true", LabelMax, "5")
	web.Version = 10
	sw := newFakeSwarm(web, svc("db", 1, "orbiter", "true"))
	c := NewController(Config{}, sw, &memHistory{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err := c.resync(ctx); err != nil {
		t.Fatal(err)
	}
	var dbID string
	for _, si := range c.Services() {
		if si.Service == "db" {
			dbID = si.ServiceID
		}
	}
	sw.afterList = func() {
		sw.mu.Lock()
		delete(sw.services, dbID)
		w := sw.services[web.ID]
		w.Labels = map[string]string{"orbiter": "true", LabelMax: "9"}
		w.Version = 11
		sw.services[web.ID] = w
		sw.mu.Unlock()
		// Their events are applied while the list is on its way.
		if err := c.refresh(ctx, ServiceEvent{ServiceID: dbID, Action: "remove"}); err != nil {
			t.Error(err)
		}
		if err := c.refresh(ctx, ServiceEvent{ServiceID: web.ID, Action: "update"}); err != nil {
			t.Error(err)
		}
	}
	if err := c.resync(ctx); err != nil {
		t.Fatal(err)
	}
	got := c.Services()
	if len(got) != 1 || got[0].Service != "web" {
		t.Fatalf("services after the stale list: %+v, want web alone (db was removed)", got)
	}
	if got[0].Policy.Max != 9 {
		t.Errorf("web's max %d, want 9 from its update (the stale list had 5)", got[0].Policy.Max)
	}
}

// TestLookupPrefersTheID: a service named like another's ID does not take
// the requests made by that ID. Before, which of the two answered was the
// map's order: either could be scaled.
func TestLookupPrefersTheID(t *testing.T) {
	web := Service{ID: "k3x9d2mq7wz1", Name: "web", Labels: map[string]string{"orbiter": "true"}, Replicas: 1, Version: 1}
	impostor := Service{ID: "p0a8c5rz6vy4", Name: "k3x9d2mq7wz1", Labels: map[string]string{"orbiter": "true"}, Replicas: 1, Version: 1}
	c := NewController(Config{}, newFakeSwarm(web, impostor), &memHistory{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err := c.resync(context.Background()); err != nil {
		t.Fatal(err)
	}
	for range 50 {
		m, _, ok := c.lookup(web.ID)
		if !ok || m.svc.ID != web.ID {
			t.Fatalf("lookup(%q) found %+v, want web (the ID)", web.ID, m)
		}
	}
	if m, _, ok := c.lookup("web"); !ok || m.svc.ID != web.ID {
		t.Errorf("lookup by name: %+v", m)
	}
}

// TestDecisionUsesItsServicesPolicy: a decision reads its service again
// and looked the policy up by the name read; for a service named like
// another's ID that found the other service, whose policy then decided.
func TestDecisionUsesItsServicesPolicy(t *testing.T) {
	web := Service{ID: "k3x9d2mq7wz1", Name: "web", Replicas: 1, Version: 1,
		Labels: map[string]string{"orbiter": "true", LabelMax: "2"}}
	other := Service{ID: "p0a8c5rz6vy4", Name: "k3x9d2mq7wz1", Replicas: 1, Version: 1,
		Labels: map[string]string{"orbiter": "true", LabelMax: "8", LabelStepUp: "3"}}
	c := NewController(Config{}, newFakeSwarm(web, other), &memHistory{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err := c.resync(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec, err := c.Handle(context.Background(), Request{Service: other.ID, Direction: Up})
	if err != nil {
		t.Fatal(err)
	}
	if rec.ServiceID != other.ID || rec.To != 4 {
		t.Errorf("scaling %s up from 1: %s to %d (%s); want it to 4, by its own step of 3", other.ID, rec.ServiceID, rec.To, rec.Why)
	}
}

// TestResyncForgetsStatesOfRemovedServices: a service's decision state
// outlives its labels opting out, so that its cooldowns hold if it opts in
// again; it was dropped only by the service's remove event. A service
// removed while it was opted out and the event stream was down kept its
// state for good: services coming and going grew the map.
func TestResyncForgetsStatesOfRemovedServices(t *testing.T) {
	ctx := context.Background()
	sw := newFakeSwarm()
	c := NewController(Config{}, sw, &memHistory{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	for i := range 20 {
		s := svc(fmt.Sprintf("s%d", i), 1, "orbiter", "true")
		sw.setQuietly(s)
		if err := c.resync(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Handle(ctx, Request{Service: s.Name, Direction: Up}); err != nil {
			t.Fatal(err)
		}
		s.Labels = map[string]string{"orbiter": "false"}
		s.Version = 100
		sw.setQuietly(s)
		if err := c.resync(ctx); err != nil { // opted out
			t.Fatal(err)
		}
		sw.mu.Lock()
		delete(sw.services, s.ID) // removed, its event lost
		sw.mu.Unlock()
		if err := c.resync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	c.mu.Lock()
	n := len(c.states)
	c.mu.Unlock()
	if n != 0 {
		t.Errorf("%d decision states kept for 20 services removed, want none", n)
	}
}

// TestFailedScaleRecommendsNothing: a scale-up whose write to Docker
// failed still recorded, for the stabilization window, the replicas it
// meant to reach: the service stayed where it was, yet every scale-down
// for the next window was held against a count it never had. A decision
// that fails leaves the window as it found it.
func TestFailedScaleRecommendsNothing(t *testing.T) {
	sw := newFakeSwarm(svc("web", 3, "orbiter", "true", LabelAllowDown, "true", LabelStabilizationDown, "5m"))
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	c := NewController(Config{Retries: 1, Now: func() time.Time { return now }}, sw, &memHistory{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err := c.resync(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The first decision loads the state: 3 replicas recommended now.
	three := 3
	if _, err := c.Handle(context.Background(), Request{Service: "web", To: &three}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(6 * time.Minute) // that recommendation has left the window
	sw.mu.Lock()
	sw.conflicts = 5 // more than Retries: the write fails
	sw.mu.Unlock()
	if _, err := c.Handle(context.Background(), Request{Service: "web", Direction: Up}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("scale-up with its write failing: err = %v, want ErrUnavailable", err)
	}
	sw.mu.Lock()
	sw.conflicts = 0
	sw.mu.Unlock()
	now = now.Add(time.Second)
	rec, err := c.Handle(context.Background(), Request{Service: "web", Direction: Down})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Refused || rec.To != 2 {
		t.Errorf("scale-down after a failed scale-up: %+v; want 3 to 2 (no replicas were recommended in the window)", rec.Decision)
	}
}
