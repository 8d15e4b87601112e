package dockerhost

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/go-connections/nat"
	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/register"
)

func TestToEvent(t *testing.T) {
	at := time.Unix(1700000000, 5)
	tests := []struct {
		name string
		m    events.Message
		want register.Event
		ok   bool
	}{
		{"start", events.Message{Type: events.ContainerEventType, Action: "start", Actor: events.Actor{ID: "c1"}, TimeNano: at.UnixNano()},
			register.Event{ContainerID: "c1", Action: "start", Time: at}, true},
		{"health status keeps its verb", events.Message{Type: events.ContainerEventType, Action: "health_status: healthy", Actor: events.Actor{ID: "c1"}, TimeNano: at.UnixNano()},
			register.Event{ContainerID: "c1", Action: "health_status", Time: at}, true},
		{"network connect names the container", events.Message{Type: events.NetworkEventType, Action: "connect",
			Actor: events.Actor{ID: "net1", Attributes: map[string]string{"container": "c2"}}, TimeNano: at.UnixNano()},
			register.Event{ContainerID: "c2", Action: "connect", Time: at, NetworkID: "net1"}, true},
		{"create: the container is read before it starts", events.Message{Type: events.ContainerEventType, Action: "create", Actor: events.Actor{ID: "c1"}, TimeNano: at.UnixNano()},
			register.Event{ContainerID: "c1", Action: "create", Time: at}, true},
		{"network event without a container", events.Message{Type: events.NetworkEventType, Action: "connect", Actor: events.Actor{ID: "net1"}}, register.Event{}, false},
		{"irrelevant action", events.Message{Type: events.ContainerEventType, Action: "exec_start: sh", Actor: events.Actor{ID: "c1"}}, register.Event{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := toEvent(tt.m)
			if ok != tt.ok || !got.Time.Equal(tt.want.Time) || got.ContainerID != tt.want.ContainerID || got.Action != tt.want.Action || got.NetworkID != tt.want.NetworkID {
				t.Errorf("toEvent = %+v, %v; want %+v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
	// Without a time from Docker, the event is stamped on arrival.
	if ev, _ := toEvent(events.Message{Type: events.ContainerEventType, Action: "die", Actor: events.Actor{ID: "c"}}); time.Since(ev.Time) > time.Minute {
		t.Errorf("event without a time stamped %s", ev.Time)
	}
}

func TestToContainer(t *testing.T) {
	j := container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{
			ID: "abc", Name: "/web.1",
			State: &container.State{Running: true, ExitCode: 0, Health: &container.Health{Status: "healthy",
				Log: []*container.HealthcheckResult{{Output: "old"}, {Output: "  ok " + strings.Repeat("x", 300) + "\n"}}}},
			HostConfig: &container.HostConfig{NetworkMode: "mv"},
		},
		Config: &container.Config{Image: "img", Labels: map[string]string{"a": "b"}, Env: []string{"SERVICE_NAME=web"},
			ExposedPorts: nat.PortSet{"8080/tcp": {}}},
		NetworkSettings: &container.NetworkSettings{
			NetworkSettingsBase: container.NetworkSettingsBase{Ports: nat.PortMap{"8080/tcp": {{HostIP: "0.0.0.0", HostPort: "18080"}}}},
			Networks: map[string]*network.EndpointSettings{
				"mv":   {NetworkID: "n1", IPAddress: "10.1.0.5", GlobalIPv6Address: "fd00::5", MacAddress: "02:42:0a:01:00:05"},
				"gone": nil,
			},
		},
	}
	drivers := map[string]string{"n1": "macvlan"}
	got, err := toContainer(j, func(id string) (string, error) { return drivers[id], nil })
	if err != nil {
		t.Fatal(err)
	}
	want := register.Container{
		ID: "abc", Name: "web.1", Image: "img", Labels: map[string]string{"a": "b"}, Env: []string{"SERVICE_NAME=web"},
		Exposed: []register.Port{{Port: 8080, Proto: "tcp"}}, NetworkMode: "mv", Running: true, Health: "healthy",
		HealthOutput: "ok " + strings.Repeat("x", 197) + "…",
		Published:    []register.Binding{{Port: register.Port{Port: 8080, Proto: "tcp"}, HostIP: "0.0.0.0", HostPort: 18080}},
		Networks: []register.Endpoint{{Network: "mv", NetworkID: "n1", Driver: "macvlan", IPv4: "10.1.0.5", IPv6: "fd00::5",
			MAC: "02:42:0a:01:00:05"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("toContainer (-want +got)\n%s", diff)
	}
	_, err = toContainer(j, func(string) (string, error) { return "", errors.New("boom") })
	if err == nil || !strings.Contains(err.Error(), "network mv of container web.1: boom") {
		t.Errorf("driver failure: %v, want it named with the network and container", err)
	}
	// Before its start: Docker's "created" state, a HEALTHCHECK that
	// dockerd will run, ports to be published.
	j.State = &container.State{Status: container.StateCreated}
	j.Config.Healthcheck = &container.HealthConfig{Test: []string{"CMD-SHELL", "true"}}
	j.HostConfig.PortBindings = nat.PortMap{"8080/tcp": {{HostPort: ""}}}
	created, err := toContainer(j, func(id string) (string, error) { return drivers[id], nil })
	if err != nil || !created.Created || created.Running || !created.HealthConfigured || !created.PublishRequested {
		t.Errorf("created container: %+v, %v; want Created, HealthConfigured, PublishRequested", created, err)
	}
	for test, want := range map[string]bool{"NONE": false, "CMD": true, "bogus": false} {
		j.Config.Healthcheck = &container.HealthConfig{Test: []string{test}}
		if c, _ := toContainer(j, func(id string) (string, error) { return drivers[id], nil }); c.HealthConfigured != want {
			t.Errorf("healthcheck %q: HealthConfigured = %v, want %v", test, c.HealthConfigured, want)
		}
	}
	// A container Docker reports without config or state maps to its ID.
	bare, err := toContainer(container.InspectResponse{ContainerJSONBase: &container.ContainerJSONBase{ID: "x"}}, nil)
	if err != nil || bare.ID != "x" || bare.Running {
		t.Errorf("bare container: %+v, %v", bare, err)
	}
}

// TestToEndpoint: a network's record of an endpoint maps to what inspecting
// the container gives (addresses without their prefix length).
func TestToEndpoint(t *testing.T) {
	n := network.Inspect{Name: "mv", ID: "n1", Driver: "macvlan"}
	got := toEndpoint(n, network.EndpointResource{Name: "web.1", MacAddress: "02:42:0a:01:00:05", IPv4Address: "10.1.0.5/24", IPv6Address: "fd00::5/64"})
	want := register.Endpoint{Network: "mv", NetworkID: "n1", Driver: "macvlan", IPv4: "10.1.0.5", IPv6: "fd00::5", MAC: "02:42:0a:01:00:05"}
	if got != want {
		t.Errorf("toEndpoint = %+v, want %+v", got, want)
	}
	if got := toEndpoint(n, network.EndpointResource{IPv4Address: "10.1.0.5/24"}); got.IPv6 != "" {
		t.Errorf("no IPv6 address: got %q", got.IPv6)
	}
}

// TestStarts: which listed containers may be starting, and since when. A
// start under way holds the container, so its inspect times out; one
// that failed recorded an error and released its address.
func TestStarts(t *testing.T) {
	created := time.Unix(1700000000, 0)
	on := func(state string, networks ...string) container.Summary {
		c := container.Summary{ID: "c1", State: state, Created: created.Unix(),
			NetworkSettings: &container.NetworkSettingsSummary{Networks: map[string]*network.EndpointSettings{}}}
		for _, n := range networks {
			c.NetworkSettings.Networks[n] = &network.EndpointSettings{}
		}
		return c
	}
	inspected := func(st container.State) container.InspectResponse {
		return container.InspectResponse{ContainerJSONBase: &container.ContainerJSONBase{State: &st}}
	}
	exited := created.Add(time.Hour)
	tests := []struct {
		name string
		c    container.Summary
		j    container.InspectResponse
		err  error
		want ipam.Start
		ok   bool
	}{
		// dockerd answers for it: it is not starting (a start holds its
		// container), but created and never started, or its start cut
		// short by dockerd's death. Counted, it held back for 10 minutes
		// the reclaim of every leak on its network made since (the soak
		// saw one for 9).
		{"created, inspect answered: not starting", on("created", "pool"), inspected(container.State{}), nil, ipam.Start{}, false},
		{"created, dockerd holds it: a start under way", on("created", "pool"), container.InspectResponse{}, context.DeadlineExceeded,
			ipam.Start{Since: created}, true},
		// Its address is not in the listing: held, however old, for one
		// sweep.
		{"started between the listing and the inspect", on("created", "pool"), inspected(container.State{Running: true}), nil, ipam.Start{Since: created}, true},
		{"exited, connect pending, dockerd holds it: docker start under way", on("exited", "pool"), container.InspectResponse{}, context.DeadlineExceeded,
			ipam.Start{Since: created}, true},
		{"exited, connect pending, dockerd answers: its start is over", on("exited", "pool"), inspected(container.State{ExitCode: 0, FinishedAt: exited.Format(time.RFC3339Nano)}), nil, ipam.Start{}, false},
		{"a failed start", on("created", "pool"), inspected(container.State{ExitCode: 128, Error: "underlay ipam: no address"}), nil, ipam.Start{}, false},
		// Between two starts: its exit released the address, its next
		// start will hold the container.
		{"restarting, between two starts", on("restarting", "pool"),
			inspected(container.State{Running: true, Restarting: true, FinishedAt: exited.Format(time.RFC3339Nano)}), nil, ipam.Start{}, false},
		{"restarting, started again since the listing: from its last exit", on("restarting", "pool"),
			inspected(container.State{Running: true, FinishedAt: exited.Format(time.RFC3339Nano)}), nil, ipam.Start{Since: exited}, true},
		{"restarting, dockerd holds it", on("restarting", "pool"), container.InspectResponse{}, context.DeadlineExceeded,
			ipam.Start{Since: created}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := startOf(tt.c, tt.j, tt.err, time.Time{})
			if ok != tt.ok || !got.Since.Equal(tt.want.Since) {
				t.Errorf("startOf = %+v, %v; want %+v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
	// Held by its start, a container whose death was seen started after
	// it; a death dated before its creation (clocks apart) does not date
	// it.
	for _, died := range []time.Time{exited, created.Add(-time.Hour)} {
		want := max(died.Unix(), created.Unix())
		if got, ok := startOf(on("restarting", "pool"), container.InspectResponse{}, context.DeadlineExceeded, died); !ok || got.Since.Unix() != want {
			t.Errorf("restarting, dockerd holds it, died at %v: startOf = %+v, %v; want since %v", died, got, ok, time.Unix(want, 0))
		}
	}
	for _, tt := range []struct {
		c       container.Summary
		pending bool
		want    string
	}{
		{on("created", "pool", "bridge"), false, "[pool]"},
		{on("restarting", "pool"), false, "[pool]"},
		{on("running", "pool"), false, "[]"},
		{on("running", "pool"), true, "[]"},
		{on("exited", "pool"), false, "[]"},
		{on("exited", "pool"), true, "[pool]"},
		{on("created", "bridge", "none", "host"), false, "[]"},
	} {
		if got := fmt.Sprint(startNetworks(tt.c, tt.pending)); got != tt.want {
			t.Errorf("startNetworks(%s on %v, pending %v) = %s, want %s", tt.c.State, tt.c.NetworkSettings.Networks, tt.pending, got, tt.want)
		}
	}
}

// TestConnects: a container connected to a macvlan or ipvlan network is
// pending until it starts, dies, is destroyed or disconnected; other
// networks' connects are not followed.
func TestConnects(t *testing.T) {
	connect := func(driver, id string) events.Message {
		return events.Message{Type: events.NetworkEventType, Action: events.ActionConnect, TimeNano: 1,
			Actor: events.Actor{ID: "net", Attributes: map[string]string{"container": id, "type": driver, "name": "n"}}}
	}
	ctr := func(action events.Action, id string) events.Message {
		return events.Message{Type: events.ContainerEventType, Action: action, Actor: events.Actor{ID: id}}
	}
	var c connects
	for _, m := range []events.Message{connect("macvlan", "a"), connect("ipvlan", "b"), connect("bridge", "c"),
		connect("macvlan", "d"), connect("macvlan", "e"), connect("macvlan", "f"), ctr(events.ActionCreate, "a")} {
		c.note(m)
	}
	for id, want := range map[string]bool{"a": true, "b": true, "c": false, "d": true} {
		if c.has(id) != want {
			t.Errorf("after connects: %s pending %v, want %v", id, c.has(id), want)
		}
	}
	c.note(ctr(events.ActionStart, "a"))
	c.note(ctr(events.ActionDie, "b"))
	c.note(ctr(events.ActionDestroy, "d"))
	c.note(events.Message{Type: events.NetworkEventType, Action: events.ActionDisconnect,
		Actor: events.Actor{ID: "net", Attributes: map[string]string{"container": "e", "type": "macvlan"}}})
	for id, want := range map[string]bool{"a": false, "b": false, "d": false, "e": false, "f": true} {
		if c.has(id) != want {
			t.Errorf("after start, die, destroy, disconnect: %s pending %v, want %v", id, c.has(id), want)
		}
	}
}

// TestEventFilter checks the filter dockerd is asked for, with dockerd's
// own matching (daemon/events/filter.go): an event of an asked type whose
// action equals a value, or, health_status being among them, begins with
// one. The integration tests run it against real engines.
func TestEventFilter(t *testing.T) {
	f := eventFilter()
	if !f.ExactMatch("event", "health_status") {
		t.Fatal("health_status not asked for: dockerd would match actions exactly and drop health_status: healthy")
	}
	matches := func(typ events.Type, action string) bool {
		return f.ExactMatch("type", string(typ)) && f.FuzzyMatch("event", action)
	}
	for _, action := range []string{"create", "start", "restart", "unpause", "pause", "die", "stop", "kill", "destroy", "rename", "health_status: healthy", "health_status: unhealthy", "health_status: starting"} {
		if !matches(events.ContainerEventType, action) {
			t.Errorf("container %q not asked for", action)
		}
		// Every one asked for is kept by toEvent too.
		if _, ok := toEvent(events.Message{Type: events.ContainerEventType, Action: events.Action(action), Actor: events.Actor{ID: "c"}}); !ok {
			t.Errorf("container %q asked for but dropped by toEvent", action)
		}
	}
	for _, action := range []string{"connect", "disconnect"} {
		if !matches(events.NetworkEventType, action) {
			t.Errorf("network %q not asked for", action)
		}
	}
	for _, action := range []string{"exec_create: /testserver -probe", "exec_start: /testserver -probe", "exec_die", "exec_detach", "attach", "detach", "resize", "top", "oom", "commit", "copy", "export", "update", "prune"} {
		if matches(events.ContainerEventType, action) {
			t.Errorf("container %q asked for; dockerd would send it to be dropped", action)
		}
	}
	if matches(events.ImageEventType, "create") || matches(events.VolumeEventType, "destroy") {
		t.Error("image or volume events asked for")
	}
}

func TestRunningEndpoints(t *testing.T) {
	ep := func(netID, ip string) *network.EndpointSettings {
		return &network.EndpointSettings{NetworkID: netID, IPAddress: ip, GlobalIPv6Address: "fd00::5", MacAddress: "02:42:0a:82:00:05"}
	}
	list := []container.Summary{
		{ID: "c1", State: container.StateRunning, NetworkSettings: &container.NetworkSettingsSummary{Networks: map[string]*network.EndpointSettings{"mv": ep("n1", "10.130.0.5"), "gone": nil}}},
		{ID: "c2", State: container.StateExited, NetworkSettings: &container.NetworkSettingsSummary{Networks: map[string]*network.EndpointSettings{"mv": ep("n1", "10.130.0.6")}}},
		{ID: "c3", State: container.StateRunning},
		// An ID filter is also a prefix: c1 asked for finds c10 too.
		{ID: "c10", State: container.StateRunning},
	}
	got := runningEndpoints(list, []string{"c1", "c2", "c3"})
	want := map[string][]register.Endpoint{
		"c1": {{Network: "mv", NetworkID: "n1", IPv4: "10.130.0.5", IPv6: "fd00::5", MAC: "02:42:0a:82:00:05"}},
		"c3": {},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("runningEndpoints (-want +got):\n%s", diff)
	}
}
