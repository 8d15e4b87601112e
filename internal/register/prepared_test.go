package register

import (
	"context"
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

// TestStartRegisteredBeforeInspect: a container read at its create event is
// registered at its start event while dockerd still holds every inspect of
// it, from the endpoint its network reported at the connect event; the
// read that follows finds nothing to correct. Before the prepared view, the
// registration waited for the held inspect (seen failing: not registered
// while held).
func TestStartRegisteredBeforeInspect(t *testing.T) {
	d, c := newFakeDocker(), &fakeCatalog{services: map[string]Service{}}
	a := runAgent(t, d, c)
	d.set(createdContainer("c1"))
	d.events <- Event{ContainerID: "c1", Action: "create", Time: time.Now()}
	eventually(t, "created container read", func() bool { return d.inspected("c1") == 1 && a.idle() })

	// The start begins: dockerd holds inspects until it is over.
	gate := make(chan struct{})
	d.mu.Lock()
	d.gates["c1"] = gate
	d.mu.Unlock()
	d.connect("c1", mvEndpoint)
	d.events <- Event{ContainerID: "c1", Action: "connect", Time: time.Now(), NetworkID: "n1"}
	d.set(webContainer("c1", true))
	d.events <- Event{ContainerID: "c1", Action: "start", Time: time.Now()}
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
	eventually(t, "started container read back", func() bool { return d.inspected("c1") == 2 && a.idle() })
	c.mu.Lock()
	if c.writes != 1 {
		t.Errorf("%d registrations, want 1: the read back found a difference", c.writes)
	}
	c.mu.Unlock()
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
		setup   func(a *Agent, d *fakeDocker)
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, cat := newFakeDocker(), &fakeCatalog{services: map[string]Service{}}
			a, err := NewAgent(Config{Policy: Policy{Node: "n1"}}, d, cat, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			created := createdContainer("c")
			if tt.created != nil {
				tt.created(&created)
			}
			a.noteEvent(Event{ContainerID: "c", Action: "create"})
			p, _ := a.beginPass("c")
			a.prepare("c", p, created)
			d.connect("c", mvEndpoint)
			if tt.setup != nil {
				tt.setup(a, d)
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
				if !a.forced["c"] || !a.verifying["c"] {
					t.Error("no read back of the started container was asked for")
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
