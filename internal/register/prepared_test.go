package register

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// count reads a counter.
func count(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// createdContainer is webContainer before its start: Docker's "created"
// state, a network with no endpoint yet.
func createdContainer(id string) Container {
	c := webContainer(id, false)
	c.Created = true
	c.Networks = []Endpoint{{Network: "mv", NetworkID: "n1", Driver: "macvlan"}}
	return c
}

var mvEndpoint = Endpoint{Network: "mv", NetworkID: "n1", Driver: "macvlan", IPv4: "10.130.0.5"}

// startHeld creates container id, waits for the agent to read it, then
// starts it on mvEndpoint while dockerd holds every inspect of it, as it
// does until a start is over; closing the gate it returns ends the hold.
func startHeld(t *testing.T, a *Agent, d *fakeDocker, id string) chan struct{} {
	t.Helper()
	d.set(createdContainer(id))
	d.events <- Event{ContainerID: id, Action: "create", Time: time.Now()}
	eventually(t, "created container read", func() bool { return d.inspected(id) == 1 && a.idle() })
	gate := make(chan struct{})
	d.mu.Lock()
	d.gates[id] = gate
	d.mu.Unlock()
	d.connect(id, mvEndpoint)
	d.events <- Event{ContainerID: id, Action: "connect", Time: time.Now(), NetworkID: "n1"}
	d.set(webContainer(id, true))
	d.events <- Event{ContainerID: id, Action: "start", Time: time.Now()}
	return gate
}

// TestStartRegisteredBeforeInspect: a container read at its create event is
// registered at its start event while dockerd still holds every inspect of
// it, from the endpoint its network reported at the connect event; the
// read that follows finds nothing to correct. Before the prepared view, the
// registration waited for the held inspect (seen failing: not registered
// while held).
func TestStartRegisteredBeforeInspect(t *testing.T) {
	d, c := newFakeDocker(), &fakeCatalog{services: map[string]Service{}}
	a := runAgent(t, d, c)
	gate := startHeld(t, a, d, "c1")
	eventually(t, "registered while inspects are held", func() bool { return c.has("n1:web-c1:8080") })
	c.mu.Lock()
	if got := c.services["n1:web-c1:8080"].Address; got != "10.130.0.5" {
		t.Errorf("registered address %q, want 10.130.0.5", got)
	}
	c.mu.Unlock()
	d.mu.Lock()
	delete(d.gates, "c1")
	d.mu.Unlock()
	close(gate)
	eventually(t, "started container checked", func() bool { return a.idle() && a.checking() == 0 })
	c.mu.Lock()
	if c.writes != 1 {
		t.Errorf("%d registrations, want 1: the check found a difference", c.writes)
	}
	c.mu.Unlock()
	d.mu.Lock()
	if d.inspects["c1"] != 1 || d.lists != 1 {
		t.Errorf("%d inspects and %d listings, want 1 (the create's) and 1 (the start's check)", d.inspects["c1"], d.lists)
	}
	d.mu.Unlock()
	if got := count(a.metrics.prepared.WithLabelValues("written")); got != 1 {
		t.Errorf("prepared written = %v, want 1", got)
	}
	if got := count(a.metrics.prepared.WithLabelValues("corrected")); got != 0 {
		t.Errorf("prepared corrected = %v, want 0", got)
	}
	// A later start event of the same run needs no read.
	d.events <- Event{ContainerID: "c1", Action: "start", Time: time.Now()}
	eventually(t, "start skipped", func() bool { return count(a.metrics.passesSkipped) == 1 })
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.prepared) != 0 || len(a.verifying) != 0 {
		t.Errorf("prepared %v, verifying %v left behind", a.prepared, a.verifying)
	}
}

