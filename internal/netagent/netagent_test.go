package netagent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/underlay/underlay/internal/hostnet"
	"github.com/underlay/underlay/internal/hostnet/inusetest"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/testclock"
)

// fakeHost records what the reconciler asks of the host and Docker.
type fakeHost struct {
	ensured, created, removed []string
	// cluster are the networks created with cluster IPAM.
	cluster []string
	// managed are the networks of config-only networks listed as labelled
	// underlay's, under underlay's names; foreign are listed as well.
	managed []string
	foreign []ConfigNet
	wants   []hostnet.Want
	// onParent are other Docker networks, no container on them, by their
	// parent option; docker is what else dockerd has.
	onParent map[string][]string
	docker   hostnet.DockerLinks
}

func (h *fakeHost) Ensure(w hostnet.Want) ([]hostnet.Repair, error) {
	h.ensured = append(h.ensured, w.Parent)
	h.wants = append(h.wants, w)
	return nil, nil
}

// ConfigNetwork reports the networks created as underlay's, with their
// name as ID.
func (h *fakeHost) ConfigNetwork(_ context.Context, name string) (ConfigNet, error) {
	for _, n := range h.created {
		if netspec.ConfigNetworkName(n) == name && !slices.Contains(h.removed, name) {
			return ConfigNet{Exists: true, ID: name, Name: name, Network: n, ClusterIPAM: slices.Contains(h.cluster, n)}, nil
		}
	}
	return ConfigNet{}, nil
}
func (h *fakeHost) CreateConfigNetwork(_ context.Context, s netspec.Spec, _ netspec.NodePlan) error {
	h.created = append(h.created, s.Name)
	if s.IPAM == netspec.Cluster {
		h.cluster = append(h.cluster, s.Name)
	}
	return nil
}
func (h *fakeHost) RemoveNetwork(_ context.Context, name string) error {
	h.removed = append(h.removed, name)
	return nil
}
func (h *fakeHost) ManagedConfigNetworks(context.Context) ([]ConfigNet, error) {
	var out []ConfigNet
	for _, n := range h.managed {
		name := netspec.ConfigNetworkName(n)
		if slices.Contains(h.removed, name) {
			continue
		}
		out = append(out, ConfigNet{Exists: true, ID: name, Name: name, Network: n, ClusterIPAM: slices.Contains(h.cluster, n)})
	}
	return append(out, h.foreign...), nil
}
func (h *fakeHost) DockerLinks(context.Context) (hostnet.DockerLinks, error) {
	dl := hostnet.DockerLinks{Networks: slices.Clone(h.docker.Networks), Containers: h.docker.Containers}
	for _, parent := range slices.Sorted(maps.Keys(h.onParent)) {
		for _, name := range h.onParent[parent] {
			dl.Networks = append(dl.Networks, hostnet.DockerNetwork{Name: name, ID: "n-" + name, Parent: parent})
		}
	}
	return dl, nil
}
func (h *fakeHost) IsLeader(context.Context) (bool, error) { return false, nil }
func (h *fakeHost) ReadySwarmNodes(context.Context) ([]netspec.SwarmNode, error) {
	return nil, nil
}
func (h *fakeHost) SwarmNetworkExists(context.Context, string) (bool, error) {
	return false, nil
}
func (h *fakeHost) CreateSwarmNetwork(context.Context, netspec.Spec) error { return nil }

// TestSyncRefusesInvalidSpecs: specs written to KV past `network create`
// (a gateway outside the subnet, two overlapping networks, an undecodable
// document) are refused as create would refuse them: nothing on the host
// is touched for them — not even a network they had before — each is
// reported invalid with the reason, and counted; a valid spec beside them
// is realised.
func TestSyncRefusesInvalidSpecs(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	put := func(s netspec.Spec) {
		b, _ := json.Marshal(s)
		kv.Put(ctx, netspec.KVPrefix+s.Name+"/spec", b)
	}
	spec := func(name, subnet, gw, parent string) netspec.Spec {
		return netspec.Spec{Name: name, Subnet: netip.MustParsePrefix(subnet), Gateway: netip.MustParseAddr(gw), Parent: parent,
			IPAM: netspec.PerNode, PerNodeSize: 16}
	}
	put(spec("good", "10.10.0.0/24", "10.10.0.1", "eth1"))
	put(spec("badgw", "10.11.0.0/24", "10.99.0.1", "eth2"))
	put(spec("ov1", "10.12.0.0/24", "10.12.0.1", "eth3"))
	put(spec("ov2", "10.12.0.0/25", "10.12.0.1", "eth4"))
	kv.Put(ctx, netspec.KVPrefix+"junk/spec", []byte(`{"name":`))
	host := &fakeHost{managed: []string{"badgw", "junk"}} // realised before they went bad
	reg := prometheus.NewRegistry()
	r := &Reconciler{ID: "id1", Node: "n1", Store: st, Docker: host, Swarm: host, Host: host,
		Facts: &Facts{Store: st, ID: "id1", Node: "n1", Holder: netspec.Holder{Instance: "x"}},
		Log:   slog.New(slog.DiscardHandler), Metrics: NewMetrics(reg),
		RemoveShim: func(name, _ string) error { host.removed = append(host.removed, "shim "+name); return nil }}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(host.ensured, []string{"eth1"}) || !slices.Equal(host.created, []string{"good"}) || len(host.removed) != 0 {
		t.Errorf("host prepared %v, networks created %v, removed %v; want only good's, and nothing removed", host.ensured, host.created, host.removed)
	}
	want := map[string]string{"badgw": "gateway 10.99.0.1 is outside subnet", "ov1": "overlaps network \"ov2\"", "ov2": "overlaps network \"ov1\"", "junk": "decode"}
	for name, reason := range want {
		states, _ := st.NodeStates(ctx, name)
		if len(states) != 1 || states[0].State != netspec.StateInvalid || states[0].ID != "id1" || !strings.Contains(states[0].Error, reason) {
			t.Errorf("%s reported %+v, want invalid naming %q", name, states, reason)
		}
	}
	if states, _ := st.NodeStates(ctx, "good"); len(states) != 1 || states[0].State != netspec.StateReady {
		t.Errorf("good reported %+v, want ready", states)
	}
	if n := metricValue(t, reg, "underlay_network_invalid_specs"); n != 4 {
		t.Errorf("underlay_network_invalid_specs: %v, want 4", n)
	}
}

// leaderSwarm is the swarm of a leader agent on which no swarm network
// exists yet; onReadyNodes runs while a sync decides whether to create it.
type leaderSwarm struct {
	onReadyNodes func()
	created      []string
}

func (s *leaderSwarm) IsLeader(context.Context) (bool, error) { return true, nil }
func (s *leaderSwarm) ReadySwarmNodes(context.Context) ([]netspec.SwarmNode, error) {
	if s.onReadyNodes != nil {
		s.onReadyNodes()
	}
	return []netspec.SwarmNode{{ID: "id1", State: "ready", Availability: "active"}}, nil
}
func (s *leaderSwarm) SwarmNetworkExists(context.Context, string) (bool, error) { return false, nil }
func (s *leaderSwarm) CreateSwarmNetwork(_ context.Context, sp netspec.Spec) error {
	s.created = append(s.created, sp.Name)
	return nil
}

// TestSyncLeavesSwarmNetworkOfRemovedSpec: `network rm` marking the spec
// deleting (and removing the swarm network) while the leader's sync,
// which read the spec before, decides to create the swarm network: the
// sync creates nothing, or it would undo the removal.
func TestSyncLeavesSwarmNetworkOfRemovedSpec(t *testing.T) {
	ctx := context.Background()
	st := storeWithWeb(t)
	host := &fakeHost{}
	sw := &leaderSwarm{}
	r := reconcilerOf(st, host, sw, func(string, string) error { return nil })
	sw.onReadyNodes = func() {
		if err := st.MarkDeleting(ctx, "web"); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if len(sw.created) != 0 {
		t.Errorf("swarm networks created %v after the spec was marked deleting, want none", sw.created)
	}
	// Without rm, the same sync creates it.
	if err := st.Create(ctx, netspec.Spec{Name: "api", Subnet: netip.MustParsePrefix("10.11.0.0/24"), Gateway: netip.MustParseAddr("10.11.0.1"),
		Parent: "eth2", IPAM: netspec.PerNode, PerNodeSize: 16}); err != nil {
		t.Fatal(err)
	}
	sw.onReadyNodes = nil
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sw.created, []string{"api"}) {
		t.Errorf("swarm networks created %v, want [api]", sw.created)
	}
}

