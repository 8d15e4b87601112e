package dockerhost

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/network"

	"github.com/underlay/underlay/internal/testdocker"
)

// createdDockerd is a fake dockerd listing list, whose every container's
// inspect answers created and never started (counted in inspects), whose
// networks are macvlan ones, and whose event stream sends what comes on
// events until a value comes on breaks, which ends the stream.
func createdDockerd(t *testing.T, list []container.Summary, events <-chan string, breaks <-chan struct{}) (*Source, *atomic.Int32) {
	t.Helper()
	var inspects atomic.Int32
	d := testdocker.New(t)
	api := d.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		netID, isNet := strings.CutPrefix(r.URL.Path, "/v1.41/networks/")
		switch {
		case r.URL.Path == "/v1.41/containers/json":
			json.NewEncoder(w).Encode(list)
		case isNet:
			json.NewEncoder(w).Encode(network.Inspect{ID: netID, Name: "net-" + netID, Driver: "macvlan"})
		case strings.HasPrefix(r.URL.Path, "/v1.41/containers/"):
			inspects.Add(1)
			id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1.41/containers/"), "/json")
			json.NewEncoder(w).Encode(container.InspectResponse{ContainerJSONBase: &container.ContainerJSONBase{
				ID: id, State: &container.State{Status: container.StateCreated}}})
		case r.URL.Path == "/v1.41/events":
			w.(http.Flusher).Flush()
			for {
				select {
				case e := <-events:
					fmt.Fprintln(w, e)
					w.(http.Flusher).Flush()
				case <-breaks:
					return
				case <-r.Context().Done():
					return
				}
			}
		default:
			http.Error(w, `{"message":"not faked"}`, http.StatusNotFound)
		}
	}))
	return NewSource(api), &inspects
}

// TestHeldAddressesInspectAnIdleCreatedContainerOnce: every leak sweep
// inspected every container created and never started on a macvlan or
// ipvlan network, to see whether its start was under way, at every sweep,
// forever (a stack's container left created by a failed deploy, a
// `docker create` kept for later). While the connect watch follows
// Docker's events, one found not starting is now inspected again only
// once an event names it (its start connects it to its network) or the
// listing shows it in another state, or the stream was down (events
// missed); with no stream, every sweep inspects it, as before.
func TestHeldAddressesInspectAnIdleCreatedContainerOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, breaks := make(chan string), make(chan struct{})
	src, inspects := createdDockerd(t, createdOn("mv", 3, map[string]string{"mv": "id-mv"}), events, breaks)
	watching := make(chan struct{})
	go func() { defer close(watching); src.WatchConnects(ctx) }()
	defer func() { cancel(); <-watching }()
	connect := func(id string) {
		t.Helper()
		events <- fmt.Sprintf(`{"Type":"network","Action":"connect","Actor":{"ID":"id-mv","Attributes":{"container":%q,"name":"mv","type":"macvlan"}},"timeNano":%d}`, id, time.Now().UnixNano())
		waitFor(t, func() bool { return src.connected.has(id) })
	}
	sweep := func(want int32) {
		t.Helper()
		before := inspects.Load()
		local, err := src.HeldAddresses(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(local.Starts) != 0 {
			t.Errorf("starts %v, want none", local.Starts)
		}
		if got := inspects.Load() - before; got != want {
			t.Errorf("sweep inspected %d containers, want %d", got, want)
		}
	}
	connect("probe") // the watch is following: it handled an event
	sweep(3)
	sweep(0)
	sweep(0)
	connect("mv1") // its start began
	sweep(1)
	sweep(0)
	// Events missed while the stream was down: all inspected again.
	breaks <- struct{}{}
	connect("probe2") // on the stream subscribed again
	sweep(3)
	sweep(0)
}

// TestConnectsIdleOnlyWhenNothingCameSinceTheInspect: an inspect that
// found a created container not starting tells nothing when an event
// named the container after it was sent (its start may have begun since
// dockerd answered: its pending connect is kept too), or when the event
// stream was down meanwhile (such an event may have been missed).
func TestConnectsIdleOnlyWhenNothingCameSinceTheInspect(t *testing.T) {
	connect := events.Message{Type: events.NetworkEventType, Action: events.ActionConnect,
		Actor: events.Actor{ID: "id-mv", Attributes: map[string]string{"container": "c1", "type": "macvlan"}}}
	var c connects
	c.stream(true)
	mark := c.mark()
	c.note(connect)
	c.settled("c1", container.StateCreated, mark)
	if c.isIdle("c1", container.StateCreated) || !c.has("c1") {
		t.Errorf("c1 idle %v, pending %v after a connect that came after its inspect was sent; want not idle, pending",
			c.isIdle("c1", container.StateCreated), c.has("c1"))
	}
	mark = c.mark()
	c.settled("c1", container.StateCreated, mark)
	if !c.isIdle("c1", container.StateCreated) || c.has("c1") {
		t.Error("c1 not idle, or still pending, after an inspect sent past every event")
	}
	if c.isIdle("c1", container.StateExited) {
		t.Error("c1 idle in another state than it was found in")
	}
	mark = c.mark()
	c.stream(false)
	c.stream(true)
	c.settled("c2", container.StateCreated, mark)
	if c.isIdle("c1", container.StateCreated) || c.isIdle("c2", container.StateCreated) {
		t.Error("containers idle across a break of the event stream")
	}
	c.stream(false)
	c.settled("c3", container.StateCreated, c.mark())
	if c.isIdle("c3", container.StateCreated) {
		t.Error("c3 idle with the event stream down")
	}
}

// TestConnectsForgetEventsNoInspectWaitsFor: every event naming a
// container was remembered, by container ID, until a sweep's listing
// pruned those of containers gone; sweeps that failed before listing
// (Consul out of reach, dockerd's listing failing) while the event
// stream ran on kept every ID a busy host's events named:
//
//	100000 container IDs remembered after as many events with no sweep under way, want none
//
// An event is now remembered only while an inspect is in flight (a
// mark taken, not done): only such an inspect's settling reads it.
func TestConnectsForgetEventsNoInspectWaitsFor(t *testing.T) {
	var c connects
	c.stream(true)
	const n = 100000
	for i := range n {
		c.note(events.Message{Type: events.ContainerEventType, Action: events.ActionDie, Actor: events.Actor{ID: fmt.Sprintf("c%d", i)}})
	}
	c.mu.Lock()
	kept := len(c.named)
	c.mu.Unlock()
	if kept != 0 {
		t.Errorf("%d container IDs remembered after as many events with no sweep under way, want none", kept)
	}
	// An inspect in flight still learns of an event after its mark.
	mark := c.mark()
	c.note(events.Message{Type: events.ContainerEventType, Action: events.ActionCreate, Actor: events.Actor{ID: "c1"}})
	c.settled("c1", container.StateCreated, mark)
	if c.isIdle("c1", container.StateCreated) {
		t.Error("c1 idle after an event named it while its inspect was in flight")
	}
	c.done()
	c.mu.Lock()
	kept = len(c.named)
	c.mu.Unlock()
	if kept != 0 {
		t.Errorf("%d container IDs remembered once no inspect is in flight, want none", kept)
	}
}
