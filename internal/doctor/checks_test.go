package doctor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/hostnet"
	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/shellword"
	"github.com/underlay/underlay/internal/taskmetrics"
)

type fakeFiles map[string]string

func (f fakeFiles) ReadFile(p string) ([]byte, error) {
	if v, ok := f[p]; ok {
		return []byte(v), nil
	}
	return nil, os.ErrNotExist
}

func (f fakeFiles) Exists(p string) bool { _, ok := f[p]; return ok }

type fakeLinks struct {
	observed map[string]hostnet.Observed    // by parent
	parents  map[string]hostnet.ParentFacts // by parent
	// conflicts are Conflicts' answers, by parent.
	conflicts map[string][2]error
	wants     []hostnet.Want
	probeErr  error
	probes    []string
}

func (l *fakeLinks) Observe(w hostnet.Want) (hostnet.Observed, error) {
	l.wants = append(l.wants, w)
	return l.observed[w.Parent], nil
}

func (l *fakeLinks) Parent(name string) (hostnet.ParentFacts, error) { return l.parents[name], nil }

func (l *fakeLinks) Conflicts(w hostnet.Want) (addrs, routes error) {
	c := l.conflicts[w.Parent]
	return c[0], c[1]
}

func (l *fakeLinks) ProbeLink(kind string) error {
	l.probes = append(l.probes, kind)
	return l.probeErr
}

type fakeNetworks struct {
	specs  []netspec.Spec
	bad    []netspec.BadSpec
	states map[string][]netspec.NodeState
	facts  []netspec.NodeFacts
	err    error
}

func (n fakeNetworks) Specs(context.Context) ([]netspec.Spec, error) { return n.specs, n.err }
func (n fakeNetworks) ReadListing(context.Context) (*netspec.Listing, error) {
	return &netspec.Listing{Specs: n.specs, Bad: n.bad}, n.err
}
func (n fakeNetworks) ReadNodes(context.Context) ([]netspec.NodeFacts, []netspec.MisfiledFacts, error) {
	return n.facts, nil, n.err
}
func (n fakeNetworks) ReadFacts(context.Context) (netspec.FactsListing, error) {
	return netspec.FactsListing{Facts: n.facts}, n.err
}
func (n fakeNetworks) NodeStates(_ context.Context, name string) ([]netspec.NodeState, error) {
	return n.states[name], nil
}

type fakeDocker struct {
	facts DockerFacts
	err   error
	eps   []Probe
	svcs  []ServiceFacts
	// svcErr fails Services alone.
	svcErr   error
	managers []ManagerFacts
	// mgrErr fails Managers alone.
	mgrErr error
}

func (d fakeDocker) Services(context.Context) ([]ServiceFacts, error) { return d.svcs, d.svcErr }
func (d fakeDocker) Managers(context.Context) ([]ManagerFacts, error) { return d.managers, d.mgrErr }
func (d fakeDocker) NodeIDs(context.Context) (map[string]bool, error) {
	ids := map[string]bool{}
	for _, m := range d.managers {
		ids[m.ID] = true
	}
	return ids, d.mgrErr
}

func (d fakeDocker) Facts(context.Context) (DockerFacts, error) { return d.facts, d.err }
func (d fakeDocker) Endpoints(_ context.Context, nets map[string]string) ([]Probe, error) {
	var out []Probe
	for _, p := range d.eps {
		if under, ok := nets[p.Network]; ok {
			p.Network = under
			out = append(out, p)
		}
	}
	return out, d.err
}

func TestMacvlanCheck(t *testing.T) {
	links := &fakeLinks{}
	rs := MacvlanCheck{Files: fakeFiles{"/proc/modules": "macvlan 32768 0 - Live 0x0\n"}, Links: links}.Run(context.Background(), t.Logf)
	if rs[0].Status != OK || len(links.probes) != 0 {
		t.Errorf("loaded module: %+v, probes %v", rs, links.probes)
	}
	links.probeErr = errors.New("not supported")
	rs = MacvlanCheck{Files: fakeFiles{}, Links: links}.Run(context.Background(), t.Logf)
	if rs[0].Status != Fail || len(links.probes) != 1 || links.probes[0] != "macvlan" {
		t.Errorf("built in but failing probe: %+v, probes %v", rs, links.probes)
	}
}

func TestNetworksCheck(t *testing.T) {
	lan := netspec.Spec{Name: "lan", Parent: "eth1", Subnet: netip.MustParsePrefix("10.0.0.0/24")}
	vlan := netspec.Spec{Name: "tagged", Parent: "eth1.42"}
	gone := netspec.Spec{Name: "old", Parent: "eth2", Deleting: true}
	state := netspec.NodeState{Node: "n1", State: netspec.StateReady, Range: netip.MustParsePrefix("10.0.0.0/26"),
		Shim: netip.MustParseAddr("10.0.0.1"), ShimLink: "ul-0000abcd"}
	other := state
	other.Node, other.Range = "n2", netip.MustParsePrefix("10.0.0.64/26")
	links := &fakeLinks{observed: map[string]hostnet.Observed{"eth1": {ParentExists: true, ParentUp: true, ParentPromisc: true}}}
	c := NetworksCheck{Node: "n1", Links: links, Files: fakeFiles{},
		Networks: fakeNetworks{specs: []netspec.Spec{gone, lan, vlan}, states: map[string][]netspec.NodeState{"lan": {other, state}}}}
	rs := c.Run(context.Background(), t.Logf)
	want := []brief{
		{"network/lan/state", "ok", ""},
		{"network/lan/parent-up", "ok", ""},
		{"network/lan/parent-promisc", "ok", ""},
		{"network/lan/shim", "fail", "ip link add ul-0000abcd link eth1 type macvlan mode bridge && ip addr add 10.0.0.1/32 dev ul-0000abcd && ip link set ul-0000abcd up && ip route add 10.0.0.0/26 dev ul-0000abcd"},
		{"network/tagged/state", "fail", "underlay network inspect tagged"},
		{"network/tagged/vlan", "fail", "modprobe 8021q"},
		{"network/tagged/parent", "fail", "ip link add link eth1 name eth1.42 type vlan id 42 && ip link set eth1.42 up"},
	}
	if diff := cmp.Diff(want, briefs(rs)); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
	// The node's own report, not another node's, gives the shim and route.
	if w := links.wants[0]; w.ShimLink != "ul-0000abcd" || w.Route != state.Range || w.Shim != state.Shim {
		t.Errorf("observed %+v, want the state of n1", w)
	}
	c.Files = fakeFiles{"/proc/net/vlan": ""}
	if rs := c.Run(context.Background(), t.Logf); rs[5].Check != "network/tagged/vlan" || rs[5].Status != OK {
		t.Errorf("with /proc/net/vlan: %+v", rs[5])
	}
	c.Networks = fakeNetworks{err: errors.New("consul down")}
	if rs := c.Run(context.Background(), t.Logf); len(rs) != 1 || rs[0].Status != Fail || rs[0].Check != "network/specs" {
		t.Errorf("consul down: %+v", rs)
	}
}

func TestNetfilterCheck(t *testing.T) {
	fw := fakeFirewall{policy: "DROP"}
	rs := NetfilterCheck{Files: fakeFiles{"/proc/sys/net/bridge/bridge-nf-call-iptables": "1\n"}, Firewall: fw}.Run(context.Background(), t.Logf)
	if rs[0].Status != Warn {
		t.Errorf("trap not flagged: %+v", rs)
	}
	rs = NetfilterCheck{Files: fakeFiles{}, Firewall: fw}.Run(context.Background(), t.Logf)
	if rs[0].Status != OK {
		t.Errorf("without br_netfilter: %+v", rs)
	}
}

// TestNetfilterCheckReadError: bridge-nf-call-iptables that could not be
// read (permission denied, an I/O error) was taken as absent, and the
// check said ok: bridged traffic does not pass through iptables. Only an
// absent file (br_netfilter not loaded) is ok now; another error warns,
// naming it.
func TestNetfilterCheckReadError(t *testing.T) {
	files := errFiles{"/proc/sys/net/bridge/bridge-nf-call-iptables": errors.New("permission denied")}
	rs := NetfilterCheck{Files: files, Firewall: fakeFirewall{policy: "DROP"}}.Run(context.Background(), t.Logf)
	if len(rs) != 1 || rs[0].Status != Warn || !strings.Contains(rs[0].Message, "permission denied") {
		t.Errorf("unreadable bridge-nf-call-iptables: %+v, want a warning naming the error", rs)
	}
}

// errFiles fails reading each file it names with its error; others do
// not exist.
type errFiles map[string]error

func (f errFiles) ReadFile(p string) ([]byte, error) {
	if err, ok := f[p]; ok {
		return nil, err
	}
	return nil, os.ErrNotExist
}

func (f errFiles) Exists(p string) bool { _, ok := f[p]; return ok }

type fakeFirewall struct{ policy string }

func (f fakeFirewall) Forward(context.Context) ([]ForwardChain, error) {
	return []ForwardChain{{Backend: BackendNFT, Policy: f.policy}}, nil
}