// TestTeardownLeavesForeignShim: a link bearing the network's shim name
// that underlay did not make for it stays (RemoveShim refuses it), and the
// rest of the network goes all the same: its lease is released.
func TestTeardownLeavesForeignShim(t *testing.T) {
	ctx := context.Background()
	st := storeWithWeb(t)
	host := &fakeHost{}
	var asked []string
	r := reconcilerOf(st, host, host, func(name, network string) error {
		asked = append(asked, name+" of "+network)
		return fmt.Errorf("link %s (dummy, alias %q): %w %s, left alone", name, "", hostnet.ErrForeignLink, network)
	})
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if l, err := st.Leases(ctx, "web"); err != nil || len(l) != 1 {
		t.Fatalf("leases of web after its sync: %v, %v; want one", l, err)
	}
	if err := st.MarkDeleting(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(ctx); err != nil {
		t.Errorf("sync of the deleted network with a foreign link of its shim's name: %v, want the rest removed without error", err)
	}
	if want := netspec.ShimLinkName("web") + " of web"; !slices.Equal(asked, []string{want}) {
		t.Errorf("RemoveShim asked for %v, want [%s]", asked, want)
	}
	if l, err := st.Leases(ctx, "web"); err != nil || len(l) != 0 {
		t.Errorf("leases of web after its teardown: %v, %v; want none", l, err)
	}
}

// storeWithWeb is a store holding network web, per-node IPAM on eth1.
func storeWithWeb(t *testing.T) *netspec.Store {
	_, st := kvWithWeb(t)
	return st
}

// kvWithWeb is storeWithWeb with the KV under its store.
func kvWithWeb(t testing.TB) (*kvtest.KV, *netspec.Store) {
	t.Helper()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	spec := netspec.Spec{Name: "web", Subnet: netip.MustParsePrefix("10.10.0.0/24"), Gateway: netip.MustParseAddr("10.10.0.1"),
		Parent: "eth1", IPAM: netspec.PerNode, PerNodeSize: 16}
	if err := st.Create(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	return kv, st
}

// reconcilerOf is node n1's reconciler on host, with sw its swarm.
func reconcilerOf(st *netspec.Store, host *fakeHost, sw Swarm, removeShim func(name, network string) error) *Reconciler {
	return &Reconciler{ID: "id1", Node: "n1", Store: st, Docker: host, Swarm: sw, Host: host,
		Facts: &Facts{Store: st, ID: "id1", Node: "n1", Holder: netspec.Holder{Instance: "x"}},
		Log:   slog.New(slog.DiscardHandler), Metrics: NewMetrics(prometheus.NewRegistry()), RemoveShim: removeShim}
}

// operatorsNet is a host whose dockerd has a network an operator made
// under web's config-only network name: no config-only network, no
// underlay labels.
type operatorsNet struct{ fakeHost }

func (h *operatorsNet) ConfigNetwork(ctx context.Context, name string) (ConfigNet, error) {
	if name == netspec.ConfigNetworkName("web") {
		return ConfigNet{Exists: true, ID: "0123456789abcdef0123"}, nil
	}
	return h.fakeHost.ConfigNetwork(ctx, name)
}

// TestSyncLeavesOperatorsNetworkOfTheName: a Docker network bearing a
// spec's config-only network name that underlay did not make is neither
// taken for the network's (which would be reported ready, and made the
// swarm network's configuration) nor removed with the network; the
// network reports the clash, and the others are realised.
func TestSyncLeavesOperatorsNetworkOfTheName(t *testing.T) {
	ctx := context.Background()
	st := storeWithWeb(t)
	if err := st.Create(ctx, netspec.Spec{Name: "api", Subnet: netip.MustParsePrefix("10.11.0.0/24"), Gateway: netip.MustParseAddr("10.11.0.1"),
		Parent: "eth2", IPAM: netspec.PerNode, PerNodeSize: 16}); err != nil {
		t.Fatal(err)
	}
	host := &operatorsNet{}
	r := reconcilerOf(st, &host.fakeHost, host, func(string, string) error { return nil })
	r.Docker = host
	err := r.Sync(ctx)
	if err == nil || !strings.Contains(err.Error(), "web-config") {
		t.Errorf("sync with an operator's web-config: %v, want an error naming it", err)
	}
	if states, _ := st.NodeStates(ctx, "web"); len(states) != 1 || states[0].State != netspec.StateError || !strings.Contains(states[0].Error, "web-config") {
		t.Errorf("web reported %+v, want an error naming web-config", states)
	}
	if states, _ := st.NodeStates(ctx, "api"); len(states) != 1 || states[0].State != netspec.StateReady || !slices.Equal(host.created, []string{"api"}) {
		t.Errorf("api reported %+v, networks created %v; want api ready and created", states, host.created)
	}
	for _, n := range []string{"web", "api"} {
		if err := st.MarkDeleting(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	r.Sync(ctx)
	if !slices.Equal(host.removed, []string{"api-config"}) {
		t.Errorf("removed %v with web and api, want api's api-config only: the operator's web-config left alone", host.removed)
	}
	if l, err := st.Leases(ctx, "web"); err != nil || len(l) != 0 {
		t.Errorf("leases of web after its teardown: %v, %v; want none", l, err)
	}
}

// oddParentNet is a host whose dockerd holds web's config-only network,
// labelled underlay's, made on a parent named at will (a network made
// again by hand, or a hostile daemon): a newline, an escape sequence.
type oddParentNet struct{ fakeHost }

func (h *oddParentNet) ConfigNetwork(ctx context.Context, name string) (ConfigNet, error) {
	if name == netspec.ConfigNetworkName("web") {
		return ConfigNet{Exists: true, ID: "0123456789abcdef0123", Name: name, Network: "web",
			Parent: "eth1\nlevel=INFO \x1b[2J\u202e", IPvlanMode: "l2\n"}, nil
	}
	return h.fakeHost.ConfigNetwork(ctx, name)
}

// TestSyncQuotesDockersParent: the parent of a config-only network not
// on the spec's parent is Docker's, named at will; the error naming it
// (the sync's, the node's report, which network inspect shows) quotes
// it, and its ipvlan mode, rather than letting a newline forge a line of
// the log or an escape sequence rewrite the terminal.
func TestSyncQuotesDockersParent(t *testing.T) {
	ctx := context.Background()
	st := storeWithWeb(t)
	host := &oddParentNet{}
	r := reconcilerOf(st, &host.fakeHost, host, func(string, string) error { return nil })
	r.Docker = host
	err := r.Sync(ctx)
	const want = `was made on parent "eth1\nlevel=INFO \x1b[2J\u202e" (ipvlan "l2\n"), not the spec's eth1 (macvlan)`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("sync: %v, want an error containing %s", err, want)
	}
	states, _ := st.NodeStates(ctx, "web")
	if len(states) != 1 || !strings.Contains(states[0].Error, want) || strings.ContainsAny(states[0].Error, "\n\x1b\u202e") {
		t.Errorf("web reported %+v, want an error containing %s, with no newline, escape or override", states, want)
	}
}

// failingLeader is the leader's swarm, on which creating the swarm
// network fails.
type failingLeader struct{ leaderSwarm }

func (s *failingLeader) CreateSwarmNetwork(context.Context, netspec.Spec) error {
	return errors.New("Error response from daemon: rpc error: code = Unknown")
}

// TestSyncSwarmNetworkFailureIsStable: on the leader, a swarm network that
// cannot be created is reported once, naming the failure, beside the
// node's own part, which is ready; syncs that change nothing write
// nothing. Each sync reported the node ready and then in error, two
// writes under the networks' prefix that woke every agent's next sync,
// the leader's too: the agents synced and wrote without end.
func TestSyncSwarmNetworkFailureIsStable(t *testing.T) {
	ctx := context.Background()
	kv, st := kvWithWeb(t)
	r := reconcilerOf(st, &fakeHost{}, &failingLeader{}, func(string, string) error { return nil })
	if err := r.Sync(ctx); err == nil || !strings.Contains(err.Error(), "rpc error") {
		t.Errorf("first sync: %v, want the swarm network's failure", err)
	}
	var writes []string
	kv.Hook = func(call string, keys []string) error {
		if call != "get" && call != "list" && call != "wait" {
			writes = append(writes, call+" "+strings.Join(keys, ","))
		}
		return nil
	}
	for range 2 {
		r.Sync(ctx)
	}
	if len(writes) != 0 {
		t.Errorf("two syncs that changed nothing wrote %q, want nothing", writes)
	}
	states, _ := st.NodeStates(ctx, "web")
	if len(states) != 1 || states[0].State != netspec.StateReady || !strings.Contains(states[0].Error, "rpc error") {
		t.Errorf("web reported %+v, want ready, with the swarm network's failure", states)
	}
}

// reportingLeader is the leader's swarm; creating the swarm network
// records the reports in the store at that moment.
type reportingLeader struct {
	leaderSwarm
	st        *netspec.Store
	atCreate  []netspec.NodeState
	createErr error
}

func (s *reportingLeader) CreateSwarmNetwork(ctx context.Context, sp netspec.Spec) error {
	s.atCreate, s.createErr = s.st.NodeStates(ctx, sp.Name)
	return s.leaderSwarm.CreateSwarmNetwork(ctx, sp)
}

// TestLeaderReportsBeforeTheSwarmNetwork: when the leader makes the swarm
// network, its own ready report is already in the store. Before, it wrote
// it after: `network create` returned once the swarm network existed, and
// an `inspect` (or the cluster-IPAM lab test) then found the leader's part
// missing.
func TestLeaderReportsBeforeTheSwarmNetwork(t *testing.T) {
	ctx := context.Background()
	st := storeWithWeb(t)
	sw := &reportingLeader{st: st}
	r := reconcilerOf(st, &fakeHost{}, sw, func(string, string) error { return nil })
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sw.created, []string{"web"}) {
		t.Fatalf("swarm networks created %v, want [web]", sw.created)
	}
	if sw.createErr != nil || len(sw.atCreate) != 1 || sw.atCreate[0].State != netspec.StateReady || sw.atCreate[0].ID != "id1" {
		t.Errorf("reports when the swarm network was created: %+v, %v; want the leader's, ready", sw.atCreate, sw.createErr)
	}
}

// TestRefusalsForgottenWithTheirSpecs: the reconciler remembers the
// refusal it logged of each network, so that it logs each once, but it
// forgot one only when the spec became valid, never when it was deleted:
// spec keys, which every agent's token may write, made every agent's
// memory grow with each bad name ever written, and a bad spec written
// again after its removal was no longer logged.
func TestRefusalsForgottenWithTheirSpecs(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	host := &fakeHost{}
	logs := &bytes.Buffer{}
	r := &Reconciler{ID: "id1", Node: "n1", Store: st, Docker: host, Swarm: host, Host: host,
		Facts: &Facts{Store: st, ID: "id1", Node: "n1", Holder: netspec.Holder{Instance: "x"}},
		Log:   slog.New(slog.NewTextHandler(logs, nil))}
	const msg = "network spec refused"
	for round := range 3 {
		for i := range 20 {
			kv.Put(ctx, fmt.Sprintf("%sjunk%d/spec", netspec.KVPrefix, i), []byte(`{"name":`))
		}
		if err := r.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(logs.String(), msg); n != 20*(round+1) {
			t.Errorf("round %d: refusal logged %d times in all, want %d: each written spec once", round, n, 20*(round+1))
		}
		if err := kv.DeleteTree(ctx, netspec.KVPrefix); err != nil {
			t.Fatal(err)
		}
		if err := r.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if len(r.refused) != 0 {
			t.Fatalf("round %d: %d refusals remembered after every spec was deleted, want 0", round, len(r.refused))
		}
	}
}

// shimIPAM gives the same shim addresses to every network.
type shimIPAM struct{ v4, v6 netip.Addr }

func (i shimIPAM) Shim(_ context.Context, _ netspec.Spec, v6 bool) (netip.Addr, error) {
	if v6 {
		return i.v6, nil
	}
	return i.v4, nil
}
func (shimIPAM) ReleaseShim(context.Context, netspec.Spec, uint64) error { return nil }
func (shimIPAM) ReleaseShimsOf(context.Context, string) error            { return nil }
func (shimIPAM) ShimNetworks(context.Context) ([]string, error)          { return nil, nil }
func (shimIPAM) ShimsOf(context.Context, string) ([]netip.Addr, error)   { return nil, nil }

// TestSyncDualStackShim: on a network with an IPv6 subnet the host shim
// gets an IPv6 address and a route to the node's IPv6 range (per-node
// IPAM: its /80; cluster IPAM: the subnet), and the node's report says
// both, as the doctor judges them from it. Before, the shim was IPv4
// only: the host reached none of its containers' IPv6 addresses.
func TestSyncDualStackShim(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		ipam          netspec.IPAMMode
		route6, shim6 string
	}{
		{netspec.PerNode, "fd00:10::/80", "fd00:10::ffff:ffff:ffff"},
		{netspec.Cluster, "fd00:10::/64", "fd00:10::77"},
	} {
		t.Run(string(tc.ipam), func(t *testing.T) {
			st := netspec.NewStore(kvtest.New())
			spec := netspec.Spec{Name: "web", Subnet: netip.MustParsePrefix("10.10.0.0/24"), Gateway: netip.MustParseAddr("10.10.0.1"),
				IPv6Subnet: netip.MustParsePrefix("fd00:10::/64"), Parent: "eth1", IPAM: tc.ipam}
			if tc.ipam == netspec.PerNode {
				spec.PerNodeSize = 16
			}
			if err := st.Create(ctx, spec); err != nil {
				t.Fatal(err)
			}
			host := &fakeHost{}
			r := reconcilerOf(st, host, &failingLeader{}, func(string, string) error { return nil })
			r.IPAM = shimIPAM{v4: netip.MustParseAddr("10.10.0.77"), v6: netip.MustParseAddr("fd00:10::77")}
			r.Sync(ctx)
			if len(host.wants) != 1 {
				t.Fatalf("host wants %+v, want one", host.wants)
			}
			w := host.wants[0]
			if w.Route6.String() != tc.route6 || w.Shim6.String() != tc.shim6 {
				t.Errorf("shim IPv6 %s, route %s; want %s and %s", w.Shim6, w.Route6, tc.shim6, tc.route6)
			}
			states, _ := st.NodeStates(ctx, "web")
			if len(states) != 1 || states[0].Range6 != w.Route6 || states[0].Shim6 != w.Shim6 {
				t.Errorf("reported %+v, want the IPv6 range %s and shim %s", states, w.Route6, w.Shim6)
			}
		})
	}
}

// TestSyncDropsOwnOrphanReports: a network whose spec key was deleted by
// hand (network rm deletes its reports with it) kept every node's report
// for good, shown again under a network made anew with the name. Each
// agent now deletes its own; another node's, and reports under a spec
// that exists, readable or not, stay.
func TestSyncDropsOwnOrphanReports(t *testing.T) {
	ctx := context.Background()
	kv, st := kvWithWeb(t)
	for key, value := range map[string]string{
		netspec.KVPrefix + "gone/nodes/id1": `{"id":"id1","node":"n1","state":"invalid","error":"spec refused: x"}`,
		netspec.KVPrefix + "gone/nodes/id2": `{"id":"id2","node":"n2","state":"ready"}`,
		netspec.KVPrefix + "bad/spec":       `{`,
		netspec.KVPrefix + "bad/nodes/id1":  `{"id":"id1","node":"n1","state":"invalid","error":"spec refused: y"}`,
	} {
		if err := kv.Put(ctx, key, []byte(value)); err != nil {
			t.Fatal(err)
		}
	}
	r := reconcilerOf(st, &fakeHost{}, &failingLeader{}, func(string, string) error { return nil })
	r.Sync(ctx)
	pairs, err := kv.List(ctx, netspec.KVPrefix)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, p := range pairs {
		if strings.Contains(p.Key, "/nodes/") {
			keys = append(keys, strings.TrimPrefix(p.Key, netspec.KVPrefix))
		}
	}
	slices.Sort(keys)
	if want := []string{"bad/nodes/id1", "gone/nodes/id2", "web/nodes/id1"}; !slices.Equal(keys, want) {
		t.Errorf("reports after a sync: %v, want %v (this node's report under gone deleted)", keys, want)
	}
}

// TestTeardownLeavesParentInUse: a VLAN parent underlay made that other
// links hang off stays (RemoveParent refuses it), and the rest of the
// network goes all the same: its lease is released and the node reports
// it removed, or `network rm` would wait for this node for ever.
func TestTeardownLeavesParentInUse(t *testing.T) {
	ctx := context.Background()
	st := storeWithWeb(t)
	host := &fakeHost{}
	r := reconcilerOf(st, host, host, func(string, string) error { return nil })
	r.RemoveParent = func(parent, network string) (bool, error) {
		return false, fmt.Errorf("VLAN parent %q, left in place: %w: \"mv40\" (macvlan)", parent, hostnet.ErrParentInUse)
	}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.MarkDeleting(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(ctx); err != nil {
		t.Errorf("sync of the deleted network whose parent is in use: %v, want the rest removed without error", err)
	}
	if l, err := st.Leases(ctx, "web"); err != nil || len(l) != 0 {
		t.Errorf("leases of web after its teardown: %v, %v; want none", l, err)
	}
	if states, _ := st.NodeStates(ctx, "web"); len(states) != 1 || states[0].State != netspec.StateRemoved {
		t.Errorf("web reported %+v, want removed", states)
	}
}

// TestSyncLeavesForeignLabelledNetwork: a config-only Docker network
// bearing underlay's labels for network gone, whose spec is gone, but not
// the name underlay gives gone's config-only network (gone-config), is not
// underlay's: no sync removes it or claims to, and it is warned of once,
// by its name. Before, every sync logged "network removed from this node"
// for gone, which no sync had removed.
func TestSyncLeavesForeignLabelledNetwork(t *testing.T) {
	ctx := context.Background()
	st := storeWithWeb(t)
	host := &fakeHost{foreign: []ConfigNet{{Exists: true, ID: "f00d0123456789abcdef", Name: "mine", Network: "gone"}}}
	logs := &bytes.Buffer{}
	r := reconcilerOf(st, host, host, func(string, string) error { return nil })
	r.Log = slog.New(slog.NewTextHandler(logs, nil))
	for range 3 {
		if err := r.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if len(host.removed) != 0 {
		t.Errorf("removed %v, want nothing", host.removed)
	}
	out := logs.String()
	if strings.Count(out, "level=WARN") != 1 || !strings.Contains(out, "docker_network=mine") || strings.Contains(out, "network removed from this node") {
		t.Errorf("logs of three syncs:\n%s\nwant one warning naming the Docker network mine, and no removal of gone", logs)
	}
}

// TestTeardownLoggedOnce: a spec left deleting (`network rm` waits for a
// node that is down) is torn down again at every sync, which changes
// nothing: its removal is logged once, not at every sync. Made again and
// removed again, it is logged again.
func TestTeardownLoggedOnce(t *testing.T) {
	ctx := context.Background()
	st := storeWithWeb(t)
	host := &fakeHost{}
	logs := &bytes.Buffer{}
	r := reconcilerOf(st, host, host, func(string, string) error { return nil })
	r.Log = slog.New(slog.NewTextHandler(logs, nil))
	const msg = "network removed from this node"
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.MarkDeleting(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := r.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logs.String(), msg); n != 1 {
		t.Errorf("three syncs of web left deleting logged its removal %d times, want once:\n%s", n, logs)
	}
	// rm completes, and web is made anew, then removed anew.
	if err := st.Delete(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.Create(ctx, netspec.Spec{Name: "web", Subnet: netip.MustParsePrefix("10.10.0.0/24"), Gateway: netip.MustParseAddr("10.10.0.1"),
		Parent: "eth1", IPAM: netspec.PerNode, PerNodeSize: 16}); err != nil {
		t.Fatal(err)
	}
	host.removed = nil
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.MarkDeleting(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), msg); n != 2 {
		t.Errorf("web removed, made and removed again: removal logged %d times, want twice:\n%s", n, logs)
	}
}

// TestOrphanReleasesClusterShim: a cluster-IPAM network whose spec was
// deleted by hand, while this node still has its config-only network, is
// torn down here, and its host shim addresses (of both families) go back
// to the network's pools. Before, the spec the reconciler made for the
// orphan had no IPAM mode: the shims stayed allocated in the pools for
// good. Where the pools went with the spec, there is nothing to release,
// and no error.
func TestOrphanReleasesClusterShim(t *testing.T) {
	ctx := context.Background()
	spec := netspec.Spec{Name: "pool", Subnet: netip.MustParsePrefix("10.20.0.0/24"), Gateway: netip.MustParseAddr("10.20.0.1"),
		IPv6Subnet: netip.MustParsePrefix("fd00:20::/64"), Parent: "eth1", IPAM: netspec.Cluster}
	for _, poolsGone := range []bool{false, true} {
		t.Run(fmt.Sprintf("pools gone %t", poolsGone), func(t *testing.T) {
			kv := kvtest.New()
			st := netspec.NewStore(kv)
			if err := st.Create(ctx, spec); err != nil {
				t.Fatal(err)
			}
			host := &fakeHost{}
			r := reconcilerOf(st, host, host, func(string, string) error { return nil })
			r.IPAM = ipam.NodeIPAM{Alloc: ipam.NewAllocator(kv, "id1", slog.New(slog.DiscardHandler)), Pools: ipam.SpecPools{Store: st}}
			if err := r.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			shims := func() []string {
				var out []string
				for _, v6 := range []bool{false, true} {
					pool, _ := ipam.PoolOf(spec, v6)
					allocs, err := ipam.Allocations(ctx, kv, pool)
					if err != nil {
						t.Fatal(err)
					}
					for a, al := range allocs {
						if al.Kind == ipam.KindShim && al.Node == "id1" {
							out = append(out, a.String())
						}
					}
				}
				slices.Sort(out)
				return out
			}
			if got := shims(); len(got) != 2 {
				t.Fatalf("shims of id1 after pool was realised: %v, want one of each family", got)
			}
			// The spec deleted by hand, as netspec.RemoveFix says.
			if err := kv.DeleteTree(ctx, netspec.KVPrefix+"pool/"); err != nil {
				t.Fatal(err)
			}
			if poolsGone {
				if err := kv.DeleteTree(ctx, ipam.KVPrefix+"pool/"); err != nil {
					t.Fatal(err)
				}
			}
			host.managed = []string{"pool"}
			if err := r.Sync(ctx); err != nil {
				t.Fatalf("sync of the orphan: %v, want no error", err)
			}
			if !slices.Equal(host.removed, []string{"pool-config"}) {
				t.Errorf("removed %v, want pool-config", host.removed)
			}
			if got := shims(); len(got) != 0 {
				t.Errorf("shims of id1 after the orphan's teardown: %v, want none", got)
			}
		})
	}
}

// releaseIndexIPAM records the spec index each ReleaseShim is bound to.
type releaseIndexIPAM struct {
	shimIPAM
	bound []uint64
}

func (i *releaseIndexIPAM) ReleaseShim(_ context.Context, _ netspec.Spec, index uint64) error {
	i.bound = append(i.bound, index)
	return nil
}

// TestShimReleaseBoundToTheSpecAsRead: the teardown of a cluster-IPAM
// network being removed gives its shim addresses back bound to the spec
// as its sync read it, marked (its modify index): a release that comes
// once the network was made again under the name is refused, not
// written into the new network's pools (see ipam.NodeIPAM.ReleaseShim).
func TestShimReleaseBoundToTheSpecAsRead(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	spec := netspec.Spec{Name: "pool", Subnet: netip.MustParsePrefix("10.20.0.0/24"), Gateway: netip.MustParseAddr("10.20.0.1"), Parent: "eth1", IPAM: netspec.Cluster}
	if err := st.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	host := &fakeHost{}
	r := reconcilerOf(st, host, host, func(string, string) error { return nil })
	rec := &releaseIndexIPAM{shimIPAM: shimIPAM{v4: netip.MustParseAddr("10.20.0.5")}}
	r.IPAM = rec
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.MarkDeleting(ctx, spec.Name); err != nil {
		t.Fatal(err)
	}
	marked, ok, err := kv.Get(ctx, netspec.SpecKey(spec.Name))
	if err != nil || !ok {
		t.Fatalf("read the marked spec: %v (found %t)", err, ok)
	}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rec.bound, []uint64{marked.Index}) {
		t.Errorf("shim releases bound to spec indexes %v, want the marked spec's %d", rec.bound, marked.Index)
	}
}

// TestDeletingReportWrittenOnce: a spec left deleting (`network rm`
// waits for a node that is down) is torn down again at every sync; its
// "removed" report, unchanged, is not written again at every period (each
// write under the networks' prefix wakes every agent), but one that
// Consul lost is written again at the next sync.
func TestDeletingReportWrittenOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kv, st := kvWithWeb(t)
	host := &fakeHost{}
	r := reconcilerOf(st, host, host, func(string, string) error { return nil })
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.MarkDeleting(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	reportKey := netspec.KVPrefix + "web/nodes/id1"
	syncs := make(chan struct{})
	var writes []string // of the report, by Run's goroutine
	kv.Hook = func(call string, keys []string) error {
		switch {
		case call == "txn" && slices.Contains(keys, reportKey):
			writes = append(writes, call)
		case call == "list" && slices.Equal(keys, []string{netspec.KVPrefix}):
			select { // a sync begins
			case syncs <- struct{}{}:
			case <-ctx.Done():
			}
		}
		return nil
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx, nil, nil, time.Millisecond)
	}()
	for range 5 { // the first sync, then four periods'
		<-syncs
	}
	cancel()
	<-done
	if len(writes) != 0 {
		t.Errorf("periodic syncs of web left deleting wrote its report %d times, want none", len(writes))
	}
	kv.Hook = nil
	states, _ := st.NodeStates(context.Background(), "web")
	if len(states) != 1 || states[0].State != netspec.StateRemoved {
		t.Fatalf("web reported %+v, want removed", states)
	}
	// Consul loses the report: the next sync writes it again.
	if err := kv.Delete(context.Background(), reportKey); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if states, _ := st.NodeStates(context.Background(), "web"); len(states) != 1 || states[0].State != netspec.StateRemoved {
		t.Errorf("after its report was lost, web reported %+v, want removed again", states)
	}
}

// inUseHost is a host whose dockerd refuses to remove config-only
// networks, as it does while a network made from one is in use.
type inUseHost struct{ fakeHost }

func (h *inUseHost) RemoveNetwork(_ context.Context, name string) error {
	return fmt.Errorf("Error response from daemon: configuration network %q is in use", name)
}

// TestOrphanTeardownRetried: an orphan (a config-only network whose spec
// was deleted by hand) is found only by its config-only network, which
// its teardown removes first; a later step that failed once (the shim's
// removal, Consul out of reach while its shim addresses are given back)
// was never tried again, the orphan being seen no more: the shim link or
// the addresses stayed for good. The next sync finishes the teardown.
// While dockerd refuses to remove the config-only network (in use), the
// shim and its addresses stay.
func TestOrphanTeardownRetried(t *testing.T) {
	ctx := context.Background()
	spec := netspec.Spec{Name: "pool", Subnet: netip.MustParsePrefix("10.20.0.0/24"), Gateway: netip.MustParseAddr("10.20.0.1"),
		Parent: "eth1", IPAM: netspec.Cluster}
	for _, failing := range []string{"shim", "shim addresses", "in use"} {
		t.Run(failing, func(t *testing.T) {
			kv := kvtest.New()
			st := netspec.NewStore(kv)
			if err := st.Create(ctx, spec); err != nil {
				t.Fatal(err)
			}
			inUse := &inUseHost{}
			host := &inUse.fakeHost
			var shimsRemoved []string
			shimFails := failing == "shim"
			r := reconcilerOf(st, host, host, func(name, network string) error {
				if shimFails {
					shimFails = false
					return errors.New("netlink: resource busy")
				}
				shimsRemoved = append(shimsRemoved, name)
				return nil
			})
			if failing == "in use" {
				r.Docker = inUse
			}
			r.IPAM = ipam.NodeIPAM{Alloc: ipam.NewAllocator(kv, "id1", slog.New(slog.DiscardHandler)), Pools: ipam.SpecPools{Store: st}}
			if err := r.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			pool, _ := ipam.PoolOf(spec, false)
			shims := func() int { return shimsOf(t, kv, pool, "id1") }
			if n := shims(); n != 1 {
				t.Fatalf("%d shims of id1 after pool was realised, want 1", n)
			}
			// The spec deleted by hand, as netspec.RemoveFix says.
			if err := kv.Delete(ctx, netspec.KVPrefix+"pool/spec"); err != nil {
				t.Fatal(err)
			}
			host.managed = []string{"pool"}
			if failing == "shim addresses" {
				failed := false
				kv.Hook = func(_ string, keys []string) error {
					if !failed && len(keys) > 0 && strings.HasPrefix(keys[0], ipam.KVPrefix) {
						failed = true
						return kvtest.ErrUnreachable
					}
					return nil
				}
			}
			if err := r.Sync(ctx); err == nil {
				t.Fatalf("sync of the orphan, %s failing: no error", failing)
			}
			kv.Hook = nil
			r.Sync(ctx)
			if failing == "in use" {
				if len(shimsRemoved) != 0 || shims() != 1 {
					t.Errorf("config-only network in use: shims removed %v, %d shim addresses left; want the shim and its address left", shimsRemoved, shims())
				}
				return
			}
			if !slices.Equal(host.removed, []string{"pool-config"}) {
				t.Errorf("removed %v, want pool-config once", host.removed)
			}
			if want := netspec.ShimLinkName("pool"); !slices.Contains(shimsRemoved, want) {
				t.Errorf("shims removed %v, want %s among them", shimsRemoved, want)
			}
			if n := shims(); n != 0 {
				t.Errorf("%d shims of id1 left after the orphan's teardown was tried again, want none", n)
			}
		})
	}
}

// TestStaleReportRewritten: Consul holds an older value of this node's
// report than the agent wrote (a snapshot restored): the next sync writes
// it again, as it does a report Consul lost; an unchanged one is not
// written again.
func TestStaleReportRewritten(t *testing.T) {
	ctx := context.Background()
	kv, st := kvWithWeb(t)
	host := &fakeHost{}
	r := reconcilerOf(st, host, host, func(string, string) error { return nil })
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	reportKey := netspec.KVPrefix + "web/nodes/id1"
	var writes int
	kv.Hook = func(call string, keys []string) error {
		if slices.Contains(keys, reportKey) && call != "get" && call != "list" {
			writes++
		}
		return nil
	}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if writes != 0 {
		t.Errorf("a sync with web's report unchanged wrote it %d times, want none", writes)
	}
	kv.Hook = nil
	// The report as it was before web was ready, back from a snapshot.
	old, err := json.Marshal(netspec.NodeState{ID: "id1", Node: "n1", State: netspec.StateError, Error: "prepare host: no eth1", Parent: "eth1",
		UpdatedAt: time.Now().Add(-time.Hour).UTC()})
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Put(ctx, reportKey, old); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if states, _ := st.NodeStates(ctx, "web"); len(states) != 1 || states[0].State != netspec.StateReady || states[0].Error != "" {
		t.Errorf("after an older report was restored, web reported %+v, want ready again", states)
	}
}

// TestOrphanTeardownFoundAfterRestart: an orphan's teardown failed after
// its config-only network was removed (the shim would not go), and the
// agent restarted, forgetting it: its shim, marked as the network's,
// says what is left, and the restarted agent's sync removes it and gives
// its shim addresses back. A marked shim of a network that has a spec,
// or of a name no network can have, is left alone.
func TestOrphanTeardownFoundAfterRestart(t *testing.T) {
	ctx := context.Background()
	spec := netspec.Spec{Name: "pool", Subnet: netip.MustParsePrefix("10.20.0.0/24"), Gateway: netip.MustParseAddr("10.20.0.1"),
		Parent: "eth1", IPAM: netspec.Cluster}
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	if err := st.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	web := netspec.Spec{Name: "web", Subnet: netip.MustParsePrefix("10.10.0.0/24"), Gateway: netip.MustParseAddr("10.10.0.1"),
		Parent: "eth2", IPAM: netspec.PerNode, PerNodeSize: 16}
	if err := st.Create(ctx, web); err != nil {
		t.Fatal(err)
	}
	host := &fakeHost{}
	// The host's links, by name, with the network each is marked for.
	links := map[string]string{"ul-bad": "x/../y", "ul-renamed": "pool"}
	shimFails := false
	reconciler := func() *Reconciler {
		r := reconcilerOf(st, host, host, func(name, network string) error {
			if shimFails {
				shimFails = false
				return errors.New("netlink: resource busy")
			}
			if links[name] == network {
				delete(links, name)
			}
			return nil
		})
		r.IPAM = ipam.NodeIPAM{Alloc: ipam.NewAllocator(kv, "id1", slog.New(slog.DiscardHandler)), Pools: ipam.SpecPools{Store: st}}
		r.Marked = func() (map[string]hostnet.Marks, error) {
			out := map[string]hostnet.Marks{}
			for name, network := range links {
				out[network] = hostnet.Marks{Shims: append(out[network].Shims, name)}
			}
			return out, nil
		}
		return r
	}
	r := reconciler()
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for _, w := range host.wants {
		links[w.ShimLink] = w.Network
	}
	pool, _ := ipam.PoolOf(spec, false)
	shims := func() int { return shimsOf(t, kv, pool, "id1") }
	if n := shims(); n != 1 {
		t.Fatalf("%d shims of id1 after pool was realised, want 1", n)
	}
	// The spec deleted by hand, as netspec.RemoveFix says; the shim's
	// removal fails once, after the config-only network went.
	if err := kv.Delete(ctx, netspec.KVPrefix+"pool/spec"); err != nil {
		t.Fatal(err)
	}
	host.managed, shimFails = []string{"pool"}, true
	if err := r.Sync(ctx); err == nil {
		t.Fatal("sync of the orphan, its shim failing: no error")
	}
	// The agent restarts.
	r = reconciler()
	if err := r.Sync(ctx); err != nil {
		t.Fatalf("sync after the restart: %v", err)
	}
	if _, ok := links[netspec.ShimLinkName("pool")]; ok || links["ul-renamed"] != "" || shims() != 0 {
		t.Errorf("after the restart, links %v and %d shim addresses of id1 left: want pool's shim and address gone", links, shims())
	}
	if links[netspec.ShimLinkName("web")] != "web" || links["ul-bad"] == "" {
		t.Errorf("links %v: want web's shim and the one marked for no network name left", links)
	}
	if !slices.Equal(host.removed, []string{"pool-config"}) {
		t.Errorf("removed %v, want pool-config once", host.removed)
	}
}

// TestOrphanParentRemoved: an orphan's spec carries no parent (it has a
// name only), so the VLAN parent underlay made for it stayed for good.
// The VLAN parents marked as its own are removed, in use or not
// (RemoveParent leaves one in use, and the rest goes all the same), but
// not one a spec names, by any spelling of its VLAN, nor any while a spec
// cannot be read, whose parent cannot be told.
func TestOrphanParentRemoved(t *testing.T) {
	for _, unreadable := range []bool{false, true} {
		t.Run(fmt.Sprintf("unreadable spec %t", unreadable), func(t *testing.T) {
			ctx := context.Background()
			kv, st := kvWithWeb(t) // web on eth1
			pool := netspec.Spec{Name: "pool", Subnet: netip.MustParsePrefix("10.20.0.0/24"), Gateway: netip.MustParseAddr("10.20.0.1"),
				Parent: "eth2.041", IPAM: netspec.PerNode, PerNodeSize: 16}
			if err := st.Create(ctx, pool); err != nil {
				t.Fatal(err)
			}
			if unreadable {
				kv.Put(ctx, netspec.KVPrefix+"broken/spec", []byte("{not json"))
			}
			host := &fakeHost{managed: []string{"gone"}, created: []string{"gone"}}
			r := reconcilerOf(st, host, host, func(string, string) error { return nil })
			logs := &bytes.Buffer{}
			r.Log = slog.New(slog.NewTextHandler(logs, nil))
			var asked []string
			r.RemoveParent = func(parent, network string) (bool, error) {
				asked = append(asked, parent+" of "+network)
				if parent == "eth3.7" {
					return false, fmt.Errorf("VLAN parent %q, left in place: %w: \"mv7\" (macvlan)", parent, hostnet.ErrParentInUse)
				}
				return true, nil
			}
			r.Marked = func() (map[string]hostnet.Marks, error) {
				// gone's spec was deleted by hand; its agent had made
				// eth1.40 and eth3.7, and eth2.41 before pool took it.
				return map[string]hostnet.Marks{"gone": {Parents: []string{"eth1.40", "eth2.41", "eth3.7"}}}, nil
			}
			if err := r.Sync(ctx); err != nil && !unreadable {
				t.Fatal(err)
			}
			want := []string{"eth1.40 of gone", "eth3.7 of gone"}
			if unreadable {
				want = nil
			}
			if !slices.Equal(asked, want) {
				t.Errorf("parents removed %q, want %q", asked, want)
			}
			if !slices.Contains(host.removed, "gone-config") {
				t.Errorf("removed %v, want gone-config among them", host.removed)
			}
			// eth3.7 stays, in use, and marked: gone is found again at
			// every sync, and the parent in use warned of once.
			if err := r.Sync(ctx); err != nil && !unreadable {
				t.Fatal(err)
			}
			const msg = "carries other links; left in place"
			if n := strings.Count(logs.String(), msg); n != len(want)/2 {
				t.Errorf("two syncs warned of the parent in use %d times, want %d:\n%s", n, len(want)/2, logs)
			}
		})
	}
}

// TestParentUsedByADockerNetworkKept: an operator's own Docker macvlan
// network on a VLAN parent underlay made for a network. Its containers'
// endpoints are in their own namespaces, where the parent's check of the
// host's links does not see them; removing the parent with the network
// took them along.
func TestParentUsedByADockerNetworkKept(t *testing.T) {
	ctx := context.Background()
	_, st := kvWithWeb(t)
	host := &fakeHost{managed: []string{"gone"}, created: []string{"gone"}, onParent: map[string][]string{"eth1.40": {"ops"}}}
	r := reconcilerOf(st, host, host, func(string, string) error { return nil })
	logs := &bytes.Buffer{}
	r.Log = slog.New(slog.NewTextHandler(logs, nil))
	var asked []string
	r.RemoveParent = func(parent, network string) (bool, error) {
		asked = append(asked, parent+" of "+network)
		return true, nil
	}
	r.Marked = func() (map[string]hostnet.Marks, error) {
		return map[string]hostnet.Marks{"gone": {Parents: []string{"eth1.40", "eth3.7"}}}, nil
	}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if want := []string{"eth3.7 of gone"}; !slices.Equal(asked, want) {
		t.Errorf("parents removed %q, want %q", asked, want)
	}
	if !strings.Contains(logs.String(), "Docker network ops") {
		t.Errorf("no warning names the Docker network on the parent kept:\n%s", logs)
	}
}

// TestSyncSkipsUnlistableNetworkNames: a hand-written spec key whose
// network name is "", "." or ".." (underlay/networks/../spec) names keys
// Consul's HTTP paths redirect to others' (../nodes/ID is underlay/nodes/ID,
// a node's facts). The agent refused it like any bad spec: it wrote its
// report there at every sync (refused by the Consul client, warned of each
// time), and logged `consul kv delete -recurse underlay/networks/../` as
// the fix, a delete redirected to underlay/. Each such key is now skipped
// with one warning naming it; no call goes to a key through it, and web
// is realised as before.
func TestSyncSkipsUnlistableNetworkNames(t *testing.T) {
	ctx := context.Background()
	kv, st := kvWithWeb(t)
	keys := []string{netspec.KVPrefix + "../spec", netspec.KVPrefix + "./spec", netspec.KVPrefix + "/spec"}
	kv.Put(ctx, keys[0], []byte(`{"name":"..","subnet":"10.20.0.0/24","gateway":"10.20.0.1","parent":"eth1","ipam":"per-node","per_node_size":16}`))
	kv.Put(ctx, keys[1], []byte(`{"name":`))
	kv.Put(ctx, keys[2], []byte(`{"name":"","deleting":true}`))
	kv.Put(ctx, netspec.KVPrefix+"../nodes/id1", []byte(`{"id":"id1","node":"n1","state":"ready"}`))
	var through []string
	kv.Hook = func(call string, keys []string) error {
		for _, k := range keys {
			if k != netspec.KVPrefix && (strings.Contains(k, "/../") || strings.Contains(k, "/./") || strings.Contains(k, "//")) {
				through = append(through, call+" "+k)
			}
		}
		return nil
	}
	var logs bytes.Buffer
	host := &fakeHost{}
	r := reconcilerOf(st, host, host, nil)
	r.Log = slog.New(slog.NewJSONHandler(&logs, nil))
	for range 2 {
		if err := r.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if len(through) > 0 {
		t.Errorf("calls through the unlistable names: %q; want none", through)
	}
	if !slices.Equal(host.created, []string{"web"}) {
		t.Errorf("networks created %v; want web's", host.created)
	}
	for _, k := range keys {
		if n := strings.Count(logs.String(), `"key":"`+k+`"`); n != 1 {
			t.Errorf("%d warnings naming %s; want one:\n%s", n, k, logs.String())
		}
	}
	if strings.Contains(logs.String(), "kv delete -recurse") {
		t.Errorf("a fix deleting through a redirected path was logged:\n%s", logs.String())
	}
}

// shimsOf counts node's shim addresses in pool.
func shimsOf(t *testing.T, kv ipam.KV, pool ipam.Pool, node string) int {
	t.Helper()
	allocs, err := ipam.Allocations(context.Background(), kv, pool)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, al := range allocs {
		if al.Kind == ipam.KindShim && al.Node == node {
			n++
		}
	}
	return n
}

// configCounting is a host that counts the times gone's config-only
// network is asked for.
type configCounting struct {
	fakeHost
	configAsked int
}

func (h *configCounting) ConfigNetwork(ctx context.Context, name string) (ConfigNet, error) {
	if name == "gone-config" {
		h.configAsked++
	}
	return h.fakeHost.ConfigNetwork(ctx, name)
}

// TestOrphanWithParentInUseSettled: an orphan whose marked VLAN parent
// stays in use (a link of another's on it) keeps its mark, and so is
// found at every sync. Once the rest of its teardown is done it is
// settled: later syncs only look again at the parent (no config-only
// network asked for, no Consul read of its leases or shim addresses, no
// shim removed; only its spec key read, to confirm it still gone before
// the parent may go), once settledRecheck has passed (see
// TestSettledOrphanIdleSyncsListNoNetworks), and the parent in use is
// warned of once. Once the parent is free, the next look removes it.
func TestOrphanWithParentInUseSettled(t *testing.T) {
	ctx := context.Background()
	kv, st := kvWithWeb(t)
	host := &configCounting{fakeHost: fakeHost{managed: []string{"gone"}, created: []string{"gone"}}}
	r := reconcilerOf(st, &host.fakeHost, &host.fakeHost, nil)
	r.Docker = host
	var shimsRemoved []string
	r.RemoveShim = func(name, network string) error {
		shimsRemoved = append(shimsRemoved, name+" of "+network)
		return nil
	}
	r.IPAM = shimIPAM{}
	logs := &bytes.Buffer{}
	r.Log = slog.New(slog.NewTextHandler(logs, nil))
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return now }
	inUse := true
	var asked []string
	r.RemoveParent = func(parent, network string) (bool, error) {
		asked = append(asked, parent+" of "+network)
		if inUse {
			return false, fmt.Errorf("VLAN parent %q, left in place: %w: \"mv7\" (macvlan)", parent, hostnet.ErrParentInUse)
		}
		return true, nil
	}
	marked := []string{"eth3.7"}
	r.Marked = func() (map[string]hostnet.Marks, error) {
		if len(marked) == 0 {
			return nil, nil
		}
		return map[string]hostnet.Marks{"gone": {Parents: marked}}, nil
	}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(host.removed, "gone-config") || len(shimsRemoved) == 0 {
		t.Fatalf("first sync removed %v and shims %v, want gone-config and its shim", host.removed, shimsRemoved)
	}
	configAsked, shimsBefore := host.configAsked, len(shimsRemoved)
	var gonesKeys []string
	kv.Hook = func(call string, keys []string) error {
		for _, k := range keys {
			if strings.Contains(k, "/gone/") && (call != "get" || k != netspec.SpecKey("gone")) {
				gonesKeys = append(gonesKeys, call+" "+k)
			}
		}
		return nil
	}
	for range 3 {
		now = now.Add(settledRecheck / 2)
		if err := r.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if host.configAsked != configAsked || len(shimsRemoved) != shimsBefore || len(gonesKeys) > 0 {
		t.Errorf("three syncs of the settled orphan asked for its config-only network %d times, removed shims %v and called Consul on %q; want none of these",
			host.configAsked-configAsked, shimsRemoved[shimsBefore:], gonesKeys)
	}
	if want := []string{"eth3.7 of gone", "eth3.7 of gone"}; !slices.Equal(asked, want) {
		t.Errorf("parents asked to go %q, want %q: the parent is looked at again once settledRecheck has passed", asked, want)
	}
	if n := strings.Count(logs.String(), "carries other links; left in place"); n != 1 {
		t.Errorf("four syncs warned of the parent in use %d times, want once:\n%s", n, logs)
	}
	inUse = false
	now = now.Add(settledRecheck)
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "VLAN parent made for the network removed") {
		t.Errorf("the parent freed was not removed:\n%s", logs)
	}
}

// TestOrphanReleaseFoundAfterRestart: an orphan (spec deleted by hand)
// whose shim is gone but whose shim addresses or range lease could not be
// given back (Consul out of reach) when the agent restarts had nothing
// left that found it: no config-only network, no marked link. They are
// found again from Consul: this node's shim addresses in the pools of a
// network with no spec key, and its leases under one. Another node's, and
// those of a live network, stay.
func TestOrphanReleaseFoundAfterRestart(t *testing.T) {
	ctx := context.Background()
	pool := netspec.Spec{Name: "pool", Subnet: netip.MustParsePrefix("10.20.0.0/24"), Gateway: netip.MustParseAddr("10.20.0.1"),
		IPv6Subnet: netip.MustParsePrefix("fd00:20::/64"), Parent: "eth1", IPAM: netspec.Cluster}
	live := netspec.Spec{Name: "live", Subnet: netip.MustParsePrefix("10.30.0.0/24"), Gateway: netip.MustParseAddr("10.30.0.1"),
		Parent: "eth2", IPAM: netspec.Cluster}
	web := netspec.Spec{Name: "web", Subnet: netip.MustParsePrefix("10.10.0.0/24"), Gateway: netip.MustParseAddr("10.10.0.1"),
		Parent: "eth3", IPAM: netspec.PerNode, PerNodeSize: 16}
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	for _, s := range []netspec.Spec{pool, live, web} {
		if err := st.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	host := &fakeHost{}
	reconciler := func(id string) *Reconciler {
		r := reconcilerOf(st, host, host, func(string, string) error { return nil })
		r.ID = id
		r.IPAM = ipam.NodeIPAM{Alloc: ipam.NewAllocator(kv, id, slog.New(slog.DiscardHandler)), Pools: ipam.SpecPools{Store: st}}
		return r
	}
	// id2 realises every network first: its addresses and lease stay.
	if err := reconciler("id2").Sync(ctx); err != nil {
		t.Fatal(err)
	}
	host.created = nil
	r := reconciler("id1")
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	pool4, _ := ipam.PoolOf(pool, false)
	pool6, _ := ipam.PoolOf(pool, true)
	live4, _ := ipam.PoolOf(live, false)
	leases := func(node string) int {
		all, err := kv.List(ctx, netspec.KVPrefix+"web/ranges/")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, p := range all {
			if string(p.Value) == node {
				n++
			}
		}
		return n
	}
	if shimsOf(t, kv, pool4, "id1") != 1 || shimsOf(t, kv, pool6, "id1") != 1 || leases("id1") != 1 {
		t.Fatal("id1 holds no shim address of pool in each family, or no lease of web")
	}
	// pool's keys deleted by hand, as netspec.RemoveFix says, and web's
	// spec key alone; each teardown fails to give back what Consul holds.
	if err := kv.DeleteTree(ctx, netspec.KVPrefix+"pool/"); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, netspec.KVPrefix+"web/spec"); err != nil {
		t.Fatal(err)
	}
	kv.Hook = func(call string, keys []string) error {
		for _, k := range keys {
			if strings.HasPrefix(k, ipam.KVPrefix+"pool/") || strings.HasPrefix(k, netspec.KVPrefix+"web/ranges/") {
				return kvtest.ErrUnreachable
			}
		}
		return nil
	}
	host.managed = []string{"pool", "web"}
	if err := r.Sync(ctx); err == nil {
		t.Fatal("sync of the orphans, Consul failing them: no error")
	}
	if !slices.Contains(host.removed, "pool-config") || !slices.Contains(host.removed, "web-config") {
		t.Fatalf("removed %v, want pool's and web's config-only networks", host.removed)
	}
	// The agent restarts with Consul back; the shims are gone, and with
	// them every mark.
	kv.Hook = nil
	r = reconciler("id1")
	if err := r.Sync(ctx); err != nil {
		t.Fatalf("sync after the restart: %v", err)
	}
	if n4, n6, nl := shimsOf(t, kv, pool4, "id1"), shimsOf(t, kv, pool6, "id1"), leases("id1"); n4+n6+nl != 0 {
		t.Errorf("after the restart id1 holds %d IPv4 and %d IPv6 shim addresses of pool and %d leases of web; want none", n4, n6, nl)
	}
	if n4, n6, nl, nlive := shimsOf(t, kv, pool4, "id2"), shimsOf(t, kv, pool6, "id2"), leases("id2"), shimsOf(t, kv, live4, "id1"); n4 != 1 || n6 != 1 || nl != 1 || nlive != 1 {
		t.Errorf("id2 holds %d IPv4 and %d IPv6 shim addresses of pool and %d leases of web, id1 %d shim addresses of live; want one each", n4, n6, nl, nlive)
	}
}

// TestOrphanOldShimRemoved: a shim an older agent made carries no mark,
// so the teardown of its network left it for good, warned of as another
// owner's link. The link of the network's shim name, unmarked, goes when
// it holds only what the node holds on the network: its range lease
// (per-node IPAM) or its shim addresses (cluster IPAM), both known from
// Consul while the teardown runs, before they are given back.
func TestOrphanOldShimRemoved(t *testing.T) {
	ctx := context.Background()
	pool := netspec.Spec{Name: "pool", Subnet: netip.MustParsePrefix("10.20.0.0/24"), Gateway: netip.MustParseAddr("10.20.0.1"),
		IPv6Subnet: netip.MustParsePrefix("fd00:20::/64"), Parent: "eth1", IPAM: netspec.Cluster}
	web := netspec.Spec{Name: "web", Subnet: netip.MustParsePrefix("10.10.0.0/24"), Gateway: netip.MustParseAddr("10.10.0.1"),
		Parent: "eth3", IPAM: netspec.PerNode, PerNodeSize: 16}
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	for _, s := range []netspec.Spec{pool, web} {
		if err := st.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	host := &fakeHost{}
	r := reconcilerOf(st, host, host, func(name, network string) error {
		// The older agent's shims, unmarked.
		return fmt.Errorf("link %s: %w %s", name, hostnet.ErrForeignLink, network)
	})
	r.IPAM = ipam.NodeIPAM{Alloc: ipam.NewAllocator(kv, "id1", slog.New(slog.DiscardHandler)), Pools: ipam.SpecPools{Store: st}}
	held := map[string][]netip.Prefix{}
	r.RemoveOldShim = func(name, network string, h []netip.Prefix) (bool, error) {
		held[name+" of "+network] = h
		return true, nil
	}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string][]netip.Prefix{}
	for _, w := range host.wants {
		var h []netip.Prefix
		if w.Network == "web" {
			h = append(h, w.Route)
		} else {
			h = append(h, netip.PrefixFrom(w.Shim, 32), netip.PrefixFrom(w.Shim6, 128))
		}
		want[w.ShimLink+" of "+w.Network] = h
	}
	for _, name := range []string{"pool", "web"} {
		if err := kv.DeleteTree(ctx, netspec.KVPrefix+name+"/spec"); err != nil {
			t.Fatal(err)
		}
	}
	host.managed = []string{"pool", "web"}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if len(held) != 2 || !reflect.DeepEqual(held, want) {
		t.Errorf("older agents' shims removed holding %v, want %v", held, want)
	}
}

// parentsCounting is a host that counts its Docker network listings
// (DockerLinks).
type parentsCounting struct {
	fakeHost
	listings int
}

func (h *parentsCounting) DockerLinks(ctx context.Context) (hostnet.DockerLinks, error) {
	h.listings++
	return h.fakeHost.DockerLinks(ctx)
}

// settledOrphan is a reconciler whose orphan gone is settled: its marked
// VLAN parent eth3.7 stays in use (a link of another's on it) while
// *inUse, its clock reads *now. kv is the KV under its store.
func settledOrphan(t testing.TB, inUse *bool, now *time.Time) (r *Reconciler, host *parentsCounting, logs *bytes.Buffer, kv *kvtest.KV) {
	t.Helper()
	kv, st := kvWithWeb(t)
	host = &parentsCounting{fakeHost: fakeHost{managed: []string{"gone"}, created: []string{"gone"}}}
	r = reconcilerOf(st, &host.fakeHost, &host.fakeHost, func(string, string) error { return nil })
	r.Docker = host
	logs = &bytes.Buffer{}
	r.Log = slog.New(slog.NewTextHandler(logs, nil))
	r.now = func() time.Time { return *now }
	r.RemoveParent = func(parent, network string) (bool, error) {
		if *inUse {
			return false, fmt.Errorf("VLAN parent %q, left in place: %w: \"mv7\" (macvlan)", parent, hostnet.ErrParentInUse)
		}
		return true, nil
	}
	r.Marked = func() (map[string]hostnet.Marks, error) {
		if !*inUse && strings.Contains(logs.String(), "VLAN parent made for the network removed") {
			return nil, nil
		}
		return map[string]hostnet.Marks{"gone": {Parents: []string{"eth3.7"}}}, nil
	}
	if err := r.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r, host, logs, kv
}

// TestSettledOrphanIdleSyncsListNoNetworks: a settled orphan (its VLAN
// parent stays in use) cost one Docker network listing per sync, idle
// ones too, to see whether a Docker network still used the parent. Its
// parents are now looked at again once settledRecheck has passed since
// the last look (or at once when a parent not looked at is marked as
// its): idle syncs in between ask Docker nothing, and a parent freed
// meanwhile goes at the first sync past the bound.
func TestSettledOrphanIdleSyncsListNoNetworks(t *testing.T) {
	ctx := context.Background()
	inUse, now := true, time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	r, host, logs, _ := settledOrphan(t, &inUse, &now)
	listings := host.listings
	for range 3 {
		now = now.Add(settledRecheck / 4)
		if err := r.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := host.listings - listings; n != 0 {
		t.Errorf("three idle syncs of a settled orphan listed Docker's networks %d times, want none", n)
	}
	// A parent not looked at yet, marked as gone's: looked at at once.
	marked := r.Marked
	r.Marked = func() (map[string]hostnet.Marks, error) {
		return map[string]hostnet.Marks{"gone": {Parents: []string{"eth3.7", "eth3.8"}}}, nil
	}
	listings = host.listings
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n := host.listings - listings; n != 1 {
		t.Errorf("a sync with a parent of the settled orphan not looked at yet listed Docker's networks %d times, want 1 (one listing for both parents)", n)
	}
	r.Marked = marked
	inUse = false
	now = now.Add(settledRecheck)
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "VLAN parent made for the network removed") {
		t.Errorf("the parent freed was not removed at the first sync past the bound:\n%s", logs)
	}
	if n := strings.Count(logs.String(), "parent=eth3.7 err="); n != 1 {
		t.Errorf("the parent in use was warned of %d times, want once:\n%s", n, logs)
	}
}

// BenchmarkSettledOrphanSync is an idle sync of a node with a settled
// orphan, reporting Docker network listings per sync.
func BenchmarkSettledOrphanSync(b *testing.B) {
	ctx := context.Background()
	inUse, now := true, time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	r, host, _, _ := settledOrphan(b, &inUse, &now)
	listings := host.listings
	n := 0
	for b.Loop() {
		if err := r.Sync(ctx); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(host.listings-listings)/float64(n), "docker-listings/sync")
}

// TestSyncRefusesConfigNetworkOfTheOtherIPAM: a config-only network
// underlay made for the network under the other IPAM mode (left from a
// network of the name removed and made again while this node's agent
// was away) is not taken for the network's. A cluster-IPAM one holds no
// range, which was taken for an older underlay's unlabelled one on a
// Docker that does not report it: the per-node network was reported
// ready on the cluster IPAM driver's network, its containers given no
// address of the node's range. Either way the network reports the
// mismatch, naming both modes.
func TestSyncRefusesConfigNetworkOfTheOtherIPAM(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		ipam netspec.IPAMMode
		// cluster says the config-only network left is a cluster-IPAM one.
		cluster bool
	}{
		{"per-node spec, cluster config", netspec.PerNode, true},
		{"cluster spec, per-node config", netspec.Cluster, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := netspec.NewStore(kvtest.New())
			spec := netspec.Spec{Name: "web", Subnet: netip.MustParsePrefix("10.10.0.0/24"), Gateway: netip.MustParseAddr("10.10.0.1"),
				Parent: "eth1", IPAM: tc.ipam}
			if tc.ipam == netspec.PerNode {
				spec.PerNodeSize = 16
			}
			if err := st.Create(ctx, spec); err != nil {
				t.Fatal(err)
			}
			host := &rangedHost{fakeHost: fakeHost{created: []string{"web"}}, ranges: map[string]netip.Prefix{}}
			if tc.cluster {
				host.cluster = []string{"web"}
			} else {
				host.ranges["web"] = netip.MustParsePrefix("10.10.0.0/28")
			}
			r := reconcilerOf(st, &host.fakeHost, host, func(string, string) error { return nil })
			r.Docker = host
			r.IPAM = shimIPAM{v4: netip.MustParseAddr("10.10.0.77")}
			err := r.Sync(ctx)
			if err == nil || !strings.Contains(err.Error(), "web-config") || !strings.Contains(err.Error(), string(netspec.Cluster)) ||
				!strings.Contains(err.Error(), string(netspec.PerNode)) {
				t.Errorf("sync: %v, want an error naming web-config and both IPAM modes", err)
			}
			if states, _ := st.NodeStates(ctx, "web"); len(states) != 1 || states[0].State != netspec.StateError {
				t.Errorf("web reported %+v, want an error", states)
			}
			if len(host.removed) != 0 || len(host.created) != 1 {
				t.Errorf("networks created %v, removed %v; want the one left, untouched", host.created, host.removed)
			}
		})
	}
}

