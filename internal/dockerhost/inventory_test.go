package dockerhost

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/testdocker"
)

// sourceOf is a Source that knows the drivers of networks (by ID)
// without asking Docker.
func sourceOf(drivers map[string]string) *Source {
	s := NewSource(nil)
	s.drivers = drivers
	return s
}

// TestEndpointsNameContainersByTheirOwnName: dockerd lists a container's
// names sorted, its legacy links' among them ("/web/db": container db
// as web's link db), and "/web/db" sorts before "/db". The inventory
// named the container by the first, "web/db"; docker ps shows the name
// without a link's "/", as underlay ips now does.
func TestEndpointsNameContainersByTheirOwnName(t *testing.T) {
	created := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	on := func(id string, names ...string) container.Summary {
		return container.Summary{ID: id, Names: names, State: container.StateRunning, Created: created.Unix(),
			NetworkSettings: &container.NetworkSettingsSummary{Networks: map[string]*network.EndpointSettings{
				"mv": {NetworkID: "n1", IPAddress: "10.1.0.5", MacAddress: "02:42:0a:01:00:05"}}}}
	}
	const id = "0123456789ab0123456789ab0123456789ab0123456789ab0123456789abcdef"
	for _, tc := range []struct {
		name  string
		names []string
		want  string
	}{
		{"linked by another container", []string{"/web/db", "/db"}, "db"},
		{"linked by two", []string{"/api/cache", "/cache", "/web/cache"}, "cache"},
		{"no link", []string{"/db"}, "db"},
		{"no name", nil, "0123456789ab"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := sourceOf(map[string]string{"n1": "macvlan"}).endpoints(context.Background(), []container.Summary{on(id, tc.names...)}, "node1")
			if err != nil {
				t.Fatal(err)
			}
			want := []inventory.Entry{{IP: "10.1.0.5", MAC: "02:42:0a:01:00:05", Node: "node1", Network: "mv", Container: tc.want, ID: id, Since: created}}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("endpoints (-want +got):\n%s", d)
			}
		})
	}
}

// TestFollowAsksForItsActionsOnly: the inventory's change signal and the
// pending connects follow Docker's events; they asked dockerd for every
// container and network event, so each HEALTHCHECK probe of every
// container (exec_create, exec_start, exec_die) came twice, decoded to be
// dropped. They now ask, as register does, for the actions they handle;
// dockerd matches those exactly (daemon/events/filter.go).
func TestFollowAsksForItsActionsOnly(t *testing.T) {
	asked := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1.41/events" {
			http.Error(w, `{"message":"not faked"}`, http.StatusNotFound)
			return
		}
		select {
		case asked <- r.URL.Query().Get("filters"):
		default:
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done() // a stream, until the client goes
	}))
	t.Cleanup(srv.Close)
	api, err := client.NewClientWithOpts(client.WithHost("tcp://"+srv.Listener.Addr().String()), client.WithVersion("1.41"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	NewSource(api).Changes(ctx)
	f, err := filters.FromJSON(<-asked)
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []events.Type{events.ContainerEventType, events.NetworkEventType} {
		if !f.ExactMatch("type", string(typ)) {
			t.Errorf("%s events not asked for", typ)
		}
	}
	// What Changes and WatchConnects handle.
	for _, action := range []events.Action{events.ActionStart, events.ActionDie, events.ActionDestroy, events.ActionRename, events.ActionConnect, events.ActionDisconnect} {
		if !f.ExactMatch("event", string(action)) {
			t.Errorf("%q not asked for", action)
		}
	}
	for _, action := range []string{"exec_create: /bin/check", "exec_start: /bin/check", "exec_die", "health_status: healthy", "attach", "resize", "top"} {
		if !f.Contains("event") || f.ExactMatch("event", action) {
			t.Errorf("%q asked for: dockerd would send it to be dropped", action)
		}
	}
}

// hangingDockerd is a fake dockerd (API 1.41) serving list at
// /containers/json and the networks of inspect (by ID) at
// /networks/ID; a network's inspect answers 500 with its message when
// failing names it, and never when hanging does, nor the listing when
// listHangs: those wait until the client goes.
func hangingDockerd(t *testing.T, list []container.Summary, inspect map[string]network.Inspect, failing map[string]string, hanging map[string]bool, listHangs bool) *client.Client {
	t.Helper()
	d := testdocker.New(t)
	wait := d.Hang
	return d.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		id, isNet := strings.CutPrefix(r.URL.Path, "/v1.41/networks/")
		switch {
		case r.URL.Path == "/v1.41/containers/json" && listHangs:
			wait(r)
		case r.URL.Path == "/v1.41/containers/json":
			json.NewEncoder(w).Encode(list)
		case isNet && hanging[id]:
			wait(r)
		case strings.HasPrefix(r.URL.Path, "/v1.41/containers/") && hanging[strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1.41/containers/"), "/json")]:
			wait(r)
		case isNet && failing[id] != "":
			w.WriteHeader(http.StatusInternalServerError)
			json.NewEncoder(w).Encode(map[string]string{"message": failing[id]})
		case isNet && inspect[id].ID != "":
			json.NewEncoder(w).Encode(inspect[id])
		default:
			http.Error(w, `{"message":"not faked"}`, http.StatusNotFound)
		}
	}))
}

