// Package inusetest is the table of cases on which `network rm` (the
// agent's teardown, internal/netagent) and `agent cleanup`
// (internal/app) are both tested to judge a VLAN parent in use alike:
// they share one rule, hostnet.DockerLinks.Users.
package inusetest

import "github.com/underlay/underlay/internal/hostnet"

// Parent is the VLAN parent each case judges: underlay made it for a
// network being removed (its own Docker networks gone), and removes it
// unless something Docker has uses it.
const Parent = "eth1.40"

// Case is what dockerd has besides the network being removed, and what
// the rule names as using Parent.
type Case struct {
	Name   string
	Docker hostnet.DockerLinks
	// Users are what uses Parent; none: it is removed.
	Users []string
}

// ops is an operator's macvlan network on Parent.
var ops = hostnet.DockerNetwork{Name: "ops", ID: "n-ops", Parent: Parent}

// tool is a container on ops, in state, of restart policy policy.
func tool(state, policy string) hostnet.DockerContainer {
	return hostnet.DockerContainer{Name: "tool", State: state, RestartPolicy: policy, Networks: map[string]string{"ops": "n-ops"}}
}

// empty is what an empty network on Parent is named as.
const empty = "Docker network ops (no container uses it: remove it to free the parent)"

// Cases is the table.
func Cases() []Case {
	return []Case{
		{Name: "nothing on it, a running container on another parent",
			Docker: hostnet.DockerLinks{
				Networks:   []hostnet.DockerNetwork{{Name: "lan", ID: "n-lan", Parent: "eth2"}},
				Containers: []hostnet.DockerContainer{{Name: "web", State: "running", Networks: map[string]string{"lan": "n-lan"}}}}},
		{Name: "an empty network on it",
			Docker: hostnet.DockerLinks{Networks: []hostnet.DockerNetwork{ops}}, Users: []string{empty}},
		{Name: "a running container",
			Docker: hostnet.DockerLinks{Networks: []hostnet.DockerNetwork{ops}, Containers: []hostnet.DockerContainer{tool("running", "")}},
			Users:  []string{"container tool (network ops)"}},
		{Name: "a paused container",
			Docker: hostnet.DockerLinks{Networks: []hostnet.DockerNetwork{ops}, Containers: []hostnet.DockerContainer{tool("paused", "")}},
			Users:  []string{"container tool (network ops)"}},
		{Name: "a stopped container of restart policy always",
			Docker: hostnet.DockerLinks{Networks: []hostnet.DockerNetwork{ops}, Containers: []hostnet.DockerContainer{tool("exited", "always")}},
			Users:  []string{"container tool (network ops; stopped, restart policy always: dockerd starts it again)"}},
		{Name: "a stopped container of restart policy unless-stopped",
			Docker: hostnet.DockerLinks{Networks: []hostnet.DockerNetwork{ops}, Containers: []hostnet.DockerContainer{tool("exited", "unless-stopped")}},
			Users:  []string{"container tool (network ops; stopped, restart policy unless-stopped: dockerd starts it again)"}},
		{Name: "a stopped container of restart policy on-failure: the network holds it",
			Docker: hostnet.DockerLinks{Networks: []hostnet.DockerNetwork{ops}, Containers: []hostnet.DockerContainer{tool("exited", "on-failure")}},
			Users:  []string{empty}},
		{Name: "a container never started: the network holds it",
			Docker: hostnet.DockerLinks{Networks: []hostnet.DockerNetwork{ops}, Containers: []hostnet.DockerContainer{tool("created", "no")}},
			Users:  []string{empty}},
		{Name: "a running container on a network made from a config-only one on it",
			Docker: hostnet.DockerLinks{
				Networks: []hostnet.DockerNetwork{
					{Name: "ops-config", ID: "n-opsc", Parent: Parent, ConfigOnly: true, Network: "ops"},
					{Name: "ops", ID: "n-ops", ConfigFrom: "ops-config"}},
				Containers: []hostnet.DockerContainer{tool("running", "")}},
			Users: []string{"container tool (network ops)"}},
		{Name: "a config-only network alone on it",
			Docker: hostnet.DockerLinks{Networks: []hostnet.DockerNetwork{{Name: "ops-config", ID: "n-opsc", Parent: Parent, ConfigOnly: true, Network: "ops"}}},
			Users:  []string{"Docker network ops-config (no container uses it: remove it to free the parent)"}},
	}
}