// rangedHost is fakeHost whose config-only networks report the ranges
// given, by network (none for the others).
type rangedHost struct {
	fakeHost
	ranges map[string]netip.Prefix
}

func (h *rangedHost) ConfigNetwork(ctx context.Context, name string) (ConfigNet, error) {
	cn, err := h.fakeHost.ConfigNetwork(ctx, name)
	cn.Range = h.ranges[cn.Network]
	return cn, err
}

// TestSyncLeavesLabelledNetworkOfNoNetworkName: a config-only network
// bearing underlay's labels under the name underlay would give it, but
// for a network name no underlay gives (49 characters: `network create`
// takes at most 48), is not underlay's: it is left alone, with the shim
// and lease of its name, and warned of once. Before, it was taken for an
// orphan of underlay's and removed.
func TestSyncLeavesLabelledNetworkOfNoNetworkName(t *testing.T) {
	ctx := context.Background()
	st := storeWithWeb(t)
	long := strings.Repeat("a", 49)
	host := &fakeHost{created: []string{long}, managed: []string{long}}
	logs := &bytes.Buffer{}
	var shims []string
	r := reconcilerOf(st, host, host, func(name, _ string) error { shims = append(shims, name); return nil })
	r.Log = slog.New(slog.NewTextHandler(logs, nil))
	for range 3 {
		if err := r.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if len(host.removed) != 0 || len(shims) != 0 {
		t.Errorf("removed %v, shims %v; want nothing", host.removed, shims)
	}
	out := logs.String()
	if strings.Count(out, "level=WARN") != 1 || !strings.Contains(out, "docker_network="+netspec.ConfigNetworkName(long)) || strings.Contains(out, "network removed from this node") {
		t.Errorf("logs of three syncs:\n%s\nwant one warning naming the Docker network %s, and no removal", logs, netspec.ConfigNetworkName(long))
	}
}

// TestDeletingTeardownFailureReported: a network marked for removal
// whose teardown fails on this node (dockerd refuses to remove its
// config-only network, in use) is reported in error, naming the failure,
// once while it stays; before, the node's report said ready to the end,
// and `network rm` timed out asking whether the node's agent runs. Once
// the teardown is done, the node reports the network removed.
func TestDeletingTeardownFailureReported(t *testing.T) {
	ctx := context.Background()
	kv, st := kvWithWeb(t)
	inUse := &inUseHost{}
	r := reconcilerOf(st, &inUse.fakeHost, inUse, func(string, string) error { return nil })
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.MarkDeleting(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	r.Docker = inUse
	reportKey := netspec.KVPrefix + "web/nodes/id1"
	writes := 0
	kv.Hook = func(call string, keys []string) error {
		if call == "txn" && slices.Contains(keys, reportKey) {
			writes++
		}
		return nil
	}
	for range 3 {
		if err := r.Sync(ctx); err == nil || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("sync of web, its config-only network in use: %v, want an error saying so", err)
		}
	}
	kv.Hook = nil
	if writes != 1 {
		t.Errorf("three syncs failing alike wrote web's report %d times, want once", writes)
	}
	states, _ := st.NodeStates(ctx, "web")
	if len(states) != 1 || states[0].State != netspec.StateError || !strings.Contains(states[0].Error, "in use") || !strings.Contains(states[0].Error, "web-config") {
		t.Errorf("web reported %+v while its teardown fails, want an error naming web-config in use", states)
	}
	r.Docker = &inUse.fakeHost
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if states, _ := st.NodeStates(ctx, "web"); len(states) != 1 || states[0].State != netspec.StateRemoved || states[0].Error != "" {
		t.Errorf("web reported %+v once torn down, want removed", states)
	}
}

// TestSyncRefusesConfigNetworkOfAnotherParentOrDriver: a config-only
// network underlay made for the network on another parent, or with
// another driver (left from a network of the name made again while this
// node's agent was away), holding the range the node leases, is not
// taken for the network's: the host's shim was prepared on the spec's
// parent while the containers' endpoints hung off the old one, and the
// network was reported ready. The network reports the mismatch.
func TestSyncRefusesConfigNetworkOfAnotherParentOrDriver(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, parent, mode, want string
	}{
		{"another parent", "eth9", "", "eth9"},
		{"ipvlan, spec macvlan", "eth1", "l2", "ipvlan l2"},
		{"unreported", "", "", ""},
		{"the same", "eth1", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := storeWithWeb(t)
			host := &parentHost{fakeHost: fakeHost{created: []string{"web"}}, parent: tc.parent, mode: tc.mode}
			r := reconcilerOf(st, &host.fakeHost, host, func(string, string) error { return nil })
			r.Docker = host
			err := r.Sync(ctx)
			states, _ := st.NodeStates(ctx, "web")
			if tc.want == "" {
				if err != nil || len(states) != 1 || states[0].State != netspec.StateReady {
					t.Errorf("sync: %v, web reported %+v; want ready", err, states)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "web-config") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("sync: %v, want an error naming web-config and %s", err, tc.want)
			}
			if len(states) != 1 || states[0].State != netspec.StateError {
				t.Errorf("web reported %+v, want an error", states)
			}
			if len(host.removed) != 0 || len(host.created) != 1 {
				t.Errorf("networks created %v, removed %v; want the one left, untouched", host.created, host.removed)
			}
		})
	}
}

