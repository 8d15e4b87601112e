package deploy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/deploy"
	"github.com/underlay/underlay/internal/consul"
	dashadapter "github.com/underlay/underlay/internal/dashboard/adapter"
	"github.com/underlay/underlay/internal/decommission"
	"github.com/underlay/underlay/internal/doctor"
	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/register"
	"github.com/underlay/underlay/internal/scale"
	"github.com/underlay/underlay/internal/scale/adapter"
	"github.com/underlay/underlay/internal/testenv"
)

// op is one thing a component does in Consul, through the code that does it.
type op struct {
	name string
	run  func(ctx context.Context, c *api.Client) error
	// filtered: Consul filters what a token may not read, so without the
	// policy the read finds nothing rather than being refused.
	filtered bool
}

// TestIntegrationACLPolicies checks deploy/consul/*.hcl against a real
// Consul whose ACLs deny by default: every Consul operation of the agent
// and of control succeeds with a token of exactly its policy, fails with
// "Permission denied" with a token without it, and nothing beyond the
// policy is allowed; node rm, with a token of its policy, removes a node.
// The binaries, run with those tokens, then work: the agent registers a
// container and publishes its node; control leads.
func TestIntegrationACLPolicies(t *testing.T) {
	testenv.Require(t)
	id := testenv.ID(t)
	cons := testenv.StartConsulACL(t, "master-"+id)
	master := cons.Client()
	agentToken := aclToken(t, master, "underlay-agent", deploy.AgentPolicy)
	controlToken := aclToken(t, master, "underlay-control", deploy.ControlPolicy)
	ctx := testenv.Context(t, 3*time.Minute)
	node := "it-" + id
	// The operations below are of node `node`, of swarm node ID nodeID
	// (25 lowercase letters and digits, as swarm's), whose own agent has a
	// policy of its own (underlay agent acl-policy).
	nodeID := fmt.Sprintf("it%s%015d", id, 0)
	nodePolicy, err := deploy.AgentNodePolicy(nodeID, node)
	if err != nil {
		t.Fatal(err)
	}
	nodeToken := aclToken(t, master, "underlay-agent-"+node, nodePolicy)
	noToken := aclToken(t, master, "", "")
	as := func(token string) *api.Client {
		c, err := consul.NewClient(consul.Options{Addr: cons.Addr(), Token: token})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	// What the operator's `network create` made (with the master token).
	spec := netspec.Spec{Name: "acl" + id, Subnet: netip.MustParsePrefix("10.144.0.0/16"), Gateway: netip.MustParseAddr("10.144.0.1"),
		Parent: "eth1", IPAM: netspec.Cluster, IPRange: netip.MustParsePrefix("10.144.1.0/24")}
	if err := netspec.NewStore(consul.NewKV(master)).Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	pool, _ := ipam.PoolOf(spec, false)
	perNode := spec
	perNode.Name, perNode.IPAM, perNode.PerNodeSize = "pn"+id, netspec.PerNode, 64
	perNode.Subnet, perNode.Gateway, perNode.IPRange = netip.MustParsePrefix("10.145.0.0/16"), netip.MustParseAddr("10.145.0.1"), netip.Prefix{}
	perNode.Parent = "eth2"
	if err := netspec.NewStore(consul.NewKV(master)).Create(ctx, perNode); err != nil {
		t.Fatal(err)
	}
	svc := register.Service{ID: node + ":web:8080", Name: "web", Address: "10.144.1.9", Port: 8080,
		Meta:   map[string]string{"underlay_node": node},
		Health: &register.HealthMirror{CheckID: node + ":web:8080:docker-health", Status: "passing"}}

	agentOps := []op{
		{"register a container's service", func(ctx context.Context, c *api.Client) error {
			return consul.NewCatalog(c).Register(ctx, svc)
		}, false},
		{"mirror its health", func(ctx context.Context, c *api.Client) error {
			return consul.NewCatalog(c).UpdateHealth(ctx, *svc.Health)
		}, false},
		{"list the node's services", func(ctx context.Context, c *api.Client) error {
			got, err := consul.NewCatalog(c).Services(ctx, node)
			if err == nil && len(got) != 1 {
				err = fmt.Errorf("%d services of %s listed, want 1", len(got), node)
			}
			return err
		}, true},
		{"read its Consul agent's address", func(ctx context.Context, c *api.Client) error {
			_, err := consul.NewCatalog(c).NodeAddress(ctx)
			return err
		}, false},
		{"read the network specs", func(ctx context.Context, c *api.Client) error {
			specs, err := netspec.NewStore(consul.NewKV(c)).Specs(ctx)
			if err == nil && len(specs) != 2 {
				err = fmt.Errorf("%d specs read, want 2", len(specs))
			}
			return err
		}, true},
		{"publish the node's facts", func(ctx context.Context, c *api.Client) error {
			return netspec.NewStore(consul.NewKV(c)).PublishNode(ctx, netspec.NodeFacts{ID: nodeID, Node: node, Interfaces: []string{"eth1"}, Holder: netspec.Holder{Instance: "acl-test"}})
		}, false},
		{"lease a per-node range", func(ctx context.Context, c *api.Client) error {
			_, _, err := netspec.NewStore(consul.NewKV(c)).Lease(ctx, perNode, node)
			return err
		}, false},
		{"report the node's network state", func(ctx context.Context, c *api.Client) error {
			return netspec.NewStore(consul.NewKV(c)).Report(ctx, spec.Name, netspec.NodeState{Node: node, State: netspec.StateReady})
		}, false},
		{"claim a host shim's address", func(ctx context.Context, c *api.Client) error {
			_, err := ipam.NewAllocator(consul.NewKV(c), node, slog.Default()).Shim(ctx, pool)
			return err
		}, false},
		{"allocate and release a task address", func(ctx context.Context, c *api.Client) error {
			a := ipam.NewAllocator(consul.NewKV(c), node, slog.Default())
			addr, err := a.Allocate(ctx, pool, netip.Addr{}, ipam.KindTask)
			if err != nil {
				return err
			}
			return a.Release(ctx, pool, addr)
		}, false},
		{"publish the inventory", func(ctx context.Context, c *api.Client) error {
			return inventory.Publish(ctx, consul.NewKV(c), nodeID, []inventory.Entry{{IP: "10.144.1.9", Node: node, NodeID: nodeID, Network: spec.Name}})
		}, false},
		{"publish task metrics", func(ctx context.Context, c *api.Client) error {
			return consul.NewKV(c).Put(ctx, "underlay/metrics/id/"+nodeID, []byte(`{}`)) // an agent's key (taskmetrics.IDPrefix)
		}, false},
		{"release a per-node range", func(ctx context.Context, c *api.Client) error {
			_, err := netspec.NewStore(consul.NewKV(c)).Release(ctx, perNode.Name, node)
			return err
		}, true},
		{"deregister a service", func(ctx context.Context, c *api.Client) error {
			return consul.NewCatalog(c).Deregister(ctx, svc.ID)
		}, false},
		{"publish the node's doctor report", func(ctx context.Context, c *api.Client) error {
			return doctor.Publish(ctx, consul.NewKV(c), doctor.Report{Node: node, NodeID: nodeID, At: time.Now()})
		}, false},
		{"read the network index", func(ctx context.Context, c *api.Client) error {
			// The IPAM plugin's check that what it settled about a removed
			// pool still holds (ipam.Plugin.fresh).
			_, found, err := consul.NewKV(c).Get(ctx, netspec.IndexKey)
			if err == nil && !found {
				err = fmt.Errorf("%s not found", netspec.IndexKey)
			}
			return err
		}, false},
	}
	history := func(c *api.Client) *adapter.KVHistory {
		return adapter.NewKVHistory(c, adapter.DefaultHistoryPrefix, adapter.DefaultHistoryLimit)
	}
	controlOps := []op{
		{"record a decision", func(ctx context.Context, c *api.Client) error {
			return history(c).Append(ctx, scale.Record{Time: time.Now(), Service: "web", Autoscaler: "acl"})
		}, false},
		{"read the history", func(ctx context.Context, c *api.Client) error {
			recs, _, err := history(c).List(ctx, "web")
			if err == nil && len(recs) == 0 {
				err = errors.New("no decision read back")
			}
			return err
		}, true},
		{"read the agents' task metrics", func(ctx context.Context, c *api.Client) error {
			pairs, _, err := c.KV().List("underlay/metrics/", (&api.QueryOptions{}).WithContext(ctx))
			if err == nil && len(pairs) == 0 {
				err = errors.New("no report read")
			}
			return err
		}, true},
		{"read tokens kept in Consul", func(ctx context.Context, c *api.Client) error {
			return adapter.NewKVTokens(c, deploy.TokensKey, testenv.TestLogger(t)).Load(ctx)
		}, false},
		{"lead", func(ctx context.Context, c *api.Client) error {
			return lead(ctx, c, t)
		}, false},
		{"read the dashboard's networks, pools and agents", func(ctx context.Context, c *api.Client) error {
			st := dashadapter.NewStore(consul.NewKV(c), adapter.DefaultHistoryPrefix)
			nets, err := st.Networks(ctx)
			if err == nil && len(nets) != 2 {
				err = fmt.Errorf("%d networks read, want 2", len(nets))
			}
			if err != nil {
				return err
			}
			facts, misfiled, err := st.Nodes(ctx)
			if err != nil {
				return err
			}
			agents, err := st.Agents(ctx, facts, misfiled)
			if err == nil && len(agents) == 0 {
				err = errors.New("no node facts or doctor reports read")
			}
			if err != nil {
				return err
			}
			inv, err := st.Inventory(ctx, facts)
			if err == nil && len(inv) == 0 {
				err = errors.New("no inventory read")
			}
			return err
		}, true},
		{"read the catalog for the dashboard", func(ctx context.Context, c *api.Client) error {
			got, err := dashadapter.NewCatalog(c, testenv.TestLogger(t)).Instances(ctx)
			if err == nil && len(got) == 0 {
				err = errors.New("no service instance read")
			}
			return err
		}, true},
	}
	beyond := func(what string) []op {
		return []op{
			{"write a key outside underlay/", func(ctx context.Context, c *api.Client) error {
				_, err := c.KV().Put(&api.KVPair{Key: "secret/" + what, Value: []byte("x")}, (&api.WriteOptions{}).WithContext(ctx))
				return err
			}, false},
			{"list ACL tokens", func(ctx context.Context, c *api.Client) error {
				_, _, err := c.ACL().TokenList((&api.QueryOptions{}).WithContext(ctx))
				return err
			}, false},
		}
	}
	// A service for the dashboard's catalog read to find (Consul's own is
	// left out).
	if err := master.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "dash-" + id, Name: "dash-" + id}); err != nil {
		t.Fatal(err)
	}
	agentBeyond := append(beyond("agent"), op{"write control's decisions", controlOps[0].run, false})
	// What one node's agent may do to the keys of another node only with
	// the shared policy.
	other := "other-" + id
	nodeBeyond := append(slices.Clone(agentBeyond),
		op{"publish another node's facts", func(ctx context.Context, c *api.Client) error {
			return netspec.NewStore(consul.NewKV(c)).PublishNode(ctx, netspec.NodeFacts{ID: other, Node: other, Holder: netspec.Holder{Instance: "acl-test"}})
		}, false},
		op{"delete another node's facts", func(ctx context.Context, c *api.Client) error {
			_, err := c.KV().Delete(netspec.NodesKVPrefix+node+"x", (&api.WriteOptions{}).WithContext(ctx))
			return err
		}, false},
		op{"publish another node's inventory", func(ctx context.Context, c *api.Client) error {
			return inventory.Publish(ctx, consul.NewKV(c), other, nil)
		}, false},
		op{"publish another node's task metrics", func(ctx context.Context, c *api.Client) error {
			return consul.NewKV(c).Put(ctx, "underlay/metrics/id/"+other, []byte(`{}`))
		}, false},
		op{"publish another node's doctor report", func(ctx context.Context, c *api.Client) error {
			return doctor.Publish(ctx, consul.NewKV(c), doctor.Report{Node: other, NodeID: other, At: time.Now()})
		}, false},
		op{"delete a report under another node's name", func(ctx context.Context, c *api.Client) error {
			_, err := c.KV().Delete(doctor.KVPrefix+other, (&api.WriteOptions{}).WithContext(ctx))
			return err
		}, false},
	)
	controlBeyond := append(beyond("control"), agentOps[0], agentOps[9], agentOps[5],
		op{"write the tokens kept in Consul", func(ctx context.Context, c *api.Client) error {
			_, err := c.KV().Put(&api.KVPair{Key: deploy.TokensKey, Value: []byte("minted\n")}, (&api.WriteOptions{}).WithContext(ctx))
			return err
		}, false})

	for _, tc := range []struct {
		who             string
		token           string
		allowed, denied []op
	}{
		{"agent", agentToken, agentOps, agentBeyond},
		{"agent of one node", nodeToken, agentOps, nodeBeyond},
		{"control", controlToken, controlOps, controlBeyond},
	} {
		t.Run(tc.who, func(t *testing.T) {
			// Each operation without the policy first (it finds the state
			// the ones before it made), then with it.
			for _, o := range tc.allowed {
				err := o.run(ctx, as(noToken))
				if !permissionDenied(err) && !(o.filtered && err != nil) && !(o.filtered && o.name == "release a per-node range") {
					t.Errorf("%s without its policy: %s: %v, want Permission denied", tc.who, o.name, err)
				}
				if err := o.run(ctx, as(tc.token)); err != nil {
					t.Errorf("%s with its policy: %s: %v", tc.who, o.name, err)
				}
			}
			if strings.HasPrefix(tc.who, "agent") {
				// What the release found nothing to do without the policy
				// was done with it.
				leases, err := netspec.NewStore(consul.NewKV(master)).Leases(ctx, perNode.Name)
				if err != nil || len(leases) != 0 {
					t.Errorf("leases of %s after the agent's release: %v, %v", perNode.Name, leases, err)
				}
			}
			for _, o := range tc.denied {
				if err := o.run(ctx, as(tc.token)); !permissionDenied(err) {
					t.Errorf("%s with its policy: %s (beyond it): %v, want Permission denied", tc.who, o.name, err)
				}
			}
		})
	}

	// node rm, with a token of node-rm.hcl, removes what a node the
	// swarm no longer lists left: all of it, its services too, refused
	// nothing; with no token, nothing; and nothing beyond the policy.
	t.Run("node rm", func(t *testing.T) {
		rmToken := aclToken(t, master, "underlay-node-rm", deploy.NodeRmPolicy)
		rmID, rmNode := fmt.Sprintf("rm%s%015d", id, 0), "rm-"+id
		mkv := consul.NewKV(master)
		mst := netspec.NewStore(mkv)
		// Its agent stopped an hour ago.
		b, err := json.Marshal(netspec.NodeFacts{ID: rmID, Node: rmNode, Holder: netspec.Holder{Instance: "acl-test-rm"}, UpdatedAt: time.Now().Add(-time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		if err := mkv.Put(ctx, netspec.NodesKVPrefix+rmID, b); err != nil {
			t.Fatal(err)
		}
		if _, _, err := mst.Lease(ctx, perNode, rmID); err != nil {
			t.Fatal(err)
		}
		if err := mst.Report(ctx, spec.Name, netspec.NodeState{ID: rmID, Node: rmNode, State: netspec.StateReady}); err != nil {
			t.Fatal(err)
		}
		if _, err := ipam.NewAllocator(mkv, rmID, slog.Default()).Allocate(ctx, pool, netip.Addr{}, ipam.KindTask); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{inventory.KVPrefix + rmID, "underlay/metrics/id/" + rmID, doctor.IDPrefix + rmID} {
			if err := mkv.Put(ctx, k, fmt.Appendf(nil, `{"node":%q,"node_id":%q}`, rmNode, rmID)); err != nil {
				t.Fatal(err)
			}
		}
		// Its service, on a Consul node whose agent is gone (no serfHealth).
		svcID := rmNode + ":web:8080"
		if _, err := master.Catalog().Register(&api.CatalogRegistration{Node: "host-" + rmNode, Address: "10.144.1.77",
			Service: &api.AgentService{ID: svcID, Service: "web-" + id, Meta: map[string]string{register.MetaNode: rmNode, register.MetaSwarmNode: rmID}}}, nil); err != nil {
			t.Fatal(err)
		}
		leased := func() bool {
			leases, err := mst.Leases(ctx, perNode.Name)
			if err != nil {
				t.Fatal(err)
			}
			return slices.Contains(slices.Collect(maps.Values(leases)), rmID)
		}
		remove := func(token string) (decommission.Removed, error) {
			c := as(token)
			// The swarm lists every node but the removed one.
			return decommission.Remove(ctx, consul.NewKV(c), listedSwarm{{ID: nodeID, State: "ready"}}, rmID, decommission.Options{
				Stale: time.Minute, Heartbeat: time.Second, Poll: 200 * time.Millisecond, By: "acl-test",
				Services: decommission.ConsulServices(consul.NewNodeCatalog(c))})
		}
		if got, err := remove(noToken); err == nil && (got.Recorded != "" || len(got.Keys) > 0) || !leased() {
			t.Errorf("node rm without its policy: %+v, %v; lease kept %v: want nothing removed", got, err, leased())
		}
		got, err := remove(rmToken)
		if err != nil {
			t.Fatalf("node rm with its policy: %v", err)
		}
		for _, w := range got.Warnings {
			t.Errorf("node rm with its policy warned: %s", w)
		}
		if got.Recorded == "" || len(got.Services) != 1 || leased() {
			t.Errorf("node rm with its policy: %+v, lease kept %v; want the removal recorded, its lease and its service gone", got, leased())
		}
		for _, k := range []string{netspec.NodesKVPrefix + rmID, inventory.KVPrefix + rmID, "underlay/metrics/id/" + rmID, doctor.IDPrefix + rmID} {
			if _, found, err := mkv.Get(ctx, k); err != nil || found {
				t.Errorf("%s after node rm with its policy: found %v, %v; want it gone", k, found, err)
			}
		}
		if _, found, err := mkv.Get(ctx, netspec.RemovedNodesKVPrefix+rmID); err != nil || !found {
			t.Errorf("the record of the removal: found %v, %v", found, err)
		}
		for _, o := range append(beyond("node-rm"), agentOps[0], controlOps[0]) {
			if err := o.run(ctx, as(rmToken)); !permissionDenied(err) {
				t.Errorf("node rm with its policy: %s (beyond it): %v, want Permission denied", o.name, err)
			}
		}
	})

	t.Run("binaries", func(t *testing.T) {
		bin := testenv.UnderlayBinary(t)
		// control leads with its token; without, it says why it cannot.
		out := runFor(t, bin, "leadership acquired", 30*time.Second, controlToken, "control", "--leader-election",
			"--leader-key", "underlay/scale/leader-bin", "--insecure-no-auth", "--listen", "127.0.0.1:0", "--consul-addr", cons.Addr())
		if strings.Contains(out, "Permission denied") {
			t.Errorf("control with its policy was refused something:\n%s", out)
		}
		runFor(t, bin, "Permission denied", 30*time.Second, noToken, "control", "--leader-election",
			"--leader-key", "underlay/scale/leader-bin", "--insecure-no-auth", "--listen", "127.0.0.1:0", "--consul-addr", cons.Addr())
		// Its facts are keyed by the machine's swarm node ID: alone (not
		// after a test that made the machine's dockerd a swarm manager),
		// this test makes it one, as those do.
		testenv.Swarm(t, testenv.Docker(t))
		// The agent publishes its node's facts with its token. No network
		// spec is left for it to realise on this machine, and it registers
		// no container of the machine's dockerd (no container has the label).
		for _, name := range []string{spec.Name, perNode.Name} {
			if err := netspec.NewStore(consul.NewKV(master)).Delete(ctx, name); err != nil {
				t.Fatal(err)
			}
		}
		agentArgs := func(name string) []string {
			return []string{"agent", "--node", name, "--listen", "", "--ipam=false",
				"--label", "io.underlay.test=" + id, "--consul-addr", cons.Addr()}
		}
		// Stopped once it has claimed the node's identity: the node's own
		// agent below claims it next (the holder is gone, so it may).
		out = runFor(t, bin, "node identity claimed", 30*time.Second, agentToken, agentArgs(node+"b")...)
		if strings.Contains(out, "Permission denied") {
			t.Errorf("agent with the shared policy was refused something:\n%s", out)
		}
		nodes, err := netspec.NewStore(consul.NewKV(master)).Nodes(ctx)
		if err != nil || !slices.ContainsFunc(nodes, func(f netspec.NodeFacts) bool { return f.Node == node+"b" }) {
			// Keyed by the machine's swarm node ID, named by --node.
			t.Errorf("agent with the shared policy has not published its node: %v %v", nodes, err)
		}

		// The node's own policy, as the operator makes it on the node: its
		// swarm node ID from Docker.
		cmd := exec.CommandContext(ctx, bin, "agent", "acl-policy", "--node", node+"c")
		policy, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		info, err := testenv.Docker(t).Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		swarmID := info.Swarm.NodeID
		if !strings.Contains(string(policy), fmt.Sprintf("key %q {\n  policy = \"write\"", netspec.NodesKVPrefix+swarmID)) {
			t.Fatalf("%s gave no write on this node's facts (swarm node ID %s):\n%s", cmd, swarmID, policy)
		}
		ownToken := aclToken(t, master, "underlay-agent-"+node+"c", string(policy))
		// What the agent before may have published, so that only this
		// agent's writes are found below.
		for _, k := range []string{doctor.IDPrefix + swarmID, inventory.KVPrefix + swarmID} {
			if _, err := master.KV().Delete(k, nil); err != nil {
				t.Fatal(err)
			}
		}
		logPath := startFor(t, bin, ownToken, agentArgs(node+"c")...)
		testenv.Eventually(t, 60*time.Second, func() (bool, string) {
			kv := consul.NewKV(master)
			var missing []string
			facts, err := netspec.NewStore(kv).Nodes(ctx)
			if err != nil || !slices.ContainsFunc(facts, func(f netspec.NodeFacts) bool { return f.ID == swarmID && f.Node == node+"c" }) {
				missing = append(missing, fmt.Sprintf("facts (%v)", err))
			}
			for _, k := range []string{doctor.IDPrefix + swarmID, inventory.KVPrefix + swarmID} {
				if _, found, err := kv.Get(ctx, k); err != nil || !found {
					missing = append(missing, fmt.Sprintf("%s (%v)", k, err))
				}
			}
			return len(missing) == 0, fmt.Sprintf("agent with its node's policy has not published: %s", strings.Join(missing, ", "))
		})
		if out, _ := os.ReadFile(logPath); strings.Contains(string(out), "Permission denied") {
			t.Errorf("agent with its node's policy was refused something:\n%s", out)
		}
	})
}

// listedSwarm is a swarm listing its nodes.
type listedSwarm []netspec.SwarmNode

func (s listedSwarm) ListSwarmNodes(context.Context) ([]netspec.SwarmNode, error) { return s, nil }

// aclToken makes a token of a new policy of rules named name; an empty
// name makes a token with no policy at all.
func aclToken(t *testing.T, master *api.Client, name, rules string) string {
	t.Helper()
	tok := &api.ACLToken{Description: "test " + name}
	if name != "" {
		p, _, err := master.ACL().PolicyCreate(&api.ACLPolicy{Name: name, Rules: rules}, nil)
		if err != nil {
			t.Fatalf("policy %s: %v", name, err)
		}
		tok.Policies = []*api.ACLTokenPolicyLink{{ID: p.ID}}
	}
	made, _, err := master.ACL().TokenCreate(tok, nil)
	if err != nil {
		t.Fatalf("token for %q: %v", name, err)
	}
	return made.SecretID
}

func permissionDenied(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "Permission denied") || strings.Contains(err.Error(), "403"))
}

