package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"

	"github.com/underlay/underlay/internal/netspec"
)

// TestNetworkBadFlags checks that the network commands refuse bad values
// before they read or write anything, naming the value. The context is
// already cancelled and Consul unreachable, so that a value let through
// fails on something else.
func TestNetworkBadFlags(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix://"+t.TempDir()+"/no-docker.sock")
	plan := []string{"network", "plan", "web", "--subnet", "10.0.0.0/24", "--gateway", "10.0.0.1", "--parent", "eth0"}
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		// rm marked the network deleting and removed the swarm network,
		// then gave up at once.
		{"rm zero timeout", []string{"network", "rm", "web", "--timeout", "0s"}, "--timeout 0s"},
		{"rm negative timeout", []string{"network", "rm", "web", "--timeout", "-1m"}, "--timeout -1m0s"},
		// plan printed a plan for a node named "" and two ranges, two
		// config-only networks of one name, for a node named twice.
		{"plan empty node", append(plan, "--nodes", "a,,b"), `--nodes "a,,b": node 2 has no name`},
		{"plan node twice", append(plan, "--nodes", "a,b,a"), `--nodes "a,b,a": node a is named twice`},
		// Node names are printed into the script's comments: a newline
		// in a quoted name made the rest of it a command of the script,
		// and the nodes after an unquoted one were left out.
		{"plan node with a newline", append(plan, "--nodes", "a,b\nc"), `--nodes "a,b\nc": node "b\nc" has a space or control character`},
		{"plan quoted node with a newline", append(plan, "--nodes", `a,"b`+"\n"+`reboot;"`), `node "\"b\nreboot;\"" has a space or control character`},
		{"plan node with a space", append(plan, "--nodes", "a, b"), `--nodes "a, b": node " b" has a space or control character`},
		// The script's last step, run on the manager, makes the swarm
		// network from the config-only network only --nodes get: Docker
		// refuses it where that network does not exist.
		{"plan manager not a node", append(plan, "--nodes", "a,b", "--manager", "m"), `--manager "m": not among --nodes "a,b"`},
		// The first address was dropped: no longer reserved, Docker could
		// hand it to a container.
		{"aux name twice", append(plan, "--nodes", "a", "--aux-address", "x=10.0.0.5", "--aux-address", "x=10.0.0.6"), `--aux-address "x=10.0.0.6": x is already 10.0.0.5`},
		// The network was made on the untagged parent eth0.
		{"vlan 0", append(plan, "--nodes", "a", "--vlan", "0"), "--vlan 0: want 1 to 4094"},
		// With no --parent, the parent was ".40", named as if given.
		{"vlan with no parent", []string{"network", "plan", "web", "--subnet", "10.0.0.0/24", "--gateway", "10.0.0.1", "--nodes", "a", "--vlan", "40"},
			"--vlan 40 needs --parent"},
		// create read the existing networks from Consul before checking
		// the spec: with Consul out of reach, its error, not the value's.
		{"create bad parent", []string{"network", "create", "web", "--subnet", "10.0.0.0/24", "--gateway", "10.0.0.1", "--parent", "a/b"}, `parent "a/b": not an interface name`},
		{"create VLAN 4095", []string{"network", "create", "web", "--subnet", "10.0.0.0/24", "--gateway", "10.0.0.1", "--parent", "eth0.4095"}, `parent "eth0.4095": VLAN id 4095 out of 1 to 4094`},
		{"create subnet /0", []string{"network", "create", "web", "--subnet", "0.0.0.0/0", "--gateway", "10.0.0.1", "--parent", "eth0"}, `subnet 0.0.0.0/0`},
		// Cluster IPAM has no per-node ranges: the size was stored and
		// listed, and meant nothing.
		{"per-node size with cluster IPAM", []string{"network", "create", "web", "--subnet", "10.0.0.0/24", "--gateway", "10.0.0.1", "--parent", "eth0",
			"--ipam", "cluster", "--per-node-size", "16"}, "--per-node-size 16 with --ipam cluster"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			var out, errOut bytes.Buffer
			code := Run(ctx, append(tt.args, "--consul-addr", "127.0.0.1:1"), IOStreams{Out: &out, ErrOut: &errOut})
			if code == 0 || !strings.Contains(errOut.String(), tt.wantErr) {
				t.Errorf("exit %d, stdout %.200q, stderr %q; want failure naming %q", code, out.String(), errOut.String(), tt.wantErr)
			}
		})
	}
}

