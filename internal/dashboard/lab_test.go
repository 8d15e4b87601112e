package dashboard

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"
	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/dashboard/browser"
	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/lab"
	"github.com/underlay/underlay/internal/testenv"
)

// TestIntegrationDashboardLab is the dashboard on a real cluster, in a real
// browser: a 3-node lab (two managers, each running `underlay control`, as
// `lab up` does) with a cluster-IPAM network on a /24 and a service of
// three replicas registered in Consul with an HTTP check. The page, opened
// at the leading control instance, shows every running replica with the
// IP and health Consul has, once logged in with the lab's token (reads
// want it); "scale up" makes a fourth replica appear without a reload; a
// replica's container killed on its node changes its card; and the subnet
// map's counts match `underlay ips --json`. Screenshots of each step go to test-artifacts/.
func TestIntegrationDashboardLab(t *testing.T) {
	testenv.Require(t)
	l := testenv.StartLab(t, lab.Config{Nodes: 3, Managers: 2, UnderlaySubnet: "10.150.0.0/24"})
	ctx := testenv.Context(t, 4*time.Minute)
	st, err := lab.GetStatus(ctx, l.Name)
	if err != nil {
		t.Fatal(err)
	}
	managers := 0
	for _, n := range st.Nodes {
		if n.ControlURL != "" {
			managers++
		}
	}
	if st.DashboardURL == "" || st.ControlTokenFile == "" || managers != 2 {
		t.Fatalf("lab status: dashboard_url %q, control_token_file %q, %d control_url; want both and 2", st.DashboardURL, st.ControlTokenFile, managers)
	}
	token, err := os.ReadFile(st.ControlTokenFile)
	if err != nil {
		t.Fatal(err)
	}
	m := l.Nodes[0]
	const netName, svc = "web", "hello"
	l.CreateNetwork(netName, "--subnet", l.Subnet.String(), "--gateway", l.Gateway.String(), "--parent", "eth1", "--ipam", "cluster")
	three := uint64(3)
	testenv.CreateService(t, m.Docker, swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: svc, Labels: map[string]string{"underlay.scale.enabled": "true", "underlay.scale.max": "5"}},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{Image: testenv.TestImage, Env: []string{
				"SERVICE_NAME=" + svc, "SERVICE_CHECK_HTTP=/health", "SERVICE_CHECK_INTERVAL=1s",
			}},
			Networks: []swarm.NetworkAttachmentConfig{{Target: netName}},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &three}},
	})
	waitConsul(t, m.Consul, svc, 3)

	tok := strings.TrimSpace(string(token))
	b := startBrowser(t)
	if err := b.Open(leaderDashboard(t, st, tok)); err != nil {
		t.Fatal(err)
	}
	// Reads want the token: the page asks for it before showing anything.
	if err := b.Login(tok, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	// Every running replica, with the address and health Consul has.
	waitCards(t, b, m.Consul, svc, 3)
	screenshot(t, b, "1-three-replicas")

	// Scale up from the page, logged in already: the fourth replica
	// appears, with no reload (the marker set before survives).
	if _, err := browser.Eval[int](b, `window.__marker = 7`); err != nil {
		t.Fatal(err)
	}
	if err := b.Click(`.service[data-service="` + svc + `"] button.scale-up`); err != nil {
		t.Fatal(err)
	}
	waitConsul(t, m.Consul, svc, 4)
	waitCards(t, b, m.Consul, svc, 4)
	if marker, err := browser.Eval[int](b, `window.__marker || 0`); err != nil || marker != 7 {
		t.Errorf("the page was reloaded while scaling (marker %d, %v)", marker, err)
	}
	if err := b.WaitTrue(`document.querySelector('.service[data-service="`+svc+`"] .desired-count').textContent === '4'`,
		`document.querySelector('.service[data-service="`+svc+`"]').innerText`, 30*time.Second); err != nil {
		t.Error(err)
	}
	screenshot(t, b, "2-scaled-up")

	// Kill one replica's container on its node: its card changes.
	task, node := replicaOnAWorker(t, l, svc)
	ctr := task.Status.ContainerStatus.ContainerID
	if err := node.Docker.ContainerKill(ctx, ctr, "KILL"); err != nil {
		t.Fatal(err)
	}
	card := `document.querySelector('.card[data-task="` + task.ID + `"]')`
	if err := b.WaitTrue(`!`+card+` || `+card+`.dataset.state !== 'running' || `+card+`.dataset.health !== 'passing'`,
		card+` && `+card+`.innerText`, 60*time.Second); err != nil {
		t.Error(err)
	}
	screenshot(t, b, "3-killed")

	// The subnet map counts what `underlay ips` lists.
	bin := testenv.UnderlayBinary(t)
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		want, err := ipsCounts(bin, m.ConsulAddr, netName)
		if err != nil {
			return false, err.Error()
		}
		got, err := browser.Eval[map[string]int](b, `Object.fromEntries([...document.querySelectorAll('.network[data-network="`+netName+`"] .legend .count')].map((e) => [e.dataset.state, Number(e.dataset.count)]))`)
		if err != nil {
			return false, err.Error()
		}
		// The map counts the network and broadcast addresses as reserved;
		// `underlay ips` does not list them.
		ok := got["task"]+got["duplicate"] == want["in use"] && got["spare"] == want["spare"] &&
			got["leaked"] == want["leaked"] && got["reserved"] == want["reserved"]+2
		return ok, fmt.Sprintf("the map counts %v; underlay ips --json counts %v", got, want)
	})
	if err := b.ScrollTo(`.network[data-network="` + netName + `"]`); err == nil {
		screenshot(t, b, "4-subnet-map")
	}
}

