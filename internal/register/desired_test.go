package register

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/termtext"
)

const (
	testNode   = "node1"
	testHostIP = "192.0.2.10"
	testCID    = "3f4e5d6c7b8a9f0e"
)

func testPolicy() Policy { return Policy{Node: testNode, HostIP: testHostIP} }

// lanEndpoint is a macvlan endpoint with both address families and a MAC.
func lanEndpoint() Endpoint {
	return Endpoint{
		Network: "lan", NetworkID: "net-lan", Driver: "macvlan",
		IPv4: "10.1.2.3", IPv6: "fd00::3", MAC: "02:42:0a:01:02:03",
	}
}

// macvlanContainer is a running container named "web" on one macvlan
// network exposing 80/tcp; mods adjust it per case.
func macvlanContainer(mods ...func(*Container)) Container {
	c := Container{
		ID:          testCID,
		Name:        "web",
		Image:       "nginx:1.27",
		Running:     true,
		NetworkMode: "lan",
		Exposed:     []Port{{80, "tcp"}},
		Networks:    []Endpoint{lanEndpoint()},
	}
	for _, m := range mods {
		m(&c)
	}
	return c
}

// bridgeContainer is a running container named "shop" on Docker's default
// bridge, exposing 80, 443 and 9000 and publishing 80 and 443.
func bridgeContainer(mods ...func(*Container)) Container {
	c := Container{
		ID:          testCID,
		Name:        "shop",
		Image:       "shop:2",
		Running:     true,
		NetworkMode: "bridge",
		Exposed:     []Port{{80, "tcp"}, {443, "tcp"}, {9000, "tcp"}},
		Published: []Binding{
			{Port: Port{80, "tcp"}, HostIP: "0.0.0.0", HostPort: 8080},
			{Port: Port{80, "tcp"}, HostIP: "::", HostPort: 8080},
			{Port: Port{443, "tcp"}, HostIP: "::", HostPort: 8443},
		},
		Networks: []Endpoint{{Network: "bridge", NetworkID: "net-bridge", Driver: "bridge", IPv4: "172.17.0.2", MAC: "02:42:ac:11:00:02"}},
	}
	for _, m := range mods {
		m(&c)
	}
	return c
}

