package register

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

	"github.com/prometheus/client_golang/prometheus"
)

// fakeDocker is an in-memory Docker for unit tests of the agent's logic;
// the integration tests use the real dockerd.
type fakeDocker struct {
	events chan Event

	mu         sync.Mutex // guards following fields
	containers map[string]Container
	inspects   map[string]int
	// gates hold an Inspect of that container until closed, as dockerd
	// holds one while the container is starting.
	gates map[string]chan struct{}
	// endpoints are what the networks hold, by network ID then container
	// ID; network reads are never held.
	endpoints     map[string]map[string]Endpoint
	endpointReads int
	// lists counts RunningEndpoints calls; listErr fails them; onList,
	// when set, runs during each (without d.mu held).
	lists   int
	listErr error
	onList  func()
}

func newFakeDocker() *fakeDocker {
	return &fakeDocker{events: make(chan Event, 16), containers: map[string]Container{}, inspects: map[string]int{}, gates: map[string]chan struct{}{}, endpoints: map[string]map[string]Endpoint{}}
}

func (d *fakeDocker) Events(ctx context.Context) (<-chan Event, <-chan error) {
	return d.events, make(chan error)
}

func (d *fakeDocker) RunningContainers(ctx context.Context) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ids []string
	for id, c := range d.containers {
		if c.Running {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

func (d *fakeDocker) Inspect(ctx context.Context, id string) (Container, error) {
	d.mu.Lock()
	d.inspects[id]++
	gate := d.gates[id]
	d.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done(): // a failed test's agent stopping
			return Container{}, ctx.Err()
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.containers[id]
	if !ok {
		return Container{}, ErrNotFound
	}
	return c, nil
}

func (d *fakeDocker) Endpoint(ctx context.Context, networkID, id string, _ time.Time) (Endpoint, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.endpointReads++
	ep, ok := d.endpoints[networkID][id]
	if !ok {
		return Endpoint{}, ErrNotFound
	}
	return ep, nil
}

func (d *fakeDocker) RunningEndpoints(ctx context.Context, ids []string) (map[string][]Endpoint, error) {
	d.mu.Lock()
	onList := d.onList
	d.mu.Unlock()
	if onList != nil {
		onList()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lists++
	if d.listErr != nil {
		return nil, d.listErr
	}
	out := map[string][]Endpoint{}
	for _, id := range ids {
		if c, ok := d.containers[id]; ok && c.Running {
			eps := []Endpoint{}
			for _, ep := range c.Networks {
				ep.Driver = "" // Docker's listing gives none
				eps = append(eps, ep)
			}
			out[id] = eps
		}
	}
	return out, nil
}

// connect records a container's endpoint in its network.
func (d *fakeDocker) connect(id string, ep Endpoint) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.endpoints[ep.NetworkID] == nil {
		d.endpoints[ep.NetworkID] = map[string]Endpoint{}
	}
	d.endpoints[ep.NetworkID][id] = ep
}

func (d *fakeDocker) set(c Container) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.containers[c.ID] = c
}

func (d *fakeDocker) inspected(id string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.inspects[id]
}

// fakeCatalog is an in-memory Consul agent for unit tests.
type fakeCatalog struct {
	mu       sync.Mutex
	services map[string]Service
	writes   int // registers
	// deregisterDelay is how long Consul takes to act on a
	// deregistration; writes sent meanwhile are applied first, as Consul,
	// handling requests concurrently, may. deregisters counts the calls.
	deregisterDelay time.Duration
	deregisters     int
	// registerErr fails every Register; deregisterErr the Deregister of
	// each service ID it holds.
	registerErr   error
	deregisterErr map[string]error
}

func (c *fakeCatalog) Services(ctx context.Context, node string) ([]Registered, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Registered
	for _, s := range c.services {
		if s.Meta[MetaNode] != node {
			continue // Consul's filter on the marker
		}
		out = append(out, Registered{ID: s.ID, ContainerID: s.ContainerID(), Hash: s.Meta[MetaHash]})
	}
	return out, nil
}

func (c *fakeCatalog) Register(ctx context.Context, s Service) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.registerErr != nil {
		return c.registerErr
	}
	c.services[s.ID] = s
	c.writes++
	return nil
}