// TestNetworkNumbersAreDecimal: numbers are read as written. pflag reads
// ints in Go syntax, so --vlan 040 was VLAN 32 (octal) and --vlan 0x28
// VLAN 40.
func TestNetworkNumbersAreDecimal(t *testing.T) {
	plan := []string{"network", "plan", "web", "--subnet", "10.0.0.0/24", "--gateway", "10.0.0.1", "--parent", "eth0", "--nodes", "a"}
	tests := []struct {
		name     string
		args     []string
		wantOut  string // in the plan printed
		wantErr  string // refused, naming it
		notInOut string
	}{
		{"vlan with a leading zero", append(plan, "--vlan", "040"), "ip link add link eth0 name eth0.40 type vlan id 40", "", "eth0.32"},
		{"vlan in hex", append(plan, "--vlan", "0x28"), "", `"0x28"`, ""},
		{"vlan in octal notation", append(plan, "--vlan", "0o50"), "", `"0o50"`, ""},
		{"per-node size with a leading zero", append(plan, "--per-node-size", "016"), "16 addresses per node", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Run(context.Background(), tt.args, IOStreams{Out: &out, ErrOut: &errOut})
			if tt.wantErr != "" {
				if code == 0 || !strings.Contains(errOut.String(), tt.wantErr) {
					t.Errorf("exit %d, stdout %.200q, stderr %q; want failure naming %s", code, out.String(), errOut.String(), tt.wantErr)
				}
				return
			}
			if code != 0 || !strings.Contains(out.String(), tt.wantOut) || tt.notInOut != "" && strings.Contains(out.String(), tt.notInOut) {
				t.Errorf("exit %d, stderr %q, stdout:\n%s\nwant a plan with %q", code, errOut.String(), out.String(), tt.wantOut)
			}
		})
	}
}

// TestClusterNetworkHasNoPerNodeSize: cluster IPAM has no per-node
// ranges. The flag's default was stored in the spec all the same, and ls
// and inspect showed it ("64 per node").
func TestClusterNetworkHasNoPerNodeSize(t *testing.T) {
	sf := &specFlags{}
	cmd := &cobra.Command{Use: "create"}
	sf.add(cmd)
	if err := cmd.Flags().Parse([]string{"--subnet", "10.0.0.0/24", "--gateway", "10.0.0.1", "--parent", "eth0", "--ipam", "cluster"}); err != nil {
		t.Fatal(err)
	}
	s, err := sf.spec("web")
	if err != nil {
		t.Fatal(err)
	}
	if s.PerNodeSize != 0 {
		t.Errorf("cluster spec stored with per-node size %d, want none", s.PerNodeSize)
	}
	// Specs stored so before.
	s.PerNodeSize = netspec.DefaultPerNodeSize
	if got := perNodeSize(s); got != "-" {
		t.Errorf("per-node size of a cluster network shown as %q, want -", got)
	}
	s.IPAM = netspec.PerNode
	if got := perNodeSize(s); got != "64" {
		t.Errorf("per-node size of a per-node network shown as %q, want 64", got)
	}
}