func labels(kv ...string) func(*Container) {
	return func(c *Container) {
		if c.Labels == nil {
			c.Labels = map[string]string{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			c.Labels[kv[i]] = kv[i+1]
		}
	}
}

func env(kv ...string) func(*Container) {
	return func(c *Container) { c.Env = append(c.Env, kv...) }
}

func exposed(ports ...Port) func(*Container) {
	return func(c *Container) { c.Exposed = ports }
}

func baseMeta(name, image string) map[string]string {
	return map[string]string{
		MetaNode:          testNode,
		MetaContainerID:   testCID,
		MetaContainerName: name,
		MetaImage:         image,
	}
}

func lanMeta() map[string]string {
	m := baseMeta("web", "nginx:1.27")
	m[MetaNetwork] = "lan"
	m[MetaMAC] = "02:42:0a:01:02:03"
	return m
}

// withoutHashes checks that every service carries the hash of itself in
// Meta and returns copies without it, so cases need not spell hashes out.
func withoutHashes(t *testing.T, svcs []Service) []Service {
	t.Helper()
	var out []Service
	for _, s := range svcs {
		got := s.Meta[MetaHash]
		if got == "" {
			t.Errorf("service %s: Meta[%s] is empty", s.ID, MetaHash)
		} else if want := Hash(s); got != want {
			t.Errorf("service %s: Meta[%s] = %q, Hash(service) = %q", s.ID, MetaHash, got, want)
		}
		s.Meta = mapWithout(s.Meta, MetaHash)
		out = append(out, s)
	}
	return out
}

// wantWarning is an expected warning: exact key and value, and a substring
// of the problem.
type wantWarning struct {
	Key, Value, Problem string
}

// checkWarnings matches got against want in any order (some warnings come
// from map iteration) and checks that each names the container, the key and
// the value, in its fields and in String().
func checkWarnings(t *testing.T, container string, got []Warning, want []wantWarning) {
	t.Helper()
	used := make([]bool, len(got))
	for _, w := range want {
		found := false
		for i, g := range got {
			if used[i] || g.Key != w.Key || g.Value != w.Value || !strings.Contains(g.Problem, w.Problem) {
				continue
			}
			used[i], found = true, true
			if g.Container != container {
				t.Errorf("warning %v: Container = %q, want %q", g, g.Container, container)
			}
			s := g.String()
			wantParts := []string{"container " + container, w.Problem}
			if w.Key != "" {
				wantParts = append(wantParts, w.Key+"="+termtext.Q(w.Value))
			}
			for _, part := range wantParts {
				if !strings.Contains(s, part) {
					t.Errorf("warning String() = %q, want it to contain %q", s, part)
				}
			}
			break
		}
		if !found {
			t.Errorf("missing warning key=%q value=%q problem containing %q; got %q", w.Key, w.Value, w.Problem, warningStrings(got))
		}
	}
	for i, g := range got {
		if !used[i] {
			t.Errorf("unexpected warning %q", g.String())
		}
	}
}

func warningStrings(ws []Warning) []string {
	var out []string
	for _, w := range ws {
		out = append(out, w.String())
	}
	return out
}

// permutations returns every ordering of s (s is small in tests).
func permutations[T any](s []T) [][]T {
	if len(s) <= 1 {
		return [][]T{slices.Clone(s)}
	}
	var out [][]T
	for i := range s {
		rest := append(slices.Clone(s[:i]), s[i+1:]...)
		for _, p := range permutations(rest) {
			out = append(out, append([]T{s[i]}, p...))
		}
	}
	return out
}

func TestDesiredFullServices(t *testing.T) {
	tests := []struct {
		name         string
		c            Container
		policy       Policy
		want         []Service
		wantWarnings []wantWarning
	}{
		{
			name:   "macvlan tcp port with IPv4 and IPv6",
			c:      macvlanContainer(),
			policy: testPolicy(),
			want: []Service{{
				ID: "node1:web:80", Name: "nginx", Address: "10.1.2.3", Port: 80,
				Meta: lanMeta(),
				TaggedAddresses: map[string]TaggedAddress{
					"lan_ipv4": {"10.1.2.3", 80},
					"lan_ipv6": {"fd00::3", 80},
				},
			}},
		},
		{
			name:   "macvlan udp port gets :udp suffix",
			c:      macvlanContainer(exposed(Port{53, "udp"})),
			policy: testPolicy(),
			want: []Service{{
				ID: "node1:web:53:udp", Name: "nginx", Address: "10.1.2.3", Port: 53,
				Meta: lanMeta(),
				TaggedAddresses: map[string]TaggedAddress{
					"lan_ipv4": {"10.1.2.3", 53},
					"lan_ipv6": {"fd00::3", 53},
				},
			}},
		},
		{
			name: "ipvlan IPv6-only endpoint without MAC",
			c: macvlanContainer(func(c *Container) {
				c.Networks = []Endpoint{{Network: "v6", Driver: "ipvlan", IPv6: "fd00::9"}}
			}),
			policy: testPolicy(),
			want: []Service{{
				ID: "node1:web:80", Name: "nginx", Address: "fd00::9", Port: 80,
				Meta: func() map[string]string {
					m := baseMeta("web", "nginx:1.27")
					m[MetaNetwork] = "v6"
					return m
				}(),
				TaggedAddresses: map[string]TaggedAddress{"lan_ipv6": {"fd00::9", 80}},
			}},
		},
		{
			name:   "macvlan with policy tags and SERVICE_TAGS",
			c:      macvlanContainer(labels("SERVICE_TAGS", "v1,prod")),
			policy: Policy{Node: testNode, Tags: []string{"underlay", "prod"}},
			want: []Service{{
				ID: "node1:web:80", Name: "nginx", Address: "10.1.2.3", Port: 80,
				Tags: []string{"underlay", "prod", "v1"},
				Meta: lanMeta(),
				TaggedAddresses: map[string]TaggedAddress{
					"lan_ipv4": {"10.1.2.3", 80},
					"lan_ipv6": {"fd00::3", 80},
				},
			}},
		},
		{
			name:   "bridge published on 0.0.0.0 and :: registers host IP and host port",
			c:      bridgeContainer(),
			policy: testPolicy(),
			want: []Service{
				{
					ID: "node1:shop:80", Name: "shop-80", Address: testHostIP, Port: 8080,
					Meta:            baseMeta("shop", "shop:2"),
					TaggedAddresses: map[string]TaggedAddress{"lan_ipv4": {testHostIP, 8080}},
				},
				{
					ID: "node1:shop:443", Name: "shop-443", Address: testHostIP, Port: 8443,
					Meta:            baseMeta("shop", "shop:2"),
					TaggedAddresses: map[string]TaggedAddress{"lan_ipv4": {testHostIP, 8443}},
				},
			},
		},
		{
			name: "bridge published on a specific host IP registers that IP",
			c: bridgeContainer(func(c *Container) {
				c.Published = []Binding{{Port: Port{80, "tcp"}, HostIP: "198.51.100.7", HostPort: 8080}}
			}),
			policy: testPolicy(),
			want: []Service{{
				ID: "node1:shop:80", Name: "shop", Address: "198.51.100.7", Port: 8080,
				Meta:            baseMeta("shop", "shop:2"),
				TaggedAddresses: map[string]TaggedAddress{"lan_ipv4": {"198.51.100.7", 8080}},
			}},
		},
		{
			name: "bridge published on a specific IPv6 host IP",
			c: bridgeContainer(func(c *Container) {
				c.Published = []Binding{{Port: Port{80, "tcp"}, HostIP: "2001:db8::7", HostPort: 8080}}
			}),
			policy: testPolicy(),
			want: []Service{{
				ID: "node1:shop:80", Name: "shop", Address: "2001:db8::7", Port: 8080,
				Meta:            baseMeta("shop", "shop:2"),
				TaggedAddresses: map[string]TaggedAddress{"lan_ipv6": {"2001:db8::7", 8080}},
			}},
		},
		{
			name:   "bridge with Internal policy registers container IP and exposed ports",
			c:      bridgeContainer(),
			policy: Policy{Node: testNode, HostIP: testHostIP, Internal: true},
			want: func() []Service {
				var out []Service
				for _, p := range []int{80, 443, 9000} {
					m := baseMeta("shop", "shop:2")
					m[MetaNetwork] = "bridge"
					m[MetaMAC] = "02:42:ac:11:00:02"
					out = append(out, Service{
						ID: fmt.Sprintf("node1:shop:%d", p), Name: fmt.Sprintf("shop-%d", p),
						Address: "172.17.0.2", Port: p, Meta: m,
						TaggedAddresses: map[string]TaggedAddress{"lan_ipv4": {"172.17.0.2", p}},
					})
				}
				return out
			}(),
		},
		{
			name: "host network registers host IP and exposed port",
			c: Container{
				ID: testCID, Name: "consul", Image: "hashicorp/consul:1.20", Running: true,
				NetworkMode: "host", Exposed: []Port{{8500, "tcp"}},
			},
			policy: testPolicy(),
			want: []Service{{
				ID: "node1:consul:8500", Name: "consul", Address: testHostIP, Port: 8500,
				Meta:            baseMeta("consul", "hashicorp/consul:1.20"),
				TaggedAddresses: map[string]TaggedAddress{"lan_ipv4": {testHostIP, 8500}},
			}},
		},
		{
			name: "swarm replicated task",
			c: macvlanContainer(labels(
				"com.docker.swarm.service.name", "stack_api",
				"com.docker.swarm.service.id", "svc123",
				"com.docker.swarm.task.id", "task456",
				"com.docker.swarm.task.name", "stack_api.3.task456",
				"com.docker.swarm.node.id", "nodeabc",
			)),
			policy: testPolicy(),
			want: []Service{{
				ID: "node1:web:80", Name: "stack_api", Address: "10.1.2.3", Port: 80,
				Meta: func() map[string]string {
					m := lanMeta()
					m[MetaSwarmService] = "svc123"
					m[MetaSwarmTask] = "task456"
					m[MetaSwarmNode] = "nodeabc"
					m[MetaSwarmSlot] = "3"
					return m
				}(),
				TaggedAddresses: map[string]TaggedAddress{
					"lan_ipv4": {"10.1.2.3", 80},
					"lan_ipv6": {"fd00::3", 80},
				},
			}},
		},
		{
			name: "swarm global task has no slot",
			c: macvlanContainer(labels(
				"com.docker.swarm.service.name", "stack_agent",
				"com.docker.swarm.service.id", "svc123",
				"com.docker.swarm.task.id", "task456",
				"com.docker.swarm.task.name", "stack_agent.nodeabc.task456",
				"com.docker.swarm.node.id", "nodeabc",
			)),
			policy: testPolicy(),
			want: []Service{{
				ID: "node1:web:80", Name: "stack_agent", Address: "10.1.2.3", Port: 80,
				Meta: func() map[string]string {
					m := lanMeta()
					m[MetaSwarmService] = "svc123"
					m[MetaSwarmTask] = "task456"
					m[MetaSwarmNode] = "nodeabc"
					return m
				}(),
				TaggedAddresses: map[string]TaggedAddress{
					"lan_ipv4": {"10.1.2.3", 80},
					"lan_ipv6": {"fd00::3", 80},
				},
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warnings := Desired(tt.c, tt.policy)
			if diff := cmp.Diff(tt.want, withoutHashes(t, got)); diff != "" {
				t.Errorf("Desired services mismatch (-want +got):\n%s", diff)
			}
			checkWarnings(t, tt.c.Name, warnings, tt.wantWarnings)
		})
	}
}

// placement is where a service points, for cases about address choice.
type placement struct {
	ID      string
	Address string
	Port    int
	Network string
}

func placements(svcs []Service) []placement {
	var out []placement
	for _, s := range svcs {
		out = append(out, placement{s.ID, s.Address, s.Port, s.Meta[MetaNetwork]})
	}
	return out
}

func TestDesiredNetworkChoice(t *testing.T) {
	multi := func(mods ...func(*Container)) Container {
		c := Container{
			ID: testCID, Name: "web", Image: "nginx", Running: true, NetworkMode: "lan-b",
			Exposed:   []Port{{80, "tcp"}},
			Published: []Binding{{Port: Port{80, "tcp"}, HostIP: "0.0.0.0", HostPort: 8080}},
			Networks: []Endpoint{
				{Network: "bridge", Driver: "bridge", IPv4: "172.17.0.2"},
				{Network: "lan-b", Driver: "macvlan", IPv4: "10.2.0.5"},
				{Network: "lan-a", Driver: "ipvlan", IPv4: "10.1.0.5"},
				{Network: "overlay", Driver: "overlay", IPv4: "10.0.9.5"},
			},
		}
		for _, m := range mods {
			m(&c)
		}
		return c
	}
	onlyNetworks := func(names ...string) func(*Container) {
		return func(c *Container) {
			c.Networks = slices.DeleteFunc(c.Networks, func(e Endpoint) bool { return !slices.Contains(names, e.Network) })
		}
	}
	tests := []struct {
		name         string
		c            Container
		policy       Policy
		want         []placement
		wantWarnings []wantWarning
	}{
		{
			name:   "first underlay network by name",
			c:      multi(),
			policy: testPolicy(),
			want:   []placement{{"node1:web:80", "10.1.0.5", 80, "lan-a"}},
		},
		{
			name:   "SERVICE_NETWORK label picks a macvlan network",
			c:      multi(labels("SERVICE_NETWORK", "lan-b")),
			policy: testPolicy(),
			want:   []placement{{"node1:web:80", "10.2.0.5", 80, "lan-b"}},
		},
		{
			name:   "SERVICE_NETWORK env picks a non-underlay network",
			c:      multi(env("SERVICE_NETWORK=overlay")),
			policy: testPolicy(),
			want:   []placement{{"node1:web:80", "10.0.9.5", 80, "overlay"}},
		},
		{
			name:   "policy network picks one",
			c:      multi(),
			policy: Policy{Node: testNode, HostIP: testHostIP, Network: "lan-b"},
			want:   []placement{{"node1:web:80", "10.2.0.5", 80, "lan-b"}},
		},
		{
			name:   "SERVICE_NETWORK wins over policy network",
			c:      multi(labels("SERVICE_NETWORK", "overlay")),
			policy: Policy{Node: testNode, HostIP: testHostIP, Network: "lan-b"},
			want:   []placement{{"node1:web:80", "10.0.9.5", 80, "overlay"}},
		},
		{
			name:   "policy network the container is not on falls back to underlay",
			c:      multi(),
			policy: Policy{Node: testNode, HostIP: testHostIP, Network: "elsewhere"},
			want:   []placement{{"node1:web:80", "10.1.0.5", 80, "lan-a"}},
		},
		{
			name: "underlay network without an address is passed over",
			c: multi(func(c *Container) {
				for i := range c.Networks {
					if c.Networks[i].Network == "lan-a" {
						c.Networks[i].IPv4 = ""
					}
				}
			}),
			policy: testPolicy(),
			want:   []placement{{"node1:web:80", "10.2.0.5", 80, "lan-b"}},
		},
		{
			name:   "SERVICE_NETWORK naming a network the container is not on skips it",
			c:      multi(labels("SERVICE_NETWORK", "missing")),
			policy: testPolicy(),
			want:   nil,
			wantWarnings: []wantWarning{
				{Key: "SERVICE_NETWORK", Value: "missing", Problem: "no address on that network; skipped"},
			},
		},
		{
			name: "SERVICE_NETWORK naming a network where the container has no address skips it",
			c: multi(labels("SERVICE_NETWORK", "lan-a"), func(c *Container) {
				for i := range c.Networks {
					if c.Networks[i].Network == "lan-a" {
						c.Networks[i].IPv4 = ""
					}
				}
			}),
			policy: testPolicy(),
			want:   nil,
			wantWarnings: []wantWarning{
				{Key: "SERVICE_NETWORK", Value: "lan-a", Problem: "no address on that network; skipped"},
			},
		},
		{
			name: "SERVICE_NETWORK picks a network where the container has only an IPv6 address",
			c: multi(labels("SERVICE_NETWORK", "overlay"), func(c *Container) {
				for i := range c.Networks {
					if c.Networks[i].Network == "overlay" {
						c.Networks[i].IPv4, c.Networks[i].IPv6 = "", "fd00:9::5"
					}
				}
			}),
			policy: testPolicy(),
			want:   []placement{{"node1:web:80", "fd00:9::5", 80, "overlay"}},
		},
		{
			name:   "an empty SERVICE_NETWORK names no network",
			c:      multi(labels("SERVICE_NETWORK", "")),
			policy: testPolicy(),
			want:   []placement{{"node1:web:80", "10.1.0.5", 80, "lan-a"}},
		},
		{
			name:   "no underlay network uses published port",
			c:      multi(onlyNetworks("bridge", "overlay")),
			policy: testPolicy(),
			want:   []placement{{"node1:web:80", testHostIP, 8080, ""}},
		},
		{
			name:   "no underlay network with Internal uses first network by name",
			c:      multi(onlyNetworks("overlay", "bridge")),
			policy: Policy{Node: testNode, HostIP: testHostIP, Internal: true},
			want:   []placement{{"node1:web:80", "172.17.0.2", 80, "bridge"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i, nets := range permutations(tt.c.Networks) {
				c := tt.c
				c.Networks = nets
				got, warnings := Desired(c, tt.policy)
				if diff := cmp.Diff(tt.want, placements(got)); diff != "" {
					t.Errorf("network order %d %v: placement mismatch (-want +got):\n%s", i, networkNames(nets), diff)
				}
				checkWarnings(t, c.Name, warnings, tt.wantWarnings)
			}
		})
	}
}

func networkNames(eps []Endpoint) []string {
	var out []string
	for _, e := range eps {
		out = append(out, e.Network)
	}
	return out
}

func TestDesiredPortSelection(t *testing.T) {
	tests := []struct {
		name         string
		c            Container
		policy       Policy
		want         []placement
		wantWarnings []wantWarning
	}{
		{
			name:   "exposed but unpublished port is not registered",
			c:      bridgeContainer(),
			policy: testPolicy(),
			want: []placement{
				{"node1:shop:80", testHostIP, 8080, ""},
				{"node1:shop:443", testHostIP, 8443, ""},
			},
		},
		{
			name: "binding with host port 0 is skipped",
			c: bridgeContainer(func(c *Container) {
				c.Published = []Binding{
					{Port: Port{80, "tcp"}, HostIP: "0.0.0.0", HostPort: 0},
					{Port: Port{443, "tcp"}, HostIP: "0.0.0.0", HostPort: 8443},
				}
			}),
			policy: testPolicy(),
			want:   []placement{{"node1:shop:443", testHostIP, 8443, ""}},
		},
		{
			// Docker leaves HostIP empty for a port bound on every interface.
			name: "published with no host IP registers the agent's host IP",
			c: bridgeContainer(func(c *Container) {
				c.Published = []Binding{{Port: Port{80, "tcp"}, HostIP: "", HostPort: 8080}}
			}),
			policy: testPolicy(),
			want:   []placement{{"node1:shop:80", testHostIP, 8080, ""}},
		},
		{
			name: "published on loopback and a host IP registers the host IP",
			c: bridgeContainer(func(c *Container) {
				c.Published = []Binding{
					{Port: Port{80, "tcp"}, HostIP: "127.0.0.1", HostPort: 8080},
					{Port: Port{80, "tcp"}, HostIP: "198.51.100.7", HostPort: 8080},
				}
			}),
			policy: testPolicy(),
			want:   []placement{{"node1:shop:80", "198.51.100.7", 8080, ""}},
		},
		{
			// Other hosts reaching 127.0.0.1 reach themselves.
			name: "published only on loopback registers nothing",
			c: bridgeContainer(func(c *Container) {
				c.Published = []Binding{
					{Port: Port{80, "tcp"}, HostIP: "127.0.0.1", HostPort: 8080},
					{Port: Port{443, "tcp"}, HostIP: "::1", HostPort: 8443},
				}
			}),
			policy: testPolicy(),
			want:   nil,
			wantWarnings: []wantWarning{
				{Problem: "port 80/tcp is published only on the loopback address 127.0.0.1:8080, which other hosts cannot reach; not registered"},
				{Problem: "port 443/tcp is published only on the loopback address [::1]:8443, which other hosts cannot reach; not registered"},
			},
		},
		{
			name:   "published on all interfaces without a host IP registers nothing",
			c:      bridgeContainer(),
			policy: Policy{Node: testNode},
			want:   nil,
			wantWarnings: []wantWarning{
				{Problem: "port 443/tcp is published on all interfaces but the agent knows no host IP"},
				{Problem: "port 80/tcp is published on all interfaces but the agent knows no host IP"},
			},
		},
		{
			// Docker binds a published port on its host IP, so a running
			// container's names an address of this host; one that is no
			// address at all (stale or damaged inspect data) is not the
			// host IP, where nothing listens.
			name: "published on a host IP that is no address is not registered",
			c: bridgeContainer(func(c *Container) {
				c.Published = []Binding{
					{Port: Port{80, "tcp"}, HostIP: "203.0.113.300", HostPort: 8080},
					{Port: Port{443, "tcp"}, HostIP: "0.0.0.0", HostPort: 8443},
				}
			}),
			policy: testPolicy(),
			want:   []placement{{"node1:shop:443", testHostIP, 8443, ""}},
			wantWarnings: []wantWarning{
				{Value: "203.0.113.300", Problem: "port 80/tcp is published on a host IP that is not an IP address; not registered"},
			},
		},
		{
			// IPv4-mapped forms are their IPv4 addresses: ::ffff:0.0.0.0
			// is every interface, ::ffff:127.0.0.1 loopback.
			name: "published on IPv4-mapped host IPs",
			c: bridgeContainer(func(c *Container) {
				c.Published = []Binding{
					{Port: Port{80, "tcp"}, HostIP: "::ffff:0.0.0.0", HostPort: 8080},
					{Port: Port{443, "tcp"}, HostIP: "::ffff:198.51.100.7", HostPort: 8443},
					{Port: Port{9000, "tcp"}, HostIP: "::ffff:127.0.0.1", HostPort: 9000},
				}
			}),
			policy: testPolicy(),
			want: []placement{
				{"node1:shop:80", testHostIP, 8080, ""},
				{"node1:shop:443", "198.51.100.7", 8443, ""},
			},
			wantWarnings: []wantWarning{
				{Problem: "port 9000/tcp is published only on the loopback address"},
			},
		},
		{
			name: "tcp and udp on the same port are separate services",
			c: bridgeContainer(func(c *Container) {
				c.Exposed = nil
				c.Published = []Binding{
					{Port: Port{53, "udp"}, HostIP: "0.0.0.0", HostPort: 5353},
					{Port: Port{53, "tcp"}, HostIP: "0.0.0.0", HostPort: 5353},
				}
			}),
			policy: testPolicy(),
			want: []placement{
				{"node1:shop:53", testHostIP, 5353, ""},
				{"node1:shop:53:udp", testHostIP, 5353, ""},
			},
		},
		{
			name: "macvlan registers exposed and published container ports in port order",
			c: macvlanContainer(func(c *Container) {
				c.Exposed = []Port{{9000, "tcp"}, {80, "tcp"}}
				c.Published = []Binding{{Port: Port{443, "tcp"}, HostIP: "0.0.0.0", HostPort: 8443}}
			}),
			policy: testPolicy(),
			want: []placement{
				{"node1:web:80", "10.1.2.3", 80, "lan"},
				{"node1:web:443", "10.1.2.3", 443, "lan"},
				{"node1:web:9000", "10.1.2.3", 9000, "lan"},
			},
		},
		{
			name:   "macvlan container without ports registers nothing",
			c:      macvlanContainer(exposed()),
			policy: testPolicy(),
			want:   nil,
		},
		{
			name: "host network without host IP is skipped with a warning",
			c: Container{
				ID: testCID, Name: "consul", Image: "consul", Running: true,
				NetworkMode: "host", Exposed: []Port{{8500, "tcp"}},
			},
			policy: Policy{Node: testNode},
			want:   nil,
			wantWarnings: []wantWarning{
				{Problem: "host-network container but the agent knows no host IP"},
			},
		},
		{
			name: "host network ignores container networks",
			c: Container{
				ID: testCID, Name: "consul", Image: "consul", Running: true,
				NetworkMode: "host", Exposed: []Port{{8600, "udp"}, {8500, "tcp"}},
				Networks: []Endpoint{lanEndpoint()},
			},
			policy: testPolicy(),
			want: []placement{
				{"node1:consul:8500", testHostIP, 8500, ""},
				{"node1:consul:8600:udp", testHostIP, 8600, ""},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warnings := Desired(tt.c, tt.policy)
			if diff := cmp.Diff(tt.want, placements(got)); diff != "" {
				t.Errorf("placement mismatch (-want +got):\n%s", diff)
			}
			checkWarnings(t, tt.c.Name, warnings, tt.wantWarnings)
		})
	}
}

// naming is what a service is called and tagged, for cases about metadata.
type naming struct {
	ID   string
	Name string
	Tags []string
}

func namings(svcs []Service) []naming {
	var out []naming
	for _, s := range svcs {
		out = append(out, naming{s.ID, s.Name, s.Tags})
	}
	return out
}

func TestDesiredNaming(t *testing.T) {
	twoPorts := func(mods ...func(*Container)) Container {
		return macvlanContainer(append([]func(*Container){exposed(Port{443, "tcp"}, Port{80, "tcp"})}, mods...)...)
	}
	tests := []struct {
		name         string
		c            Container
		policy       Policy
		want         []naming
		wantWarnings []wantWarning
	}{
		{
			name:   "single port takes image base name",
			c:      macvlanContainer(),
			policy: testPolicy(),
			want:   []naming{{"node1:web:80", "nginx", nil}},
		},
		{
			name:   "SERVICE_NAME names a single port",
			c:      macvlanContainer(labels("SERVICE_NAME", "frontend")),
			policy: testPolicy(),
			want:   []naming{{"node1:web:80", "frontend", nil}},
		},
		{
			name:   "SERVICE_NAME wins over swarm service name",
			c:      macvlanContainer(labels("SERVICE_NAME", "frontend", "com.docker.swarm.service.name", "stack_web")),
			policy: testPolicy(),
			want:   []naming{{"node1:web:80", "frontend", nil}},
		},
		{
			name:   "several ports get -PORT suffix",
			c:      twoPorts(),
			policy: testPolicy(),
			want: []naming{
				{"node1:web:80", "nginx-80", nil},
				{"node1:web:443", "nginx-443", nil},
			},
		},
		{
			name:   "container-wide SERVICE_NAME gets -PORT suffix",
			c:      twoPorts(labels("SERVICE_NAME", "shop")),
			policy: testPolicy(),
			want: []naming{
				{"node1:web:80", "shop-80", nil},
				{"node1:web:443", "shop-443", nil},
			},
		},
		{
			name:   "SERVICE_<port>_NAME is used as is",
			c:      twoPorts(labels("SERVICE_NAME", "shop", "SERVICE_443_NAME", "shop-tls")),
			policy: testPolicy(),
			want: []naming{
				{"node1:web:80", "shop-80", nil},
				{"node1:web:443", "shop-tls", nil},
			},
		},
		{
			name:   "SERVICE_<port>_IGNORE drops that port",
			c:      twoPorts(labels("SERVICE_443_IGNORE", "true")),
			policy: testPolicy(),
			want:   []naming{{"node1:web:80", "nginx-80", nil}},
		},
		{
			name:   "SERVICE_IGNORE drops the container",
			c:      twoPorts(labels("SERVICE_IGNORE", "1")),
			policy: testPolicy(),
			want:   nil,
		},
		{
			name:   "SERVICE_IGNORE=false keeps the container",
			c:      macvlanContainer(env("SERVICE_IGNORE=false")),
			policy: testPolicy(),
			want:   []naming{{"node1:web:80", "nginx", nil}},
		},
		{
			name:   "label wins over env",
			c:      macvlanContainer(env("SERVICE_NAME=fromenv", "SERVICE_TAGS=envtag"), labels("SERVICE_NAME", "fromlabel")),
			policy: testPolicy(),
			want:   []naming{{"node1:web:80", "fromlabel", []string{"envtag"}}},
		},
		{
			name:   "port setting from env wins over container-wide label",
			c:      twoPorts(env("SERVICE_80_NAME=plain"), labels("SERVICE_NAME", "shop")),
			policy: testPolicy(),
			want: []naming{
				{"node1:web:80", "plain", nil},
				{"node1:web:443", "shop-443", nil},
			},
		},
		{
			name:   "SERVICE_TAGS merged after policy tags without duplicates",
			c:      macvlanContainer(labels("SERVICE_TAGS", " a, prod,,b,a ")),
			policy: Policy{Node: testNode, Tags: []string{"prod", "underlay"}},
			want:   []naming{{"node1:web:80", "nginx", []string{"prod", "underlay", "a", "b"}}},
		},
		{
			name:   "SERVICE_<port>_TAGS replace container-wide tags for that port",
			c:      twoPorts(labels("SERVICE_TAGS", "web", "SERVICE_443_TAGS", "tls")),
			policy: testPolicy(),
			want: []naming{
				{"node1:web:80", "nginx-80", []string{"web"}},
				{"node1:web:443", "nginx-443", []string{"tls"}},
			},
		},
		{
			name:   "SERVICE_ID on a single port",
			c:      macvlanContainer(labels("SERVICE_ID", "custom")),
			policy: testPolicy(),
			want:   []naming{{"custom", "nginx", nil}},
		},
		{
			name:   "SERVICE_ID on several ports gets -PORT suffix unless per port",
			c:      twoPorts(labels("SERVICE_ID", "custom", "SERVICE_443_ID", "tls-id")),
			policy: testPolicy(),
			want: []naming{
				{"custom-80", "nginx-80", nil},
				{"tls-id", "nginx-443", nil},
			},
		},
		{
			// Consul registers such IDs but its deregister and check-update
			// paths cannot name them ("/v1/agent/service/deregister/.."
			// is cleaned to another path): the entry would be stranded.
			name: "SERVICE_ID that Consul's HTTP paths cannot name falls back to the default",
			c: macvlanContainer(exposed(Port{80, "tcp"}, Port{443, "tcp"}, Port{8080, "tcp"}, Port{9000, "tcp"}),
				labels("SERVICE_80_ID", "..", "SERVICE_443_ID", "a/b", "SERVICE_8080_ID", "a\nb", "SERVICE_9000_ID", ".")),
			policy: testPolicy(),
			want: []naming{
				{"node1:web:80", "nginx-80", nil},
				{"node1:web:443", "nginx-443", nil},
				{"node1:web:8080", "nginx-8080", nil},
				{"node1:web:9000", "nginx-9000", nil},
			},
			wantWarnings: []wantWarning{
				{Key: "SERVICE_80_ID", Value: "..", Problem: "not usable as a Consul service ID"},
				{Key: "SERVICE_443_ID", Value: "a/b", Problem: "not usable as a Consul service ID"},
				{Key: "SERVICE_8080_ID", Value: "a\nb", Problem: "not usable as a Consul service ID"},
				{Key: "SERVICE_9000_ID", Value: ".", Problem: "not usable as a Consul service ID"},
			},
		},
		{
			// Taken first, another container's default ID would be held
			// against that container for as long as this one ran.
			name:   "SERVICE_ID in the form of the agent's own IDs falls back to the default",
			c:      twoPorts(labels("SERVICE_ID", "node1:db:5432", "SERVICE_443_ID", "node1:web:80")),
			policy: testPolicy(),
			want: []naming{
				{"node1:web:80", "nginx-80", nil},
				{"node1:web:443", "nginx-443", nil},
			},
			wantWarnings: []wantWarning{
				{Key: "SERVICE_ID", Value: "node1:db:5432", Problem: "reserved for the agent's own IDs"},
				{Key: "SERVICE_443_ID", Value: "node1:web:80", Problem: "reserved for the agent's own IDs"},
			},
		},
		{
			// Go's HTTP server redirects /v1/health/service/.. and the
			// like to another path: nothing could look such a name up.
			name: "SERVICE_NAME that Consul's HTTP API cannot look up falls back to the default",
			c: macvlanContainer(exposed(Port{80, "tcp"}, Port{443, "tcp"}, Port{8080, "tcp"}, Port{9000, "tcp"}),
				labels("SERVICE_80_NAME", "..", "SERVICE_443_NAME", "a/../b", "SERVICE_8080_NAME", "a\x00b", "SERVICE_9000_NAME", "team/app")),
			policy: testPolicy(),
			want: []naming{
				{"node1:web:80", "nginx-80", nil},
				{"node1:web:443", "nginx-443", nil},
				{"node1:web:8080", "nginx-8080", nil},
				{"node1:web:9000", "team/app", nil},
			},
			wantWarnings: []wantWarning{
				{Key: "SERVICE_80_NAME", Value: "..", Problem: "not usable as a Consul service name"},
				{Key: "SERVICE_443_NAME", Value: "a/../b", Problem: "not usable as a Consul service name"},
				{Key: "SERVICE_8080_NAME", Value: "a\x00b", Problem: "not usable as a Consul service name"},
			},
		},
		{
			name:   "swarm service name label Consul's HTTP API cannot look up falls back to the image's name",
			c:      macvlanContainer(labels("com.docker.swarm.service.name", "web/")),
			policy: testPolicy(),
			want:   []naming{{"node1:web:80", "nginx", nil}},
			wantWarnings: []wantWarning{
				{Key: "com.docker.swarm.service.name", Value: "web/", Problem: "not usable as a Consul service name"},
			},
		},
		{
			name:   "Explicit skips a container without a name",
			c:      twoPorts(),
			policy: Policy{Node: testNode, Explicit: true},
			want:   nil,
		},
		{
			name:   "Explicit keeps a container with SERVICE_NAME",
			c:      macvlanContainer(labels("SERVICE_NAME", "frontend")),
			policy: Policy{Node: testNode, Explicit: true},
			want:   []naming{{"node1:web:80", "frontend", nil}},
		},
		{
			name:   "Explicit keeps only ports with SERVICE_<port>_NAME",
			c:      twoPorts(labels("SERVICE_443_NAME", "shop-tls")),
			policy: Policy{Node: testNode, Explicit: true},
			want:   []naming{{"node1:web:443", "shop-tls", nil}},
		},
		{
			name:   "Explicit does not count the swarm service name",
			c:      macvlanContainer(labels("com.docker.swarm.service.name", "stack_web")),
			policy: Policy{Node: testNode, Explicit: true},
			want:   nil,
		},
		{
			name:   "Labels filter skips a container without the label",
			c:      macvlanContainer(labels("tier", "web")),
			policy: Policy{Node: testNode, Labels: map[string]string{"io.underlay.register": ""}},
			want:   nil,
		},
		{
			name:   "Labels filter with empty value matches any value",
			c:      macvlanContainer(labels("io.underlay.register", "whatever")),
			policy: Policy{Node: testNode, Labels: map[string]string{"io.underlay.register": ""}},
			want:   []naming{{"node1:web:80", "nginx", nil}},
		},
		{
			name:   "Labels filter with a value needs that value",
			c:      macvlanContainer(labels("tier", "db", "io.underlay.register", "yes")),
			policy: Policy{Node: testNode, Labels: map[string]string{"tier": "web", "io.underlay.register": ""}},
			want:   nil,
		},
		{
			name:   "Labels filter with every label matching",
			c:      macvlanContainer(labels("tier", "web", "io.underlay.register", "yes")),
			policy: Policy{Node: testNode, Labels: map[string]string{"tier": "web", "io.underlay.register": ""}},
			want:   []naming{{"node1:web:80", "nginx", nil}},
		},
		{
			name: "stopped container registers nothing, even with bad metadata",
			c: macvlanContainer(labels("SERVICE_80x_NAME", "foo"), func(c *Container) {
				c.Running = false
				c.ExitCode = 1
			}),
			policy: testPolicy(),
			want:   nil,
		},
		{
			name:   "SERVICE_80x_NAME warns and the container is still registered",
			c:      macvlanContainer(labels("SERVICE_80x_NAME", "foo")),
			policy: testPolicy(),
			want:   []naming{{"node1:web:80", "nginx", nil}},
			wantWarnings: []wantWarning{
				{Key: "SERVICE_80x_NAME", Value: "foo", Problem: "not a port number between 1 and 65535"},
			},
		},
		{
			name:   "SERVICE_99999_NAME warns and the container is still registered",
			c:      macvlanContainer(env("SERVICE_99999_NAME=bar")),
			policy: testPolicy(),
			want:   []naming{{"node1:web:80", "nginx", nil}},
			wantWarnings: []wantWarning{
				{Key: "SERVICE_99999_NAME", Value: "bar", Problem: "not a port number between 1 and 65535"},
			},
		},
		{
			name:   "SERVICE_0_NAME warns",
			c:      macvlanContainer(labels("SERVICE_0_NAME", "zero")),
			policy: testPolicy(),
			want:   []naming{{"node1:web:80", "nginx", nil}},
			wantWarnings: []wantWarning{
				{Key: "SERVICE_0_NAME", Value: "zero", Problem: "not a port number"},
			},
		},
		{
			name:   "attribute with punctuation warns",
			c:      macvlanContainer(labels("SERVICE_TEAM.NAME", "ops", "SERVICE_80_", "x")),
			policy: testPolicy(),
			want:   []naming{{"node1:web:80", "nginx", nil}},
			wantWarnings: []wantWarning{
				{Key: "SERVICE_TEAM.NAME", Value: "ops", Problem: "attribute name may hold only"},
				{Key: "SERVICE_80_", Value: "x", Problem: "attribute name may hold only"},
			},
		},
		{
			name:   "labels and env outside SERVICE_ are ignored",
			c:      macvlanContainer(env("PATH=/bin", "NOEQUALS", "SERVICE_=x"), labels("service_name", "lower")),
			policy: testPolicy(),
			want:   []naming{{"node1:web:80", "nginx", nil}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warnings := Desired(tt.c, tt.policy)
			if diff := cmp.Diff(tt.want, namings(got)); diff != "" {
				t.Errorf("naming mismatch (-want +got):\n%s", diff)
			}
			checkWarnings(t, tt.c.Name, warnings, tt.wantWarnings)
		})
	}
}

// manyMeta is 70 SERVICE_* labels beside lanMeta's 6 keys and the hash:
// 57 fit in Consul's 64 Meta pairs (manyMetaKept), 13 do not.
var manyMeta, manyMetaKept, manyMetaWarnings = func() ([]string, map[string]string, []wantWarning) {
	var kv []string
	kept := map[string]string{}
	var refused []wantWarning
	for i := range 70 {
		k, v := fmt.Sprintf("SERVICE_M%02d", i), fmt.Sprintf("v%d", i)
		kv = append(kv, k, v)
		if i < 64-1-len(lanMeta()) {
			kept[strings.ToLower(k[len("SERVICE_"):])] = v
		} else {
			refused = append(refused, wantWarning{Key: k, Value: v, Problem: "Consul takes at most 64 Meta pairs per service"})
		}
	}
	return kv, kept, refused
}()

func TestDesiredMeta(t *testing.T) {
	long := strings.Repeat("k", 129)
	tests := []struct {
		name string
		c    Container
		// want is the Meta of each service, beyond lanMeta().
		want         []map[string]string
		wantWarnings []wantWarning
	}{
		{
			name: "other attributes go into Meta lowercased",
			c:    macvlanContainer(labels("SERVICE_VERSION", "1.2", "SERVICE_Owner_Team", "ops", "SERVICE_TAGS", "t")),
			want: []map[string]string{{"version": "1.2", "owner_team": "ops"}},
		},
		{
			name: "port attributes go only into that port's Meta",
			c:    macvlanContainer(exposed(Port{80, "tcp"}, Port{443, "tcp"}), labels("SERVICE_443_PROTOCOL", "https", "SERVICE_PROTOCOL", "http")),
			want: []map[string]string{{"protocol": "http"}, {"protocol": "https"}},
		},
		{
			name: "consumed and check attributes are not copied",
			c: macvlanContainer(labels(
				"SERVICE_NAME", "n", "SERVICE_ID", "i", "SERVICE_TAGS", "t", "SERVICE_IGNORE", "",
				"SERVICE_NETWORK", "lan", "SERVICE_CHECK_TCP", "true", "SERVICE_CHECK_INTERVAL", "5s",
			)),
			want: []map[string]string{{}},
		},
		{
			name: "reserved keys are refused",
			c: macvlanContainer(labels(
				"SERVICE_CONTAINER_ID", "forged",
				"SERVICE_IMAGE", "forged",
				"SERVICE_UNDERLAY_NODE", "other",
				"SERVICE_UNDERLAY_HASH", "0000",
				"SERVICE_UNDERLAY_EXTRA", "x",
				"SERVICE_MAC", "00:00:00:00:00:00",
			)),
			want: []map[string]string{{}},
			wantWarnings: []wantWarning{
				{Key: "SERVICE_CONTAINER_ID", Value: "forged", Problem: "reserved by underlay"},
				{Key: "SERVICE_IMAGE", Value: "forged", Problem: "reserved by underlay"},
				{Key: "SERVICE_UNDERLAY_NODE", Value: "other", Problem: "reserved by underlay"},
				{Key: "SERVICE_UNDERLAY_HASH", Value: "0000", Problem: "reserved by underlay"},
				{Key: "SERVICE_UNDERLAY_EXTRA", Value: "x", Problem: "reserved by underlay"},
				{Key: "SERVICE_MAC", Value: "00:00:00:00:00:00", Problem: "reserved by underlay"},
			},
		},
		{
			name: "consul keys are refused",
			c:    macvlanContainer(env("SERVICE_CONSUL_VERSION=1", "SERVICE_CONSUL-X=2")),
			want: []map[string]string{{}},
			wantWarnings: []wantWarning{
				{Key: "SERVICE_CONSUL_VERSION", Value: "1", Problem: "Consul reserves Meta keys starting with consul"},
				{Key: "SERVICE_CONSUL-X", Value: "2", Problem: "Consul reserves Meta keys starting with consul"},
			},
		},
		{
			name: "too long key or value is refused",
			c: macvlanContainer(labels("SERVICE_"+long, "v", "SERVICE_BIG", strings.Repeat("v", 513), "SERVICE_OK", strings.Repeat("v", 512),
				"SERVICE_"+long[:128], "w")),
			want: []map[string]string{{"ok": strings.Repeat("v", 512), long[:128]: "w"}},
			wantWarnings: []wantWarning{
				{Key: "SERVICE_" + long, Value: "v", Problem: "too long for Consul Meta"},
				{Key: "SERVICE_BIG", Value: strings.Repeat("v", 513), Problem: "too long for Consul Meta"},
			},
		},
		{
			// Consul refuses a registration with more than 64 Meta pairs
			// (HTTP 400), which would leave the container unregistered.
			name:         "attributes beyond Consul's 64 Meta pairs are refused, in key order",
			c:            macvlanContainer(labels(manyMeta...)),
			want:         []map[string]string{manyMetaKept},
			wantWarnings: manyMetaWarnings,
		},
		{
			name: "a warning repeated for each port is reported once",
			c:    macvlanContainer(exposed(Port{80, "tcp"}, Port{443, "tcp"}), labels("SERVICE_CONSUL", "x")),
			want: []map[string]string{{}, {}},
			wantWarnings: []wantWarning{
				{Key: "SERVICE_CONSUL", Value: "x", Problem: "Consul reserves"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warnings := Desired(tt.c, testPolicy())
			var want, gotMeta []map[string]string
			for _, extra := range tt.want {
				m := lanMeta()
				for k, v := range extra {
					m[k] = v
				}
				want = append(want, m)
			}
			for _, s := range withoutHashes(t, got) {
				gotMeta = append(gotMeta, s.Meta)
			}
			if diff := cmp.Diff(want, gotMeta); diff != "" {
				t.Errorf("Meta mismatch (-want +got):\n%s", diff)
			}
			checkWarnings(t, tt.c.Name, warnings, tt.wantWarnings)
		})
	}
}

// TestDesiredMetaOwnKeysReservedWhenUnset: underlay's own Meta keys are
// refused to attributes even on a container for which underlay sets none
// of them (published ports: no network or MAC; not a Swarm task): a label
// would otherwise pass for what underlay read from Docker, and the
// dashboard takes swarm_task_id for the task the registration belongs to.
func TestDesiredMetaOwnKeysReservedWhenUnset(t *testing.T) {
	c := bridgeContainer(labels(
		"SERVICE_MAC", "02:00:00:00:00:99",
		"SERVICE_SWARM_TASK_ID", "forged-task",
		"SERVICE_SWARM_SERVICE_ID", "forged-service",
		"SERVICE_SWARM_SLOT", "7",
		"SERVICE_SWARM_NODE_ID", "forged-node",
		"SERVICE_VERSION", "1",
	))
	svcs, warnings := Desired(c, testPolicy())
	if len(svcs) == 0 {
		t.Fatal("no service")
	}
	for _, s := range withoutHashes(t, svcs) {
		want := baseMeta("shop", "shop:2")
		want["version"] = "1"
		if diff := cmp.Diff(want, s.Meta); diff != "" {
			t.Errorf("service %s: Meta mismatch (-want +got):\n%s", s.ID, diff)
		}
	}
	checkWarnings(t, c.Name, warnings, []wantWarning{
		{Key: "SERVICE_MAC", Value: "02:00:00:00:00:99", Problem: "reserved by underlay"},
		{Key: "SERVICE_SWARM_TASK_ID", Value: "forged-task", Problem: "reserved by underlay"},
		{Key: "SERVICE_SWARM_SERVICE_ID", Value: "forged-service", Problem: "reserved by underlay"},
		{Key: "SERVICE_SWARM_SLOT", Value: "7", Problem: "reserved by underlay"},
		{Key: "SERVICE_SWARM_NODE_ID", Value: "forged-node", Problem: "reserved by underlay"},
	})
}

// TestDesiredMetaDockerValuesWithinConsulLimits: Docker bounds neither a
// container's name nor a label's value (a plain container may carry
// Swarm's labels), and Consul refuses a registration whole (HTTP 400) for
// one Meta value over 512 bytes: such a value is left out of Meta, with a
// warning, and the container is registered with the rest.
func TestDesiredMetaDockerValuesWithinConsulLimits(t *testing.T) {
	longName := strings.Repeat("n", 600)
	longTask := strings.Repeat("t", 513)
	longNet := strings.Repeat("l", 700)
	nodeAtBound := strings.Repeat("d", 512) // as long as Consul takes
	c := macvlanContainer(func(c *Container) {
		c.Name = longName
		c.Networks[0].Network = longNet
		c.NetworkMode = longNet
	}, labels(labelSwarmTaskID, longTask, labelSwarmServiceID, "svc1", labelSwarmNodeID, nodeAtBound))
	svcs, warnings := Desired(c, testPolicy())
	if len(svcs) != 1 {
		t.Fatalf("%d services, want 1", len(svcs))
	}
	for k, v := range svcs[0].Meta {
		if len(v) > 512 {
			t.Errorf("Meta %s is %d bytes: Consul refuses the registration (512-byte values)", k, len(v))
		}
	}
	want := lanMeta()
	delete(want, MetaContainerName)
	delete(want, MetaNetwork)
	want[MetaSwarmService] = "svc1"
	want[MetaSwarmNode] = nodeAtBound
	if diff := cmp.Diff(want, withoutHashes(t, svcs)[0].Meta); diff != "" {
		t.Errorf("Meta mismatch (-want +got):\n%s", diff)
	}
	checkWarnings(t, longName, warnings, []wantWarning{
		{Key: "", Value: longName, Problem: "Meta container_name left out"},
		{Key: "", Value: longName, Problem: "the container ID stands for it"},
		{Key: "", Value: longNet, Problem: "Meta network left out"},
		{Key: labelSwarmTaskID, Value: longTask, Problem: "Meta swarm_task_id left out"},
	})
}

// TestDesiredUniqueIDs checks that no two services of one container share an
// ID: Consul keeps one service per ID, so the agent would re-register the
// pair on every resync.
func TestDesiredUniqueIDs(t *testing.T) {
	// A TTL check, which every port gets (a TCP check goes on TCP ports
	// only), to see that check IDs are unique too.
	dns := func(mods ...func(*Container)) Container {
		return macvlanContainer(append([]func(*Container){exposed(Port{53, "tcp"}, Port{53, "udp"}, Port{8053, "tcp"}), labels("SERVICE_CHECK_TTL", "30s")}, mods...)...)
	}
	tests := []struct {
		name         string
		c            Container
		wantIDs      []string
		wantWarnings []wantWarning
	}{
		{
			name:    "default IDs",
			c:       dns(),
			wantIDs: []string{"node1:web:53", "node1:web:53:udp", "node1:web:8053"},
		},
		{
			name:    "SERVICE_NAME",
			c:       dns(labels("SERVICE_NAME", "dns")),
			wantIDs: []string{"node1:web:53", "node1:web:53:udp", "node1:web:8053"},
		},
		{
			name:    "SERVICE_53_NAME",
			c:       dns(labels("SERVICE_53_NAME", "dns")),
			wantIDs: []string{"node1:web:53", "node1:web:53:udp", "node1:web:8053"},
		},
		{
			name:    "SERVICE_ID on a port with TCP and UDP",
			c:       dns(labels("SERVICE_ID", "dns")),
			wantIDs: []string{"dns-53", "dns-53:udp", "dns-8053"},
		},
		{
			name:    "SERVICE_53_ID on a port with TCP and UDP",
			c:       dns(labels("SERVICE_53_ID", "dns")),
			wantIDs: []string{"dns", "dns:udp", "node1:web:8053"},
		},
		{
			// An SCTP port's default ID was its TCP twin's: the second was
			// dropped, or, alone on the node, took the TCP one's ID.
			name:    "default IDs of TCP and SCTP on one port",
			c:       macvlanContainer(exposed(Port{80, "tcp"}, Port{80, "sctp"}, Port{53, "udp"})),
			wantIDs: []string{"node1:web:53:udp", "node1:web:80:sctp", "node1:web:80"},
		},
		{
			name:    "SERVICE_80_ID on a port with TCP and SCTP",
			c:       macvlanContainer(exposed(Port{80, "tcp"}, Port{80, "sctp"}), labels("SERVICE_80_ID", "web")),
			wantIDs: []string{"web:sctp", "web"},
		},
		{
			name:    "a protocol Docker does not publish is not registered",
			c:       macvlanContainer(exposed(Port{80, "tcp"}, Port{80, "tcp/../x"})),
			wantIDs: []string{"node1:web:80"},
			wantWarnings: []wantWarning{
				{Value: "80/tcp/../x", Problem: "not a protocol Docker publishes (tcp, udp, sctp); not registered"},
			},
		},
		{
			// The protocol suffix only tells two ports' services apart.
			name:    "SERVICE_ID on a lone UDP port is taken as it is",
			c:       macvlanContainer(exposed(Port{53, "udp"}), labels("SERVICE_ID", "dns")),
			wantIDs: []string{"dns"},
		},
		{
			// The suffix only tells a TCP port from its UDP twin; an ID
			// that ends in it already is the one asked for.
			name: "same SERVICE_<port>_ID ending in :udp on two UDP ports keeps the first as written",
			c: macvlanContainer(exposed(Port{53, "udp"}, Port{54, "udp"}),
				labels("SERVICE_53_ID", "dns:udp", "SERVICE_54_ID", "dns:udp")),
			wantIDs: []string{"dns:udp"},
			wantWarnings: []wantWarning{
				{Key: "SERVICE_54_ID", Value: "dns:udp", Problem: "service ID also used by another port; port 54/udp not registered"},
			},
		},
		{
			name:    "same SERVICE_<port>_ID on two ports keeps the first",
			c:       dns(labels("SERVICE_53_ID", "dns", "SERVICE_8053_ID", "dns")),
			wantIDs: []string{"dns", "dns:udp"},
			wantWarnings: []wantWarning{
				{Key: "SERVICE_8053_ID", Value: "dns", Problem: "service ID also used by another port; port 8053/tcp not registered"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warnings := Desired(tt.c, testPolicy())
			if diff := cmp.Diff(tt.wantIDs, serviceIDs(got)); diff != "" {
				t.Errorf("service IDs mismatch (-want +got):\n%s", diff)
			}
			checkWarnings(t, tt.c.Name, warnings, tt.wantWarnings)
			checkIDs := map[string]bool{}
			for _, s := range withoutHashes(t, got) {
				for _, c := range s.Checks {
					if checkIDs[c.ID] {
						t.Errorf("check ID %q used twice", c.ID)
					}
					checkIDs[c.ID] = true
				}
			}
		})
	}
}

// TestDesiredLongServiceIDs: Consul's HTTP API names a service ID in a
// URL path to deregister it, and refuses a request line over 1 MB, while
// Docker takes labels and container names of any length. A longer ID was
// registered (it travels in the request's body) but never deregistered:
// the service stayed after its container, the agent retrying for good.
// A SERVICE_ID over 200 bytes is refused, and a container name that would
// make the default ID longer than 256 gives way to the container's ID.
func TestDesiredLongServiceIDs(t *testing.T) {
	longID := strings.Repeat("i", 300)
	longName := strings.Repeat("n", 300)
	tests := []struct {
		name         string
		c            Container
		wantIDs      []string
		wantWarnings []wantWarning
	}{
		{
			name:    "SERVICE_ID of 200 bytes is taken",
			c:       macvlanContainer(labels("SERVICE_ID", longID[:200])),
			wantIDs: []string{longID[:200]},
		},
		{
			name:         "longer SERVICE_ID",
			c:            macvlanContainer(labels("SERVICE_ID", longID)),
			wantIDs:      []string{"node1:web:80"},
			wantWarnings: []wantWarning{{Key: "SERVICE_ID", Value: longID, Problem: "longer than the 200 bytes"}},
		},
		{
			name:    "SERVICE_ID of 200 bytes with a port and :udp appended",
			c:       macvlanContainer(exposed(Port{65535, "tcp"}, Port{65535, "udp"}), labels("SERVICE_ID", longID[:200])),
			wantIDs: []string{longID[:200] + "-65535", longID[:200] + "-65535:udp"},
		},
		{
			// 5 + 225 + len("::65535:sctp") + len(HealthCheckSuffix): 256.
			name:    "container name as long as a default ID allows",
			c:       macvlanContainer(func(c *Container) { c.Name = longName[:225] }),
			wantIDs: []string{"node1:" + longName[:225] + ":80"},
		},
		{
			name:         "long container name",
			c:            macvlanContainer(func(c *Container) { c.Name = longName }),
			wantIDs:      []string{"node1:" + testCID + ":80"},
			wantWarnings: []wantWarning{{Key: "", Value: longName, Problem: "the container ID stands for it"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warnings := Desired(tt.c, testPolicy())
			if diff := cmp.Diff(tt.wantIDs, serviceIDs(got)); diff != "" {
				t.Errorf("service IDs mismatch (-want +got):\n%s", diff)
			}
			checkWarnings(t, tt.c.Name, warnings, tt.wantWarnings)
			for _, s := range got {
				if !usableID(s.ID) || !usableID(s.ID+HealthCheckSuffix) {
					t.Errorf("service ID %q (%d bytes) is not usable", s.ID, len(s.ID))
				}
			}
		})
	}
}

// TestDesiredManyTags: SERVICE_TAGS with many tags (Docker bounds no
// label) took time growing with the square of their number, each tag
// compared with every one before it (a megabyte of tags, some 10^10
// comparisons, at every pass), and all went to Consul on every port's
// service. A service now takes at most 64 tags, the
// agent's first, and a warning says how many were left out.
func TestDesiredManyTags(t *testing.T) {
	var list []string
	for i := range 200 {
		list = append(list, fmt.Sprintf("t%d", i))
	}
	value := strings.Join(list, ",") + ",t0,t1"
	policy := testPolicy()
	policy.Tags = []string{"underlay", "t3"}
	c := macvlanContainer(labels("SERVICE_TAGS", value))
	got, warnings := Desired(c, policy)
	if len(got) != 1 {
		t.Fatalf("%d services, want 1", len(got))
	}
	want := append([]string{"underlay", "t3", "t0", "t1", "t2"}, list[4:64-1]...)
	if diff := cmp.Diff(want, got[0].Tags); diff != "" {
		t.Errorf("tags mismatch (-want +got):\n%s", diff)
	}
	checkWarnings(t, c.Name, warnings, []wantWarning{
		{Key: "SERVICE_TAGS", Value: value, Problem: "a service takes at most 64 tags; 137 left out"},
	})
}

// TestDesiredManyAgentTags: the bound of 64 tags is on those a container
// adds; the agent's own --tags are all kept, however many.
func TestDesiredManyAgentTags(t *testing.T) {
	policy := testPolicy()
	for i := range maxTags + 2 {
		policy.Tags = append(policy.Tags, fmt.Sprintf("a%d", i))
	}
	c := macvlanContainer(labels("SERVICE_TAGS", "extra"))
	got, warnings := Desired(c, policy)
	if len(got) != 1 {
		t.Fatalf("%d services, want 1", len(got))
	}
	if diff := cmp.Diff(policy.Tags, got[0].Tags); diff != "" {
		t.Errorf("tags mismatch (-want +got):\n%s", diff)
	}
	checkWarnings(t, c.Name, warnings, []wantWarning{
		{Key: "SERVICE_TAGS", Value: "extra", Problem: "a service takes at most 64 tags; 1 left out"},
	})
}

// TestDesiredManyPorts: Docker lets a container expose a range of ports
// (--expose 1-65535), and each became a service: tens of thousands of
// Consul registrations from one container, written and hashed at every
// change. A container is registered with its first 128 ports, in port
// order, after those it ignores; a warning says how many were left out.
func TestDesiredManyPorts(t *testing.T) {
	var ports []Port
	for p := 1; p <= 1000; p++ {
		ports = append(ports, Port{p, "tcp"})
	}
	c := macvlanContainer(exposed(ports...), labels("SERVICE_2_IGNORE", "true", "SERVICE_3_IGNORE", "true"))
	got, warnings := Desired(c, testPolicy())
	var want []string
	for p := 1; p <= 130; p++ {
		if p != 2 && p != 3 {
			want = append(want, fmt.Sprintf("node1:web:%d", p))
		}
	}
	if diff := cmp.Diff(want, serviceIDs(got)); diff != "" {
		t.Errorf("service IDs mismatch (-want +got):\n%s", diff)
	}
	checkWarnings(t, c.Name, warnings, []wantWarning{
		{Problem: "998 ports to register; a container is registered with its first 128 in port order, and 870 are left out"},
	})
}

// TestDesiredManyLabels: Docker bounds neither how many labels a
// container has nor their size, and every SERVICE_* label was read, went
// through each service of the container, and gave its warning, each
// logged: 5000 labels beyond Consul's Meta limit gave 4943 warnings (and
// finding repeats among them took time with the square of their number).
// The first 1024 SERVICE_* settings are read, and a container's warnings
// are its first 64 by key, with one more counting the rest.
func TestDesiredManyLabels(t *testing.T) {
	c := macvlanContainer(func(c *Container) {
		c.Labels = map[string]string{}
		for i := range 5000 {
			c.Labels[fmt.Sprintf("SERVICE_X%04d", i)] = "v"
			c.Labels[fmt.Sprintf("org.example.label%04d", i)] = "v"
		}
	})
	got, warnings := Desired(c, testPolicy())
	if len(warnings) > 65 {
		t.Errorf("%d warnings, want at most 65: the first 64 and one counting the rest", len(warnings))
	}
	if len(got) != 1 {
		t.Fatalf("%d services, want 1", len(got))
	}
	if n := len(got[0].Meta); n != MaxMeta {
		t.Errorf("%d Meta pairs, want %d", n, MaxMeta)
	}
	// Underlay's 7 Meta keys leave room for X0000 to X0056; X0057 to
	// X1023 are refused, 967 warnings.
	want := []wantWarning{{Problem: "5000 SERVICE_* settings; the first 1024 (environment, then labels in key order) are read and 3976 ignored"}}
	for i := 57; i < 57+63; i++ {
		want = append(want, wantWarning{Key: fmt.Sprintf("SERVICE_X%04d", i), Value: "v", Problem: "Consul takes at most 64 Meta pairs"})
	}
	want = append(want, wantWarning{Problem: "904 more problems with this container's metadata not listed"})
	if !t.Failed() {
		checkWarnings(t, c.Name, warnings, want)
	}
}

// TestDesiredWarningsAtTheBound: a container's first 64 warnings are
// listed; only a 65th and later are counted in one more.
func TestDesiredWarningsAtTheBound(t *testing.T) {
	for _, n := range []int{maxWarnings, maxWarnings + 1} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			c := macvlanContainer(labels())
			var want []wantWarning
			for i := range n {
				key := fmt.Sprintf("SERVICE_99999_A%02d", i)
				c.Labels[key] = "v"
				if i < maxWarnings {
					want = append(want, wantWarning{Key: key, Value: "v", Problem: "not a port number between 1 and 65535 after SERVICE_; ignored"})
				}
			}
			if n > maxWarnings {
				want = append(want, wantWarning{Problem: fmt.Sprintf("%d more problems with this container's metadata not listed", n-maxWarnings)})
			}
			got, warnings := Desired(c, testPolicy())
			if len(got) != 1 {
				t.Errorf("%d services, want 1", len(got))
			}
			checkWarnings(t, c.Name, warnings, want)
		})
	}
}

// TestDesiredHugeLabel: a setting's value may be as long as Docker takes
// (megabytes), and was used whole, and quoted whole in its warnings. A
// value over 4096 bytes is ignored, and a warning quotes at most 1024
// bytes of any value.
func TestDesiredHugeLabel(t *testing.T) {
	huge := strings.Repeat("a,", 1<<20)
	c := macvlanContainer(labels("SERVICE_TAGS", huge, "SERVICE_NAME", "frontend"))
	got, warnings := Desired(c, testPolicy())
	if diff := cmp.Diff([]naming{{"node1:web:80", "frontend", nil}}, namings(got)); diff != "" {
		t.Errorf("naming mismatch (-want +got):\n%s", diff)
	}
	if len(warnings) != 1 {
		t.Fatalf("warnings %q, want one", warningStrings(warnings))
	}
	w := warnings[0]
	if w.Key != "SERVICE_TAGS" || !strings.Contains(w.Problem, "2097152 bytes, longer than the 4096 bytes a setting may have; ignored") {
		t.Errorf("warning key %q, problem %q: want SERVICE_TAGS's length refused", w.Key, w.Problem)
	}
	if wantValue := huge[:1024] + "… (2097152 bytes)"; w.Value != wantValue {
		t.Errorf("warning quotes %d bytes of the value, want %q (%d bytes)", len(w.Value), wantValue, len(wantValue))
	}
}

// TestDesiredLabelAtTheBound: a setting of exactly 4096 bytes is taken.
func TestDesiredLabelAtTheBound(t *testing.T) {
	tag := strings.Repeat("t", maxSettingValue)
	c := macvlanContainer(labels("SERVICE_TAGS", tag))
	got, warnings := Desired(c, testPolicy())
	if diff := cmp.Diff([]naming{{"node1:web:80", "nginx", []string{tag}}}, namings(got)); diff != "" {
		t.Errorf("naming mismatch (-want +got):\n%s", diff)
	}
	checkWarnings(t, c.Name, warnings, nil)
}

// TestDesiredHugeLabelNotUTF8: a warning quotes the first 1024 bytes of
// a value that is no UTF-8 too. Before, the cut looked back for a
// character's start as far as the value's first byte, and quoted none
// of a value of continuation bytes.
func TestDesiredHugeLabelNotUTF8(t *testing.T) {
	huge := strings.Repeat("\x80", 1<<20)
	c := macvlanContainer(labels("SERVICE_TAGS", huge, "SERVICE_NAME", "frontend"))
	_, warnings := Desired(c, testPolicy())
	if len(warnings) != 1 {
		t.Fatalf("warnings %q, want one", warningStrings(warnings))
	}
	if want := huge[:1024] + "… (1048576 bytes)"; warnings[0].Value != want {
		t.Errorf("warning quotes %.40q… (%d bytes), want %.40q… (%d bytes)", warnings[0].Value, len(warnings[0].Value), want, len(want))
	}
}

// TestDesiredBadPorts: a port number outside 1-65535 (dockerhost reads a
// port it cannot parse as 0, and --expose 0 gives 0) became a service on
// that port, with its TCP or HTTP check aimed at it; so did a host port
// outside the range. Such ports are left out with a warning.
func TestDesiredBadPorts(t *testing.T) {
	tests := []struct {
		name         string
		c            Container
		want         []naming
		wantWarnings []wantWarning
	}{
		{
			name: "exposed",
			c:    macvlanContainer(exposed(Port{0, "tcp"}, Port{80, "tcp"}, Port{70000, "tcp"}, Port{-1, "udp"})),
			want: []naming{{"node1:web:80", "nginx", nil}},
			wantWarnings: []wantWarning{
				{Value: "0/tcp", Problem: "not a port number between 1 and 65535; not registered"},
				{Value: "70000/tcp", Problem: "not a port number between 1 and 65535; not registered"},
				{Value: "-1/udp", Problem: "not a port number between 1 and 65535; not registered"},
			},
		},
		{
			name: "negative host port",
			c: bridgeContainer(func(c *Container) {
				c.Published = append(c.Published, Binding{Port: Port{9000, "tcp"}, HostIP: "0.0.0.0", HostPort: -1})
			}),
			want: []naming{{"node1:shop:80", "shop-80", nil}, {"node1:shop:443", "shop-443", nil}},
			wantWarnings: []wantWarning{
				{Value: "-1", Problem: "host port of 9000/tcp is not a port number between 1 and 65535"},
			},
		},
		{
			name: "published",
			c: bridgeContainer(func(c *Container) {
				c.Published = append(c.Published,
					Binding{Port: Port{0, "tcp"}, HostIP: "0.0.0.0", HostPort: 8081},
					Binding{Port: Port{9000, "tcp"}, HostIP: "0.0.0.0", HostPort: 70000})
			}),
			want: []naming{{"node1:shop:80", "shop-80", nil}, {"node1:shop:443", "shop-443", nil}},
			wantWarnings: []wantWarning{
				{Value: "0/tcp", Problem: "not a port number between 1 and 65535; not registered"},
				{Value: "70000", Problem: "host port of 9000/tcp is not a port number between 1 and 65535"},
			},
		},
		{
			name: "exposed at the bounds",
			c:    macvlanContainer(exposed(Port{1, "tcp"}, Port{65535, "tcp"}, Port{65536, "tcp"})),
			want: []naming{{"node1:web:1", "nginx-1", nil}, {"node1:web:65535", "nginx-65535", nil}},
			wantWarnings: []wantWarning{
				{Value: "65536/tcp", Problem: "not a port number between 1 and 65535; not registered"},
			},
		},
		{
			name: "published on host ports at the bounds",
			c: bridgeContainer(func(c *Container) {
				c.Published = append(c.Published,
					Binding{Port: Port{9000, "tcp"}, HostIP: "0.0.0.0", HostPort: 65536},
					Binding{Port: Port{9000, "tcp"}, HostIP: "0.0.0.0", HostPort: 65535})
			}),
			want: []naming{{"node1:shop:80", "shop-80", nil}, {"node1:shop:443", "shop-443", nil}, {"node1:shop:9000", "shop-9000", nil}},
			wantWarnings: []wantWarning{
				{Value: "65536", Problem: "host port of 9000/tcp is not a port number between 1 and 65535"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warnings := Desired(tt.c, testPolicy())
			if diff := cmp.Diff(tt.want, namings(got)); diff != "" {
				t.Errorf("naming mismatch (-want +got):\n%s", diff)
			}
			checkWarnings(t, tt.c.Name, warnings, tt.wantWarnings)
		})
	}
}

// TestDesiredTaggedAddressesConsulTakes: Consul refuses a whole
// registration (HTTP 400) whose lan_ipv6 Go reads as IPv4, as it does an
// IPv4-mapped address, or cannot read, as an address with a zone. Such an
// address (an endpoint's, a host IP a port is published on, the agent's
// --host-ip) was tagged all the same: the container's registration failed
// at every retry, and its services after that one were never written.
// Such an address is not tagged; the others still are.
func TestDesiredTaggedAddressesConsulTakes(t *testing.T) {
	tests := []struct {
		name   string
		c      Container
		policy Policy
		want   map[string]TaggedAddress
	}{
		{
			name: "IPv4-mapped endpoint IPv6 address",
			c: macvlanContainer(func(c *Container) {
				c.Networks[0].IPv6 = "::ffff:10.1.2.3"
			}),
			policy: testPolicy(),
			want:   map[string]TaggedAddress{"lan_ipv4": {"10.1.2.3", 80}},
		},
		{
			name: "IPv6-only endpoint",
			c: macvlanContainer(func(c *Container) {
				c.Networks[0].IPv4 = ""
			}),
			policy: testPolicy(),
			want:   map[string]TaggedAddress{"lan_ipv6": {"fd00::3", 80}},
		},
		{
			name: "port published on an IPv4-mapped host IP",
			c: bridgeContainer(func(c *Container) {
				c.Exposed = []Port{{80, "tcp"}}
				c.Published = []Binding{{Port: Port{80, "tcp"}, HostIP: "::ffff:192.0.2.20", HostPort: 8080}}
			}),
			policy: testPolicy(),
			// Registered as the IPv4 address it is.
			want: map[string]TaggedAddress{"lan_ipv4": {"192.0.2.20", 8080}},
		},
		{
			name:   "host network with a zoned host IP",
			c:      macvlanContainer(func(c *Container) { c.NetworkMode = "host"; c.Networks = nil }),
			policy: Policy{Node: testNode, HostIP: "fe80::1%eth0"},
			want:   nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := Desired(tt.c, tt.policy)
			if len(got) != 1 {
				t.Fatalf("%d services, want 1", len(got))
			}
			if diff := cmp.Diff(tt.want, got[0].TaggedAddresses); diff != "" {
				t.Errorf("tagged addresses mismatch (-want +got):\n%s", diff)
			}
			// As Consul 1.8's agent checks them (validateService).
			for tag, a := range got[0].TaggedAddresses {
				ip := net.ParseIP(a.Address)
				if ip == nil || (tag == "lan_ipv4") != (ip.To4() != nil) {
					t.Errorf("Consul refuses %s %q", tag, a.Address)
				}
			}
		})
	}
}

// TestDesiredPublishedOnLinkLocal: a port published on a link-local or
// multicast host IP was registered at that address, with its checks aimed
// at it from the Consul agent: with 169.254.169.254, cloud instances'
// metadata service, which hands out credentials, an HTTP check's output
// (the response's start) landed in Consul for anyone reading health to
// see. Such a port is not registered, as one published on loopback.
func TestDesiredPublishedOnLinkLocal(t *testing.T) {
	c := bridgeContainer(labels("SERVICE_CHECK_HTTP", "/latest/meta-data/iam/security-credentials/"), func(c *Container) {
		c.Published = []Binding{
			{Port: Port{80, "tcp"}, HostIP: "169.254.169.254", HostPort: 80},
			{Port: Port{443, "tcp"}, HostIP: "0.0.0.0", HostPort: 8443},
			{Port: Port{443, "tcp"}, HostIP: "fe80::1", HostPort: 8443},
			{Port: Port{9000, "tcp"}, HostIP: "224.0.0.1", HostPort: 9000},
		}
	})
	got, warnings := Desired(c, testPolicy())
	var addrs []string
	for _, s := range got {
		addrs = append(addrs, net.JoinHostPort(s.Address, strconv.Itoa(s.Port)))
		for _, ch := range s.Checks {
			addrs = append(addrs, ch.HTTP)
		}
	}
	want := []string{"192.0.2.10:8443", "http://192.0.2.10:8443/latest/meta-data/iam/security-credentials/"}
	if diff := cmp.Diff(want, addrs); diff != "" {
		t.Errorf("service and check addresses mismatch (-want +got):\n%s", diff)
	}
	checkWarnings(t, c.Name, warnings, []wantWarning{
		{Problem: "port 80/tcp is published only on the link-local or multicast address 169.254.169.254:80, which names no one host; not registered"},
		{Problem: "port 9000/tcp is published only on the link-local or multicast address 224.0.0.1:9000"},
	})
}

func serviceIDs(svcs []Service) []string {
	var out []string
	for _, s := range svcs {
		out = append(out, s.ID)
	}
	return out
}

func TestDesiredDeterministic(t *testing.T) {
	c := macvlanContainer(
		exposed(Port{443, "tcp"}, Port{53, "udp"}, Port{80, "tcp"}),
		labels("SERVICE_VERSION", "3", "SERVICE_TEAM", "ops", "SERVICE_CHECK_TCP", "true", "SERVICE_CHECK_HTTP", "/h"),
		func(c *Container) {
			c.Networks = append(c.Networks,
				Endpoint{Network: "bridge", Driver: "bridge", IPv4: "172.17.0.2"},
				Endpoint{Network: "alan", Driver: "overlay", IPv4: "10.0.9.2"})
			c.Published = []Binding{{Port: Port{8080, "tcp"}, HostIP: "0.0.0.0", HostPort: 18080}}
		},
	)
	first, _ := Desired(c, testPolicy())
	if len(first) != 4 {
		t.Fatalf("Desired returned %d services, want 4", len(first))
	}
	for i, ports := range permutations(c.Exposed) {
		for j, nets := range permutations(c.Networks) {
			c2 := c
			c2.Exposed, c2.Networks = ports, nets
			got, _ := Desired(c2, testPolicy())
			if diff := cmp.Diff(first, got); diff != "" {
				t.Fatalf("ports order %d, networks order %d: services differ (-first +got):\n%s", i, j, diff)
			}
		}
	}
}

func TestDefaultName(t *testing.T) {
	tests := []struct {
		name   string
		image  string
		labels map[string]string
		want   string
	}{
		{"bare image", "nginx", nil, "nginx"},
		{"image with tag", "nginx:1.27", nil, "nginx"},
		{"image with namespace", "library/nginx:latest", nil, "nginx"},
		{"registry with port, tag and digest", "registry:5000/team/app:1.2@sha256:" + strings.Repeat("a", 64), nil, "app"},
		{"registry with port, no tag", "registry:5000/app", nil, "app"},
		{"digest without tag", "ghcr.io/org/tool@sha256:" + strings.Repeat("b", 64), nil, "tool"},
		{"swarm service name wins", "nginx:1.27", map[string]string{labelSwarmServiceName: "stack_web"}, "stack_web"},
		{"empty swarm service name ignored", "nginx:1.27", map[string]string{labelSwarmServiceName: ""}, "nginx"},
		{"swarm service name Consul cannot look up ignored", "nginx:1.27", map[string]string{labelSwarmServiceName: ".."}, "nginx"},
		{"started from an image ID: the container's name", "sha256:" + strings.Repeat("c", 64), nil, "web"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := defaultName(Container{Name: "web", Image: tt.image, Labels: tt.labels})
			if got != tt.want {
				t.Errorf("defaultName(image %q) = %q, want %q", tt.image, got, tt.want)
			}
		})
	}
}

func TestSwarmSlot(t *testing.T) {
	tests := []struct {
		name     string
		taskName string
		want     string
	}{
		{"replicated task", "web.3.taskid", "3"},
		{"replicated task of a stack service", "stack_web.12.x1y2z3", "12"},
		{"global task", "web.nodeid.taskid", ""},
		{"no task name", "", ""},
		{"too few parts", "web.3", ""},
		{"too few parts, the first a number", "3.taskid", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SwarmSlot(tt.taskName); got != tt.want {
				t.Errorf("SwarmSlot(%q) = %q, want %q", tt.taskName, got, tt.want)
			}
		})
	}
}

func TestDesiredHealthMirror(t *testing.T) {
	tests := []struct {
		name   string
		health string
		output string
		want   *HealthMirror
	}{
		{"healthy is passing", "healthy", "", &HealthMirror{CheckID: "node1:web:80:docker-health", Status: "passing", Output: "docker health: healthy"}},
		{"healthy with output", "healthy", "200 OK", &HealthMirror{CheckID: "node1:web:80:docker-health", Status: "passing", Output: "docker health: healthy: 200 OK"}},
		{"unhealthy is critical", "unhealthy", "connection refused", &HealthMirror{CheckID: "node1:web:80:docker-health", Status: "critical", Output: "docker health: unhealthy: connection refused"}},
		{"starting is critical", "starting", "", &HealthMirror{CheckID: "node1:web:80:docker-health", Status: "critical", Output: "docker health: starting"}},
		{"no HEALTHCHECK", "", "", nil},
		{"HEALTHCHECK none", "none", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := macvlanContainer(func(c *Container) { c.Health, c.HealthOutput = tt.health, tt.output })
			got, _ := Desired(c, testPolicy())
			if len(got) != 1 {
				t.Fatalf("Desired returned %d services, want 1", len(got))
			}
			if diff := cmp.Diff(tt.want, got[0].Health); diff != "" {
				t.Errorf("Health mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHash(t *testing.T) {
	hashOf := func(t *testing.T, c Container) string {
		t.Helper()
		got, _ := Desired(c, testPolicy())
		if len(got) != 1 {
			t.Fatalf("Desired returned %d services, want 1", len(got))
		}
		return got[0].Meta[MetaHash]
	}
	base := func(mods ...func(*Container)) Container {
		return macvlanContainer(append([]func(*Container){
			labels("SERVICE_TAGS", "a,b", "SERVICE_VERSION", "1"),
			func(c *Container) { c.Health, c.HealthOutput = "healthy", "ok" },
		}, mods...)...)
	}
	tests := []struct {
		name string
		c    Container
		same bool
	}{
		{"identical container", base(), true},
		{"health status changes", base(func(c *Container) { c.Health = "unhealthy" }), true},
		{"health output changes", base(func(c *Container) { c.HealthOutput = "slow" }), true},
		{"health starting", base(func(c *Container) { c.Health = "starting" }), true},
		{"tags change", base(labels("SERVICE_TAGS", "a,c")), false},
		{"meta changes", base(labels("SERVICE_VERSION", "2")), false},
		{"address changes", base(func(c *Container) { c.Networks[0].IPv4 = "10.1.2.4" }), false},
		{"check added", base(labels("SERVICE_CHECK_TCP", "true")), false},
		{"HEALTHCHECK removed", base(func(c *Container) { c.Health = "" }), false},
		{"container recreated", base(func(c *Container) { c.ID = "other" }), false},
	}
	ref := hashOf(t, base())
	if ref == "" {
		t.Fatal("reference service has no hash")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := hashOf(t, tt.c)
			if (got == ref) != tt.same {
				t.Errorf("hash = %s, reference %s; want same=%v", got, ref, tt.same)
			}
		})
	}
}

func TestHashStable(t *testing.T) {
	svc := Service{
		ID: "a", Name: "b", Address: "10.0.0.1", Port: 1,
		Meta:            map[string]string{"k1": "1", "k2": "2", "k3": "3", "k4": "4", "k5": "5", MetaHash: "old"},
		TaggedAddresses: map[string]TaggedAddress{"lan_ipv4": {"10.0.0.1", 1}, "lan_ipv6": {"fd00::1", 1}},
	}
	want := Hash(svc)
	for i := range 50 {
		if got := Hash(svc); got != want {
			t.Fatalf("call %d: Hash = %s, first call %s", i, got, want)
		}
	}
	svc.Meta[MetaHash] = "new"
	if got := Hash(svc); got != want {
		t.Errorf("Hash depends on Meta[%s]: %s, want %s", MetaHash, got, want)
	}
	if svc.Meta[MetaHash] != "new" {
		t.Errorf("Hash modified its argument's Meta")
	}
}

// TestDesiredSwarmNames: with SwarmNames (the agent's --swarm-names), a
// Swarm task registers under its own Swarm service's name only: a task of
// stack_api labelled SERVICE_NAME=stack_web no longer joins stack_web in
// Consul. Its own name, set or not, is kept; other containers are not
// affected; without SwarmNames any name is taken, as before.
func TestDesiredSwarmNames(t *testing.T) {
	task := func(mods ...func(*Container)) Container {
		return macvlanContainer(append([]func(*Container){labels(
			"com.docker.swarm.service.name", "stack_api",
			"com.docker.swarm.task.id", "task456",
		)}, mods...)...)
	}
	swarmNames := Policy{Node: testNode, SwarmNames: true}
	// SwarmNameAllow (--swarm-name-allow SVC=NAME) lets a task of SVC
	// register under NAME too; any other name, and NAME on a task of
	// another service, is still refused.
	allow := Policy{Node: testNode, SwarmNames: true, SwarmNameAllow: map[string][]string{"stack_api": {"stack_web", "api"}}}
	tests := []struct {
		name         string
		c            Container
		policy       Policy
		want         []naming
		wantWarnings []wantWarning
	}{
		{
			name:   "a task naming another service takes its own",
			c:      task(labels("SERVICE_NAME", "stack_web")),
			policy: swarmNames,
			want:   []naming{{"node1:web:80", "stack_api", nil}},
			wantWarnings: []wantWarning{
				{Key: "SERVICE_NAME", Value: "stack_web", Problem: "a task of Swarm service stack_api registers under that name only (--swarm-names); stack_api is used"},
			},
		},
		{
			name:   "from the environment too",
			c:      task(env("SERVICE_NAME=stack_web")),
			policy: swarmNames,
			want:   []naming{{"node1:web:80", "stack_api", nil}},
			wantWarnings: []wantWarning{
				{Key: "SERVICE_NAME", Value: "stack_web", Problem: "(--swarm-names)"},
			},
		},
		{
			name:   "a port's name, on a task of several ports",
			c:      task(exposed(Port{80, "tcp"}, Port{443, "tcp"}), labels("SERVICE_443_NAME", "stack_web", "SERVICE_80_NAME", "stack_api")),
			policy: swarmNames,
			want:   []naming{{"node1:web:80", "stack_api", nil}, {"node1:web:443", "stack_api-443", nil}},
			wantWarnings: []wantWarning{
				{Key: "SERVICE_443_NAME", Value: "stack_web", Problem: "(--swarm-names)"},
			},
		},
		{
			name:   "its own name is kept",
			c:      task(labels("SERVICE_NAME", "stack_api")),
			policy: swarmNames,
			want:   []naming{{"node1:web:80", "stack_api", nil}},
		},
		{
			name:   "Explicit with its own name registers it",
			c:      task(labels("SERVICE_NAME", "stack_api")),
			policy: Policy{Node: testNode, SwarmNames: true, Explicit: true},
			want:   []naming{{"node1:web:80", "stack_api", nil}},
		},
		{
			name:   "a container that is no Swarm task is not affected",
			c:      macvlanContainer(labels("SERVICE_NAME", "stack_web")),
			policy: swarmNames,
			want:   []naming{{"node1:web:80", "stack_web", nil}},
		},
		{
			name:   "without SwarmNames a task takes the name it sets",
			c:      task(labels("SERVICE_NAME", "stack_web")),
			policy: testPolicy(),
			want:   []naming{{"node1:web:80", "stack_web", nil}},
		},
		{
			name:   "an allowed name is taken",
			c:      task(labels("SERVICE_NAME", "stack_web")),
			policy: allow,
			want:   []naming{{"node1:web:80", "stack_web", nil}},
		},
		{
			name:   "the other allowed name too, from the environment",
			c:      task(env("SERVICE_NAME=api")),
			policy: allow,
			want:   []naming{{"node1:web:80", "api", nil}},
		},
		{
			name:   "a name not allowed is still refused",
			c:      task(labels("SERVICE_NAME", "stack_db")),
			policy: allow,
			want:   []naming{{"node1:web:80", "stack_api", nil}},
			wantWarnings: []wantWarning{
				{Key: "SERVICE_NAME", Value: "stack_db", Problem: "a task of Swarm service stack_api registers under that name only (--swarm-names); stack_api is used (--swarm-name-allow stack_api=stack_db would allow it)"},
			},
		},
		{
			name:   "an allowance of another service does not apply",
			c:      task(labels("SERVICE_NAME", "stack_web")),
			policy: Policy{Node: testNode, SwarmNames: true, SwarmNameAllow: map[string][]string{"stack_worker": {"stack_web"}}},
			want:   []naming{{"node1:web:80", "stack_api", nil}},
			wantWarnings: []wantWarning{
				{Key: "SERVICE_NAME", Value: "stack_web", Problem: "(--swarm-names)"},
			},
		},
		{
			name:   "a port's allowed name, on a task of several ports",
			c:      task(exposed(Port{80, "tcp"}, Port{443, "tcp"}), labels("SERVICE_443_NAME", "stack_web", "SERVICE_80_NAME", "stack_db")),
			policy: allow,
			want:   []naming{{"node1:web:80", "stack_api-80", nil}, {"node1:web:443", "stack_web", nil}},
			wantWarnings: []wantWarning{
				{Key: "SERVICE_80_NAME", Value: "stack_db", Problem: "(--swarm-names)"},
			},
		},
		{
			name:   "a container that is no Swarm task is not affected by an allowance",
			c:      macvlanContainer(labels("SERVICE_NAME", "stack_db")),
			policy: allow,
			want:   []naming{{"node1:web:80", "stack_db", nil}},
		},
		{
			name:   "without SwarmNames the allowance changes nothing",
			c:      task(labels("SERVICE_NAME", "stack_db")),
			policy: Policy{Node: testNode, SwarmNameAllow: allow.SwarmNameAllow},
			want:   []naming{{"node1:web:80", "stack_db", nil}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warnings := Desired(tt.c, tt.policy)
			if diff := cmp.Diff(tt.want, namings(got)); diff != "" {
				t.Errorf("naming mismatch (-want +got):\n%s", diff)
			}
			checkWarnings(t, tt.c.Name, warnings, tt.wantWarnings)
		})
	}
}

// TestDesiredSwarmNameHint: the refusal names the --swarm-name-allow
// value that would allow the name, but not for a Swarm service name the
// flag would refuse.
func TestDesiredSwarmNameHint(t *testing.T) {
	p := Policy{Node: testNode, SwarmNames: true}
	for _, tc := range []struct{ svc, want string }{
		{"stack_api", "(--swarm-name-allow stack_api=stack_web would allow it)"},
		{"stack\x01api", ""},
	} {
		c := macvlanContainer(labels("com.docker.swarm.service.name", tc.svc, "SERVICE_NAME", "stack_web"))
		_, warnings := Desired(c, p)
		var problem string
		for _, w := range warnings {
			if w.Key == "SERVICE_NAME" {
				problem = w.Problem
			}
		}
		if !strings.Contains(problem, "(--swarm-names)") || strings.Contains(problem, "--swarm-name-allow") != (tc.want != "") || !strings.Contains(problem, tc.want) {
			t.Errorf("Swarm service %q: SERVICE_NAME's warning %q, want a refusal with %q", tc.svc, problem, tc.want)
		}
	}
}

// TestCheckName: CheckName takes what Desired takes as a service name
// and says why it refuses the rest.
func TestCheckName(t *testing.T) {
	for _, name := range []string{"stack_web", "web.v2", "a/b", "web api"} {
		if err := CheckName(name); err != nil {
			t.Errorf("CheckName(%q) = %v, want nil", name, err)
		}
	}
	for _, tc := range []struct{ name, want string }{
		{"", "empty"},
		{".", "not usable as a Consul service name"},
		{"..", "not usable as a Consul service name"},
		{"a//b", "not usable as a Consul service name"},
		{"a/", "not usable as a Consul service name"},
		{"web\n", "not usable as a Consul service name"},
	} {
		if err := CheckName(tc.name); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckName(%q) = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	// What CheckName takes, Desired registers under, and the reverse.
	for _, name := range []string{"stack_web", "a//b", "..", "web\x7f"} {
		got, _ := Desired(macvlanContainer(labels("SERVICE_NAME", name)), testPolicy())
		if taken := len(got) == 1 && got[0].Name == name; taken != (CheckName(name) == nil) {
			t.Errorf("SERVICE_NAME=%q: registered under it %v, CheckName = %v", name, taken, CheckName(name))
		}
	}
}

// TestDesiredNamesThatReadAsOthers: a service name or ID from a label
// was refused for a control character only, so a bidi override
// ("admin\u202e..."), an isolate, a line separator or a zero-width
// character went to Consul as it was, where it reads in a terminal or a
// log as another name than it holds. Such names and IDs are refused as
// control characters are, the value quoted in the warning; a tag holding
// one is left out (the rest kept), as Consul's CLI prints tags as they are.
func TestDesiredNamesThatReadAsOthers(t *testing.T) {
	for _, bad := range []string{
		"admin\u202etxt.exe", // right-to-left override
		"web\u2066x\u2069",   // isolates
		"web\u2028api",       // line separator
		"web\u2029api",       // paragraph separator
		"we\u200bb",          // zero-width space (Cf)
		"\ufeffweb",          // byte order mark (Cf)
		"web\xff",            // not UTF-8
	} {
		t.Run(fmt.Sprintf("%q", bad), func(t *testing.T) {
			c := macvlanContainer(labels("SERVICE_NAME", bad, "SERVICE_ID", bad, "SERVICE_TAGS", "a,"+bad+",b"))
			got, warnings := Desired(c, testPolicy())
			if len(got) != 1 {
				t.Fatalf("%d services, want 1", len(got))
			}
			if got[0].Name == bad || got[0].ID == bad {
				t.Errorf("registered as name %q, ID %q: want neither %q", got[0].Name, got[0].ID, bad)
			}
			if diff := cmp.Diff([]string{"a", "b"}, got[0].Tags); diff != "" {
				t.Errorf("tags mismatch (-want +got):\n%s", diff)
			}
			checkWarnings(t, c.Name, warnings, []wantWarning{
				{Key: "SERVICE_NAME", Value: bad, Problem: "not usable as a Consul service name"},
				{Key: "SERVICE_ID", Value: bad, Problem: "not usable as a Consul service ID"},
				{Key: "SERVICE_TAGS", Value: "a," + bad + ",b", Problem: fmt.Sprintf("tag %q left out", bad)},
			})
			if err := CheckName(bad); err == nil {
				t.Errorf("CheckName(%q) = nil, want an error", bad)
			}
		})
	}
	// Spaces and letters of every script are fine.
	for _, good := range []string{"web api", "café", "ウェブ"} {
		c := macvlanContainer(labels("SERVICE_NAME", good, "SERVICE_ID", good, "SERVICE_TAGS", good))
		got, warnings := Desired(c, testPolicy())
		if len(got) != 1 || got[0].Name != good || got[0].ID != good || !slices.Contains(got[0].Tags, good) || len(warnings) != 0 {
			t.Errorf("%q: got %+v, warnings %v: want it as name, ID and tag", good, got, warnings)
		}
	}
}

// TestDesiredLookAlikeSpaces: a name, ID or tag holding a space other
// than U+0020 (the no-break space U+00A0, U+2000–U+200A, U+202F, U+205F,
// U+3000) or a character shown as nothing (the soft hyphen, a variation
// selector, the Hangul filler) was taken, so that "web" and "web\u00a0"
// were two services that read the same in the dashboard, `underlay ips`
// and Consul's UI. They are refused as a zero-width space is, and the
// warning names the code point.
func TestDesiredLookAlikeSpaces(t *testing.T) {
	for _, tc := range []struct{ bad, point string }{
		{"web\u00a0", "U+00A0"},
		{"we\u2000b", "U+2000"},
		{"we\u2007b", "U+2007"},
		{"we\u200ab", "U+200A"},
		{"we\u202fb", "U+202F"},
		{"we\u205fb", "U+205F"},
		{"we\u3000b", "U+3000"},
		{"we\u1680b", "U+1680"},
		{"we\u00adb", "U+00AD"},
		{"we\u200cb", "U+200C"},
		{"we\u200db", "U+200D"},
		{"we\u2060b", "U+2060"},
		{"we\ufe0fb", "U+FE0F"},
		{"we\u3164b", "U+3164"},
		{"we\u034fb", "U+034F"},
	} {
		t.Run(tc.point, func(t *testing.T) {
			// A tag's edges are trimmed (strings.TrimSpace: U+00A0 too).
			tag := "x" + tc.bad + "x"
			c := macvlanContainer(labels("SERVICE_NAME", tc.bad, "SERVICE_ID", tc.bad, "SERVICE_TAGS", "a,"+tag+",b"))
			got, warnings := Desired(c, testPolicy())
			if len(got) != 1 {
				t.Fatalf("%d services, want 1", len(got))
			}
			if got[0].Name == tc.bad || got[0].ID == tc.bad {
				t.Errorf("registered as name %q, ID %q: want neither %q", got[0].Name, got[0].ID, tc.bad)
			}
			if diff := cmp.Diff([]string{"a", "b"}, got[0].Tags); diff != "" {
				t.Errorf("tags mismatch (-want +got):\n%s", diff)
			}
			checkWarnings(t, c.Name, warnings, []wantWarning{
				{Key: "SERVICE_NAME", Value: tc.bad, Problem: "not usable as a Consul service name"},
				{Key: "SERVICE_ID", Value: tc.bad, Problem: "not usable as a Consul service ID"},
				{Key: "SERVICE_TAGS", Value: "a," + tag + ",b", Problem: "left out"},
			})
			for _, w := range warnings {
				if !strings.Contains(w.Problem, tc.point) {
					t.Errorf("warning %q on %s does not name %s", w.Problem, w.Key, tc.point)
				}
			}
			if err := CheckName(tc.bad); err == nil || !strings.Contains(err.Error(), tc.point) {
				t.Errorf("CheckName(%q) = %v, want an error naming %s", tc.bad, err, tc.point)
			}
		})
	}
}

// TestDesiredEdgeSpaces: a service name or ID starting or ending with a
// space (U+0020) was taken, so that "web" and "web " were two services
// that read alike: HTML collapses the space (the dashboard, Consul's UI),
// and a terminal or a table shows nothing of it. They are refused as a
// no-break space is, the warning saying where the space is; CheckName
// (--swarm-name-allow) refuses them too. A space inside is fine, and a
// tag's edges are trimmed, as they were.
func TestDesiredEdgeSpaces(t *testing.T) {
	for _, tc := range []struct{ bad, where string }{
		{"web ", "a space (U+0020) at its end"},
		{" web", "a space (U+0020) at its start"},
		{"  ", "a space (U+0020) at its start"},
	} {
		t.Run(fmt.Sprintf("%q", tc.bad), func(t *testing.T) {
			c := macvlanContainer(labels("SERVICE_NAME", tc.bad, "SERVICE_ID", tc.bad, "SERVICE_TAGS", "a, x ,b"))
			got, warnings := Desired(c, testPolicy())
			if len(got) != 1 {
				t.Fatalf("%d services, want 1", len(got))
			}
			if got[0].Name == tc.bad || got[0].ID == tc.bad {
				t.Errorf("registered as name %q, ID %q: want neither %q", got[0].Name, got[0].ID, tc.bad)
			}
			if diff := cmp.Diff([]string{"a", "x", "b"}, got[0].Tags); diff != "" {
				t.Errorf("tags mismatch (-want +got):\n%s", diff)
			}
			checkWarnings(t, c.Name, warnings, []wantWarning{
				{Key: "SERVICE_NAME", Value: tc.bad, Problem: "not usable as a Consul service name"},
				{Key: "SERVICE_ID", Value: tc.bad, Problem: "not usable as a Consul service ID"},
			})
			for _, w := range warnings {
				if !strings.Contains(w.Problem, tc.where) {
					t.Errorf("warning %q on %s does not say %q", w.Problem, w.Key, tc.where)
				}
			}
			if err := CheckName(tc.bad); err == nil || !strings.Contains(err.Error(), tc.where) {
				t.Errorf("CheckName(%q) = %v, want an error saying %q", tc.bad, err, tc.where)
			}
		})
	}
}

// TestAgentTags: the agent's --tags went to every service as they were
// given, unchecked: a tag with a control character, a bidi override or a
// no-break space, which SERVICE_TAGS would leave out, was registered on
// every service, and "a, b" gave the tag " b". AgentTags takes them as
// SERVICE_TAGS's are taken, and refuses the rest naming the tag.
func TestAgentTags(t *testing.T) {
	got, err := AgentTags([]string{"a", " b ", "", "a", "web api", "café"})
	if err != nil {
		t.Fatalf("AgentTags: %v", err)
	}
	if diff := cmp.Diff([]string{"a", "b", "web api", "café"}, got); diff != "" {
		t.Errorf("tags mismatch (-want +got):\n%s", diff)
	}
	if got, err := AgentTags(nil); err != nil || len(got) != 0 {
		t.Errorf("AgentTags(nil) = %q, %v; want none", got, err)
	}
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{[]string{"ok", "we\u00a0b"}, `tag "we\u00a0b": U+00A0 (a space other than U+0020) at byte 2`},
		{[]string{"x\u202ey"}, `tag "x\u202ey": U+202E`},
		{[]string{"a\x1bb"}, `tag "a\x1bb": U+001B (a control character)`},
		{[]string{"we\u200bb"}, `U+200B`},
		{[]string{"a\xff"}, `tag "a\xff": byte 0xff at byte 1 is not UTF-8`},
	} {
		_, err := AgentTags(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("AgentTags(%q) = %v, want an error containing %q", tc.in, err, tc.want)
		}
	}
	many := make([]string, maxTags+1)
	for i := range many {
		many[i] = fmt.Sprint("t", i)
	}
	if _, err := AgentTags(many[:maxTags]); err != nil {
		t.Errorf("%d tags: %v, want them taken", maxTags, err)
	}
	if _, err := AgentTags(many); err == nil || !strings.Contains(err.Error(), "65 tags, more than the 64") {
		t.Errorf("%d tags: %v, want an error saying there are too many", len(many), err)
	}
}