// TestPreparedViewCorrected: when the started container differs from what
// was read before (here its address), the read after the start rewrites
// the registration and counts the correction.
func TestPreparedViewCorrected(t *testing.T) {
	d, c := newFakeDocker(), &fakeCatalog{services: map[string]Service{}}
	a := runAgent(t, d, c)
	d.set(createdContainer("c1"))
	d.events <- Event{ContainerID: "c1", Action: "create", Time: time.Now()}
	eventually(t, "created container read", func() bool { return d.inspected("c1") == 1 && a.idle() })
	d.connect("c1", mvEndpoint)
	started := webContainer("c1", true)
	started.Networks[0].IPv4 = "10.130.0.6"
	d.set(started)
	d.events <- Event{ContainerID: "c1", Action: "connect", Time: time.Now(), NetworkID: "n1"}
	d.events <- Event{ContainerID: "c1", Action: "start", Time: time.Now()}
	eventually(t, "corrected", func() bool {
		return count(a.metrics.prepared.WithLabelValues("corrected")) == 1 && a.idle()
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	if got := c.services["n1:web-c1:8080"].Address; got != "10.130.0.6" {
		t.Errorf("address after the read back %q, want 10.130.0.6", got)
	}
}

// TestPreparedPass is the rule for using the prepared view on its own: each
// case plays events after the create pass, then one pass.
func TestPreparedPass(t *testing.T) {
	start := Event{ContainerID: "c", Action: "start"}
	connect := Event{ContainerID: "c", Action: "connect", NetworkID: "n1"}
	tests := []struct {
		name    string
		created func(c *Container)
		// reading runs while the create's pass reads the container.
		reading func(a *Agent)
		setup   func(a *Agent, d *fakeDocker)
		// earlier are the events of a pass before, which the view handles.
		earlier []Event
		events  []Event
		// handled: the pass did without an inspect; registered: it wrote.
		handled, registered bool
	}{
		{name: "connect and start", events: []Event{connect, start}, handled: true, registered: true},
		{name: "connect only: recorded, nothing to write", events: []Event{connect}, handled: true},
		{name: "start with the endpoint unknown", events: []Event{start}},
		{name: "a die among them", events: []Event{connect, {ContainerID: "c", Action: "die"}, start}},
		{name: "a connect without its network", events: []Event{{ContainerID: "c", Action: "connect"}, start}},
		{name: "no event: a retry", events: nil},
		{name: "queued by a resync too", setup: func(a *Agent, _ *fakeDocker) { a.force("c") }, events: []Event{connect, start}},
		{name: "event stream lost since the create", setup: func(a *Agent, _ *fakeDocker) { a.newStream() }, events: []Event{connect, start}},
		{name: "ports published on the host", created: func(c *Container) { c.PublishRequested = true }, events: []Event{connect, start}},
		{name: "the network has no such endpoint", setup: func(_ *Agent, d *fakeDocker) { delete(d.endpoints["n1"], "c") }, events: []Event{connect, start}},
		{name: "a network that was not configured", setup: func(_ *Agent, d *fakeDocker) {
			d.connect("c", Endpoint{Network: "other", NetworkID: "n2", Driver: "macvlan", IPv4: "10.131.0.5"})
		}, events: []Event{connect, {ContainerID: "c", Action: "connect", NetworkID: "n2"}, start}},
		{name: "with a healthcheck", created: func(c *Container) { c.HealthConfigured = true }, events: []Event{connect, start}, handled: true, registered: true},
		{name: "connect, then start in a pass of its own", earlier: []Event{connect}, events: []Event{start}, handled: true, registered: true},
		// The view is kept with the stream its pass began under: a loss
		// while it was read forgot the views of then, not this one.
		{name: "event stream lost while the create was read", reading: func(a *Agent) { a.newStream() }, events: []Event{connect, start}},
		// Docker never sends a second for one ID: the view cannot say
		// which create it was read for.
		{name: "a second create event", events: []Event{{ContainerID: "c", Action: "create"}, connect, start}},
		// Without n2's endpoint as many networks as endpoints are known,
		// but not that one, which may be the one to register.
		{name: "a connect whose endpoint cannot be read beside one that can", events: []Event{connect, {ContainerID: "c", Action: "connect", NetworkID: "n2"}, start}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, cat := newFakeDocker(), &fakeCatalog{services: map[string]Service{}}
			a := newPassAgent(t, d, cat)
			created := createdContainer("c")
			if tt.created != nil {
				tt.created(&created)
			}
			a.noteEvent(Event{ContainerID: "c", Action: "create"})
			p, _ := a.beginPass("c")
			if tt.reading != nil {
				tt.reading(a)
			}
			a.prepare("c", p, created)
			d.connect("c", mvEndpoint)
			if tt.setup != nil {
				tt.setup(a, d)
			}
			if tt.earlier != nil {
				for _, ev := range tt.earlier {
					a.noteEvent(ev)
				}
				p, _ = a.beginPass("c")
				if handled, err := a.preparedPass(context.Background(), "c", p); err != nil || !handled {
					t.Fatalf("earlier pass: handled = %v, %v; want true", handled, err)
				}
			}
			for _, ev := range tt.events {
				a.noteEvent(ev)
			}
			p, _ = a.beginPass("c")
			handled, err := a.preparedPass(context.Background(), "c", p)
			if err != nil {
				t.Fatal(err)
			}
			if handled != tt.handled {
				t.Errorf("handled = %v, want %v", handled, tt.handled)
			}
			if got := cat.has("n1:web-c:8080"); got != tt.registered {
				t.Errorf("registered = %v, want %v", got, tt.registered)
			}
			if d.inspected("c") != 0 {
				t.Error("the pass inspected the container")
			}
			if !handled && a.preparedFor("c") != nil {
				t.Error("a pass that must read Docker left the prepared view in place")
			}
			if tt.registered {
				s := cat.services["n1:web-c:8080"]
				if s.Address != "10.130.0.5" {
					t.Errorf("address %q, want 10.130.0.5", s.Address)
				}
				if created.HealthConfigured && (s.Health == nil || s.Health.Status != "critical") {
					t.Errorf("health mirror %+v, want one, critical while starting", s.Health)
				}
				if _, checking := a.verifying["c"]; !checking || a.queue.queued[verifyKey] != background {
					t.Error("no check of the started container was asked for")
				}
			}
		})
	}
}

// TestStreamLossForgetsViews: a lost event stream forgets every prepared
// view; a container removed meanwhile would otherwise keep its view forever.
func TestStreamLossForgetsViews(t *testing.T) {
	a, err := NewAgent(Config{Policy: Policy{Node: "n1"}}, newFakeDocker(), &fakeCatalog{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	a.noteEvent(Event{ContainerID: "c", Action: "create"})
	p, _ := a.beginPass("c")
	a.prepare("c", p, createdContainer("c"))
	a.newStream()
	if a.preparedFor("c") != nil {
		t.Error("a prepared view outlived its event stream")
	}
}

// TestPrepareOnlyCreated: only a pass with a create event that finds the
// container never started keeps a prepared view.
func TestPrepareOnlyCreated(t *testing.T) {
	for _, tt := range []struct {
		name         string
		event        string
		c            Container
		expect, late bool
	}{
		{"created", "create", createdContainer("c"), true, false},
		{"no create event", "connect", createdContainer("c"), false, false},
		{"already running", "create", webContainer("c", true), false, true},
		{"started and exited since", "create", webContainer("c", false), false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, err := NewAgent(Config{Policy: Policy{Node: "n1"}}, newFakeDocker(), &fakeCatalog{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
			if err != nil {
				t.Fatal(err)
			}
			a.noteEvent(Event{ContainerID: "c", Action: tt.event})
			p, _ := a.beginPass("c")
			a.prepare("c", p, tt.c)
			if got := a.preparedFor("c") != nil; got != tt.expect {
				t.Errorf("prepared = %v, want %v", got, tt.expect)
			}
			if got := count(a.metrics.prepared.WithLabelValues("late")) == 1; got != tt.late {
				t.Errorf("counted late = %v, want %v", got, tt.late)
			}
		})
	}
}

// checking is how many starts registered from prepared views are not yet
// checked.
func (a *Agent) checking() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.verifying)
}

// TestVerifyStarts: the starts registered from prepared views are checked
// in Docker's listing, many in one; only one that differs, or each when the
// listing fails, is read in full.
func TestVerifyStarts(t *testing.T) {
	newAgent := func(t *testing.T) (*Agent, *fakeDocker, *fakeCatalog) {
		d, c := newFakeDocker(), &fakeCatalog{services: map[string]Service{}}
		a, err := NewAgent(Config{Policy: Policy{Node: "n1"}}, d, c, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		return a, d, c
	}
	// registered marks n containers as started from prepared views with
	// mvEndpoint, running as d says.
	registered := func(a *Agent, d *fakeDocker, n int) []string {
		var ids []string
		for i := range n {
			id := fmt.Sprintf("c%03d", i)
			d.set(webContainer(id, true))
			a.verifying[id] = []Endpoint{mvEndpoint}
			ids = append(ids, id)
		}
		return ids
	}
	t.Run("as registered: one listing, no read", func(t *testing.T) {
		a, d, _ := newAgent(t)
		ids := registered(a, d, 3)
		a.verifyStarts(context.Background())
		if a.checking() != 0 || d.lists != 1 {
			t.Errorf("%d left unchecked after %d listings, want 0 after 1", a.checking(), d.lists)
		}
		for _, id := range ids {
			if a.queue.queued[id] != 0 || a.forced[id] {
				t.Errorf("%s queued for a full read", id)
			}
		}
	})
	t.Run("more than one listing holds", func(t *testing.T) {
		a, d, _ := newAgent(t)
		registered(a, d, maxVerify+5)
		a.verifyStarts(context.Background())
		if a.checking() != 5 || a.queue.queued[verifyKey] != background {
			t.Fatalf("after one listing %d left, check queued %v; want 5 left and the check queued again", a.checking(), a.queue.queued[verifyKey])
		}
		a.verifyStarts(context.Background())
		if a.checking() != 0 || d.lists != 2 {
			t.Errorf("%d left after %d listings, want 0 after 2", a.checking(), d.lists)
		}
	})
	t.Run("an endpoint differs: read in full", func(t *testing.T) {
		a, d, _ := newAgent(t)
		registered(a, d, 2)
		moved := webContainer("c001", true)
		moved.Networks[0].IPv4 = "10.130.0.9"
		d.set(moved)
		a.verifyStarts(context.Background())
		if _, ok := a.verifying["c001"]; !ok || !a.forced["c001"] || a.queue.queued["c001"] != background {
			t.Error("the differing container is not read in full, with its check kept")
		}
		if _, ok := a.verifying["c000"]; ok || a.forced["c000"] {
			t.Error("the container as registered is read again")
		}
	})
	t.Run("the listing fails: each read in full", func(t *testing.T) {
		a, d, _ := newAgent(t)
		ids := registered(a, d, 2)
		d.listErr = errors.New("docker away")
		a.verifyStarts(context.Background())
		for _, id := range ids {
			if _, ok := a.verifying[id]; !ok || !a.forced[id] || a.queue.queued[id] != background {
				t.Errorf("%s not read in full after the listing failed", id)
			}
		}
		if got := count(a.metrics.errors.WithLabelValues("docker")); got != 1 {
			t.Errorf("docker errors counted %v, want 1", got)
		}
	})
	t.Run("a pass ends the check during the listing: not marked seen running", func(t *testing.T) {
		a, d, _ := newAgent(t)
		registered(a, d, 1)
		// A die's pass, say, which found the container stopped.
		d.onList = func() { a.verified("c000", false) }
		a.verifyStarts(context.Background())
		a.mu.Lock()
		defer a.mu.Unlock()
		if _, saw := a.sawRunning["c000"]; saw {
			t.Error("a container whose check a pass ended is marked seen running: its next start event would be skipped")
		}
	})
	t.Run("stopped since: read, not a correction", func(t *testing.T) {
		a, d, _ := newAgent(t)
		registered(a, d, 1)
		d.set(webContainer("c000", false))
		a.verifyStarts(context.Background())
		if _, ok := a.verifying["c000"]; ok || !a.forced["c000"] {
			t.Errorf("stopped container: checking %v, forced %v; want its check ended and a full read", ok, a.forced["c000"])
		}
	})
}

// TestStopBeforeCheckNotCorrected: a container that stops after its start
// was registered from the prepared view, while its check reads it in full,
// is deregistered by that read; the prepared view was not wrong. Before,
// that pass counted a correction (seen failing: prepared corrected = 1).
func TestStopBeforeCheckNotCorrected(t *testing.T) {
	d, c := newFakeDocker(), &fakeCatalog{services: map[string]Service{}}
	a := runAgent(t, d, c)
	d.mu.Lock()
	d.listErr = errors.New("docker away") // the check reads in full
	d.mu.Unlock()
	gate := startHeld(t, a, d, "c1")
	eventually(t, "registered, its full read held", func() bool { return c.has("n1:web-c1:8080") && d.inspected("c1") == 2 })
	d.set(webContainer("c1", false)) // it stops; the held read sees it
	close(gate)
	eventually(t, "deregistered and checked", func() bool { return !c.has("n1:web-c1:8080") && a.idle() && a.checking() == 0 })
	if got := count(a.metrics.prepared.WithLabelValues("corrected")); got != 0 {
		t.Errorf("prepared corrected = %v, want 0", got)
	}
}

// TestPreparedStartedNeedsEveryNetwork: the prepared view is complete
// only with an endpoint learnt for each network the container was
// created on; as many endpoints, one of them of another network, leave
// one of its networks unknown, and Docker must be read.
func TestPreparedStartedNeedsEveryNetwork(t *testing.T) {
	c := createdContainer("c")
	c.Networks = []Endpoint{{Network: "mv", NetworkID: "n1", Driver: "macvlan"}, {Network: "mv2", NetworkID: "n2", Driver: "macvlan"}}
	other := Endpoint{Network: "other", NetworkID: "n3", Driver: "macvlan", IPv4: "10.131.0.5"}
	p := &prepared{c: c, endpoints: map[string]Endpoint{"mv": mvEndpoint, "other": other}}
	if got, ok := p.started(); ok {
		t.Errorf("started() = %+v, true; want false: network mv2 has no endpoint", got.Networks)
	}
	mv2 := Endpoint{Network: "mv2", NetworkID: "n2", Driver: "macvlan", IPv4: "10.132.0.5"}
	p.endpoints = map[string]Endpoint{"mv": mvEndpoint, "mv2": mv2}
	if got, ok := p.started(); !ok || len(got.Networks) != 2 || !got.Running || got.Created {
		t.Errorf("started() = %+v, %v; want both endpoints, running", got, ok)
	}
}

// observations reads a histogram's count of observations.
func observations(h prometheus.Histogram) uint64 {
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		panic(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// TestPreparedStartWrites: a start registered from the prepared view
// counts the time from its events to its write, once, and only when it
// wrote; a write Consul refuses fails the pass, which gives its events
// back for the retry, to read Docker.
func TestPreparedStartWrites(t *testing.T) {
	for _, tt := range []struct {
		name    string
		created func(c *Container)
		refused error
		// writes says the pass wrote to Consul.
		writes bool
	}{
		{name: "registered", writes: true},
		{name: "nothing to register", created: func(c *Container) { c.Exposed = nil }},
		{name: "Consul refuses the registration", refused: errors.New("consul away")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, cat := newFakeDocker(), &fakeCatalog{services: map[string]Service{}, registerErr: tt.refused}
			a := newPassAgent(t, d, cat)
			created := createdContainer("c")
			if tt.created != nil {
				tt.created(&created)
			}
			a.noteEvent(Event{ContainerID: "c", Action: "create", Time: time.Now()})
			p, _ := a.beginPass("c")
			a.prepare("c", p, created)
			d.connect("c", mvEndpoint)
			a.noteEvent(Event{ContainerID: "c", Action: "connect", NetworkID: "n1", Time: time.Now()})
			a.noteEvent(Event{ContainerID: "c", Action: "start", Time: time.Now()})
			p, _ = a.beginPass("c")
			handled, err := a.preparedPass(context.Background(), "c", p)
			if !handled || (err != nil) != (tt.refused != nil) {
				t.Fatalf("preparedPass = %v, %v; want true, and an error only if Consul refused", handled, err)
			}
			want := uint64(0)
			if tt.writes {
				want = 1
			}
			if got := observations(a.metrics.eventLatency); got != want {
				t.Errorf("%d event-to-Consul times observed, want %d", got, want)
			}
			if tt.refused != nil {
				a.mu.Lock()
				ev, ok := a.pending["c"]
				a.mu.Unlock()
				if !ok || !ev.other || !ev.started || ev.oldest.IsZero() {
					t.Errorf("events after the failed pass %+v (given back %v); want the start's, the oldest's time, and a read of Docker asked for", ev, ok)
				}
			}
		})
	}
}

// TestSameEndpoints: the endpoints registered from a prepared view and
// those of Docker's listing, which gives no driver, are the same in any
// order, and as many of each.
func TestSameEndpoints(t *testing.T) {
	mv2 := Endpoint{Network: "mv2", NetworkID: "n2", Driver: "macvlan", IPv4: "10.132.0.5"}
	listed := func(eps ...Endpoint) []Endpoint {
		var out []Endpoint
		for _, ep := range eps {
			ep.Driver = ""
			out = append(out, ep)
		}
		return out
	}
	moved := mvEndpoint
	moved.IPv4 = "10.130.0.9"
	for _, tt := range []struct {
		name       string
		registered []Endpoint
		listed     []Endpoint
		want       bool
	}{
		{"same, listed without the driver", []Endpoint{mvEndpoint}, listed(mvEndpoint), true},
		{"same, the driver on one side only", listed(mvEndpoint), []Endpoint{mvEndpoint}, true},
		{"same in another order", []Endpoint{mvEndpoint, mv2}, listed(mv2, mvEndpoint), true},
		{"none and none", nil, []Endpoint{}, true},
		{"an address differs", []Endpoint{mvEndpoint}, listed(moved), false},
		{"one fewer listed", []Endpoint{mvEndpoint, mv2}, listed(mvEndpoint), false},
		{"one more listed", []Endpoint{mvEndpoint}, listed(mvEndpoint, mv2), false},
		{"one listed twice for two", []Endpoint{mvEndpoint, mv2}, listed(mvEndpoint, mvEndpoint), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := sameEndpoints(tt.registered, tt.listed); got != tt.want {
				t.Errorf("sameEndpoints(%+v, %+v) = %v, want %v", tt.registered, tt.listed, got, tt.want)
			}
		})
	}
}