// fakeConsulKV serves Consul's KV reads of pairs: the recursive listing
// of a prefix, or one key.
func fakeConsulKV(t *testing.T, pairs map[string]string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		prefix, ok := strings.CutPrefix(r.URL.Path, "/v1/kv/")
		if !ok || r.Method != http.MethodGet {
			http.Error(w, "not faked", http.StatusNotImplemented)
			return
		}
		recurse := r.URL.Query().Has("recurse") // else a get of one key
		var out []map[string]any
		for _, k := range slices.Sorted(maps.Keys(pairs)) {
			if recurse && strings.HasPrefix(k, prefix) || k == prefix {
				out = append(out, map[string]any{"Key": k, "Value": []byte(pairs[k]), "ModifyIndex": 7})
			}
		}
		if out == nil {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("X-Consul-Index", "7")
		json.NewEncoder(w).Encode(out)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestNetworkListSkipsUnlistableNames: a hand-written spec key under the
// network name "", "." or ".." (underlay/networks/../spec) was listed as
// a network refused, with `consul kv delete -recurse underlay/networks/../`
// for its fix: a delete whose path Consul's HTTP API redirects to
// underlay/. Such a key is now left out of the table and of --json, with
// a warning naming it on stderr, and no such fix.
func TestNetworkListSkipsUnlistableNames(t *testing.T) {
	keys := []string{"underlay/networks/../spec", "underlay/networks/./spec", "underlay/networks//spec"}
	srv := fakeConsulKV(t, map[string]string{
		"underlay/networks/good/spec": `{"name":"good","subnet":"10.1.0.0/24","gateway":"10.1.0.1","parent":"eth0","ipam":"per-node","per_node_size":64}`,
		keys[0]:                       `{"name":"..","subnet":"10.2.0.0/24","gateway":"10.2.0.1","parent":"eth1","ipam":"per-node","per_node_size":64}`,
		keys[1]:                       `{"name":`,
		keys[2]:                       `{"name":"","subnet":"10.3.0.0/24","gateway":"10.3.0.1","parent":"eth2","ipam":"per-node","per_node_size":64}`,
	})
	for _, args := range [][]string{{"network", "ls"}, {"network", "ls", "--json"}} {
		var out, errOut bytes.Buffer
		code := Run(context.Background(), append(args, "--consul-addr", srv.URL), IOStreams{Out: &out, ErrOut: &errOut})
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", args, code, errOut.String())
		}
		if strings.Contains(out.String(), `".."`) || strings.Contains(out.String(), "\n..") || strings.Count(out.String(), "good") != 1 {
			t.Errorf("%s: listed %q; want good only", args, out.String())
		}
		for _, k := range keys {
			if !strings.Contains(errOut.String(), "warning: "+k) {
				t.Errorf("%s: stderr %q; want a warning naming %s", args, errOut.String(), k)
			}
		}
		if strings.Contains(errOut.String(), "kv delete -recurse") {
			t.Errorf("%s: stderr %q gives a delete through a redirected path", args, errOut.String())
		}
	}
}

// TestNetworkListShowsRefusedSpecs: ls shows the specs every agent
// refuses for what they are. It left out a spec that cannot be read (to
// which create's "already exists" refers), and listed one that fails
// create's checks as active.
func TestNetworkListShowsRefusedSpecs(t *testing.T) {
	srv := fakeConsulKV(t, map[string]string{
		"underlay/networks/good/spec":   `{"name":"good","subnet":"10.1.0.0/24","gateway":"10.1.0.1","parent":"eth0","ipam":"per-node","per_node_size":64}`,
		"underlay/networks/bad/spec":    `{"name":"bad","subnet":"10.2.0.0/24","gateway":"10.9.0.1","parent":"eth1","ipam":"per-node","per_node_size":64}`,
		"underlay/networks/broken/spec": `{"name":"broken","subnet":`,
		"underlay/networks/my net/spec": `{"name":"my net","subnet":"10.3.0.0/24","gateway":"10.3.0.1","parent":"eth2","ipam":"per-node","per_node_size":64}`,
	})
	var out, errOut bytes.Buffer
	code := Run(context.Background(), []string{"network", "ls", "--consul-addr", srv.URL}, IOStreams{Out: &out, ErrOut: &errOut})
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	rows := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n")[1:] {
		f := strings.Fields(strings.Replace(line, "my net", "my-net", 1))
		rows[f[0]] = f[len(f)-1]
	}
	if want := map[string]string{"good": "active", "bad": "invalid", "broken": "unreadable", "my-net": "invalid"}; !maps.Equal(rows, want) {
		t.Errorf("states %v, want %v; output:\n%s", rows, want, out.String())
	}
	for _, w := range []string{"network bad:", "gateway 10.9.0.1 is outside subnet 10.2.0.0/24", "network broken:", "underlay/networks/broken/spec", "underlay network rm broken",
		// rm refuses a name that is none: its keys go with consul.
		`network my net:`, `consul kv delete -recurse 'underlay/networks/my net/'`} {
		if !strings.Contains(errOut.String(), w) {
			t.Errorf("stderr %q does not name %q", errOut.String(), w)
		}
	}

	out.Reset()
	errOut.Reset()
	if code := Run(context.Background(), []string{"network", "ls", "--json", "--consul-addr", srv.URL}, IOStreams{Out: &out, ErrOut: &errOut}); code != 0 {
		t.Fatalf("--json: exit %d: %s", code, errOut.String())
	}
	var doc struct {
		Networks []struct{ Name string }
		Refused  []struct{ Name, Key, Error string }
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("--json: %v: %s", err, out.String())
	}
	var refused []string
	for _, r := range doc.Refused {
		if r.Key == "" || r.Error == "" {
			t.Errorf("--json refused %+v: want its key and error", r)
		}
		refused = append(refused, r.Name)
	}
	if want := []string{"bad", "broken", "my net"}; !slices.Equal(refused, want) || len(doc.Networks) != 3 {
		t.Errorf("--json: %d networks, refused %v; want 3 networks (good, bad, my net) and refused %v", len(doc.Networks), refused, want)
	}
}

