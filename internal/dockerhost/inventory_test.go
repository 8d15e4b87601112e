package dockerhost

import (
	"context"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
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