// endpointsWithin runs src.Endpoints, failing the test when it is still
// waiting after a minute (not a measure of speed: the hang the tests are
// about).
func endpointsWithin(t *testing.T, src *Source) ([]inventory.Entry, error) {
	t.Helper()
	type result struct {
		es  []inventory.Entry
		err error
	}
	done := make(chan result, 1)
	go func() {
		es, err := src.Endpoints(context.Background(), "node1")
		done <- result{es, err}
	}()
	select {
	case r := <-done:
		return r.es, r.err
	case <-time.After(time.Minute):
		t.Fatal("Endpoints still waiting after a minute for a dockerd that does not answer")
		return nil, nil
	}
}

// TestEndpointsReportTheRestPastAnUnreadableNetwork: a network inspect
// that failed with other than 404 (dockerd's 500, a network whose
// driver plugin is gone) failed the node's whole inventory at every
// period, and one that dockerd never answered held it for good: no
// address of the node was published again. The other networks' addresses
// are now reported, and those of a network whose inspect failed or timed
// out (each bounded, as every call of the inventory's is) are listed
// with the error (network_problem): the node holds them, whatever the
// network is.
func TestEndpointsReportTheRestPastAnUnreadableNetwork(t *testing.T) {
	created := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	on := func(id string, nets map[string]string) container.Summary {
		c := container.Summary{ID: id, Names: []string{"/" + id}, State: container.StateRunning, Created: created.Unix(),
			NetworkSettings: &container.NetworkSettingsSummary{Networks: map[string]*network.EndpointSettings{}}}
		for name, ip := range nets {
			c.NetworkSettings.Networks[name] = &network.EndpointSettings{NetworkID: "id-" + name, IPAddress: ip}
		}
		return c
	}
	list := []container.Summary{
		on("a", map[string]string{"mv": "10.1.0.5", "broken": "10.2.0.5"}),
		on("b", map[string]string{"hung": "10.3.0.5", "br": "172.18.0.5"}),
	}
	api := hangingDockerd(t, list,
		map[string]network.Inspect{"id-mv": {ID: "id-mv", Name: "mv", Driver: "macvlan"}, "id-br": {ID: "id-br", Name: "br", Driver: "bridge"}},
		map[string]string{"id-broken": "plugin not found"}, map[string]bool{"id-hung": true}, false)
	src := NewSource(api)
	// Short, for the hung network; long enough for the answered calls on
	// a loaded machine (50 ms failed the listing under -race).
	src.callWait = time.Second
	es, err := endpointsWithin(t, src)
	if err != nil {
		t.Fatalf("Endpoints: %v; want the other networks' addresses", err)
	}
	got := map[string]string{}
	for _, e := range es {
		got[e.Network+" "+e.IP] = e.NetworkProblem
	}
	for _, want := range []struct{ key, problem string }{
		{"mv 10.1.0.5", ""}, {"broken 10.2.0.5", "plugin not found"}, {"hung 10.3.0.5", "deadline exceeded"},
	} {
		if p, ok := got[want.key]; !ok || !strings.Contains(p, want.problem) || (want.problem == "") != (p == "") {
			t.Errorf("%s: listed %v, problem %q; want it listed with a problem saying %q", want.key, ok, p, want.problem)
		}
	}
	if len(es) != 3 {
		t.Errorf("Endpoints = %+v, want the three underlay or unreadable networks' addresses", es)
	}
}

