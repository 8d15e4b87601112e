package deploy

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/decommission"
	"github.com/underlay/underlay/internal/doctor"
	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/register"
	"github.com/underlay/underlay/internal/taskmetrics"
	"github.com/underlay/underlay/internal/unregistered"
)

// access is one thing a component asks of Consul's ACLs: read or write
// (write true) on a resource (key, service, node) of a name.
type access struct {
	resource, name string
	write          bool
	// what does it, for messages.
	what string
}

// recordingKV is a kvtest store noting every access of its callers,
// as Consul 1.8's ACLs judge each (agent/consul/kvs_endpoint.go
// kvsPreApply: a transaction's get and check-index ask read; every other
// verb, check-not-exists too, asks write; a delete-tree write on its
// prefix).
type recordingKV struct {
	*kvtest.KV
	mu  sync.Mutex
	got []access
}

func (r *recordingKV) note(key string, write bool, what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, access{"key", key, write, what})
}

func (r *recordingKV) Get(ctx context.Context, key string) (kvstore.Pair, bool, error) {
	r.note(key, false, "get")
	return r.KV.Get(ctx, key)
}

func (r *recordingKV) List(ctx context.Context, prefix string) ([]kvstore.Pair, error) {
	r.note(prefix, false, "list")
	return r.KV.List(ctx, prefix)
}

func (r *recordingKV) Keys(ctx context.Context, prefix string) ([]string, error) {
	r.note(prefix, false, "keys")
	return r.KV.Keys(ctx, prefix)
}

func (r *recordingKV) KeysIndex(ctx context.Context, prefix string) ([]string, uint64, error) {
	r.note(prefix, false, "keys")
	return r.KV.KeysIndex(ctx, prefix)
}

func (r *recordingKV) Wait(ctx context.Context, key string, index uint64) (kvstore.Pair, bool, uint64, error) {
	r.note(key, false, "wait")
	return r.KV.Wait(ctx, key, index)
}

func (r *recordingKV) Txn(ctx context.Context, ops []kvstore.Op) (kvstore.Result, error) {
	for _, op := range ops {
		r.note(op.Key, op.Verb != kvstore.Get && op.Verb != kvstore.CheckIndex, "txn "+string(op.Verb))
	}
	return r.KV.Txn(ctx, ops)
}

func (r *recordingKV) Put(ctx context.Context, key string, value []byte) error {
	r.note(key, true, "put")
	return r.KV.Put(ctx, key, value)
}

func (r *recordingKV) Delete(ctx context.Context, key string) error {
	r.note(key, true, "delete")
	return r.KV.Delete(ctx, key)
}

func (r *recordingKV) DeleteTree(ctx context.Context, prefix string) error {
	r.note(prefix, true, "delete-tree")
	return r.KV.DeleteTree(ctx, prefix)
}

// catalog is Consul's catalog as node rm uses it, noting the accesses:
// listing services reads them and their nodes (Consul 1.8 filters the
// instances of a node or service the token may not read), reading a
// node's health reads it, deregistering a service writes its node (with
// node:write, Consul's vetDeregisterWithACL asks nothing else).
type catalog struct {
	list []decommission.CatalogService
	got  []access
	gone []string
}

func (c *catalog) UnderlayServices(context.Context) ([]decommission.CatalogService, error) {
	for _, s := range c.list {
		c.got = append(c.got, access{"service", s.Name, false, "list catalog services"}, access{"node", s.Node, false, "list catalog services, read their nodes' health"})
	}
	return c.list, nil
}

func (c *catalog) Deregister(_ context.Context, node, id string) error {
	c.got = append(c.got, access{"node", node, true, "deregister service " + id})
	c.gone = append(c.gone, id)
	return nil
}

type swarmOf []netspec.SwarmNode

func (s swarmOf) ListSwarmNodes(context.Context) ([]netspec.SwarmNode, error) { return s, nil }

// decides gives the rule of policy rules (policyRules') that decides an
// access, as Consul does: an exact rule on the name, else the longest
// prefix rule of the name; "" when none (default deny).
func decides(rules map[string]string, a access) string {
	if r := fmt.Sprintf("%s %q", a.resource, a.name); rules[r] != "" {
		return r
	}
	best, bestLen := "", -1
	for r := range rules {
		res, seg, ok := strings.Cut(r, " ")
		if !ok || res != a.resource+"_prefix" {
			continue
		}
		prefix := strings.Trim(seg, `"`)
		if strings.HasPrefix(a.name, prefix) && len(prefix) > bestLen {
			best, bestLen = r, len(prefix)
		}
	}
	return best
}

// TestNodeRmPolicy runs `underlay node rm`'s removal (decommission.Remove)
// of a node with every kind of record — facts, range lease, state reports,
// cluster-IPAM addresses and kept addresses, inventory, doctor report and
// task metrics by ID and by name, a registered service — noting each
// Consul access it makes: node-rm.hcl allows every one of them, and has
// no rule that none needs (a write rule that decides no write).
func TestNodeRmPolicy(t *testing.T) {
	accesses := nodeRmAccesses(t)
	rules := policyRules(t, "node-rm.hcl", NodeRmPolicy)
	used := map[string]bool{} // rules deciding an access: true for a write
	for _, a := range accesses {
		r := decides(rules, a)
		if r == "" || (a.write && rules[r] != "write") || rules[r] == "deny" {
			t.Errorf("node-rm.hcl refuses node rm's %s of %s %s (%s): decided by %q (%s)", map[bool]string{false: "read", true: "write"}[a.write], a.resource, a.name, a.what, r, rules[r])
			continue
		}
		used[r] = used[r] || a.write
	}
	for r, p := range rules {
		switch u, ok := used[r]; {
		case !ok:
			t.Errorf("node-rm.hcl grants %s %s, which nothing node rm does needs", r, p)
		case p == "write" && !u:
			t.Errorf("node-rm.hcl grants %s write, where node rm only reads", r)
		}
	}
}

