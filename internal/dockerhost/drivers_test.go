package dockerhost

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"

	"github.com/underlay/underlay/internal/testdocker"
)

// networksDockerd is a fake dockerd whose every network, asked by ID,
// is a macvlan one, and whose event stream sends events, one JSON
// document a line, then holds.
func networksDockerd(t *testing.T, events ...string) *Source {
	d := testdocker.New(t)
	api := d.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		id, isNet := strings.CutPrefix(r.URL.Path, "/v1.41/networks/")
		switch {
		case isNet:
			json.NewEncoder(w).Encode(network.Inspect{ID: id, Name: "net-" + id, Driver: "macvlan"})
		case r.URL.Path == "/v1.41/events":
			for _, e := range events {
				fmt.Fprintln(w, e)
			}
			w.(http.Flusher).Flush()
			d.Hang(r)
		default:
			http.Error(w, `{"message":"not faked"}`, http.StatusNotFound)
		}
	}))
	return NewSource(api)
}

// TestDriversForgetRemovedNetworks: the registration's cache of network
// drivers (by network ID) was never pruned: a host whose jobs create and
// remove a network each (CI runners, compose projects) kept every
// network's entry for as long as the agent ran. A network's destroy
// event now drops its entry, and the cache is bounded (maxDrivers) for
// the destroys it does not see (its event stream down meanwhile).
func TestDriversForgetRemovedNetworks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	now := time.Now().UnixNano()
	src := networksDockerd(t,
		fmt.Sprintf(`{"Type":"network","Action":"destroy","Actor":{"ID":"n0","Attributes":{"name":"net-n0","type":"macvlan"}},"timeNano":%d}`, now),
		fmt.Sprintf(`{"Type":"container","Action":"start","Actor":{"ID":"c1"},"timeNano":%d}`, now))
	if d, err := src.driver(ctx, "n0"); err != nil || d != "macvlan" {
		t.Fatalf("driver of n0: %q, %v", d, err)
	}
	evs, errs := src.Events(ctx)
	select {
	case ev := <-evs: // after n0's destroy, in order
		if ev.ContainerID != "c1" {
			t.Fatalf("event %+v, want c1's start", ev)
		}
	case err := <-errs:
		t.Fatal(err)
	}
	src.mu.Lock()
	_, kept := src.drivers["n0"]
	src.mu.Unlock()
	if kept {
		t.Error("network n0's driver kept after its destroy event")
	}
	// Networks made and removed while no event came.
	for i := range 2 * maxDrivers {
		if _, err := src.driver(ctx, fmt.Sprintf("gone%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	src.mu.Lock()
	n := len(src.drivers)
	src.mu.Unlock()
	if n > maxDrivers {
		t.Errorf("%d drivers kept after %d networks came and went, want at most %d", n, 2*maxDrivers, maxDrivers)
	}
}
