package dockerhost

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/inventory"
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