// parentHost is fakeHost whose config-only networks report the parent
// and ipvlan mode given, and the first range of web's.
type parentHost struct {
	fakeHost
	parent, mode string
}

func (h *parentHost) ConfigNetwork(ctx context.Context, name string) (ConfigNet, error) {
	cn, err := h.fakeHost.ConfigNetwork(ctx, name)
	if cn.Exists {
		cn.Parent, cn.IPvlanMode, cn.Range = h.parent, h.mode, netip.MustParsePrefix("10.10.0.0/28")
	}
	return cn, err
}

// brokenSwarm is a swarm whose manager cannot say whether it leads.
type brokenSwarm struct{ leaderSwarm }

func (*brokenSwarm) IsLeader(context.Context) (bool, error) {
	return false, errors.New("docker info: Cannot connect to the Docker daemon")
}

// TestSwarmNetworkErrorsNameTheNetwork: an error on the way to the swarm
// network (the leader's check, the swarm's nodes, the reports) names the
// network it was for, in the sync's error the agent logs. Before, each
// network added the same bare "docker info: …", none saying whose.
func TestSwarmNetworkErrorsNameTheNetwork(t *testing.T) {
	ctx := context.Background()
	st := storeWithWeb(t)
	r := reconcilerOf(st, &fakeHost{}, &brokenSwarm{}, func(string, string) error { return nil })
	err := r.Sync(ctx)
	if err == nil || !strings.Contains(err.Error(), "network web") || !strings.Contains(err.Error(), "Cannot connect") {
		t.Errorf("sync: %v, want an error naming network web and the failure", err)
	}
	if states, _ := st.NodeStates(ctx, "web"); len(states) != 1 || states[0].State != netspec.StateReady || !strings.Contains(states[0].Error, "Cannot connect") {
		t.Errorf("web reported %+v, want ready, its swarm network's failure beside", states)
	}
}