func TestDockerCheck(t *testing.T) {
	d := fakeDocker{facts: DockerFacts{Version: "20.10.24", SwarmState: "active"}}
	rs := DockerCheck{Docker: d, Files: fakeFiles{PluginDir: ""}}.Run(context.Background(), t.Logf)
	if Failed(rs) {
		t.Errorf("healthy docker failed: %+v", rs)
	}
	d.err = errors.New("refused")
	if rs := (DockerCheck{Docker: d, Files: fakeFiles{}}).Run(context.Background(), t.Logf); len(rs) != 1 || rs[0].Check != "docker/daemon" {
		t.Errorf("docker down: %+v", rs)
	}
}

func TestSwarmCheck(t *testing.T) {
	old := time.Now().Add(-time.Hour)
	lost := ServiceFacts{Name: "web", Replicas: 1, UpdatedAt: old, Wanted: []TaskFacts{{ID: "aaaaaaaaaaaaaaaa", Slot: 1, State: "running"}, {ID: "bbbbbbbbbbbbbbbb", Slot: 2, State: "running"}}}
	fine := ServiceFacts{Name: "db", Replicas: 2, UpdatedAt: old, Wanted: []TaskFacts{{ID: "c", Slot: 1, State: "running"}, {ID: "d", Slot: 2, State: "starting"}}}
	one := []ManagerFacts{{Name: "m1", ID: "m1id", Reachability: "reachable", Leader: true}}
	two := append([]ManagerFacts{{Name: "m2", ID: "m2id", Reachability: "reachable"}}, one...)
	manager := DockerFacts{Manager: true}
	type want struct {
		status Status
		msg    string // part of the message
	}
	for _, tc := range []struct {
		name               string
		d                  fakeDocker
		managers, services want
	}{
		{"worker", fakeDocker{facts: DockerFacts{SwarmState: "active"}, svcs: []ServiceFacts{lost}, managers: two},
			want{OK, "not a swarm manager"}, want{OK, "not a swarm manager"}},
		{"daemon down", fakeDocker{err: errors.New("refused")}, want{Warn, "refused"}, want{Warn, "refused"}},
		{"lists fail", fakeDocker{facts: manager, svcErr: errors.New("not the leader"), mgrErr: errors.New("no leader here")},
			want{Warn, "no leader here"}, want{Warn, "not the leader"}},
		{"healthy", fakeDocker{facts: manager, svcs: []ServiceFacts{fine}, managers: one},
			want{OK, "1 manager (m1)"}, want{OK, "1 replicated service(s), none"}},
		{"lost removal, two managers", fakeDocker{facts: manager, svcs: []ServiceFacts{fine, lost}, managers: two},
			want{Warn, "2 managers (leader m1) tolerate the loss of 0"}, want{Warn, "lost the removal of 1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := SwarmCheck{Docker: tc.d}.Run(context.Background(), t.Logf)
			if len(rs) != 2 {
				t.Fatalf("got %+v, want swarm/managers and swarm/services", rs)
			}
			for i, w := range []struct {
				check string
				want
			}{{"swarm/managers", tc.managers}, {"swarm/services", tc.services}} {
				if r := rs[i]; r.Check != w.check || r.Status != w.status || !strings.Contains(r.Message, w.msg) {
					t.Errorf("got %+v, want %s %s containing %q", r, w.check, w.status, w.msg)
				}
			}
		})
	}
}

func TestEvalManagers(t *testing.T) {
	m := func(name string, reach string, leader bool) ManagerFacts {
		return ManagerFacts{Name: name, ID: name + "0123456789abcdef", Reachability: reach, Leader: leader}
	}
	for _, tc := range []struct {
		name     string
		managers []ManagerFacts
		err      error
		status   Status
		msg, fix string // parts of the message and fix
	}{
		{"one", []ManagerFacts{m("a", "reachable", true)}, nil, OK,
			"1 manager (a): the swarm survives the loss of none; 3 managers survive the loss of one", ""},
		{"three", []ManagerFacts{m("a", "reachable", false), m("b", "reachable", true), m("c", "reachable", false)}, nil, OK,
			"3 managers, all reachable (leader b): the swarm survives the loss of 1", ""},
		{"two", []ManagerFacts{m("a", "reachable", true), m("b", "reachable", false)}, nil, Warn,
			"2 managers (leader a) tolerate the loss of 0, no more than 1 would", "docker node promote WORKER   # 3 managers, or demote one to 1"},
		{"four", []ManagerFacts{m("a", "reachable", true), m("b", "reachable", false), m("c", "reachable", false), m("d", "reachable", false)}, nil, Warn,
			"4 managers (leader a) tolerate the loss of 1, no more than 3 would", "docker node promote WORKER   # 5 managers, or demote one to 3"},
		{"one of three down", []ManagerFacts{m("a", "reachable", true), m("b", "unreachable", false), m("c", "reachable", false)}, nil, Warn,
			"1 of 3 managers unreachable: b (b0123456789a, unreachable); the swarm stops if 1 more is lost", "docker node demote NODE"},
		{"one of five down", []ManagerFacts{m("a", "reachable", true), m("b", "unknown", false), m("c", "reachable", false), m("d", "reachable", false), m("e", "reachable", false)}, nil, Warn,
			"1 of 5 managers unreachable: b (b0123456789a, unknown); the swarm stops if 2 more are lost", "start docker on the unreachable managers"},
		{"quorum lost", []ManagerFacts{m("a", "reachable", true), m("b", "unreachable", false), m("c", "unreachable", false)}, nil, Fail,
			"2 of 3 managers unreachable", "--force-new-cluster"},
		{"no leader", nil, errors.New("list managers: Error response from daemon: rpc error: code = Unknown desc = The swarm does not have a leader. It's possible that too few managers are online."), Fail,
			"the swarm has no leader", "--force-new-cluster"},
		{"list fails", nil, errors.New("list managers: connection reset"), Warn, "cannot list the swarm's managers: list managers: connection reset", "docker node ls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := EvalManagers(true, tc.managers, tc.err)
			if len(rs) != 1 || rs[0].Check != "swarm/managers" || rs[0].Status != tc.status || !strings.Contains(rs[0].Message, tc.msg) || !strings.Contains(rs[0].Fix, tc.fix) {
				t.Fatalf("got %+v, want %s containing %q, fix containing %q", rs, tc.status, tc.msg, tc.fix)
			}
		})
	}
	if rs := EvalManagers(false, nil, nil); len(rs) != 1 || rs[0].Status != OK {
		t.Errorf("worker: %+v", rs)
	}
}

func TestEvalServices(t *testing.T) {
	now := time.Date(2026, 12, 3, 5, 0, 0, 0, time.UTC)
	two := []TaskFacts{{ID: "0123456789abcdef", Slot: 3, State: "running"}, {ID: "fedcba9876543210", Slot: 7, State: "starting"}}
	for _, tc := range []struct {
		name   string
		svc    ServiceFacts
		status Status
		want   string
	}{
		{"at its count", ServiceFacts{Name: "a", Replicas: 2, Wanted: two, UpdatedAt: now.Add(-time.Hour)}, OK, "none with more tasks wanted"},
		{"scale-up under way", ServiceFacts{Name: "a", Replicas: 5, Wanted: two, UpdatedAt: now.Add(-time.Hour)}, OK, "none with more tasks wanted"},
		{"scaled down to 0 just now", ServiceFacts{Name: "a", Wanted: two, UpdatedAt: now.Add(-10 * time.Second)}, OK, "1 above its replicas while an update or a scale settles"},
		{"start-first update under way", ServiceFacts{Name: "a", Replicas: 1, Wanted: two, UpdatedAt: now.Add(-time.Hour), UpdateState: "updating"}, OK, "while an update or a scale settles"},
		{"update paused", ServiceFacts{Name: "a", Replicas: 1, Wanted: two, UpdatedAt: now.Add(-time.Hour), UpdateState: "paused"}, OK, "while an update or a scale settles"},
		{"removals lost", ServiceFacts{Name: "many", Wanted: two, UpdatedAt: now.Add(-90 * time.Second), UpdateState: "completed"}, Warn,
			"service many has 0 replicas but swarm wants 2 tasks running, 1m30s after its last write with no update under way: a scale-down lost the removal of 2 (a swarmkit race); they run on and hold their addresses: many.3 (0123456789ab, running), many.7 (fedcba987654, starting)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := EvalServices(true, []ServiceFacts{tc.svc}, nil, now)
			if len(rs) != 1 || rs[0].Status != tc.status || !strings.Contains(rs[0].Message, tc.want) {
				t.Fatalf("got %+v, want %s containing %q", rs, tc.status, tc.want)
			}
			if tc.status == Warn && rs[0].Fix != "docker service scale many=0   # writes the count again; swarm then stops the extra tasks" {
				t.Errorf("fix %q", rs[0].Fix)
			}
		})
	}
}