// TestEndpointsDoNotWaitForAListingForGood: the inventory's container
// listing had no deadline, so a dockerd that never answered it held the
// node's inventory for good, with no warning. It is now bounded: the
// period fails with an error, and the next one tries again.
func TestEndpointsDoNotWaitForAListingForGood(t *testing.T) {
	src := NewSource(hangingDockerd(t, nil, nil, nil, nil, true))
	src.callWait = 50 * time.Millisecond
	if _, err := endpointsWithin(t, src); err == nil || !strings.Contains(err.Error(), "list containers") {
		t.Errorf("Endpoints: %v, want the listing's failure", err)
	}
}

// TestHeldAddressesDoNotWaitForAListingForGood: the reclaim sweep's
// listing (HeldAddresses) had no deadline either: a dockerd that never
// answered it held every later sweep of the node's leaks. It is bounded
// as the inventory's: the sweep fails, and the next tries again.
func TestHeldAddressesDoNotWaitForAListingForGood(t *testing.T) {
	src := NewSource(hangingDockerd(t, nil, nil, nil, nil, true))
	src.callWait = 50 * time.Millisecond
	done := make(chan error, 1)
	go func() {
		_, err := src.HeldAddresses(context.Background())
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "list containers") {
			t.Errorf("HeldAddresses: %v, want the listing's failure", err)
		}
	case <-time.After(time.Minute): // not a measure of speed: the hang this test is about
		t.Fatal("HeldAddresses still waiting after a minute for a dockerd that does not answer")
	}
}

// TestRegistrationCallsDoNotWaitForGood: the registration's listings
// (RunningContainers at each resync, RunningEndpoints checking each burst
// of starts) and its inspect had no deadline: a dockerd that never
// answered held the resyncs, or a worker and every later check, for good.
// Before: "RunningContainers still waiting after a minute".
func TestRegistrationCallsDoNotWaitForGood(t *testing.T) {
	src := NewSource(hangingDockerd(t, nil, nil, nil, map[string]bool{"c1": true}, true))
	src.callWait, src.inspectWait = 50*time.Millisecond, 50*time.Millisecond
	for _, c := range []struct {
		name, want string
		call       func() error
	}{
		{"RunningContainers", "list containers", func() error { _, err := src.RunningContainers(context.Background()); return err }},
		{"RunningEndpoints", "list 1 containers", func() error { _, err := src.RunningEndpoints(context.Background(), []string{"c1"}); return err }},
		{"Inspect", "deadline exceeded", func() error { _, err := src.Inspect(context.Background(), "c1"); return err }},
	} {
		testdocker.GivesUp(t, c.name, c.want, c.call)
	}
}

// countingDockerd is a fake dockerd serving list at /containers/json,
// every container's inspect as created and never started, and the
// networks of inspect (by ID or name) at /networks/X, failing (500)
// those without an ID; it counts the requests of each kind.
func countingDockerd(t testing.TB, list []container.Summary, inspect map[string]network.Inspect) (*client.Client, *dockerCalls) {
	t.Helper()
	calls := &dockerCalls{}
	api := testdocker.New(t).Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		netID, isNet := strings.CutPrefix(r.URL.Path, "/v1.41/networks/")
		switch {
		case r.URL.Path == "/v1.41/containers/json":
			calls.lists.Add(1)
			json.NewEncoder(w).Encode(list)
		case isNet:
			calls.networks.Add(1)
			if n, ok := inspect[netID]; ok && n.ID == "" {
				http.Error(w, `{"message":"plugin not found"}`, http.StatusInternalServerError)
				return
			} else if ok {
				json.NewEncoder(w).Encode(n)
				return
			}
			http.Error(w, `{"message":"no such network"}`, http.StatusNotFound)
		case strings.HasPrefix(r.URL.Path, "/v1.41/containers/"):
			calls.containers.Add(1)
			id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1.41/containers/"), "/json")
			json.NewEncoder(w).Encode(container.InspectResponse{ContainerJSONBase: &container.ContainerJSONBase{
				ID: id, State: &container.State{Status: container.StateCreated}}})
		default:
			http.Error(w, `{"message":"not faked"}`, http.StatusNotFound)
		}
	}))
	return api, calls
}

// dockerCalls counts a countingDockerd's requests.
type dockerCalls struct {
	lists, containers, networks atomic.Int32
}

// createdOn lists n containers created and never started (docker create,
// or a start that failed), each on the networks named (by name → ID; an
// empty ID as dockerd lists a created container's endpoint on some
// versions), the ID prefixed with prefix.
func createdOn(prefix string, n int, nets map[string]string) []container.Summary {
	var out []container.Summary
	for i := range n {
		c := container.Summary{ID: fmt.Sprintf("%s%d", prefix, i), State: container.StateCreated, Created: 1700000000,
			NetworkSettings: &container.NetworkSettingsSummary{Networks: map[string]*network.EndpointSettings{}}}
		for name, id := range nets {
			c.NetworkSettings.Networks[name] = &network.EndpointSettings{NetworkID: id}
		}
		out = append(out, c)
	}
	return out
}

