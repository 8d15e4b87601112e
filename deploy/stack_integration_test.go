package deploy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"

	"github.com/underlay/underlay/internal/lab"
	"github.com/underlay/underlay/internal/testenv"
)

// TestIntegrationStack deploys underlay as the README tells users to, with
// deploy/stack.yml (`underlay lab --agents stack`), on a 2-node lab: the
// agents, running as a global service with two capabilities, make a
// cluster-IPAM network whose tasks are registered in Consul and reached
// from outside; control, a service on the manager, scales them with the
// token of its secret. Then a rolling `docker service update --image` of
// the agent changes nothing for running containers: no deregistration, no
// address change, and no Consul write by the new agents.
func TestIntegrationStack(t *testing.T) {
	testenv.Require(t)
	testenv.Docker(t)
	l := testenv.StartLab(t, lab.Config{Nodes: 2, UnderlaySubnet: "10.142.0.0/16", Agents: lab.AgentsStack})
	m := l.Nodes[0]
	ctx := testenv.Context(t, 6*time.Minute)
	l.CreateNetwork("web", "--ipam", "cluster", "--subnet", l.Subnet.String(), "--gateway", l.Gateway.String(),
		"--ip-range", "10.142.4.0/24", "--parent", "eth1")

	two := uint64(2)
	testenv.CreateService(t, m.Docker, swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: "hello", Labels: map[string]string{"orbiter": "true", "underlay.scale.max": "4"}},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{Image: testenv.TestImage, Env: []string{
				"SERVICE_NAME=hello", "SERVICE_CHECK_HTTP=/health", "SERVICE_CHECK_INTERVAL=1s"}},
			Networks:  []swarm.NetworkAttachmentConfig{{Target: "web"}},
			Placement: &swarm.Placement{MaxReplicas: 2},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &two}},
	})
	registered := func(n int) map[string]string {
		t.Helper()
		var got map[string]string
		testenv.Eventually(t, 120*time.Second, func() (bool, string) {
			got = passing(t, l, "hello")
			return len(got) == n, fmt.Sprintf("%d instances of hello passing in Consul, want %d: %v", len(got), n, got)
		})
		return got
	}
	before := registered(2)
	for _, addr := range before {
		testenv.Eventually(t, 20*time.Second, func() (bool, string) { return testenv.HTTPGet("http://" + addr + ":8080/health") })
	}

	// control, from the stack, scales with the token of its secret.
	st, err := lab.GetStatus(ctx, l.Name)
	if err != nil {
		t.Fatal(err)
	}
	token, err := os.ReadFile(filepath.Join(st.StateDir, lab.ControlTokensFile))
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("http://%s:%d/v1/orbiter/handle/autoswarm/hello/up", m.ManagementIP, 8000)
	post := func(token string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post("wrong"); code != http.StatusUnauthorized {
		t.Fatalf("POST %s with a wrong token: %d %s, want 401", url, code, body)
	}
	// control follows the swarm's services by events: it may not know
	// hello at once.
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		code, body := post(strings.TrimSpace(string(token)))
		return code == http.StatusOK, fmt.Sprintf("POST %s with the secret's token: %d %s", url, code, body)
	})
	before = registered(3)
	held := containerAddresses(t, l, "hello")

	// A rolling update of the agent to another image (the same binary
	// under a new tag, as an upgrade would be).
	image := agentImage(t, l)
	next := image + "-next"
	for _, n := range l.Nodes {
		if err := n.Docker.ImageTag(ctx, image, next); err != nil {
			t.Fatal(err)
		}
	}
	watch := watchRegistrations(t, l, before)
	if out, err := l.Exec(ctx, "node1", "docker", "service", "update", "--quiet", "--image", next, lab.StackAgentService); err != nil {
		t.Fatalf("docker service update --image %s: %v\n%s", next, err, out)
	}
	// The new agents ran a full resync: the moment a stale or missing
	// registration would have been written.
	for _, n := range l.Nodes {
		testenv.Eventually(t, 90*time.Second, func() (bool, string) {
			c := agentContainer(t, n)
			if c.Image != next {
				return false, fmt.Sprintf("%s runs agent image %s, want %s", n.Name, c.Image, next)
			}
			resyncs := metric(t, l, n.Name, "underlay_register_resync_duration_seconds_count")
			return resyncs >= 1, fmt.Sprintf("%s: new agent made %v full resyncs", n.Name, resyncs)
		})
		if w := metric(t, l, n.Name, `underlay_register_consul_writes_total{op="deregister"}`) +
			metric(t, l, n.Name, `underlay_register_consul_writes_total{op="register"}`); w != 0 {
			t.Errorf("%s: the new agent wrote %v registrations to Consul, want none", n.Name, w)
		}
	}
	if changes := watch(); len(changes) > 0 {
		t.Errorf("registrations changed during the agent's rolling update:\n%s", strings.Join(changes, "\n"))
	}
	if after := containerAddresses(t, l, "hello"); fmt.Sprint(after) != fmt.Sprint(held) {
		t.Errorf("container addresses changed: %v, were %v", after, held)
	}
	if after := passing(t, l, "hello"); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("registrations after the update %v, were %v", after, before)
	}
}