// swarmOf is the leader's swarm whose ready nodes are nodes, active
// unless availability names another availability.
type swarmOf struct {
	leaderSwarm
	nodes        []string
	availability map[string]string
}

func (s *swarmOf) ReadySwarmNodes(context.Context) ([]netspec.SwarmNode, error) {
	out := make([]netspec.SwarmNode, len(s.nodes))
	for i, id := range s.nodes {
		a, ok := s.availability[id]
		if !ok {
			a = "active"
		}
		out[i] = netspec.SwarmNode{ID: id, State: "ready", Availability: a}
	}
	return out, nil
}

// TestSwarmNetworkWaitsForEveryNodesOwnReport: a node's report is the
// one under its key, whatever identity the document names (copied under
// another node's key by hand, or a snapshot's): another node's report
// naming it ready does not make it ready, and the leader does not make
// the swarm network before the node's own report says ready. The
// reports are taken by their key as `node rm` takes them.
func TestSwarmNetworkWaitsForEveryNodesOwnReport(t *testing.T) {
	ctx := context.Background()
	kv, st := kvWithWeb(t)
	b, _ := json.Marshal(netspec.NodeState{ID: "id3", Node: "n3", State: netspec.StateReady})
	if err := kv.Put(ctx, netspec.KVPrefix+"web/nodes/id2", b); err != nil {
		t.Fatal(err)
	}
	sw := &swarmOf{nodes: []string{"id1", "id3"}}
	r := reconcilerOf(st, &fakeHost{}, sw, func(string, string) error { return nil })
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if len(sw.created) != 0 {
		t.Errorf("swarm networks created %v with n3 reporting nothing (id2's key naming it ready), want none", sw.created)
	}
	if err := st.Report(ctx, "web", netspec.NodeState{ID: "id3", Node: "n3", State: netspec.StateReady}); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sw.created, []string{"web"}) {
		t.Errorf("swarm networks created %v once n3 reported ready, want [web]", sw.created)
	}
}

