package deploy

import (
	"errors"
	"fmt"
	"strings"

	"github.com/underlay/underlay/internal/doctor"
	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/taskmetrics"
	"github.com/underlay/underlay/internal/unregistered"
)

// Prefixes of agent.hcl under which each agent writes its own node's keys
// only: its facts (the claim of its identity and its heartbeat, by which
// the swarm leader judges it alive), its address inventory, its task
// metrics (the autoscaler's input), its doctor report and its report of
// the tasks it leaves out of Consul. A shared token lets any node rewrite
// or delete another's: make it look dead, so that its addresses are
// reclaimed while in use; steer the autoscaler; hide a failing node's
// report; or pass off another node's lost registrations as deliberate. Read stays on the whole prefix: agents judge
// each other's liveness by the facts, and check older agents' reports.
var nodeScoped = []struct {
	prefix string
	own    func(id, name string) []string
}{
	{netspec.NodesKVPrefix, func(id, _ string) []string { return []string{netspec.NodesKVPrefix + id} }},
	{inventory.KVPrefix, func(id, _ string) []string { return []string{inventory.KVPrefix + id} }},
	// Under the node's name: the report an older agent of this node kept,
	// which the agent deletes once it is sure it is its own.
	{taskmetrics.KVPrefix, func(id, name string) []string {
		return []string{taskmetrics.IDPrefix + id, taskmetrics.KVPrefix + name}
	}},
	{doctor.KVPrefix, func(id, name string) []string {
		return []string{doctor.IDPrefix + id, doctor.KVPrefix + name}
	}},
	{unregistered.KVPrefix, func(id, _ string) []string { return []string{unregistered.KVPrefix + id} }},
}

// AgentNodePolicy is AgentPolicy for the agent of one node, whose swarm
// node ID is id and whose name (the agent's --node) is name: under the
// prefixes where an agent writes only its own node's keys, it may read
// every key but write only its node's. The rest is AgentPolicy's, word for
// word: cluster networks and IPAM blocks are claimed by whichever node
// asks first, and containers' services are named by their labels, so
// those stay shared.
func AgentNodePolicy(id, name string) (string, error) {
	// Both become parts of Consul keys and of HCL strings: a swarm node ID
	// (the readers of the reports refuse any other) and what agents allow
	// in node names are safe in both.
	if err := netspec.CheckNodeID(id); err != nil {
		return "", fmt.Errorf("swarm node ID %q: %w", id, err)
	}
	if err := netspec.CheckNodeName(name); err != nil {
		return "", fmt.Errorf("node name %q: %w", name, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Consul ACL policy of `underlay agent` on node %s (swarm node ID %s),\n", name, id)
	b.WriteString("# made by `underlay agent acl-policy`: agent.hcl, with writes under the\n")
	b.WriteString("# node-scoped prefixes narrowed to this node's own keys.\n\n")
	// agent.hcl's own header is left out: it says how to use agent.hcl.
	_, policy, ok := strings.Cut(AgentPolicy, "\n\n")
	if !ok {
		return "", errors.New("agent.hcl has no header")
	}
	for _, s := range nodeScoped {
		shared := fmt.Sprintf("key_prefix %q {\n  policy = \"write\"\n}\n", s.prefix)
		if strings.Count(policy, shared) != 1 {
			return "", fmt.Errorf("agent.hcl has no single write rule on %s to narrow", s.prefix)
		}
		narrowed := fmt.Sprintf("key_prefix %q {\n  policy = \"read\"\n}\n", s.prefix)
		for _, k := range s.own(id, name) {
			narrowed += fmt.Sprintf("\nkey %q {\n  policy = \"write\"\n}\n", k)
		}
		policy = strings.Replace(policy, shared, narrowed, 1)
	}
	b.WriteString(policy)
	return b.String(), nil
}