func TestContainersCheck(t *testing.T) {
	up, down := netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("10.0.0.6")
	d := fakeDocker{eps: []Probe{
		{Container: "web.1", Network: "lan", IP: up, Port: 8080},
		{Container: "web.2", Network: "lan-config", IP: down, Port: 8080},
		{Container: "quiet", Network: "lan", IP: up},
		{Container: "bridge", Network: "bridge", IP: down, Port: 80},
	}}
	var (
		mu     sync.Mutex
		dialed []string
	)
	dial := func(ctx context.Context, a netip.AddrPort) error {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("dial without a deadline")
		}
		if a.Addr() == down {
			return errors.New("i/o timeout")
		}
		mu.Lock()
		defer mu.Unlock()
		dialed = append(dialed, a.String())
		return nil
	}
	c := ContainersCheck{Networks: fakeNetworks{specs: []netspec.Spec{{Name: "lan"}}}, Docker: d, Dial: dial}
	rs := c.Run(context.Background(), t.Logf)
	want := []brief{{"containers/reachable", "fail", "ip route get 10.0.0.6   # must say dev " + netspec.ShimLinkName("lan") + "; see the network/lan/shim and route checks"}}
	if diff := cmp.Diff(want, briefs(rs)); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
	if !strings.Contains(rs[0].Message, "web.2") {
		t.Errorf("message does not name the container: %s", rs[0].Message)
	}
	if diff := cmp.Diff([]string{"10.0.0.5:8080"}, dialed); diff != "" {
		t.Errorf("dialed (-want +got)\n%s", diff)
	}
}

// TestContainersCheckBoundsConnects: the check dialled every container
// address at once, one goroutine and socket each: a node of thousands of
// containers opened thousands of connects together, and those the host
// could not make then (descriptors, the neighbour table) were reported
// as containers unreachable. At most MaxProbes are now under way at once.
//
// Told apart without a wait for something not to happen: with MaxProbes
// connects held, the check's time ends. Bounded, it has started no other
// and says how many it did not probe; unbounded, it had started them all
// and says none.
func TestContainersCheckBoundsConnects(t *testing.T) {
	var d fakeDocker
	for i := range 4 * MaxProbes {
		d.eps = append(d.eps, Probe{Container: fmt.Sprintf("web.%d", i), Network: "lan", IP: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), Port: 80})
	}
	var (
		mu                sync.Mutex
		inflight, maxSeen int
		fullOnce          sync.Once
	)
	full, release := make(chan struct{}), make(chan struct{})
	dial := func(ctx context.Context, a netip.AddrPort) error {
		mu.Lock()
		inflight++
		maxSeen = max(maxSeen, inflight)
		if inflight == MaxProbes {
			fullOnce.Do(func() { close(full) })
		}
		mu.Unlock()
		<-release
		mu.Lock()
		inflight--
		mu.Unlock()
		return nil
	}
	c := ContainersCheck{Networks: fakeNetworks{specs: []netspec.Spec{{Name: "lan"}}}, Docker: d, Dial: dial}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan []Result, 1)
	go func() { done <- c.Run(ctx, t.Logf) }()
	<-full
	cancel()
	close(release)
	rs := <-done
	want := fmt.Sprintf("%d container address(es) not probed", 3*MaxProbes)
	if len(rs) != 1 || rs[0].Status != Warn || !strings.Contains(rs[0].Message, want) || !strings.Contains(rs[0].Message, fmt.Sprintf("%d container(s) reached", MaxProbes)) {
		t.Errorf("results %+v, want one warning: %s, %d reached", rs, want, MaxProbes)
	}
	if maxSeen > MaxProbes {
		t.Errorf("%d connects under way at once, want at most %d", maxSeen, MaxProbes)
	}
}

// TestContainersCheckOutOfTime: addresses the check had no time left to
// probe (its context over) were reported as containers unreachable, with
// the context's error; they are now a warning counting them.
func TestContainersCheckOutOfTime(t *testing.T) {
	var d fakeDocker
	for i := range 2 * MaxProbes {
		d.eps = append(d.eps, Probe{Container: fmt.Sprintf("web.%d", i), Network: "lan", IP: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), Port: 80})
	}
	dial := func(ctx context.Context, a netip.AddrPort) error { <-ctx.Done(); return ctx.Err() }
	c := ContainersCheck{Networks: fakeNetworks{specs: []netspec.Spec{{Name: "lan"}}}, Docker: d, Dial: dial}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	rs := c.Run(ctx, t.Logf)
	if len(rs) != 1 || rs[0].Status != Warn || !strings.Contains(rs[0].Message, fmt.Sprintf("%d container address(es) not probed", 2*MaxProbes)) {
		t.Errorf("results %+v, want one warning counting the %d addresses not probed", rs, 2*MaxProbes)
	}
}

type slowCheck struct {
	name  string
	delay time.Duration
	st    Status
}

func (c slowCheck) Name() string { return c.name }
func (c slowCheck) Run(ctx context.Context, _ Logf) []Result {
	select {
	case <-time.After(c.delay):
	case <-ctx.Done():
	}
	if c.st == "" {
		return nil
	}
	return []Result{{Check: c.name, Status: c.st, Message: c.name + " done", Fix: "fix-" + c.name}}
}

// panicCheck panics, as a check meeting input no one foresaw may.
type panicCheck struct{}

func (panicCheck) Name() string { return "boom" }
func (panicCheck) Run(context.Context, Logf) []Result {
	var m map[string][]int
	return []Result{{Check: "boom", Message: fmt.Sprint(m["x"][3])}}
}

// TestRunSurvivesAPanickingCheck: a check that panicked ended the
// process, `underlay doctor` with no report, and the agent, whose
// periodic doctor runs every check, with every other part of the agent.
// The panic is now that check's failed result, naming it, and the
// other checks report as usual.
func TestRunSurvivesAPanickingCheck(t *testing.T) {
	rs := Run(context.Background(), "n1", []Check{slowCheck{name: "a", st: OK}, panicCheck{}}, t.Logf)
	if len(rs) != 2 || rs[0].Check != "a" || rs[0].Status != OK {
		t.Fatalf("results %+v, want a's then boom's", rs)
	}
	if r := rs[1]; r.Check != "boom" || r.Status != Fail || !strings.Contains(r.Message, "index out of range") || r.Node != "n1" {
		t.Errorf("panicking check: %+v, want its failure naming the panic", r)
	}
}

// stuckCheck ignores its context and returns only once release is
// closed, as a check blocked in netlink on a held rtnl lock does.
type stuckCheck struct {
	release chan struct{}
	// entered, when not nil, gets a value at each run's start.
	entered chan struct{}
}

func (stuckCheck) Name() string { return "stuck" }
func (c stuckCheck) Run(context.Context, Logf) []Result {
	if c.entered != nil {
		c.entered <- struct{}{}
	}
	<-c.release
	return []Result{{Check: "stuck", Status: OK}}
}