// TestIPsSkipsRefusedSpecs: ips listed the pool of a cluster spec every
// agent refuses as a network's, its gateway "invalid IP".
func TestIPsSkipsRefusedSpecs(t *testing.T) {
	srv := fakeConsulKV(t, map[string]string{
		"underlay/networks/good/spec": `{"name":"good","subnet":"10.1.0.0/24","gateway":"10.1.0.1","parent":"eth0","ipam":"cluster"}`,
		"underlay/networks/x/spec":    `{"name":"x","ipam":"cluster","parent":"eth1"}`,
	})
	var out, errOut bytes.Buffer
	if code := Run(context.Background(), []string{"ips", "--consul-addr", srv.URL}, IOStreams{Out: &out, ErrOut: &errOut}); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "10.1.0.1") || strings.Contains(out.String(), "invalid IP") || strings.Contains(out.String(), " x ") {
		t.Errorf("stdout:\n%s\nwant good's gateway, nothing of x", out.String())
	}
	for _, w := range []string{"network x", "underlay/networks/x/spec", "subnet: missing", "underlay network rm x"} {
		if !strings.Contains(errOut.String(), w) {
			t.Errorf("stderr %q does not name %q", errOut.String(), w)
		}
	}
}

// TestWriteNetworkInspect: inspect's text showed subnet, gateway, parent
// and IPAM, but not the range containers draw from, the aux addresses
// never given out, nor the IPv6 subnet, which --json shows.
func TestWriteNetworkInspect(t *testing.T) {
	base := netspec.Spec{Name: "web", Subnet: netip.MustParsePrefix("10.0.0.0/24"), Gateway: netip.MustParseAddr("10.0.0.1"),
		Parent: "eth0.40", IPAM: netspec.PerNode, PerNodeSize: 16}
	full := base
	full.IPRange = netip.MustParsePrefix("10.0.0.128/25")
	full.Aux = map[string]netip.Addr{"printer": netip.MustParseAddr("10.0.0.5"), "nas": netip.MustParseAddr("10.0.0.6")}
	full.IPv6Subnet = netip.MustParsePrefix("fd00:1::/64")
	states := []netspec.NodeState{{ID: "abcdefghijklmnop", Node: "n1", State: netspec.StateReady,
		Range: netip.MustParsePrefix("10.0.0.128/28"), Shim: netip.MustParseAddr("10.0.0.129"), ShimLink: "ul-01234567", Parent: "eth0.40"}}
	tests := []struct {
		name         string
		spec         netspec.Spec
		want, absent []string
	}{
		{"range, aux and IPv6", full, []string{
			"subnet 10.0.0.0/24 gateway 10.0.0.1 parent eth0.40 ipam per-node (16 per node)",
			"\nip range 10.0.0.128/25\n",
			"\naux addresses nas=10.0.0.6 printer=10.0.0.5\n",
			"\nipv6 subnet fd00:1::/64\n",
			"n1  ", "10.0.0.128/28",
		}, nil},
		// Lines for what is not set would only be noise.
		{"none of them", base, []string{"subnet 10.0.0.0/24", "10.0.0.128/28"}, []string{"ip range", "aux", "ipv6", "IPV6"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := writeNetworkInspect(&out, tt.spec, states); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output does not hold %q:\n%s", w, out.String())
				}
			}
			for _, a := range tt.absent {
				if strings.Contains(out.String(), a) {
					t.Errorf("output holds %q:\n%s", a, out.String())
				}
			}
		})
	}
}