func (c *fakeCatalog) Deregister(ctx context.Context, id string) error {
	c.mu.Lock()
	c.deregisters++
	delay := c.deregisterDelay
	c.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.deregisterErr[id]; err != nil {
		return err
	}
	delete(c.services, id)
	return nil
}

func (c *fakeCatalog) deregisterCalls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deregisters
}

// owner is the container whose registration holds service id; "" when none does.
func (c *fakeCatalog) owner(id string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.services[id].ContainerID()
}

func (c *fakeCatalog) UpdateHealth(ctx context.Context, h HealthMirror) error { return nil }

func (c *fakeCatalog) Owner(ctx context.Context, id string) (string, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.services[id]
	return s.Meta[MetaNode], ok, nil
}

func (c *fakeCatalog) has(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.services[id]
	return ok
}

func webContainer(id string, running bool) Container {
	return Container{ID: id, Name: "web-" + id, Image: "web:1", Running: running,
		Exposed:  []Port{{Port: 8080, Proto: "tcp"}},
		Networks: []Endpoint{{Network: "mv", NetworkID: "n1", Driver: "macvlan", IPv4: "10.130.0.5"}}}
}

// eventually polls cond until it holds or 10s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not true after 10s: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// runAgent starts an agent over d and c and waits for its first resync.
func runAgent(t *testing.T, d *fakeDocker, c *fakeCatalog) *Agent {
	t.Helper()
	a := newPassAgent(t, d, c)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	eventually(t, "first resync", func() bool { return !a.Status().LastResync.IsZero() })
	eventually(t, "first resync's passes", func() bool { return a.idle() })
	return a
}

// idle reports that no container is queued or being reconciled.
func (a *Agent) idle() bool {
	a.queue.mu.Lock()
	defer a.queue.mu.Unlock()
	return len(a.queue.queued) == 0 && len(a.queue.processing) == 0
}

func (a *Agent) hasPending(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.pending[id]
	return ok
}

// startWhileInspecting plays a container start as dockerd shows it: the
// network connect event, an inspect that waits until the start is over,
// the start event (and the others given) received meanwhile; the inspect
// then returns what the container has become.
func startWhileInspecting(t *testing.T, a *Agent, d *fakeDocker, id string, during []string, after Container) {
	t.Helper()
	gate := make(chan struct{})
	d.mu.Lock()
	d.gates[id] = gate
	d.mu.Unlock()
	before := d.inspected(id)
	d.events <- Event{ContainerID: id, Action: "connect", Time: time.Now()}
	eventually(t, "inspect triggered by the connect event", func() bool { return d.inspected(id) == before+1 })
	for _, action := range during {
		d.events <- Event{ContainerID: id, Action: action, Time: time.Now()}
	}
	eventually(t, "events received during the inspect", func() bool { return a.hasPending(id) })
	d.set(after)
	d.mu.Lock()
	delete(d.gates, id)
	d.mu.Unlock()
	close(gate)
	eventually(t, "passes over", func() bool { return a.idle() })
}

// TestStartInspectedOnce: a container's start is read from Docker once, by
// the pass its network connect event triggered (it waits in dockerd until
// the start is over), not again for the start event. Without the skip
// (seen failing before it): inspects = 2.
func TestStartInspectedOnce(t *testing.T) {
	d, c := newFakeDocker(), &fakeCatalog{services: map[string]Service{}}
	a := runAgent(t, d, c)
	d.set(webContainer("c1", false))
	startWhileInspecting(t, a, d, "c1", []string{"start"}, webContainer("c1", true))
	if !c.has("n1:web-c1:8080") {
		t.Fatalf("not registered: %v", c.services)
	}
	if got := d.inspected("c1"); got != 1 {
		t.Errorf("container inspected %d times for one start, want 1", got)
	}
}