// TestRunReturnsWhenACheckHangs: Run waited for every check however long
// it took, though CheckTimeout is to bound each: one blocked where no
// context reaches (netlink while a driver holds the kernel's rtnl lock,
// when an operator most needs the doctor) hung `underlay doctor` for
// ever, and stopped the agent's reports, so its node looked dead. Past
// its time (and a short grace) such a check is now a failed result, and
// Run returns with every other check's. The runner's times are cut short
// here (the production ones: TestRunnerDefaults); the bound is the same.
func TestRunReturnsWhenACheckHangs(t *testing.T) {
	stuck := stuckCheck{release: make(chan struct{})}
	t.Cleanup(func() { close(stuck.release) })
	run := Runner{Timeout: 30 * time.Millisecond, Grace: 20 * time.Millisecond}
	done := make(chan []Result, 1)
	// No deadline of its own: the runner's Timeout bounds the check.
	go func() {
		done <- run.Run(context.Background(), "n1", []Check{slowCheck{name: "a", st: OK}, stuck}, t.Logf)
	}()
	select {
	case rs := <-done:
		if len(rs) != 2 || rs[0].Status != OK || rs[1].Check != "stuck" || rs[1].Status != Fail || !strings.Contains(rs[1].Message, "did not finish") {
			t.Errorf("results %+v, want a's and stuck's failure", rs)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Run did not return in 10s, with a check's time of %s and a grace of %s", run.Timeout, run.Grace)
	}
}

// TestRunnerDefaults: the tests cut the runner's and the identity
// questions' times short; the zero values, which the doctor and the
// agent use, keep the production ones.
func TestRunnerDefaults(t *testing.T) {
	if timeout, grace := (Runner{}).times(); timeout != 15*time.Second || grace != 2*time.Second {
		t.Errorf("Runner{} bounds a check at %s with a grace of %s, want 15s and 2s", timeout, grace)
	}
	if d := (DockerAPI{}).identityTimeout(); d != 5*time.Second {
		t.Errorf("DockerAPI{} bounds each identity question at %s, want 5s", d)
	}
}

// longCheck reports what a KV document of Consul's largest size makes
// of a message and a fix.
type longCheck struct{}

func (longCheck) Name() string { return "long" }
func (longCheck) Run(context.Context, Logf) []Result {
	return []Result{{Check: "long", Status: Fail, Message: "the agent reports an error: " + strings.Repeat("é", 256<<10),
		Fix: "ip link del x && ip link add " + strings.Repeat("y", 512<<10)}}
}

// TestRunBoundsLongText: a message or fix held whatever a document in
// Consul held (a node's report's error, up to 512 KiB), so one row of the
// table could be half a megabyte, and the agent's own report, holding
// it, outgrew its Consul key and was no longer published. A message is
// now cut at MaxText bytes, saying how much more there was; a fix that
// long, which cut would be another command, is left out, saying so.
func TestRunBoundsLongText(t *testing.T) {
	rs := Run(context.Background(), "n1", []Check{longCheck{}}, t.Logf)
	r := rs[0]
	if len(r.Message) > MaxText+100 || !utf8.ValidString(r.Message) || !strings.Contains(r.Message, "bytes more") || !strings.Contains(r.Message, "fix, of") {
		t.Errorf("message of %d bytes (valid UTF-8: %v), want at most %d and the count of what is cut", len(r.Message), utf8.ValidString(r.Message), MaxText+100)
	}
	if len(r.Fix) > MaxText || strings.HasPrefix(r.Fix, "ip link del x") && !strings.HasSuffix(r.Fix, "y") {
		t.Errorf("fix of %d bytes (%.40q…), want none but a note, not a command cut short", len(r.Fix), r.Fix)
	}
	if r.Status != Fail {
		t.Errorf("status %s, want fail", r.Status)
	}
}

// TestOneRunAtATime: once Run returns past a hung check's time, the check
// is left blocked; the agent's doctor, running every period (every 15s
// while a check fails), started it again each time beside the ones still
// blocked, one more goroutine and netlink socket every period for as long
// as the host stays wedged. A check whose run has not returned is now not
// started again: it fails at once, saying so.
func TestOneRunAtATime(t *testing.T) {
	stuck := stuckCheck{release: make(chan struct{}), entered: make(chan struct{}, 10)}
	t.Cleanup(func() { close(stuck.release) })
	checks := oneRunAtATime([]Check{stuck})
	for i := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		rs := Runner{Grace: 10 * time.Millisecond}.Run(ctx, "n1", checks, t.Logf)
		cancel()
		if len(rs) != 1 || rs[0].Check != "stuck" || rs[0].Status != Fail {
			t.Errorf("run %d: %+v, want stuck's failure", i, rs)
		}
		if i == 1 && !strings.Contains(rs[0].Message, "has not returned") {
			t.Errorf("second run: %q, want it to say the first has not returned", rs[0].Message)
		}
	}
	if n := len(stuck.entered); n != 1 {
		t.Errorf("the hung check was started %d times, want once", n)
	}
}

func TestRunOrderAndParallel(t *testing.T) {
	checks := []Check{
		slowCheck{"a", 200 * time.Millisecond, Fail},
		slowCheck{"b", 200 * time.Millisecond, OK},
		slowCheck{"c", 200 * time.Millisecond, ""},
		slowCheck{"d", 0, Warn},
	}
	start := time.Now()
	rs := Run(context.Background(), "n1", checks, t.Logf)
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("checks ran one after another: %s", d)
	}
	got := make([]string, len(rs))
	for i, r := range rs {
		got[i] = r.Node + " " + r.Check + " " + string(r.Status)
	}
	if diff := cmp.Diff([]string{"n1 a fail", "n1 b ok", "n1 c ok", "n1 d warn"}, got); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
	if !Failed(rs) || Failed(rs[1:]) {
		t.Error("Failed: want true with a failure, false with warnings only")
	}
}

// TestWriteCountsCappedRows: the table's last line counted rows, so the
// one standing for 40 addresses past the first 20 (capRows) was one
// failure. It now counts the results that row stands for.
func TestWriteCountsCappedRows(t *testing.T) {
	var rows []Result
	for i := range 60 {
		st := Fail
		if i%3 == 0 {
			st = OK
		}
		rows = append(rows, Result{Node: "n1", Check: "containers/reach", Status: st, Message: fmt.Sprintf("address %d", i)})
	}
	var b bytes.Buffer
	if err := WriteTable(&b, capRows(rows, "addresses")); err != nil {
		t.Fatal(err)
	}
	if want := "60 check(s): 20 ok, 0 warning(s), 40 failed"; !strings.Contains(b.String(), want) {
		t.Errorf("table does not end with %q:\n%s", want, b.String())
	}
}

