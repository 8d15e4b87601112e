package lab

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDamagedRecord: a lab.json cut short, edited by hand or written by
// something else is refused, with the value and the way out named, by
// every command that reads it — never a panic, never a plan of another
// lab's links or of addresses the lab did not take. Before, one without a
// management subnet (or an IPv6 one) panicked in newPlan; one naming
// another lab planned that lab's links (a partition fault took down
// another lab's node), one with a LAN's /24 as its management subnet was
// repaired onto the LAN's addresses.
func TestDamagedRecord(t *testing.T) {
	const cfg = `"name":"dmg","nodes":2,"no_agent":true`
	for _, tc := range []struct {
		name, json, want string
	}{
		{"no management subnet", `{"config":{` + cfg + `}}`, "management subnet"},
		{"empty config", `{"config":{},"management_subnet":"172.31.5.0/24"}`, `lab ""`},
		{"IPv6 management subnet", `{"config":{` + cfg + `},"management_subnet":"fd00::/24"}`, "fd00::/24"},
		{"a LAN as management subnet", `{"config":{` + cfg + `},"management_subnet":"192.168.1.0/24"}`, "192.168.1.0/24"},
		{"a wide management subnet", `{"config":{` + cfg + `},"management_subnet":"172.31.0.0/16"}`, "172.31.0.0/16"},
		{"another lab's name", `{"config":{"name":"other","nodes":2,"no_agent":true},"management_subnet":"172.31.5.0/24"}`, `"other"`},
		{"negative nodes", `{"config":{"name":"dmg","nodes":-3,"no_agent":true},"management_subnet":"172.31.5.0/24"}`, "-3"},
		{"too many nodes", `{"config":{"name":"dmg","nodes":300,"no_agent":true},"management_subnet":"172.31.5.0/24"}`, "300"},
		{"more consul servers than nodes", `{"config":{"name":"dmg","nodes":1,"consul_servers":3,"no_agent":true},"management_subnet":"172.31.5.0/24"}`, "--consul-servers 3"},
		{"public underlay subnet", `{"config":{` + cfg + `,"underlay_subnet":"8.8.0.0/16"},"management_subnet":"172.31.5.0/24"}`, "8.8.0.0/16"},
		{"cut short", `{"config":{` + cfg, "unexpected end"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if err := os.MkdirAll(filepath.Join(root, "dmg"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, "dmg", "lab.json"), []byte(tc.json), 0o644); err != nil {
				t.Fatal(err)
			}
			labs := At(root)
			check := func(op string, err error) {
				t.Helper()
				if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "lab down --name dmg") {
					t.Errorf("%s: %v; want an error naming %q and `lab down --name dmg`", op, err, tc.want)
				}
			}
			_, err := labs.GetStatus(context.Background(), "dmg")
			check("status", err)
			_, err = labs.LogPath("dmg", "node1", "agent")
			check("logs", err)
			_, err = labs.RecordedConfig("dmg")
			check("recorded config", err)
			err = labs.SetManagementLink(context.Background(), "dmg", "node1", false)
			check("partition", err)
			_, _, err = prepare(root, Config{Name: "dmg", Nodes: 2, NoAgent: true}.withDefaults(), noRoutes)
			check("up", err)
		})
	}
}