// TestHeldAddressesInspectOnlyStartsThatMatter: every leak sweep
// inspected every created container on any network but the engine's
// own, to see whether its start was under way, user bridge networks
// included: containers created and never started were inspected again
// at every sweep, forever, though only a start on a macvlan or ipvlan
// network can hold back the reclaim of an underlay address. Those on
// other networks are no longer inspected; a network's driver is read
// once (by ID), or once a sweep when the listing names the network
// only. Those on an underlay network, or on one whose driver cannot be
// read, still are.
func TestHeldAddressesInspectOnlyStartsThatMatter(t *testing.T) {
	var list []container.Summary
	list = append(list, createdOn("br", 50, map[string]string{"br": "id-br"})...)
	list = append(list, createdOn("noid", 20, map[string]string{"br2": ""})...)
	list = append(list, createdOn("mv", 3, map[string]string{"mv": "id-mv", "br": "id-br"})...)
	list = append(list, createdOn("gone", 1, map[string]string{"gone": "id-gone"})...)
	list = append(list, createdOn("broken", 5, map[string]string{"broken": "id-broken"})...)
	api, calls := countingDockerd(t, list, map[string]network.Inspect{
		"id-br":     {ID: "id-br", Name: "br", Driver: "bridge"},
		"br2":       {ID: "id-br2", Name: "br2", Driver: "bridge"},
		"id-mv":     {ID: "id-mv", Name: "mv", Driver: "macvlan"},
		"id-broken": {},
	})
	src := NewSource(api)
	for sweep := 1; sweep <= 2; sweep++ {
		local, err := src.HeldAddresses(context.Background())
		if err != nil {
			t.Fatalf("sweep %d: %v", sweep, err)
		}
		// Inspected and answered: not starting.
		if len(local.Starts) != 0 {
			t.Errorf("sweep %d: starts %v, want none", sweep, local.Starts)
		}
	}
	// 3 on mv, 1 on a network gone and 5 on one that cannot be read
	// (their driver unknown), each sweep.
	if got, want := calls.containers.Load(), int32(2*9); got != want {
		t.Errorf("container inspects over two sweeps = %d, want %d", got, want)
	}
	// id-br and id-mv once; br2 by name, id-gone and id-broken once a
	// sweep.
	if got, want := calls.networks.Load(), int32(2+2*3); got != want {
		t.Errorf("network inspects over two sweeps = %d, want %d", got, want)
	}
}

// TestRestartingContainerStartsFromItsDeath: a container restarting by
// its restart policy is held by its start, so its inspect does not
// answer, and the listing does not say when it last exited: its start
// was dated from its creation, before its last run. Asking by name for
// the address it released at its exit (its release held back after an
// agent's restart), it was taken for a start begun before that address
// was handed out, which may hold it, and refused; Docker leaves a
// container whose restart fails stopped. The die event Docker sends at
// its exit now dates the start.
func TestRestartingContainerStartsFromItsDeath(t *testing.T) {
	created := time.Unix(1700000000, 0)
	died := created.Add(time.Hour)
	c := container.Summary{ID: "r1", State: container.StateRestarting, Created: created.Unix(),
		NetworkSettings: &container.NetworkSettingsSummary{Networks: map[string]*network.EndpointSettings{"mv": {NetworkID: "id-mv"}}}}
	api := testdocker.New(t).Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1.41/containers/json":
			json.NewEncoder(w).Encode([]container.Summary{c})
		case "/v1.41/networks/id-mv":
			json.NewEncoder(w).Encode(network.Inspect{ID: "id-mv", Name: "mv", Driver: "macvlan"})
		default:
			// The inspect of r1: dockerd holds it while it starts.
			http.Error(w, `{"message":"not faked"}`, http.StatusInternalServerError)
		}
	}))
	src := NewSource(api)
	src.connected.note(events.Message{Type: events.ContainerEventType, Action: events.ActionDie, Actor: events.Actor{ID: "r1"}, TimeNano: died.UnixNano()})
	local, err := src.HeldAddresses(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := local.Starts["mv"]; len(got) != 1 || !got[0].Since.Equal(died) {
		t.Errorf("restarting r1, died at %v: starts %+v, want one since its death", died, got)
	}
}