// TestSwarmNetworkLeavesDrainedNodes: a ready node set to drain (or
// pause) runs no agent when the agents are the stack's global service —
// swarm stops their tasks there — and never reports; swarm places no task
// there either, so the leader makes the swarm network without it. Before,
// it waited for every ready node, and no swarm network was made while a
// node was drained. A drained node that reports (its agent runs from the
// .deb) is waited for until its report says ready.
func TestSwarmNetworkLeavesDrainedNodes(t *testing.T) {
	ctx := context.Background()
	t.Run("silent", func(t *testing.T) {
		st := storeWithWeb(t)
		sw := &swarmOf{nodes: []string{"id1", "id3", "id4"}, availability: map[string]string{"id3": "drain", "id4": "pause"}}
		r := reconcilerOf(st, &fakeHost{}, sw, func(string, string) error { return nil })
		if err := r.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(sw.created, []string{"web"}) {
			t.Errorf("swarm networks created %v with n3 drained and n4 paused, neither reporting, want [web]", sw.created)
		}
	})
	t.Run("reporting", func(t *testing.T) {
		st := storeWithWeb(t)
		if err := st.Report(ctx, "web", netspec.NodeState{ID: "id3", Node: "n3", State: netspec.StateError, Error: "parent eth2 not found"}); err != nil {
			t.Fatal(err)
		}
		sw := &swarmOf{nodes: []string{"id1", "id3"}, availability: map[string]string{"id3": "drain"}}
		r := reconcilerOf(st, &fakeHost{}, sw, func(string, string) error { return nil })
		if err := r.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if len(sw.created) != 0 {
			t.Errorf("swarm networks created %v with drained n3 reporting error, want none", sw.created)
		}
		if err := st.Report(ctx, "web", netspec.NodeState{ID: "id3", Node: "n3", State: netspec.StateReady}); err != nil {
			t.Fatal(err)
		}
		if err := r.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(sw.created, []string{"web"}) {
			t.Errorf("swarm networks created %v once drained n3 reported ready, want [web]", sw.created)
		}
	})
	// A drained node's agent running with its clock an hour behind
	// stamped its facts an hour ago by the leader's clock: it looked
	// stopped, and its report, not ready, was passed over, the swarm
	// network made without it. Stamps are the writers' clocks: an agent
	// counts as stopped once its facts are seen unchanged by the
	// reader's clock, never by their stamp alone.
	t.Run("reporting, its agent running with its clock behind", func(t *testing.T) {
		st := storeWithWeb(t)
		if err := st.Report(ctx, "web", netspec.NodeState{ID: "id3", Node: "n3", State: netspec.StateError, Error: "parent eth2 not found"}); err != nil {
			t.Fatal(err)
		}
		clock := testclock.New(time.Now())
		heartbeat := func() {
			t.Helper()
			behind := func() time.Time { return clock.Now().Add(-time.Hour) }
			if err := st.Claim(ctx, netspec.NodeFacts{ID: "id3", Node: "n3", Holder: netspec.Holder{Instance: "n3"}}, netspec.ClaimOptions{Stale: StaleAfter, Poll: time.Millisecond, Now: behind}); err != nil {
				t.Fatal(err)
			}
		}
		sw := &swarmOf{nodes: []string{"id1", "id3"}, availability: map[string]string{"id3": "drain"}}
		r := reconcilerOf(st, &fakeHost{}, sw, func(string, string) error { return nil })
		r.now = clock.Now
		for i := range 4 {
			heartbeat()
			if err := r.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			if len(sw.created) != 0 {
				t.Fatalf("swarm networks created %v at sync %d, drained n3's agent running (its clock an hour behind), its report an error; want none", sw.created, i)
			}
			clock.Add(Heartbeat)
		}
	})
	// A drained node's not-ready report, left by an agent that stopped
	// since (its facts stale), held the swarm network up for as long as
	// the node stayed drained: no agent there would report again. Its
	// report counts only while its agent refreshes its facts: once they
	// are seen unchanged for a heartbeat and a half (stamped an hour
	// ago), or for StaleAfter (stamped just now: the agent stopped
	// lately, or its clock is ahead), by the leader's clock.
	for _, tc := range []struct {
		stamped, watched time.Duration
	}{{time.Hour, Heartbeat * 3 / 2}, {0, StaleAfter + time.Second}} {
		t.Run(fmt.Sprintf("reporting, its agent stopped, stamped %v ago", tc.stamped), func(t *testing.T) {
			st := storeWithWeb(t)
			if err := st.Report(ctx, "web", netspec.NodeState{ID: "id3", Node: "n3", State: netspec.StateError, Error: "parent eth2 not found"}); err != nil {
				t.Fatal(err)
			}
			clock := testclock.New(time.Now())
			stamp := func() time.Time { return clock.Now().Add(-tc.stamped) }
			if err := st.Claim(ctx, netspec.NodeFacts{ID: "id3", Node: "n3", Holder: netspec.Holder{Instance: "n3"}}, netspec.ClaimOptions{Stale: StaleAfter, Poll: time.Millisecond, Now: stamp}); err != nil {
				t.Fatal(err)
			}
			sw := &swarmOf{nodes: []string{"id1", "id3"}, availability: map[string]string{"id3": "drain"}}
			r := reconcilerOf(st, &fakeHost{}, sw, func(string, string) error { return nil })
			r.now = clock.Now
			for _, step := range []time.Duration{0, tc.watched - time.Second} {
				clock.Add(step)
				if err := r.Sync(ctx); err != nil {
					t.Fatal(err)
				}
				if len(sw.created) != 0 {
					t.Fatalf("swarm networks created %v with drained n3's facts, stamped %v ago, watched %v: want none before they are watched %v", sw.created, tc.stamped, step, tc.watched)
				}
			}
			clock.Add(time.Second)
			if err := r.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(sw.created, []string{"web"}) {
				t.Errorf("swarm networks created %v with drained n3's agent stopped (facts stamped %v ago, unchanged for %v), its report an error, want [web]", sw.created, tc.stamped, tc.watched)
			}
		})
	}
}