// TestNodeRmPolicyNarrowedToOneNode: node-rm.hcl grants write on every
// Consul node because node rm deregisters the removed node's services
// with node:write on the Consul node they are registered on, which is
// not known when the policy is made. The narrowing its comment and the
// README give for one removal — node_prefix "" read, and write on that
// one Consul node — allows every access of the removal; with read alone,
// the deregistration is what is refused, and nothing else.
func TestNodeRmPolicyNarrowedToOneNode(t *testing.T) {
	accesses := nodeRmAccesses(t)
	rules := policyRules(t, "node-rm.hcl", NodeRmPolicy)
	if rules[`node_prefix ""`] != "write" {
		t.Fatalf(`node-rm.hcl's node_prefix "" is %q; this test narrows its write`, rules[`node_prefix ""`])
	}
	rules[`node_prefix ""`] = "read"
	refused := func() []string {
		var out []string
		for _, a := range accesses {
			if r := decides(rules, a); r == "" || (a.write && rules[r] != "write") {
				out = append(out, fmt.Sprintf("%s %s %s", a.what, a.resource, a.name))
			}
		}
		return out
	}
	if got, want := refused(), []string{"deregister service old:web:8080 node host-old"}; !slices.Equal(got, want) {
		t.Errorf("with node_prefix \"\" read, refused %q; want only %q", got, want)
	}
	rules[`node "host-old"`] = "write"
	if got := refused(); len(got) != 0 {
		t.Errorf(`with node_prefix "" read and node "host-old" write, refused %q; want nothing`, got)
	}
}

// nodeRmAccesses runs `underlay node rm`'s removal (decommission.Remove)
// of a node with every kind of record, its one service registered on
// Consul node host-old, and returns the Consul accesses it makes.
func nodeRmAccesses(t *testing.T) []access {
	t.Helper()
	ctx := context.Background()
	const gone, live, name = "gone000000000000000000000", "live000000000000000000000", "old"
	kv := &recordingKV{KV: kvtest.New()}
	st := netspec.NewStore(kv.KV)
	lan := netspec.Spec{Name: "lan", Subnet: netip.MustParsePrefix("192.168.10.0/24"), Gateway: netip.MustParseAddr("192.168.10.1"),
		Parent: "eth0", IPAM: netspec.PerNode, PerNodeSize: 64}
	pool := netspec.Spec{Name: "pool", Subnet: netip.MustParsePrefix("10.20.0.0/16"), Gateway: netip.MustParseAddr("10.20.0.1"),
		Parent: "eth1", IPAM: netspec.Cluster}
	for _, s := range []netspec.Spec{lan, pool} {
		if err := st.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	p, _ := ipam.PoolOf(pool, false)
	for _, n := range []struct {
		id, name string
		age      time.Duration
	}{{gone, name, time.Hour}, {live, "new", 0}} {
		at := time.Now().Add(-n.age)
		f := netspec.NodeFacts{ID: n.id, Node: n.name, Interfaces: []string{"eth0"}, Holder: netspec.Holder{Instance: "agent-" + n.id, Host: n.name}}
		if err := st.Claim(ctx, f, netspec.ClaimOptions{Stale: time.Minute, Poll: time.Millisecond, Now: func() time.Time { return at }}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := st.Lease(ctx, lan, n.id); err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{lan.Name, pool.Name} {
			if err := st.Report(ctx, s, netspec.NodeState{ID: n.id, Node: n.name, State: netspec.StateReady}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := ipam.NewAllocator(kv.KV, n.id, nil).Allocate(ctx, p, netip.Addr{}, ipam.KindTask); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{inventory.KVPrefix + n.id, doctor.KVPrefix + n.name, taskmetrics.KVPrefix + n.name, ipam.KVPrefix + pool.Name + "/v4/kept/" + n.id, unregistered.KVPrefix + n.id} {
			kv.KV.Put(ctx, k, []byte(`{}`))
		}
		for _, prefix := range []string{doctor.IDPrefix, taskmetrics.IDPrefix} {
			kv.KV.Put(ctx, prefix+n.id, fmt.Appendf(nil, `{"node":%q,"node_id":%q}`, n.name, n.id))
		}
	}
	cat := &catalog{list: []decommission.CatalogService{
		{Node: "host-old", ID: name + ":web:8080", Name: "web", Meta: map[string]string{register.MetaNode: name, register.MetaSwarmNode: gone}},
	}}
	got, err := decommission.Remove(ctx, kv, swarmOf{{ID: live, State: "ready"}}, gone, decommission.Options{Stale: time.Minute, Services: cat})
	if err != nil {
		t.Fatal(err)
	}
	if got.Recorded == "" || len(got.Ranges) == 0 || len(got.Reports) == 0 || len(got.Addresses) == 0 || !slices.Equal(cat.gone, []string{name + ":web:8080"}) {
		t.Fatalf("set-up: the removal left out a kind of record: %+v, deregistered %v", got, cat.gone)
	}
	return append(slices.Clone(kv.got), cat.got...)
}