// passing returns hello's passing instances in Consul: service ID → address.
func passing(t testing.TB, l *testenv.Lab, service string) map[string]string {
	entries, _, err := l.Nodes[0].Consul.Health().Service(service, "", true, nil)
	if err != nil {
		t.Logf("consul: %v", err)
		return nil
	}
	out := map[string]string{}
	for _, e := range entries {
		out[e.Service.ID] = e.Service.Address
	}
	return out
}

// containerAddresses lists the addresses of a service's running task
// containers on every node: container ID → address.
func containerAddresses(t testing.TB, l *testenv.Lab, service string) map[string]string {
	out := map[string]string{}
	for _, n := range l.Nodes {
		cs, err := n.Docker.ContainerList(context.Background(), container.ListOptions{Filters: filters.NewArgs(
			filters.Arg("label", "com.docker.swarm.service.name="+service))})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			for _, ep := range c.NetworkSettings.Networks {
				out[c.ID[:12]] = ep.IPAddress
			}
		}
	}
	return out
}

// watchRegistrations polls every node's Consul agent until the returned
// function is called, which returns every registration of want that went
// missing or changed address meanwhile.
func watchRegistrations(t testing.TB, l *testenv.Lab, want map[string]string) func() []string {
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var changes []string
	var wg sync.WaitGroup
	for _, n := range l.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				svcs, err := n.Consul.Agent().Services()
				if err == nil {
					for id, addr := range want {
						s, ok := svcs[id]
						if !ok && !strings.HasPrefix(id, n.Host+":") {
							continue // another node's
						}
						mu.Lock()
						switch {
						case !ok:
							changes = append(changes, fmt.Sprintf("%s: %s deregistered", time.Now().Format(time.StampMilli), id))
						case s.Address != addr:
							changes = append(changes, fmt.Sprintf("%s: %s now at %s, was %s", time.Now().Format(time.StampMilli), id, s.Address, addr))
						}
						mu.Unlock()
					}
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	return func() []string {
		cancel()
		wg.Wait()
		sort.Strings(changes)
		return changes
	}
}

// agentImage is the image the lab's stack runs.
func agentImage(t testing.TB, l *testenv.Lab) string {
	s, _, err := l.Nodes[0].Docker.ServiceInspectWithRaw(context.Background(), lab.StackAgentService, swarm.ServiceInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s.Spec.TaskTemplate.ContainerSpec.Image
}

// agentContainer is the node's running agent container (a zero one when none runs).
func agentContainer(t testing.TB, n *testenv.LabNode) container.Summary {
	cs, err := n.Docker.ContainerList(context.Background(), container.ListOptions{Filters: filters.NewArgs(
		filters.Arg("label", "com.docker.swarm.service.name="+lab.StackAgentService), filters.Arg("status", "running"))})
	if err != nil || len(cs) != 1 {
		return container.Summary{}
	}
	return cs[0]
}

// metric reads one sample of the node's agent /metrics (0 when absent).
func metric(t testing.TB, l *testenv.Lab, node, name string) float64 {
	out, err := l.Exec(context.Background(), node, "curl", "-fsS", "--max-time", "5", "http://"+lab.AgentListen+"/metrics")
	if err != nil {
		return 0
	}
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`)
	m := re.FindSubmatch(out)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}