// TestLateStartInspectedOnce: the inspect a create event triggers waits in
// dockerd for a start that began first, so it reads the started container;
// the start's network connect and start events, which came meanwhile, need
// no second read. Before (seen failing): "container inspected 2 times for
// one start, want 1".
func TestLateStartInspectedOnce(t *testing.T) {
	d, c := newFakeDocker(), &fakeCatalog{services: map[string]Service{}}
	a := runAgent(t, d, c)
	d.set(webContainer("c1", false))
	gate := make(chan struct{})
	d.mu.Lock()
	d.gates["c1"] = gate
	d.mu.Unlock()
	d.events <- Event{ContainerID: "c1", Action: "create", Time: time.Now()}
	eventually(t, "inspect triggered by the create event", func() bool { return d.inspected("c1") == 1 })
	d.events <- Event{ContainerID: "c1", Action: "connect", NetworkID: "net1", Time: time.Now()}
	d.events <- Event{ContainerID: "c1", Action: "start", Time: time.Now()}
	eventually(t, "events received during the inspect", func() bool { return a.hasPending("c1") })
	d.set(webContainer("c1", true))
	d.mu.Lock()
	delete(d.gates, "c1")
	d.mu.Unlock()
	close(gate)
	eventually(t, "passes over", func() bool { return a.idle() })
	if !c.has("n1:web-c1:8080") {
		t.Fatalf("not registered: %v", c.services)
	}
	if got := d.inspected("c1"); got != 1 {
		t.Errorf("container inspected %d times for one start, want 1", got)
	}
	if got := count(a.metrics.passesSkipped); got != 1 {
		t.Errorf("passes skipped = %v, want 1", got)
	}
}

// TestStartAfterDieInspected: a die between the pass's read and the start
// means the pass read a run that is over; the start is read again and the
// registration follows the new run.
func TestStartAfterDieInspected(t *testing.T) {
	d, c := newFakeDocker(), &fakeCatalog{services: map[string]Service{}}
	a := runAgent(t, d, c)
	old := webContainer("c1", true)
	d.set(old)
	d.events <- Event{ContainerID: "c1", Action: "start", Time: time.Now()}
	eventually(t, "registered", func() bool { return c.has("n1:web-c1:8080") })
	eventually(t, "passes over", func() bool { return a.idle() })

	// The pass triggered by a connect reads the old run; then the
	// container dies and starts again, on a new address.
	gate := make(chan struct{})
	d.mu.Lock()
	d.gates["c1"] = gate
	d.mu.Unlock()
	n := d.inspected("c1")
	d.events <- Event{ContainerID: "c1", Action: "connect", Time: time.Now()}
	eventually(t, "inspect triggered by the connect event", func() bool { return d.inspected("c1") == n+1 })
	d.events <- Event{ContainerID: "c1", Action: "die", Time: time.Now()}
	d.events <- Event{ContainerID: "c1", Action: "start", Time: time.Now()}
	eventually(t, "events received during the inspect", func() bool { return a.hasPending("c1") })
	d.mu.Lock()
	delete(d.gates, "c1")
	d.mu.Unlock()
	close(gate) // returns the old run, still running
	eventually(t, "the die and start read again", func() bool { return d.inspected("c1") == n+2 })
	eventually(t, "passes over", func() bool { return a.idle() })
}