func TestWrite(t *testing.T) {
	rs := []Result{
		{Node: "n1", Check: "x", Status: OK, Message: "fine"},
		{Node: "n1", Check: "y", Status: Fail, Message: "broken", Fix: "repair y"},
	}
	var b bytes.Buffer
	if err := WriteTable(&b, rs); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"NODE", "n1    y      fail    broken", "fix: repair y", "2 check(s): 1 ok, 0 warning(s), 1 failed"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, b.String())
		}
	}
	js, err := json.Marshal(rs)
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]string
	if err := json.Unmarshal(js, &got); err != nil {
		t.Fatal(err)
	}
	want := []map[string]string{
		{"node": "n1", "check": "x", "status": "ok", "message": "fine", "fix": ""},
		{"node": "n1", "check": "y", "status": "fail", "message": "broken", "fix": "repair y"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
}

type fakePools map[string]PoolFacts

func (p fakePools) Read(context.Context, []netspec.Spec) (map[string]PoolFacts, error) {
	return p, nil
}

// TestIPAMCheck: a pool with a bad key fails, naming it, with the command
// that removes it; a clean pool is ok.
func TestIPAMCheck(t *testing.T) {
	bad := BadKey{Key: "underlay/ipam/lan/v4/blocks/stray", Problem: "not a block", Effect: "nothing is allocated from it",
		Fix: "consul kv delete underlay/ipam/lan/v4/blocks/stray"}
	rs := IPAMCheck{Networks: fakeNetworks{}, Pools: fakePools{"lan/v4": {Bad: []BadKey{bad}}, "wan/v4": {}}}.Run(context.Background(), t.Logf)
	if len(rs) != 2 || rs[0].Check != "ipam/lan/v4/documents" || rs[0].Status != Fail || rs[0].Fix != bad.Fix ||
		!strings.Contains(rs[0].Message, bad.Key) || !strings.Contains(rs[0].Message, bad.Effect) || rs[1].Status != OK {
		t.Errorf("results %+v", rs)
	}
}

// TestIPAMCheckKeptStarts: addresses this node keeps for container starts
// under way are reported; one kept past HeldStartWarn warns, naming it
// and how to find the start; other nodes' are not this node's doctor's.
func TestIPAMCheckKeptStarts(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	kept := func(addr, node string, ago time.Duration) KeptAddr {
		return KeptAddr{Addr: netip.MustParseAddr(addr), Node: node, Allocated: now.Add(-ago)}
	}
	run := func(ks ...KeptAddr) []Result {
		return IPAMCheck{NodeID: "me", Networks: fakeNetworks{}, Pools: fakePools{"lan/v4": {Kept: ks}}, Now: func() time.Time { return now }}.Run(context.Background(), t.Logf)
	}
	starts := func(rs []Result) []Result {
		var out []Result
		for _, r := range rs {
			if r.Check == "ipam/lan/v4/starts" {
				out = append(out, r)
			}
		}
		return out
	}
	if rs := starts(run(kept("10.9.0.5", "other", time.Hour))); len(rs) != 0 {
		t.Errorf("another node's kept address: %+v, want no result", rs)
	}
	if rs := starts(run(kept("10.9.0.5", "me", time.Minute))); len(rs) != 1 || rs[0].Status != OK || !strings.Contains(rs[0].Message, "1 address(es)") {
		t.Errorf("a start of a minute: %+v, want ok", rs)
	}
	if rs := starts(run(kept("10.9.0.5", "me", HeldStartWarn))); len(rs) != 1 || rs[0].Status != Warn || !strings.HasPrefix(rs[0].Message, "10.9.0.5 kept for") {
		t.Errorf("one start of 10 minutes: %+v, want a warning naming 10.9.0.5 alone", rs)
	}
	rs := starts(run(kept("10.9.0.6", "me", time.Minute), kept("10.9.0.5", "me", HeldStartWarn+time.Minute)))
	if len(rs) != 1 || rs[0].Status != Warn || !strings.Contains(rs[0].Message, "10.9.0.5 (and 1 more)") ||
		!strings.Contains(rs[0].Message, "11m0s ago") || !strings.Contains(rs[0].Fix, "status=created") {
		t.Errorf("a start of 11 minutes: %+v, want a warning naming 10.9.0.5", rs)
	}
}

// TestNetworksCheckMatchesByIdentity: two nodes report under one name
// (cloned hosts); the doctor reads the report of its own swarm node ID,
// and shows a refused spec as a failure with its fix.
func TestNetworksCheckMatchesByIdentity(t *testing.T) {
	s := netspec.Spec{Name: "lan", Parent: "eth1", Subnet: netip.MustParsePrefix("10.9.0.0/24")}
	nets := fakeNetworks{specs: []netspec.Spec{s}, states: map[string][]netspec.NodeState{"lan": {
		{ID: "me", Node: "clone", State: netspec.StateInvalid, Error: "spec refused: gateway missing"},
		{ID: "other", Node: "clone", State: netspec.StateReady},
	}}}
	links := &fakeLinks{observed: map[string]hostnet.Observed{"eth1": {ParentExists: true, ParentUp: true, ParentPromisc: true}}}
	rs := NetworksCheck{NodeID: "me", Node: "clone", Networks: nets, Links: links, Files: fakeFiles{}}.Run(context.Background(), t.Logf)
	if rs[0].Check != "network/lan/state" || rs[0].Status != Fail || !strings.Contains(rs[0].Message, "gateway missing") || !strings.Contains(rs[0].Fix, "underlay network rm lan") {
		t.Errorf("state result %+v, want this node's refusal", rs[0])
	}
}

// TestNetworksCheckPrefersIdentityOverName: after an agent upgrade, the
// report an older agent filed under the node's name (no identity) stays
// beside the new one filed under its identity. The doctor took whichever
// came last, so a stale error (or an old range) stood in for the node's
// own report; the report of this node's identity now wins, whatever the
// order, and the name matches only when no report has it.
func TestNetworksCheckPrefersIdentityOverName(t *testing.T) {
	s := netspec.Spec{Name: "lan", Parent: "eth1", Subnet: netip.MustParsePrefix("10.9.0.0/24")}
	mine := netspec.NodeState{ID: "me", Node: "n1", State: netspec.StateReady, Range: netip.MustParsePrefix("10.9.0.64/26"),
		Shim: netip.MustParseAddr("10.9.0.64")}
	stale := netspec.NodeState{Node: "n1", State: netspec.StateError, Error: "stale: an older agent's report"}
	links := &fakeLinks{observed: map[string]hostnet.Observed{"eth1": {ParentExists: true, ParentUp: true, ParentPromisc: true}}}
	for _, order := range [][]netspec.NodeState{{mine, stale}, {stale, mine}} {
		nets := fakeNetworks{specs: []netspec.Spec{s}, states: map[string][]netspec.NodeState{"lan": order}}
		rs := NetworksCheck{NodeID: "me", Node: "n1", Networks: nets, Links: links, Files: fakeFiles{}}.Run(context.Background(), t.Logf)
		if rs[0].Check != "network/lan/state" || rs[0].Status != OK {
			t.Errorf("reports %v: state %+v, want this node's own (ready)", order, rs[0])
		}
	}
	// An older agent's report alone is still this node's.
	nets := fakeNetworks{specs: []netspec.Spec{s}, states: map[string][]netspec.NodeState{"lan": {stale}}}
	rs := NetworksCheck{NodeID: "me", Node: "n1", Networks: nets, Links: links, Files: fakeFiles{}}.Run(context.Background(), t.Logf)
	if rs[0].Status != Fail || !strings.Contains(rs[0].Message, "stale") {
		t.Errorf("only the report under the name: state %+v, want it", rs[0])
	}
}

// TestNetworksCheckUnreadableSpec: a spec document that cannot be read
// (a field no underlay writes, written by hand; not JSON) was left out of
// the specs the doctor judged, with nothing said: alone, the check said
// "no underlay networks defined", ok, while every agent refuses the
// network. Each such spec is now its network's failed network/N/spec,
// naming the key and the error, with the command that removes it.
func TestNetworksCheckUnreadableSpec(t *testing.T) {
	bad := netspec.BadSpec{Key: netspec.KVPrefix + "lan/spec", Name: "lan", Err: errors.New(`decode: json: unknown field "subnett"`)}
	links := &fakeLinks{}
	rs := NetworksCheck{Node: "n1", Networks: fakeNetworks{bad: []netspec.BadSpec{bad}}, Links: links, Files: fakeFiles{}}.Run(context.Background(), t.Logf)
	if len(rs) != 1 || rs[0].Check != "network/lan/spec" || rs[0].Status != Fail || !strings.Contains(rs[0].Message, "subnett") ||
		!strings.Contains(rs[0].Message, bad.Key) || rs[0].Fix != netspec.RemoveFix("lan")+"   # then create it again (underlay network create …)" {
		t.Errorf("results %+v, want network/lan/spec failing, naming the key and the error, with its removal", rs)
	}
}

// TestInventoryCheck: a published inventory that cannot be read fails,
// naming its key, what skipping it does and the command that removes it;
// readable ones beside it, of a node with facts, pass; a Consul that
// cannot be read fails.
func TestInventoryCheck(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	check := DocumentsCheck{Kind: "inventory", Docs: KVInventories{KV: kv}, Eval: EvalInventories}
	if rs := check.Run(ctx, t.Logf); len(rs) != 1 || rs[0].Check != "inventory/documents" || rs[0].Status != OK {
		t.Fatalf("no inventories: %+v, want ok", rs)
	}
	kv.Put(ctx, netspec.NodesKVPrefix+"nodea00000000000000000000", []byte(`{"id":"nodea00000000000000000000","node":"a","interfaces":["eth0"]}`))
	kv.Put(ctx, inventory.KVPrefix+"nodea00000000000000000000", []byte(`[]`))
	kv.Put(ctx, inventory.KVPrefix+"node b", []byte(`{"not":"a list"}`))
	rs := check.Run(ctx, t.Logf)
	key := inventory.KVPrefix + "node b"
	if len(rs) != 1 || rs[0].Status != Fail || rs[0].Fix != "consul kv delete '"+key+"'" || !strings.Contains(rs[0].Message, key) ||
		!strings.Contains(rs[0].Message, "publishes it again") {
		t.Errorf("one bad inventory: %+v, want it failed with its key, its effect and its fix", rs)
	}
	kv.Hook = func(string, []string) error { return kvtest.ErrUnreachable }
	if rs := check.Run(ctx, t.Logf); len(rs) != 1 || rs[0].Status != Fail || !strings.Contains(rs[0].Message, "cannot read the inventories") {
		t.Errorf("Consul out of reach: %+v, want a failure saying so", rs)
	}
}

// TestTaskMetricsCheck: a published task metrics report the built-in
// metrics do not count (not JSON, or dated a year ahead) fails, naming its
// key, why and the command that removes it; a node's own report beside it
// passes; a Consul that cannot be read fails.
func TestTaskMetricsCheck(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	check := DocumentsCheck{Kind: "taskmetrics", Docs: KVTaskReports{KV: kv}, Eval: EvalTaskReports}
	if rs := check.Run(ctx, t.Logf); len(rs) != 1 || rs[0].Check != "taskmetrics/reports" || rs[0].Status != OK {
		t.Fatalf("no reports: %+v, want ok", rs)
	}
	now := time.Now().UTC()
	kv.Put(ctx, taskmetrics.KVPrefix+"node-a", fmt.Appendf(nil, `{"node":"node-a","at":%q,"services":{"web":{"tasks":1,"cpu":0.5}}}`, now.Format(time.RFC3339)))
	kv.Put(ctx, taskmetrics.KVPrefix+"node-b", []byte(`{`))
	kv.Put(ctx, taskmetrics.KVPrefix+"node-c", fmt.Appendf(nil, `{"node":"node-c","at":%q,"services":{"web":{"tasks":1,"cpu":-0.5}}}`, now.Format(time.RFC3339)))
	rs := check.Run(ctx, t.Logf)
	if len(rs) != 2 {
		t.Fatalf("two bad reports: %+v, want two failures", rs)
	}
	for i, want := range []struct{ key, problem string }{
		{taskmetrics.KVPrefix + "node-b", "not a task metrics report"},
		{taskmetrics.KVPrefix + "node-c", "a CPU of -0.5 cores"},
	} {
		if r := rs[i]; r.Status != Fail || !strings.HasPrefix(r.Fix, shellword.KVDelete(want.key)) || !strings.Contains(r.Message, want.key+" is not counted by underlay:cpu") ||
			!strings.Contains(r.Message, want.problem) || !strings.Contains(r.Message, "averages leave it out") {
			t.Errorf("bad report %s: %+v, want it failed with its key, %q, its effect and its fix", want.key, r, want.problem)
		}
	}
	kv.Hook = func(string, []string) error { return kvtest.ErrUnreachable }
	if rs := check.Run(ctx, t.Logf); len(rs) != 1 || rs[0].Status != Fail || !strings.Contains(rs[0].Message, "cannot read the task metrics reports") {
		t.Errorf("Consul out of reach: %+v, want a failure saying so", rs)
	}
}

// TestRemovedNodesCheck: on a manager, facts of a node the swarm no longer
// lists warn with underlay node rm; the swarm's own nodes pass; a worker
// leaves it to managers.
func TestRemovedNodesCheck(t *testing.T) {
	ctx := context.Background()
	d := fakeDocker{facts: DockerFacts{Manager: true}, managers: []ManagerFacts{{ID: "id1"}, {ID: "id2"}}}
	nets := fakeNetworks{facts: []netspec.NodeFacts{{ID: "id1", Node: "a"}, {ID: "id2", Node: "b"}, {Node: "legacy"}}}
	if rs := (RemovedNodesCheck{Docker: d, Networks: nets}).Run(ctx, t.Logf); len(rs) != 1 || rs[0].Status != OK || !strings.Contains(rs[0].Message, "(3) is a swarm node") {
		t.Errorf("every node in the swarm: %+v, want ok", rs)
	}
	nets.facts = append(nets.facts, netspec.NodeFacts{ID: "id3", Node: "old", UpdatedAt: time.Date(2026, 11, 2, 3, 4, 5, 0, time.UTC)})
	rs := (RemovedNodesCheck{Docker: d, Networks: nets}).Run(ctx, t.Logf)
	if len(rs) != 1 || rs[0].Check != "nodes/removed" || rs[0].Status != Warn || rs[0].Fix != "underlay node rm id3" ||
		!strings.Contains(rs[0].Message, "node old (swarm node id3) is no longer a swarm node") || !strings.Contains(rs[0].Message, "2026-11-02T03:04:05Z") {
		t.Errorf("a node removed from the swarm: %+v, want a warning naming it with underlay node rm", rs)
	}
	d.facts.Manager = false
	if rs := (RemovedNodesCheck{Docker: d, Networks: nets}).Run(ctx, t.Logf); len(rs) != 1 || rs[0].Status != OK || rs[0].Message != "checked on managers" {
		t.Errorf("on a worker: %+v", rs)
	}
	d.facts.Manager, d.mgrErr = true, errors.New("this node is not a swarm manager")
	if rs := (RemovedNodesCheck{Docker: d, Networks: nets}).Run(ctx, t.Logf); len(rs) != 1 || rs[0].Status != Warn || !strings.Contains(rs[0].Message, "not a swarm manager") {
		t.Errorf("swarm not readable: %+v", rs)
	}
}

// TestFactsCheck: a node facts document naming another identity than its
// key's (netspec.MisfiledFacts; node ls and node rm warn of it) was not
// reported: it is now a warning naming the key and the identity named,
// with the command that removes it; facts filed under their own identity
// pass; a Consul that cannot be read warns that nothing was checked.
func TestFactsCheck(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	var check Check
	for _, c := range (Env{Networks: netspec.NewStore(kv)}).Checks() {
		if c.Name() == "nodes/facts" {
			check = c
		}
	}
	if check == nil {
		t.Fatal("no nodes/facts check among the doctor's checks")
	}
	const id1, id2, id9 = "id10000000000000000000000", "id20000000000000000000000", "id90000000000000000000000"
	kv.Put(ctx, netspec.NodesKVPrefix+id1, []byte(`{"id":"`+id1+`","node":"n1","interfaces":["eth0"]}`))
	if rs := check.Run(ctx, t.Logf); len(rs) != 1 || rs[0].Check != "nodes/facts" || rs[0].Status != OK {
		t.Errorf("facts under their own identity: %+v, want ok", rs)
	}
	key := netspec.NodesKVPrefix + id2
	kv.Put(ctx, key, []byte(`{"id":"`+id9+`","node":"n2","interfaces":["eth0"]}`))
	rs := check.Run(ctx, t.Logf)
	if len(rs) != 1 || rs[0].Check != "nodes/facts" || rs[0].Status != Warn || !strings.Contains(rs[0].Message, key+" holds facts naming swarm node "+id9) ||
		!strings.HasPrefix(rs[0].Fix, shellword.KVDelete(key)) {
		t.Errorf("misfiled facts: %+v, want a warning naming %s and %s, with %s", rs, key, id9, shellword.KVDelete(key))
	}
	kv.Hook = func(string, []string) error { return kvtest.ErrUnreachable }
	if rs := check.Run(ctx, t.Logf); len(rs) != 1 || rs[0].Status != Warn || !strings.Contains(rs[0].Message, "cannot read the node facts") {
		t.Errorf("Consul out of reach: %+v, want a warning saying so", rs)
	}
}

// TestWriteTableQuotesOddText: the table printed messages and fixes as
// they were, and they name what other nodes wrote (the node names of
// facts, Consul keys): a newline in a node name forged results (a check
// shown ok), a tab shifted the columns and an escape sequence rewrote
// the terminal. Such messages and fixes are now printed quoted, on
// their row (the node name, quoted in its message, already is).
func TestWriteTableQuotesOddText(t *testing.T) {
	rs := EvalRemovedNodes(true, []netspec.NodeFacts{{ID: "id9", Node: "old\nn1    swarm/nodes  ok  \x1b[32mall fine"}}, map[string]bool{}, nil)
	rs = append(rs, Result{Node: "n1", Check: "x", Status: Fail, Message: "tab\there", Fix: "fix\nrm -rf /"})
	var b bytes.Buffer
	if err := WriteTable(&b, rs); err != nil {
		t.Fatal(err)
	}
	// The header, each result and its fix, a blank line, the sum.
	if lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n"); len(lines) != 7 {
		t.Errorf("%d lines, want 7:\n%s", len(lines), b.String())
	}
	if strings.ContainsAny(b.String(), "\x1b\t") {
		t.Errorf("table holds a control character:\n%q", b.String())
	}
	for _, w := range []string{`node "old\nn1    swarm/nodes  ok  \x1b[32mall fine" (swarm node id9)`, `"tab\there"`, `fix: "fix\nrm -rf /"`} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("table lacks %s:\n%s", w, b.String())
		}
	}
}