// TestTeardownReleasesPromisc: removing a network asks the host to turn
// off the promiscuous mode underlay turned on its parent
// (ReleasePromisc), unless a Docker network (another's, an operator's)
// still hangs off the parent: its containers' endpoints, in their own
// namespaces, are not seen on the host.
func TestTeardownReleasesPromisc(t *testing.T) {
	for _, tc := range []struct {
		name     string
		onParent map[string][]string
		want     []string
	}{
		{"last network on the parent", nil, []string{"eth1"}},
		{"another Docker network on the parent", map[string][]string{"eth1": {"lan"}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			st := storeWithWeb(t)
			host := &fakeHost{onParent: tc.onParent}
			r := reconcilerOf(st, host, host, func(string, string) error { return nil })
			var asked []string
			r.ReleasePromisc = func(parent string) (bool, error) { asked = append(asked, parent); return true, nil }
			if err := r.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			if len(asked) != 0 {
				t.Fatalf("ReleasePromisc asked for %v while web is wanted", asked)
			}
			if err := st.MarkDeleting(ctx, "web"); err != nil {
				t.Fatal(err)
			}
			if err := r.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(asked, tc.want) {
				t.Errorf("ReleasePromisc asked for %v, want %v", asked, tc.want)
			}
		})
	}
}