// lead runs the leader election until it leads, or fails with the error
// it met.
func lead(ctx context.Context, c *api.Client, t *testing.T) error {
	ctx, cancel := context.WithTimeout(ctx, 8*time.Second)
	defer cancel()
	l := adapter.NewConsulLeader(adapter.LeaderConfig{Key: adapter.DefaultLeaderKey + "-" + testenv.ID(t), Advertise: "127.0.0.1:1"}, c, testenv.TestLogger(t))
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	// The lock's session or key was refused: say so as Consul did.
	refused := func() error {
		_, _, err := c.Session().Create(&api.SessionEntry{TTL: "10s"}, nil)
		return fmt.Errorf("not leading after 8s (session: %v)", err)
	}
	for {
		if _, ok := l.Leading(); ok {
			cancel()
			<-done
			return nil
		}
		select {
		case err := <-done:
			// Run ends when the 8 s do; select may see that first.
			if ctx.Err() != nil {
				return refused()
			}
			if err == nil {
				err = errors.New("leader stopped")
			}
			return fmt.Errorf("not leading: %w", err)
		case <-ctx.Done():
			<-done
			return refused()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// runFor runs the underlay binary with a Consul token (none from the
// environment) until its output says want, and returns the output.
func runFor(t *testing.T, bin, want string, timeout time.Duration, token string, args ...string) string {
	t.Helper()
	logPath, stop := start(t, bin, token, args...)
	defer stop()
	var out []byte
	testenv.Eventually(t, timeout, func() (bool, string) {
		out, _ = os.ReadFile(logPath)
		return strings.Contains(string(out), want), fmt.Sprintf("%s %s: no %q in its output:\n%s", bin, args[0], want, out)
	})
	return string(out)
}

// startFor runs the underlay binary as runFor does, for the rest of the
// test, and returns the file of its output.
func startFor(t *testing.T, bin, token string, args ...string) string {
	t.Helper()
	logPath, stop := start(t, bin, token, args...)
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			t.Logf("%s %s's output:\n%s", bin, args[0], out)
		}
	})
	return logPath
}

func start(t *testing.T, bin, token string, args ...string) (logPath string, stop func()) {
	t.Helper()
	logPath = filepath.Join(t.TempDir(), "out.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append(args, "--consul-token", token)...)
	cmd.Env = append(os.Environ(), "CONSUL_HTTP_TOKEN=", "UNDERLAY_LOG_LEVEL=debug")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	return logPath, func() { cmd.Process.Kill(); cmd.Wait(); logf.Close() }
}