// TestWriteJSONEscapesControls: `underlay doctor --json` printed results
// with encoding/json, which escapes C0 controls but writes C1 controls
// (U+009B is a CSI to terminals that take 8-bit controls), DEL and bidi
// overrides as they are: a node name or Consul key holding one rewrote
// the terminal, or reordered what it showed, as the table no longer
// lets it. They are now \u escapes, which decode to the same text.
func TestWriteJSONEscapesControls(t *testing.T) {
	rs := []Result{{Node: "n1\u009b2J", Check: "x", Status: Fail, Message: "key a\u202eb\x7fc\u2066d", Fix: "ok é 😀"}}
	var b bytes.Buffer
	if err := WriteJSON(&b, rs); err != nil {
		t.Fatal(err)
	}
	for _, r := range b.String() {
		if r != '\n' && !unicode.IsGraphic(r) {
			t.Errorf("output holds %U:\n%q", r, b.String())
		}
	}
	var back []Result
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || !cmp.Equal(back, rs) {
		t.Errorf("decoded %+v (%v), want %+v", back, err, rs)
	}
	b.Reset()
	if err := WriteJSON(&b, nil); err != nil || strings.TrimSpace(b.String()) != "[]" {
		t.Errorf("no results: %q (%v), want []", b.String(), err)
	}
}

// namedCheck fails with a check name of its own.
type namedCheck struct{ check string }

func (namedCheck) Name() string { return "network" }
func (c namedCheck) Run(context.Context, Logf) []Result {
	return []Result{{Check: c.check, Status: Fail, Message: "spec cannot be read"}}
}

// TestRunBoundsCheckName: a result's check name holds what others wrote
// (network/NAME/spec names a spec key read from Consul as written, any
// length), and Run bounded the message and the fix but not it: a 100 KiB
// key name was a 100 KiB table row, and as long a line in the agent's
// "checks failing" warning. It is now cut to MaxCheckName bytes, its
// start and its end (the aspect) kept around a mark, as valid UTF-8.
func TestRunBoundsCheckName(t *testing.T) {
	long := "network/" + strings.Repeat("é", 50<<10) + "/spec"
	rs := Run(context.Background(), "n1", []Check{namedCheck{long}, namedCheck{"network/lan/spec"}}, t.Logf)
	if got := rs[0].Check; len(got) > MaxCheckName || !utf8.ValidString(got) || !strings.HasPrefix(got, "network/é") || !strings.HasSuffix(got, "é/spec") || !strings.Contains(got, "…") {
		t.Errorf("check name of %d bytes (%.60q…), want at most %d, valid UTF-8, cut in its middle", len(got), got, MaxCheckName)
	}
	if rs[1].Check != "network/lan/spec" {
		t.Errorf("short check name %q changed", rs[1].Check)
	}
}