// TestBeginPass is the skip rule on its own.
func TestBeginPass(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(a *Agent)
		wantSkip bool
	}{
		{"start after a pass that saw it running", func(a *Agent) {
			a.passDone("c", pass{stream: a.stream}, true)
			a.noteEvent(Event{ContainerID: "c", Action: "start"})
		}, true},
		{"two starts", func(a *Agent) {
			a.passDone("c", pass{stream: a.stream}, true)
			a.noteEvent(Event{ContainerID: "c", Action: "start"})
			a.noteEvent(Event{ContainerID: "c", Action: "start"})
		}, true},
		{"no pass before", func(a *Agent) {
			a.noteEvent(Event{ContainerID: "c", Action: "start"})
		}, false},
		{"the pass before saw it stopped", func(a *Agent) {
			a.passDone("c", pass{stream: a.stream}, false)
			a.noteEvent(Event{ContainerID: "c", Action: "start"})
		}, false},
		{"a die among the events", func(a *Agent) {
			a.passDone("c", pass{stream: a.stream}, true)
			a.noteEvent(Event{ContainerID: "c", Action: "die"})
			a.noteEvent(Event{ContainerID: "c", Action: "start"})
		}, false},
		{"the start's own connect, before it", func(a *Agent) {
			a.passDone("c", pass{stream: a.stream}, true)
			a.noteEvent(Event{ContainerID: "c", Action: "connect", NetworkID: "net1"})
			a.noteEvent(Event{ContainerID: "c", Action: "start"})
		}, true},
		{"a connect after the start", func(a *Agent) {
			a.passDone("c", pass{stream: a.stream}, true)
			a.noteEvent(Event{ContainerID: "c", Action: "connect", NetworkID: "net1"})
			a.noteEvent(Event{ContainerID: "c", Action: "start"})
			a.noteEvent(Event{ContainerID: "c", Action: "connect", NetworkID: "net2"})
		}, false},
		{"a connect among the events", func(a *Agent) {
			a.passDone("c", pass{stream: a.stream}, true)
			a.noteEvent(Event{ContainerID: "c", Action: "start"})
			a.noteEvent(Event{ContainerID: "c", Action: "connect"})
		}, false},
		{"no event: a resync or a retry", func(a *Agent) {
			a.passDone("c", pass{stream: a.stream}, true)
		}, false},
		{"queued by a resync too", func(a *Agent) {
			a.passDone("c", pass{stream: a.stream}, true)
			a.noteEvent(Event{ContainerID: "c", Action: "start"})
			a.force("c")
		}, false},
		{"the pass before failed", func(a *Agent) {
			a.passDone("c", pass{stream: a.stream}, true)
			a.passFailed("c", pass{stream: a.stream})
			a.noteEvent(Event{ContainerID: "c", Action: "start"})
		}, false},
		{"the event stream was lost since", func(a *Agent) {
			a.passDone("c", pass{stream: a.stream}, true)
			a.newStream()
			a.noteEvent(Event{ContainerID: "c", Action: "start"})
		}, false},
		{"another container's pass", func(a *Agent) {
			a.passDone("d", pass{stream: a.stream}, true)
			a.noteEvent(Event{ContainerID: "c", Action: "start"})
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := NewAgent(Config{Policy: Policy{Node: "n1"}}, newFakeDocker(), &fakeCatalog{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
			if err != nil {
				t.Fatal(err)
			}
			tt.setup(a)
			if _, skip := a.beginPass("c"); skip != tt.wantSkip {
				t.Errorf("skip = %v, want %v", skip, tt.wantSkip)
			}
			if _, skip := a.beginPass("c"); skip {
				t.Error("a second pass with no new event skipped")
			}
		})
	}
}

// TestActualByContainer: the agent's own view answers per container, through
// registrations, removals and a resync's reload.
func TestActualByContainer(t *testing.T) {
	a, err := NewAgent(Config{Policy: Policy{Node: "n1"}}, newFakeDocker(), &fakeCatalog{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	ids := func(c string) map[string]bool {
		out := map[string]bool{}
		for _, r := range a.actualFor(c) {
			out[r.ID] = true
		}
		return out
	}
	a.setActual(Registered{ID: "s1", ContainerID: "c1"})
	a.setActual(Registered{ID: "s2", ContainerID: "c1"})
	a.setActual(Registered{ID: "s3", ContainerID: "c2"})
	if got := ids("c1"); len(got) != 2 || !got["s1"] || !got["s2"] {
		t.Errorf("c1 has %v, want s1 and s2", got)
	}
	a.setActual(Registered{ID: "s2", ContainerID: "c2"}) // the ID moved to another container
	a.deleteActual("s1")
	if got := ids("c1"); len(got) != 0 {
		t.Errorf("c1 has %v, want none", got)
	}
	if got := ids("c2"); len(got) != 2 || !got["s2"] || !got["s3"] {
		t.Errorf("c2 has %v, want s2 and s3", got)
	}
	a.replaceActual([]Registered{{ID: "s4", ContainerID: "c3"}})
	if got := ids("c2"); len(got) != 0 {
		t.Errorf("after reload c2 has %v, want none", got)
	}
	if got := ids("c3"); len(got) != 1 || !got["s4"] {
		t.Errorf("after reload c3 has %v, want s4", got)
	}
	if len(a.byContainer) != 1 {
		t.Errorf("index keeps %d containers, want 1", len(a.byContainer))
	}
}

// TestServiceIDPassedOnWhileDeregistering: a container removed and another
// started under its name want the same service IDs (NODE:NAME:PORT). The
// old one's deregistration, on its way to Consul when the new one's
// registration is sent, must not remove the new one's: it stayed missing,
// in Consul and in the agent's view alike (so no drift check noticed),
// until the next full resync.
func TestServiceIDPassedOnWhileDeregistering(t *testing.T) {
	d, c := newFakeDocker(), &fakeCatalog{services: map[string]Service{}}
	a := runAgent(t, d, c)
	old := webContainer("a1", true)
	d.set(old)
	d.events <- Event{ContainerID: "a1", Action: "start", Time: time.Now()}
	const id = "n1:web-a1:8080"
	eventually(t, "old container registered", func() bool { return c.owner(id) == "a1" })
	eventually(t, "passes over", a.idle)

	c.mu.Lock()
	c.deregisterDelay = 500 * time.Millisecond
	c.mu.Unlock()
	before := c.deregisterCalls()
	d.mu.Lock()
	delete(d.containers, "a1")
	d.mu.Unlock()
	d.events <- Event{ContainerID: "a1", Action: "destroy", Time: time.Now()}
	eventually(t, "old container's deregistration sent", func() bool { return c.deregisterCalls() > before })

	successor := webContainer("b1", true)
	successor.Name = old.Name
	d.set(successor)
	d.events <- Event{ContainerID: "b1", Action: "start", Time: time.Now()}
	eventually(t, "successor read", func() bool { return d.inspected("b1") > 0 })
	eventually(t, "passes over", a.idle)

	if got := c.owner(id); got != "b1" {
		t.Errorf("service %s in Consul belongs to container %q, want the successor b1's", id, got)
	}
	if rs := a.actualFor("b1"); len(rs) != 1 || rs[0].ID != id {
		t.Errorf("agent's view of b1: %+v, want %s", rs, id)
	}
	a.serviceLocks.mu.Lock()
	defer a.serviceLocks.mu.Unlock()
	if n := len(a.serviceLocks.held); n != 0 {
		t.Errorf("%d service locks kept after the writes ended, want none", n)
	}
}

// TestServiceIDOfTwoContainers: two running containers ask for one service
// ID (SERVICE_ID). The registration of the first stays theirs: the other's
// start and the resyncs after it do not replace it (they did, flipping the
// ID between the two at every resync, and the stop of either removed the
// other's); once the first stops, the other is registered.
func TestServiceIDOfTwoContainers(t *testing.T) {
	d, c := newFakeDocker(), &fakeCatalog{services: map[string]Service{}}
	a := runAgent(t, d, c)
	withID := func(id string, running bool) Container {
		x := webContainer(id, running)
		x.Labels = map[string]string{"SERVICE_ID": "shared"}
		return x
	}
	d.set(withID("a1", true))
	d.events <- Event{ContainerID: "a1", Action: "start", Time: time.Now()}
	eventually(t, "a1 registered", func() bool { return c.owner("shared") == "a1" })
	eventually(t, "passes over", a.idle)

	d.set(withID("b1", true))
	d.events <- Event{ContainerID: "b1", Action: "start", Time: time.Now()}
	eventually(t, "b1 read", func() bool { return d.inspected("b1") > 0 })
	eventually(t, "passes over", a.idle)
	c.mu.Lock()
	writes := c.writes
	c.mu.Unlock()
	for i := range 3 {
		last := a.Status().LastResync
		a.RequestResync()
		eventually(t, "resync", func() bool { return a.Status().LastResync.After(last) })
		eventually(t, "passes over", a.idle)
		if got := c.owner("shared"); got != "a1" {
			t.Fatalf("after resync %d: service shared is container %q's, want a1's (registered first, still running)", i+1, got)
		}
	}
	c.mu.Lock()
	if c.writes != writes {
		t.Errorf("%d registrations written by the resyncs, want none", c.writes-writes)
	}
	c.mu.Unlock()

	d.set(withID("a1", false))
	d.events <- Event{ContainerID: "a1", Action: "die", Time: time.Now()}
	eventually(t, "b1 registered once a1's registration went", func() bool { return c.owner("shared") == "b1" })
	eventually(t, "passes over", a.idle)
	if rs := a.actualFor("b1"); len(rs) != 1 || rs[0].ID != "shared" {
		t.Errorf("agent's view of b1: %+v, want shared", rs)
	}
}

// TestResyncForgetsContainersRemovedUnseen: the agent remembers, by
// container ID, which containers a pass saw running and which metadata
// warnings it logged; a container's entries went only when a pass found
// it gone. One removed while the event stream was down (dockerd
// restarting, which removes its --rm containers), with no service in
// Consul, was never passed again, and its entries stayed for good: every
// agent's memory grew with each such container. A resync now drops the
// entries of the containers that neither run nor hold a registration.
func TestResyncForgetsContainersRemovedUnseen(t *testing.T) {
	ctx := context.Background()
	d, c := newFakeDocker(), &fakeCatalog{services: map[string]Service{}}
	a := newPassAgent(t, d, c)
	bad := webContainer("bad", true)
	bad.Labels = map[string]string{"SERVICE_NETWORK": "nowhere"} // a warning, no service
	plain := Container{ID: "plain", Name: "plain", Running: true}
	web := webContainer("web", true)
	for _, ct := range []Container{bad, plain, web} {
		d.set(ct)
		if err := a.syncContainer(ctx, ct.ID); err != nil {
			t.Fatal(err)
		}
	}
	a.mu.Lock()
	saw, warned := len(a.sawRunning), len(a.warned)
	a.mu.Unlock()
	if saw != 3 || warned != 1 || !c.has("n1:web-web:8080") {
		t.Fatalf("before: %d seen running, %d warned of, registered %v; want 3, 1 and web's service", saw, warned, c.services)
	}
	// Removed while the stream was down: no event, no pass.
	d.mu.Lock()
	delete(d.containers, "bad")
	delete(d.containers, "plain")
	d.mu.Unlock()
	if err := a.resync(ctx); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.sawRunning["web"]; !ok || len(a.sawRunning) != 1 || len(a.warned) != 0 {
		t.Errorf("after the resync: seen running %v, warned of %v; want only web seen running", a.sawRunning, a.warned)
	}
}

// TestWaitersForgottenWhenGone: a container wanting a service ID held
// for another container waits for it, remembered by ID until that
// registration goes; one removed meanwhile stayed remembered. Each task
// of a swarm service with a fixed SERVICE_ID replaced while the first
// holds the ID (a restart, an update) added one for good, as long as the
// holder ran. A waiter is now forgotten when a pass finds it gone.
func TestWaitersForgottenWhenGone(t *testing.T) {
	ctx := context.Background()
	d, c := newFakeDocker(), &fakeCatalog{services: map[string]Service{}}
	a := newPassAgent(t, d, c)
	withID := func(id string) Container {
		x := webContainer(id, true)
		x.Labels = map[string]string{"SERVICE_ID": "shared"}
		return x
	}
	d.set(withID("holder"))
	if err := a.syncContainer(ctx, "holder"); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		id := fmt.Sprintf("task%d", i)
		d.set(withID(id))
		if err := a.syncContainer(ctx, id); err != nil {
			t.Fatal(err)
		}
		d.mu.Lock()
		delete(d.containers, id)
		d.mu.Unlock()
		if err := a.syncContainer(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.owner("shared"); got != "holder" {
		t.Fatalf("shared is %q's, want holder's", got)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if n := len(a.waiting["shared"]); n != 0 {
		t.Errorf("%d containers waiting for shared after every waiter was removed, want 0", n)
	}
}

// newPassAgent is an agent of node n1 over d and c whose resyncs and
// drift checks do not come during a test: its passes are the test's.
func newPassAgent(t *testing.T, d Docker, c Catalog) *Agent {
	t.Helper()
	a, err := NewAgent(Config{Policy: Policy{Node: "n1"}, Resync: time.Hour, DriftCheck: time.Hour},
		d, c, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestServiceIDOfAnotherContainerRefused: a label may not name a service
// ID of the agent's own form, NODE:CONTAINER:PORT. A container started
// with another's default ID as its SERVICE_ID held that ID, and the other
// container, started after, waited for it, unregistered, for as long as
// the first ran.
func TestServiceIDOfAnotherContainerRefused(t *testing.T) {
	ctx := context.Background()
	d, c := newFakeDocker(), &fakeCatalog{services: map[string]Service{}}
	a := newPassAgent(t, d, c)
	squatter := webContainer("squatter", true)
	squatter.Labels = map[string]string{"SERVICE_ID": "n1:web-victim:8080"}
	d.set(squatter)
	if err := a.syncContainer(ctx, "squatter"); err != nil {
		t.Fatal(err)
	}
	d.set(webContainer("victim", true))
	if err := a.syncContainer(ctx, "victim"); err != nil {
		t.Fatal(err)
	}
	if got := c.owner("n1:web-victim:8080"); got != "victim" {
		t.Errorf("service n1:web-victim:8080 is container %q's, want victim's own", got)
	}
	if got := c.owner("n1:web-squatter:8080"); got != "squatter" {
		t.Errorf("service n1:web-squatter:8080 (squatter's default ID) is container %q's, want squatter's", got)
	}
}

// TestForeignServiceIDLeftAlone: a container naming, in SERVICE_ID, a
// service the local Consul agent holds from something else (the
// operator's config files, another tool) replaced it, and deregistered it
// as it stopped. It is now left alone, with a warning, while an ID no one
// holds is registered as before.
func TestForeignServiceIDLeftAlone(t *testing.T) {
	vault := Service{ID: "vault", Name: "vault", Address: "10.0.0.9", Port: 8200}
	other := Service{ID: "db", Name: "db", Meta: map[string]string{MetaNode: "n2"}}
	d, c := newFakeDocker(), &fakeCatalog{services: map[string]Service{"vault": vault, "db": other}}
	a := runAgent(t, d, c)
	for _, x := range []struct{ id, serviceID string }{{"c1", "vault"}, {"c2", "db"}, {"c3", "free"}} {
		ct := webContainer(x.id, true)
		ct.Labels = map[string]string{"SERVICE_ID": x.serviceID}
		d.set(ct)
		d.events <- Event{ContainerID: x.id, Action: "start", Time: time.Now()}
	}
	eventually(t, "free registered", func() bool { return c.owner("free") == "c3" })
	eventually(t, "passes over", a.idle)
	for _, want := range []Service{vault, other} {
		c.mu.Lock()
		got := c.services[want.ID]
		c.mu.Unlock()
		if got.Name != want.Name || got.ContainerID() != "" || got.Meta[MetaNode] != want.Meta[MetaNode] {
			t.Errorf("service %s after a container named it: %+v, want it untouched: %+v", want.ID, got, want)
		}
	}
	a.mu.Lock()
	warned := len(a.warned["c1"]) + len(a.warned["c2"])
	a.mu.Unlock()
	if warned != 2 {
		t.Errorf("%d warnings for the two containers naming others' services, want 2", warned)
	}
	for _, id := range []string{"c1", "c2"} {
		before := d.inspected(id)
		d.set(webContainer(id, false))
		d.events <- Event{ContainerID: id, Action: "die", Time: time.Now()}
		eventually(t, id+"'s stop read", func() bool { return d.inspected(id) > before })
	}
	eventually(t, "passes over", a.idle)
	if !c.has("vault") || !c.has("db") {
		t.Errorf("the containers' stop deregistered the services they named: vault %v, db %v", c.has("vault"), c.has("db"))
	}
}

// TestDriftReadDue: a drift check reads Consul unless the agent wrote
// within the period (a read the writes overlap is not compared), and
// writes put it off at most driftDeferredChecks periods.
func TestDriftReadDue(t *testing.T) {
	const every = 2 * time.Second
	now := time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name                string
		sinceWrite, sinceRd time.Duration
		want                bool
	}{
		{"idle", time.Hour, every, true},
		{"never wrote", now.Sub(time.Time{}), every, true},
		{"wrote a period ago", every, every, true},
		{"writing", 10 * time.Millisecond, every, false},
		{"writing, read put off almost the most", time.Millisecond, driftDeferredChecks*every - time.Millisecond, false},
		{"writing, read put off the most", time.Millisecond, driftDeferredChecks * every, true},
	} {
		if got := driftReadDue(now, now.Add(-tc.sinceWrite), now.Add(-tc.sinceRd), every); got != tc.want {
			t.Errorf("%s: driftReadDue = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestResyncPassesOverAnUnreadableServiceItCannotRemove: a service
// carrying this node's marker but no container ID (written by another
// tool, or by hand) is removed at each resync; one whose removal failed
// (an ACL denying it) failed the whole resync, before the containers of
// the other registrations were queued: a gone container's services
// stayed, and the resync was retried within 30 s for good, each time
// reading every running container again. It is now logged and passed
// over.
func TestResyncPassesOverAnUnreadableServiceItCannotRemove(t *testing.T) {
	ctx := context.Background()
	d, c := newFakeDocker(), &fakeCatalog{services: map[string]Service{}}
	a := newPassAgent(t, d, c)
	c.services["odd"] = Service{ID: "odd", Meta: map[string]string{MetaNode: "n1"}}
	c.deregisterErr = map[string]error{"odd": errors.New("Unexpected response code: 403 (Permission denied)")}
	for i := range 20 { // registrations of gone containers, listed in map order
		id := fmt.Sprintf("gone%02d", i)
		c.services[id] = Service{ID: "n1:" + id + ":8080", Meta: map[string]string{MetaNode: "n1", MetaContainerID: id}}
	}
	if err := a.resync(ctx); err != nil {
		t.Fatalf("resync: %v", err)
	}
	a.queue.mu.Lock()
	defer a.queue.mu.Unlock()
	for i := range 20 {
		if id := fmt.Sprintf("gone%02d", i); a.queue.queued[id] == 0 {
			t.Errorf("container %s, which has a registration, not queued", id)
		}
	}
}

// TestForeignWarningQuotesToShow: the warning of a SERVICE_ID another
// node's agent registered quotes that node's name, a Meta value any
// Consul writer chooses, with what would not show escaped (U+3164 reads
// as nothing, and %q left it as it is).
func TestForeignWarningQuotesToShow(t *testing.T) {
	c := &fakeCatalog{services: map[string]Service{"api": {ID: "api", Meta: map[string]string{MetaNode: "n2\u3164"}}}}
	a, err := NewAgent(Config{Policy: Policy{Node: "n1"}}, newFakeDocker(), c, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if foreign, err := a.foreign(context.Background(), Service{ID: "api", Meta: map[string]string{MetaContainerID: "c1"}}); !foreign || err != nil {
		t.Fatalf("foreign = %t, %v; want true", foreign, err)
	}
	var problems []string
	for w := range a.warned["c1"] {
		problems = append(problems, w.Problem)
	}
	if len(problems) != 1 || !strings.Contains(problems[0], `the underlay agent of node "n2\u3164"`) {
		t.Errorf("warnings %q, want one naming node \"n2\\u3164\"", problems)
	}
}