// TestNetworkInspectIPv6Ranges: inspect listed each node's IPv4 range of
// a per-node network, which an ipvlan l3 network's router must route to
// the node, but not its IPv6 /80, which the router must route too and
// which each node's config-only network hands out; neither the text nor
// --json showed it. Both now do, for per-node networks with an IPv6
// subnet; a node with no range (an error) has none.
func TestNetworkInspectIPv6Ranges(t *testing.T) {
	kv := map[string]string{
		"underlay/networks/web/spec":                             `{"name":"web","subnet":"10.0.0.0/24","gateway":"10.0.0.1","parent":"eth0.40","ipam":"per-node","per_node_size":16,"ip_range":"10.0.0.128/25","ipv6_subnet":"fd00:1::/64"}`,
		"underlay/networks/web/nodes/id10000000000000000000000":  `{"id":"id10000000000000000000000","node":"n1","state":"ready","range":"10.0.0.128/28","shim":"10.0.0.129","shim_link":"ul-01234567","parent":"eth0.40","range6":"fd00:1::/80","shim6":"fd00:1::ffff:ffff:ffff"}`,
		"underlay/networks/web/nodes/id2":                        `{"id":"id2","node":"n2","state":"ready","range":"10.0.0.144/28","shim":"10.0.0.145","shim_link":"ul-01234567","parent":"eth0.40"}`,
		"underlay/networks/web/nodes/id3":                        `{"id":"id3","node":"n3","state":"error","parent":"eth0.40","error":"no parent"}`,
		"underlay/networks/lan/spec":                             `{"name":"lan","subnet":"10.1.0.0/24","gateway":"10.1.0.1","parent":"eth1","ipam":"per-node","per_node_size":64}`,
		"underlay/networks/lan/nodes/id10000000000000000000000":  `{"id":"id10000000000000000000000","node":"n1","state":"ready","range":"10.1.0.0/26","shim":"10.1.0.2","shim_link":"ul-89abcdef","parent":"eth1"}`,
		"underlay/networks/pool/spec":                            `{"name":"pool","subnet":"10.2.0.0/24","gateway":"10.2.0.1","parent":"eth2","ipam":"cluster","ipv6_subnet":"fd00:2::/64"}`,
		"underlay/networks/pool/nodes/id10000000000000000000000": `{"id":"id10000000000000000000000","node":"n1","state":"ready","range":"10.2.0.0/24","shim":"10.2.0.2","shim_link":"ul-76543210","parent":"eth2"}`,
	}
	srv := fakeConsulKV(t, kv)
	inspect := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := Run(context.Background(), append([]string{"network", "inspect", "--consul-addr", srv.URL}, args...), IOStreams{Out: &out, ErrOut: &errOut}); code != 0 {
			t.Fatalf("inspect %v: exit %d: %s", args, code, errOut.String())
		}
		return out.String()
	}
	text := inspect("web")
	// n1 holds the first range (the /80 numbered 0), n2 the second.
	// n1's agent reports its shim's IPv6 address too; n2's is older.
	for _, re := range []string{`NODE +ID +STATE +RANGE +IPV6 RANGE +PARENT`, `\nn1 .* 10\.0\.0\.128/28 +fd00:1::/80 +eth0\.40 +ul-01234567 10\.0\.0\.129 fd00:1::ffff:ffff:ffff\s`,
		`\nn2 .* 10\.0\.0\.144/28 +fd00:1:0:0:1::/80 +eth0\.40`, `\nn3 .* error +- +- +eth0\.40`} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("text does not match %q:\n%s", re, text)
		}
	}
	var doc struct {
		Nodes []struct {
			Node      string `json:"node"`
			Range     string `json:"range"`
			IPv6Range string `json:"ipv6_range"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(inspect("web", "--json")), &doc); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"n1": "fd00:1::/80", "n2": "fd00:1:0:0:1::/80", "n3": ""}
	got := map[string]string{}
	for _, n := range doc.Nodes {
		got[n.Node] = n.IPv6Range
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("--json nodes' ipv6_range (-want +got):\n%s", d)
	}
	// No IPv6 subnet, or one cluster pool: no per-node IPv6 range.
	for _, name := range []string{"lan", "pool"} {
		if out := inspect(name); strings.Contains(out, "IPV6") {
			t.Errorf("inspect %s shows an IPv6 range column:\n%s", name, out)
		}
		if out := inspect(name, "--json"); strings.Contains(out, "ipv6_range") {
			t.Errorf("inspect %s --json shows an ipv6_range:\n%s", name, out)
		}
	}
}

// TestIPsFilters: ips printed its header and nothing else, exit 0, for a
// filter naming a network or node that does not exist (a typo), as for
// one that matched no address; an empty value listed everything.
func TestIPsFilters(t *testing.T) {
	srv := fakeConsulKV(t, map[string]string{
		"underlay/networks/lan/spec":                   `{"name":"lan","subnet":"10.1.0.0/24","gateway":"10.1.0.1","parent":"eth0","ipam":"per-node","per_node_size":64}`,
		"underlay/networks/empty/spec":                 `{"name":"empty","subnet":"10.2.0.0/24","gateway":"10.2.0.1","parent":"eth1","ipam":"per-node","per_node_size":64}`,
		"underlay/nodes/id10000000000000000000000":     `{"id":"id10000000000000000000000","node":"n1","interfaces":["eth0","eth1"]}`,
		"underlay/nodes/id20000000000000000000000":     `{"id":"id20000000000000000000000","node":"n2","interfaces":["eth0","eth1"]}`,
		"underlay/inventory/id10000000000000000000000": `[{"ip":"10.1.0.5","mac":"02:00:00:00:00:05","node":"n1","network":"lan","container":"web.1","container_id":"c1"}]`,
	})
	tests := []struct {
		name      string
		args      []string
		wantCode  int
		wantOut   string // in stdout
		wantErr   string // in stderr
		wantNoOut string // not in stdout
	}{
		{"match", []string{"--network", "lan", "--node", "n1"}, 0, "10.1.0.5", "", ""},
		{"unknown network", []string{"--network", "lna"}, 1, "", `--network "lna": no such network (networks: empty, lan)`, "IP"},
		{"unknown node", []string{"--node", "n3"}, 1, "", `--node "n3": no such node (nodes: n1, n2)`, "IP"},
		{"empty network", []string{"--network", ""}, 1, "", `--network "": empty`, "IP"},
		{"empty node", []string{"--node", ""}, 1, "", `--node "": empty`, "IP"},
		// Known, and holding no address there: said so, not an error.
		{"no address on the network", []string{"--network", "empty"}, 0, "", "no addresses match --network empty", "10.1.0.5"},
		{"no address on the node", []string{"--network", "lan", "--node", "n2"}, 0, "", "no addresses match --network lan --node n2", "10.1.0.5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Run(context.Background(), append([]string{"ips", "--consul-addr", srv.URL}, tt.args...), IOStreams{Out: &out, ErrOut: &errOut})
			if code != tt.wantCode || !strings.Contains(out.String(), tt.wantOut) || !strings.Contains(errOut.String(), tt.wantErr) ||
				tt.wantNoOut != "" && strings.Contains(out.String(), tt.wantNoOut) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, stdout with %q and without %q, stderr with %q",
					code, out.String(), errOut.String(), tt.wantCode, tt.wantOut, tt.wantNoOut, tt.wantErr)
			}
		})
	}
}

// TestWriteNetworkInspectQuotesReports: the node reports inspect lists
// are documents each node's agent writes, and every agent's Consul token
// may write any node's: inspect printed their names, parents and errors
// as they were, so that a newline in one forged rows for other nodes (a
// network shown ready where it is not) and an escape sequence rewrote
// the terminal. Such values are now printed quoted, on their row.
func TestWriteNetworkInspectQuotesReports(t *testing.T) {
	s := netspec.Spec{Name: "web", Subnet: netip.MustParsePrefix("10.0.0.0/24"), Gateway: netip.MustParseAddr("10.0.0.1"),
		Parent: "eth0", IPAM: netspec.PerNode, PerNodeSize: 16}
	forged := "n9\nn2  ready"
	states := []netspec.NodeState{
		{ID: "id10000000000000000000000", Node: "n1", State: netspec.StateError, Parent: "eth0", ShimLink: "ul-1", Error: "boom\nn3  id3  ready"},
		{ID: "id9\x1b[2J", Node: forged, State: "ready\tx", Parent: "eth0\n", ShimLink: "ul\r9"},
	}
	var out bytes.Buffer
	if err := writeNetworkInspect(&out, s, states); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 4 { // the network, the header, two nodes
		t.Fatalf("%d lines, want 4 (network, header, 2 nodes):\n%s", len(lines), out.String())
	}
	if strings.ContainsAny(out.String(), "\x1b\r\t") {
		t.Errorf("output holds a control character:\n%q", out.String())
	}
	for _, w := range []string{`"boom\nn3  id3  ready"`, `"n9\nn2  ready"`, `"ready\tx"`, `"eth0\n"`, `"ul\r9"`, `"id9\x1b[2J"`} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("output does not hold %s:\n%s", w, out.String())
		}
	}
}

// TestNetworkListQuotesOddSpecs: network ls and ips print the specs the
// agents refuse, named by their keys, with their problem: specs that any
// agent's Consul token may write, past create's checks. Their names,
// parents and problems were printed as they were, so that a newline
// forged rows and warnings and an escape sequence rewrote the terminal.
// Such values are now printed quoted.
func TestNetworkListQuotesOddSpecs(t *testing.T) {
	srv := fakeConsulKV(t, map[string]string{
		"underlay/networks/good/spec":              `{"name":"good","subnet":"10.1.0.0/24","gateway":"10.1.0.1","parent":"eth0","ipam":"cluster"}`,
		"underlay/networks/odd/spec":               `{"name":"odd","subnet":"10.2.0.0/24","gateway":"10.2.0.1","parent":"eth1\nfake  macvlan  10.9.0.0/24  10.9.0.1  eth9  per-node  16  active","ipam":"per-node","per_node_size":64}`,
		"underlay/networks/x\u001b[2J\nfake2/spec": `{"name":`,
	})
	for _, args := range [][]string{{"network", "ls"}, {"ips"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := Run(context.Background(), append(args, "--consul-addr", srv.URL), IOStreams{Out: &out, ErrOut: &errOut}); code != 0 {
				t.Fatalf("exit %d: %s", code, errOut.String())
			}
			if strings.Contains(out.String()+errOut.String(), "\x1b") {
				t.Errorf("output holds an escape character:\nstdout %q\nstderr %q", out.String(), errOut.String())
			}
			for _, line := range strings.Split(out.String()+errOut.String(), "\n") {
				if strings.HasPrefix(line, "fake") {
					t.Errorf("a forged line: %q\nstdout:\n%s\nstderr:\n%s", line, out.String(), errOut.String())
				}
			}
		})
	}
}

// TestIPsQuotesPoolHolders: ips checks the inventories' names for control
// characters, but listed the cluster pools' addresses with the node that
// holds each as the pool's block documents (or that node's facts) named
// it, as it was: documents any agent's Consul token may write. A newline
// there forged rows (an address shown held by a container) and an escape
// sequence rewrote the terminal. Such values are now printed quoted; and
// a block document whose node texts have such characters, which no agent
// writes, is set apart as unreadable (ipam), named with its key.
func TestIPsQuotesPoolHolders(t *testing.T) {
	srv := fakeConsulKV(t, map[string]string{
		"underlay/networks/cl/spec":                `{"name":"cl","subnet":"10.5.0.0/24","gateway":"10.5.0.1","parent":"eth0","ipam":"cluster"}`,
		"underlay/nodes/id10000000000000000000000": `{"id":"id10000000000000000000000","node":"n1\n10.5.0.77  -  n1  cl  web.1  web  1  abc  1m  in-use\u001b[8m","interfaces":["eth0"]}`,
		"underlay/ipam/cl/v4/blocks/10.5.0.0_28":   `{"node":"id10000000000000000000000","allocs":{"10.5.0.5":{"node":"id10000000000000000000000","at":"2025-01-02T03:04:05Z","kind":"task"}}}`,
		"underlay/ipam/cl/v4/blocks/10.5.0.16_28":  `{"node":"id2\t","allocs":{"10.5.0.20":{"node":"id2\r\u001b[2K10.5.0.88","at":"2025-01-02T03:04:05Z","kind":"shim"}}}`,
	})
	var out, errOut bytes.Buffer
	if code := Run(context.Background(), []string{"ips", "--consul-addr", srv.URL}, IOStreams{Out: &out, ErrOut: &errOut}); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	// The header, the gateway and the address of the readable block.
	if lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n"); len(lines) != 3 {
		t.Errorf("%d lines, want 3 (header, gateway, 10.5.0.5):\n%s", len(lines), out.String())
	}
	if !strings.Contains(errOut.String(), "underlay/ipam/cl/v4/blocks/10.5.0.16_28") {
		t.Errorf("the block with control characters is not named as skipped:\n%s", errOut.String())
	}
	if strings.ContainsAny(out.String()+errOut.String(), "\x1b\r") {
		t.Errorf("output holds a control character:\nstdout %q\nstderr %q", out.String(), errOut.String())
	}
}

// TestWarnSilentNodesQuotes: network create warns of each silent node
// lacking the parent with the command that removes it for good,
// `underlay node rm ID`; the node's ID and name come from its facts, which
// any agent's Consul token may write. The ID went into the command as it
// was (an operator running it ran what followed a ; in the key) and the
// name into the warning (a newline forged warnings). The command now
// names the ID as one shell word, and odd names print quoted.
func TestWarnSilentNodesQuotes(t *testing.T) {
	s := netspec.Spec{Name: "web", Parent: "eth0.40"}
	silent := []netspec.NodeFacts{{ID: "x; touch /tmp/pwned", Node: "n9\nwarning: all good"}}
	var out bytes.Buffer
	warnSilentNodes(&out, s, silent, map[string]string{})
	if want := "underlay node rm 'x; touch /tmp/pwned'"; !strings.Contains(out.String(), want) {
		t.Errorf("warning %q does not hold %s", out.String(), want)
	}
	if lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n"); len(lines) != 1 {
		t.Errorf("%d lines, want 1:\n%s", len(lines), out.String())
	}
}

// TestJSONOutputEscapesControls: every command's --json output went
// through encoding/json, which escapes C0 controls but writes C1 controls
// (U+009B is a CSI to terminals that take 8-bit controls), DEL and bidi
// overrides as they are, so a network name in a Consul key rewrote the
// terminal of whoever listed the networks. They are now \u escapes, and
// the output decodes to the same text.
func TestJSONOutputEscapesControls(t *testing.T) {
	const name = "x\u009b2J\x7fy\u202ez\u2066"
	key := "underlay/networks/" + name + "/spec"
	srv := fakeConsulKV(t, map[string]string{key: `{"name":`})
	var out, errOut bytes.Buffer
	if code := Run(context.Background(), []string{"network", "ls", "--json", "--consul-addr", srv.URL}, IOStreams{Out: &out, ErrOut: &errOut}); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if i := strings.IndexFunc(out.String(), func(r rune) bool { return r != '\n' && !unicode.IsGraphic(r) }); i >= 0 {
		t.Errorf("output holds %q at %d:\n%q", []rune(out.String()[i:])[0], i, out.String())
	}
	var doc struct{ Refused []struct{ Name, Key string } }
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("decode: %v: %q", err, out.String())
	}
	if len(doc.Refused) != 1 || doc.Refused[0].Name != name || doc.Refused[0].Key != key {
		t.Errorf("refused %+v, want name %q and key %q", doc.Refused, name, key)
	}
}

// TestTablesBoundLongNames: network inspect's and node ls's tables
// printed each name whole, and tabwriter pads every row of a column to
// its widest cell: one node's state report (or facts) naming a shim link
// (or host) of 100 KB, which any agent's token may write, made every row
// 100 KB wide. Each cell but the last is now shortened, saying how long
// it was (node ls shows such names as invalid, and warns, shortened).
func TestTablesBoundLongNames(t *testing.T) {
	long := strings.Repeat("x", 100<<10)
	s := netspec.Spec{Name: "web", Subnet: netip.MustParsePrefix("10.0.0.0/24"), Gateway: netip.MustParseAddr("10.0.0.1"),
		Parent: "eth0", IPAM: netspec.PerNode, PerNodeSize: 16}
	var states []netspec.NodeState
	var facts []netspec.NodeFacts
	for i := range 50 {
		id := fmt.Sprintf("id%023d", i)
		states = append(states, netspec.NodeState{ID: id, Node: fmt.Sprintf("n%d", i), State: netspec.StateReady, Parent: "eth0", ShimLink: "ul-1"})
		facts = append(facts, netspec.NodeFacts{ID: id, Node: fmt.Sprintf("n%d", i), Interfaces: []string{"eth0"}})
	}
	states[7].ShimLink, states[8].Node = long, long
	facts[7].Holder.Host, facts[8].Node = long, long
	var out bytes.Buffer
	if err := writeNetworkInspect(&out, s, states); err != nil {
		t.Fatal(err)
	}
	var nodes, errOut bytes.Buffer
	if err := writeNodeList(IOStreams{Out: &nodes, ErrOut: &errOut}, facts, nil, nil, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("… (%d bytes)", len(long))
	// node ls shows such names as invalid, its warnings saying them
	// shortened.
	if nodes.Len() > 40<<10 || strings.Count(nodes.String(), invalidCell) != 2 {
		t.Errorf("node ls printed %d bytes for 50 rows, with %d invalid names; want 2, shortened", nodes.Len(), strings.Count(nodes.String(), invalidCell))
	}
	for name, b := range map[string]*bytes.Buffer{"network inspect": &out, "node ls's warnings": &errOut} {
		if b.Len() > 40<<10 || !strings.Contains(b.String(), want) {
			t.Errorf("%s printed %d bytes for 50 rows, saying %q: %v; want each name shortened, saying how long it was", name, b.Len(), want, strings.Contains(b.String(), want))
		}
	}
}