// TestNetworksCheckNamesUnlistableKeys: a hand-written spec key under the
// network name "", "." or ".." (underlay/networks/../spec) made the check
// read the network's node states through a path Consul redirects, which
// the Consul client refuses: the whole check failed, "cannot read network
// specs". Such keys are now left out of the specs (netspec.Listing) and
// each named in a doctor warning; the other networks are checked.
func TestNetworksCheckNamesUnlistableKeys(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	keys := []string{netspec.KVPrefix + "../spec", netspec.KVPrefix + "./spec"}
	kv.Put(ctx, keys[0], []byte(`{"name":"..","subnet":"10.2.0.0/24","gateway":"10.2.0.1","parent":"eth1","ipam":"per-node","per_node_size":64}`))
	kv.Put(ctx, keys[1], []byte(`{"name":`))
	links := &fakeLinks{observed: map[string]hostnet.Observed{}}
	rs := NetworksCheck{NodeID: "me", Node: "n1", Networks: netspec.NewStore(kv), Links: links, Files: fakeFiles{}}.Run(ctx, t.Logf)
	for _, k := range keys {
		found := false
		for _, r := range rs {
			found = found || r.Status == Warn && strings.Contains(r.Message, k)
		}
		if !found {
			t.Errorf("results %+v; want a warning naming %s", rs, k)
		}
	}
	for _, r := range rs {
		if r.Status == Fail || strings.Contains(r.Fix, "kv delete -recurse") {
			t.Errorf("result %+v; want no failure, and no delete through a redirected path", r)
		}
	}
}

// slowDocker is a Docker whose container inspections take all the time
// they are given: they end with their context, the containers before
// ready inspected, the others late.
type slowDocker struct {
	fakeDocker
	ready, late []Probe
}

func (d slowDocker) Endpoints(ctx context.Context, _ map[string]string) ([]Probe, error) {
	<-ctx.Done()
	out := slices.Clone(d.ready)
	for _, p := range d.late {
		p.Late = true
		out = append(out, p)
	}
	return out, nil
}

// TestContainersCheckLeavesTheProbesTime: the container inspections could
// use the whole of the check's time, so with a slow Docker the probes had
// none: every address, those inspected too, was "not probed in time".
// The inspections now stop at a share of the check's time, and the
// containers they reached are probed in the rest.
func TestContainersCheckLeavesTheProbesTime(t *testing.T) {
	d := slowDocker{
		ready: []Probe{{Container: "web.1", Network: "lan", IP: netip.MustParseAddr("10.0.0.5"), Port: 80},
			{Container: "web.2", Network: "lan", IP: netip.MustParseAddr("10.0.0.6"), Port: 80}},
		late: []Probe{{Container: "web.3", Network: "lan", IP: netip.MustParseAddr("10.0.0.7")}},
	}
	dial := func(ctx context.Context, a netip.AddrPort) error { return ctx.Err() }
	c := ContainersCheck{Networks: fakeNetworks{specs: []netspec.Spec{{Name: "lan"}}}, Docker: d, Dial: dial}
	rs := Runner{Timeout: 900 * time.Millisecond}.Run(context.Background(), "n1", []Check{c}, t.Logf)
	if len(rs) != 1 || rs[0].Status != Warn || !strings.Contains(rs[0].Message, "1 container address(es) not probed") ||
		!strings.Contains(rs[0].Message, "2 container(s) reached") {
		t.Errorf("results %+v, want one warning: 1 container address(es) not probed, 2 container(s) reached", rs)
	}
}

// TestIPAMCheckKeptStartInTheFuture: an address kept for a start dated
// in the future (a clock set back, a key written by hand) read as a
// negative age ("the oldest allocated -5m0s ago"), as ok. It is now a
// warning saying it is dated in the future, and by how much, beside the
// judgment of the starts dated in the past.
func TestIPAMCheckKeptStartInTheFuture(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	kept := func(addr string, ago time.Duration) KeptAddr {
		return KeptAddr{Addr: netip.MustParseAddr(addr), Node: "me", Allocated: now.Add(-ago)}
	}
	for _, c := range []struct {
		name string
		kept []KeptAddr
		want []string // each in a warning, in order
	}{
		{"alone", []KeptAddr{kept("10.9.0.5", -5*time.Minute)}, []string{"10.9.0.5 kept for a container start under way on this node is dated 2026-12-02T12:05:00Z, 5m0s in the future"}},
		{"with a start under way", []KeptAddr{kept("10.9.0.5", -5*time.Minute), kept("10.9.0.6", -time.Hour), kept("10.9.0.7", time.Minute)},
			[]string{"10.9.0.6 (and 1 more) kept for a container start under way on this node is dated 2026-12-02T13:00:00Z, 1h0m0s in the future"}},
	} {
		rs := IPAMCheck{NodeID: "me", Networks: fakeNetworks{}, Pools: fakePools{"lan/v4": {Kept: c.kept}}, Now: func() time.Time { return now }}.Run(context.Background(), t.Logf)
		var warns []string
		for _, r := range rs {
			if strings.Contains(r.Message, " -") && strings.Contains(r.Message, "ago") {
				t.Errorf("%s: %+v: a negative age", c.name, r)
			}
			if r.Check == "ipam/lan/v4/starts" && r.Status == Warn {
				warns = append(warns, r.Message)
			}
		}
		if len(warns) != len(c.want) {
			t.Errorf("%s: warnings %q, want %d", c.name, warns, len(c.want))
			continue
		}
		for i, w := range c.want {
			if !strings.Contains(warns[i], w) {
				t.Errorf("%s: warning %q, want it to say %q", c.name, warns[i], w)
			}
		}
	}
}

// TestIPAMCheckKeptStartUndated: an address kept for a start with no
// allocation date (only a key written by hand has none) was judged by the
// zero time, as held since year 1, "2562047h47m16s ago", and warned of as
// a hung start. It now has its own warning saying it is undated, beside
// the judgment of the dated ones, and no age is shown for it.
func TestIPAMCheckKeptStartUndated(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	kept := func(addr string, at time.Time) KeptAddr {
		return KeptAddr{Addr: netip.MustParseAddr(addr), Node: "me", Allocated: at}
	}
	for _, c := range []struct {
		name string
		kept []KeptAddr
		want []string // each in a result, in order
	}{
		{"alone", []KeptAddr{kept("10.9.0.5", time.Time{})},
			[]string{"warn: 10.9.0.5 kept for a container start under way on this node has no allocation date"}},
		{"with others", []KeptAddr{kept("10.9.0.6", time.Time{}), kept("10.9.0.5", time.Time{}), kept("10.9.0.7", now.Add(-time.Minute))},
			[]string{"warn: 10.9.0.5 (and 1 more) kept for a container start under way on this node has no allocation date",
				"ok: 1 address(es) kept for container starts under way on this node, the oldest allocated 1m0s ago"}},
	} {
		rs := IPAMCheck{NodeID: "me", Networks: fakeNetworks{}, Pools: fakePools{"lan/v4": {Kept: c.kept}}, Now: func() time.Time { return now }}.Run(context.Background(), t.Logf)
		var got []string
		for _, r := range rs {
			if strings.Contains(r.Message, "0001-01-01") || strings.Contains(r.Message, "2562047h") {
				t.Errorf("%s: %+v: judged as held since year 1", c.name, r)
			}
			if r.Check == "ipam/lan/v4/starts" {
				got = append(got, string(r.Status)+": "+r.Message)
			}
		}
		if len(got) != len(c.want) {
			t.Errorf("%s: results %q, want %d", c.name, got, len(c.want))
			continue
		}
		for i, w := range c.want {
			if !strings.HasPrefix(got[i], w) {
				t.Errorf("%s: result %q, want it to start %q", c.name, got[i], w)
			}
		}
	}
}

// TestBoundedNotUTF8: a message of bytes that are no UTF-8 keeps its
// first MaxText bytes, a check name its head and tail. Before, the cuts
// looked for a character's start as far as the text's ends and kept
// none, only the count or the mark.
func TestBoundedNotUTF8(t *testing.T) {
	bad := strings.Repeat("\x80", MaxText+10)
	r := bounded(Result{Check: bad, Status: Fail, Message: bad})
	if want := bad[:MaxText] + "… (10 bytes more)"; r.Message != want {
		t.Errorf("message %.20q… of %d bytes, want %d bytes", r.Message, len(r.Message), len(want))
	}
	if want := bad[:MaxCheckName-64-len("…")] + "…" + bad[:64]; r.Check != want {
		t.Errorf("check name %.20q… of %d bytes, want %d bytes", r.Check, len(r.Check), len(want))
	}
}

// TestFactsCheckShowsUnreadableFacts: a node facts document that does not
// decode was left out by every reader (node ls, node rm, ips, the
// dashboard) and reported nowhere: garbage under a node's key stayed,
// unseen. It is now a nodes/facts warning naming the key and the error,
// with the command that removes it (none for a key Consul's paths
// redirect: the message says how it goes).
func TestFactsCheckShowsUnreadableFacts(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	check := FactsCheck{Networks: netspec.NewStore(kv)}
	const id1 = "id10000000000000000000000"
	kv.Put(ctx, netspec.NodesKVPrefix+id1, []byte(`{"id":"`+id1+`","node":"n1","interfaces":["eth0"]}`))
	key, odd := netspec.NodesKVPrefix+"id20000000000000000000000", netspec.NodesKVPrefix+".."
	kv.Put(ctx, key, []byte(`{not json`))
	kv.Put(ctx, odd, []byte(`{not json`))
	rs := check.Run(ctx, t.Logf)
	if len(rs) != 2 {
		t.Fatalf("results %+v, want a warning for each of %s and %s", rs, odd, key)
	}
	for _, r := range rs {
		switch {
		case r.Check != "nodes/facts" || r.Status != Warn:
			t.Errorf("%+v, want a nodes/facts warning", r)
		case strings.Contains(r.Message, key+" "):
			if !strings.HasPrefix(r.Fix, shellword.KVDelete(key)+" ") {
				t.Errorf("%+v, want %s as its fix", r, shellword.KVDelete(key))
			}
		case strings.Contains(r.Message, odd+" "):
			if r.Fix != "" || !strings.Contains(r.Message, "PUT /v1/txn") {
				t.Errorf("%+v, want no fix, and the message saying to delete it by a transaction", r)
			}
		default:
			t.Errorf("%+v names neither %s nor %s", r, key, odd)
		}
	}
}