// TestNetworkRmJudgesParentsAsCleanupDoes: `network rm` left a VLAN
// parent it made when any Docker network named it, and `agent cleanup`
// when containers used it: two rules for one question. Both now judge by
// hostnet.DockerLinks.Users, and are tested on one table (inusetest):
// the agent's teardown of a removed network leaves its parent (and the
// promiscuous mode it turned on) exactly when the rule names users, and
// its warning names them.
func TestNetworkRmJudgesParentsAsCleanupDoes(t *testing.T) {
	for _, c := range inusetest.Cases() {
		t.Run(c.Name, func(t *testing.T) {
			ctx := context.Background()
			st := netspec.NewStore(kvtest.New())
			spec := netspec.Spec{Name: "db", Subnet: netip.MustParsePrefix("10.20.0.0/24"), Gateway: netip.MustParseAddr("10.20.0.1"),
				Parent: inusetest.Parent, IPAM: netspec.PerNode, PerNodeSize: 16}
			if err := st.Create(ctx, spec); err != nil {
				t.Fatal(err)
			}
			host := &fakeHost{docker: c.Docker}
			r := reconcilerOf(st, host, host, func(string, string) error { return nil })
			var logs bytes.Buffer
			r.Log = slog.New(slog.NewTextHandler(&logs, nil))
			var removed, released []string
			r.RemoveParent = func(parent, _ string) (bool, error) { removed = append(removed, parent); return true, nil }
			r.ReleasePromisc = func(parent string) (bool, error) { released = append(released, parent); return true, nil }
			if err := r.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			if err := st.MarkDeleting(ctx, "db"); err != nil {
				t.Fatal(err)
			}
			if err := r.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			var want []string
			if len(c.Users) == 0 {
				want = []string{inusetest.Parent}
			}
			if !slices.Equal(removed, want) || !slices.Equal(released, want) {
				t.Errorf("parent removed %v, made not promiscuous %v; want %v for users %q", removed, released, want, c.Users)
			}
			for _, u := range c.Users {
				if !strings.Contains(logs.String(), u) {
					t.Errorf("the warning of the parent left does not name %q:\n%s", u, logs.String())
				}
			}
		})
	}
}

// TestTeardownReadsDockerOnce: `network rm` read what dockerd says of
// its networks and containers twice on each node, once to judge the VLAN
// parents it made and again, moments later, to judge the promiscuous mode
// it turned on the parent: two listings of every container on the host,
// which could disagree (a container started in between). Nothing of
// Docker's changes between the two: one read now serves both, and both
// still judge by it.
func TestTeardownReadsDockerOnce(t *testing.T) {
	ctx := context.Background()
	st := storeWithWeb(t)
	host := &parentsCounting{}
	r := reconcilerOf(st, &host.fakeHost, &host.fakeHost, func(string, string) error { return nil })
	r.Docker = host
	var removed, released []string
	r.RemoveParent = func(parent, _ string) (bool, error) { removed = append(removed, parent); return true, nil }
	r.ReleasePromisc = func(parent string) (bool, error) { released = append(released, parent); return true, nil }
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.MarkDeleting(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	before := host.listings
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n := host.listings - before; n != 1 {
		t.Errorf("the teardown of web read Docker's links %d times, want 1", n)
	}
	if want := []string{"eth1"}; !slices.Equal(removed, want) || !slices.Equal(released, want) {
		t.Errorf("parent removed %v, made not promiscuous %v; want %v", removed, released, want)
	}
}