// leaderDashboard is the dashboard of the control instance that leads the
// autoscaler, asked with the lab's token. (A follower's page works as
// well, but its scale buttons reach the leader only where control forwards
// requests to it.)
func leaderDashboard(t *testing.T, st *lab.Status, token string) string {
	t.Helper()
	if want := st.Nodes[0].ControlURL + "/ui/"; st.DashboardURL != want {
		t.Errorf("dashboard_url %s, want the first manager's, %s", st.DashboardURL, want)
	}
	var url string
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		var seen []string
		for _, n := range st.Nodes {
			if n.ControlURL == "" {
				continue
			}
			var l struct {
				Leading bool `json:"leading"`
			}
			req, err := http.NewRequest(http.MethodGet, n.ControlURL+"/v1/underlay/leader", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("GET /v1/underlay/leader: %s", resp.Status)
				} else {
					err = json.NewDecoder(resp.Body).Decode(&l)
				}
				resp.Body.Close()
			}
			if err == nil && l.Leading {
				url = n.ControlURL + "/ui/"
				return true, ""
			}
			seen = append(seen, fmt.Sprintf("%s: leading %v (%v)", n.ControlURL, l.Leading, err))
		}
		return false, "no control instance leads: " + strings.Join(seen, "; ")
	})
	return url
}

// waitConsul waits until n instances of service pass in Consul.
func waitConsul(t *testing.T, c *api.Client, service string, n int) {
	t.Helper()
	testenv.Eventually(t, 120*time.Second, func() (bool, string) {
		es, _, err := c.Health().Service(service, "", true, nil)
		return err == nil && len(es) == n, fmt.Sprintf("%d instances of %s passing in Consul, want %d (%v)", len(es), service, n, err)
	})
}

// waitCards waits until the page shows n running cards of service, passing,
// with exactly the addresses Consul lists for it.
func waitCards(t *testing.T, b *browser.Browser, c *api.Client, service string, n int) {
	t.Helper()
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		es, _, err := c.Health().Service(service, "", false, nil)
		if err != nil {
			return false, err.Error()
		}
		var consul []string
		for _, e := range es {
			consul = append(consul, e.Service.Address+" "+e.Checks.AggregatedStatus())
		}
		type card struct{ IP, Health, State string }
		cards, err := browser.Eval[[]card](b, `[...document.querySelectorAll('.card[data-service="`+service+`"]')]
			.filter((e) => e.dataset.state === 'running').map((e) => ({IP: e.dataset.ip, Health: e.dataset.health, State: e.dataset.state}))`)
		if err != nil {
			return false, err.Error()
		}
		var page []string
		for _, c := range cards {
			page = append(page, c.IP+" "+c.Health)
		}
		sort.Strings(consul)
		sort.Strings(page)
		ok := len(page) == n && slices.Equal(page, consul)
		for _, p := range page {
			ok = ok && strings.HasSuffix(p, " passing") && strings.HasPrefix(p, "10.150.0.")
		}
		return ok, fmt.Sprintf("the page shows running %v; Consul lists %v; want %d, passing", page, consul, n)
	})
}

// replicaOnAWorker finds a running task of service on a node other than
// node1 (whose control serves the page), and that node.
func replicaOnAWorker(t *testing.T, l *testenv.Lab, service string) (swarm.Task, *testenv.LabNode) {
	t.Helper()
	ctx := testenv.Context(t, time.Minute)
	m := l.Nodes[0]
	nodes, err := m.Docker.NodeList(ctx, swarm.NodeListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	host := map[string]string{}
	for _, n := range nodes {
		host[n.ID] = n.Description.Hostname
	}
	tasks, err := m.Docker.TaskList(ctx, swarm.TaskListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc, _, err := m.Docker.ServiceInspectWithRaw(ctx, service, swarm.ServiceInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		if task.ServiceID != svc.ID || task.Status.State != swarm.TaskStateRunning || task.Status.ContainerStatus == nil {
			continue
		}
		for _, n := range l.Nodes[1:] {
			if n.Host == host[task.NodeID] {
				return task, n
			}
		}
	}
	t.Fatalf("no running task of %s on node2 or node3", service)
	return swarm.Task{}, nil
}

// ipsCounts runs `underlay ips --json` against the lab and counts one
// network's addresses by what the map calls them: in use (distinct IPs held
// by containers), spare, leaked and reserved (gateway, aux, shims).
func ipsCounts(bin, consulAddr, network string) (map[string]int, error) {
	out, err := exec.Command(bin, "ips", "--json", "--consul-addr", consulAddr, "--network", network).Output()
	if err != nil {
		return nil, fmt.Errorf("underlay ips: %v", err)
	}
	var res struct {
		Addresses []inventory.Entry `json:"addresses"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, err
	}
	c := map[string]int{"in use": 0, "spare": 0, "leaked": 0, "reserved": 0}
	inUse := map[string]bool{}
	for _, e := range res.Addresses {
		switch {
		case e.State == "in use":
			inUse[e.IP] = true
		case e.State == "reserved: spare":
			c["spare"]++
		case strings.HasPrefix(e.State, "reserved"):
			c["reserved"]++
		case strings.HasPrefix(e.State, "allocated, no container"):
			c["leaked"]++
		}
	}
	c["in use"] = len(inUse)
	return c, nil
}