// TestFactsCheckShowsFactsUnderNoNodesKey: node facts under a key that
// names no swarm node ID (underlay/nodes/X, underlay/nodes/a b: agents
// write theirs under their ID, netspec.CheckNodeID) were read as a
// node's: no warning unless the document named another ID, and then one
// saying they were taken as the key's identity's; on a manager,
// nodes/removed gave `underlay node rm X` for them. Each is now one
// nodes/facts warning naming the key and why, with the command that
// removes it, and nodes/removed leaves it to that. An older agent's
// facts, naming no ID under its name, are no problem.
func TestFactsCheckShowsFactsUnderNoNodesKey(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	const id = "1bcef6utixb0l0ca7gxuivsj0"
	for key, doc := range map[string]string{
		id:    `{"id":"` + id + `","node":"n1"}`,
		"X":   `{"id":"X","node":"n2"}`,
		"a b": `{"id":"` + id + `","node":"n1"}`,
		"n3":  `{"node":"n3"}`, // an older agent's
	} {
		kv.Put(ctx, netspec.NodesKVPrefix+key, []byte(doc))
	}
	rs := FactsCheck{Networks: netspec.NewStore(kv)}.Run(ctx, t.Logf)
	byKey := map[string]Result{}
	for _, r := range rs {
		for _, k := range []string{"X", "a b"} {
			if strings.Contains(r.Message, fmt.Sprintf("%q", netspec.NodesKVPrefix+k)) || strings.Contains(r.Message, netspec.NodesKVPrefix+k+" ") {
				byKey[k] = r
			}
		}
	}
	if len(rs) != 2 {
		t.Errorf("results %+v; want one warning for each key naming no swarm node ID", rs)
	}
	for _, k := range []string{"X", "a b"} {
		r, key := byKey[k], netspec.NodesKVPrefix+k
		if r.Check != "nodes/facts" || r.Status != Warn || !strings.Contains(r.Message, "not a swarm node ID") || !strings.HasPrefix(r.Fix, shellword.KVDelete(key)) {
			t.Errorf("facts under %q: %+v; want a nodes/facts warning saying its key is not a swarm node ID, with %s", key, r, shellword.KVDelete(key))
		}
	}
}

// TestFactsCheckShowsFactsNamingNoIDUnderAnotherKey: facts naming no ID
// (an older agent's document) are an agent's only under the node name
// they name; under another key (underlay/nodes/a b, underlay/nodes/n5
// naming n6) no agent writes them. They reached the check without their
// key (listed with no ID) and were not warned of. Each is now the
// nodes/facts warning of the others, naming its key and why, with the
// command that removes it; an older agent's, under its name, is none.
func TestFactsCheckShowsFactsNamingNoIDUnderAnotherKey(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	for key, doc := range map[string]string{
		"a b": `{"node":"n1"}`,
		"n5":  `{"node":"n6"}`,
		"n3":  `{"node":"n3"}`, // an older agent's
	} {
		kv.Put(ctx, netspec.NodesKVPrefix+key, []byte(doc))
	}
	rs := FactsCheck{Networks: netspec.NewStore(kv)}.Run(ctx, t.Logf)
	var fixes []string
	for _, r := range rs {
		fixes = append(fixes, r.Fix)
		if r.Check != "nodes/facts" || r.Status != Warn || !strings.Contains(r.Message, "is not a swarm node ID") || !strings.Contains(r.Message, "nor is it the node name") {
			t.Errorf("result %+v; want a nodes/facts warning saying its key is neither a swarm node ID nor the name its facts give", r)
		}
	}
	slices.Sort(fixes)
	for i, k := range []string{"a b", "n5"} {
		if want := shellword.KVDelete(netspec.NodesKVPrefix + k); len(fixes) != 2 || !strings.HasPrefix(fixes[i], want) {
			t.Errorf("fixes %q; want one for each key, %s among them", fixes, want)
		}
	}
}

// TestNetworksCheckReadsTheVLANRecord: the doctor did not read the
// agent's record of the VLAN parents it made, so a parent dockerd made
// again unmarked at boot showed as made by hand until the agent marked
// it. It now reads the record (the agent's --state-dir): such a parent
// is underlay's, which the agent marks again at its next sync; a record
// that cannot be read is a warning naming the file, and the parent
// shows as made by hand, as the agent takes it.
func TestNetworksCheckReadsTheVLANRecord(t *testing.T) {
	spec := netspec.Spec{Name: "v40", Parent: "bond0.40", Subnet: netip.MustParsePrefix("10.0.0.0/24")}
	parent := hostnet.ParentFacts{Exists: true, Type: "vlan", Up: true, MTU: 1500, VLAN: 40, Lower: "bond0", LowerExists: true, LowerUp: true, LowerMTU: 1500}
	dir := t.TempDir()
	rec := hostnet.NewParentFile(dir)
	if err := rec.Add(hostnet.MadeParent{Link: "bond0.40", Lower: "bond0", VLAN: 40, Network: "v40"}); err != nil {
		t.Fatal(err)
	}
	check := func(rec hostnet.ParentRecord, madeFor string) []Result {
		links := &fakeLinks{observed: map[string]hostnet.Observed{"bond0.40": {ParentExists: true, ParentUp: true, ParentPromisc: true, ParentMadeFor: madeFor}},
			parents: map[string]hostnet.ParentFacts{"bond0.40": parent}}
		return NetworksCheck{Node: "n1", Networks: fakeNetworks{specs: []netspec.Spec{spec}}, Links: links, Files: fakeFiles{"/proc/modules": "8021q 1 0 - Live 0x0\n"}, Parents: rec}.Run(context.Background(), t.Logf)
	}
	find := func(rs []Result, name string) Result {
		for _, r := range rs {
			if r.Check == name {
				return r
			}
		}
		return Result{Check: name, Status: "absent"}
	}
	if r := find(check(rec, "v40"), "network/v40/vlan"); r.Status != OK || !strings.Contains(r.Message, "made by underlay for network v40 (recorded") || !strings.Contains(r.Message, "marks it again") {
		t.Errorf("recorded parent: %+v; want ok, made by underlay (recorded), marked again at the next sync", r)
	}
	if r := find(check(rec, "v40"), "network/vlan-parents"); r.Status != "absent" {
		t.Errorf("a record read fine: %+v; want no result of it", r)
	}
	if err := os.WriteFile(rec.Path, []byte(`{"parents":[{"link":"bond0.40"`), 0o644); err != nil {
		t.Fatal(err)
	}
	rs := check(rec, "")
	if r := find(rs, "network/vlan-parents"); r.Status != Warn || !strings.Contains(r.Message, rec.Path) || !strings.Contains(r.Fix, rec.Path) {
		t.Errorf("a corrupt record: %+v; want a warning naming %s, in its message and its fix", r, rec.Path)
	}
	if r := find(rs, "network/v40/vlan"); !strings.Contains(r.Message, "made by hand") {
		t.Errorf("the parent, on a corrupt record: %+v; want made by hand, as the agent takes it", r)
	}
	// No networks: the record is judged all the same.
	rs = NetworksCheck{Node: "n1", Networks: fakeNetworks{}, Links: &fakeLinks{}, Files: fakeFiles{}, Parents: rec}.Run(context.Background(), t.Logf)
	if r := find(rs, "network/vlan-parents"); r.Status != Warn {
		t.Errorf("a corrupt record, no networks: %+v; want a warning", rs)
	}
}

// TestEnvReadsTheAgentsVLANRecord: the doctor's checks read the VLAN
// parent record of the state directory they are given, in the network
// check and in its links' observations; none without one.
func TestEnvReadsTheAgentsVLANRecord(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		stateDir, want string
	}{{dir, filepath.Join(dir, hostnet.ParentsFileName)}, {"", ""}} {
		var nc NetworksCheck
		for _, c := range (Env{StateDir: tc.stateDir}).Checks() {
			if n, ok := c.(NetworksCheck); ok {
				nc = n
			}
		}
		where := func(r hostnet.ParentRecord) string {
			if r == nil {
				return ""
			}
			return r.Where()
		}
		nl, _ := nc.Links.(NetlinkLinks)
		if got, links := where(nc.Parents), where(nl.Parents); got != tc.want || links != tc.want {
			t.Errorf("state dir %q: the network check reads %q, its links %q; want %q", tc.stateDir, got, links, tc.want)
		}
	}
}
