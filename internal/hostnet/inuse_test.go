package hostnet_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/hostnet"
	"github.com/underlay/underlay/internal/hostnet/inusetest"
	"github.com/underlay/underlay/internal/netspec"
)

// TestDockerLinksUsers: the one rule of what uses a parent, on the table
// `network rm` and `agent cleanup` are tested on (inusetest), and what
// uses a shim: only the containers that run or that dockerd starts
// again, an empty network none.
func TestDockerLinksUsers(t *testing.T) {
	for _, c := range inusetest.Cases() {
		users := c.Docker.Users()
		if d := cmp.Diff(c.Users, users[inusetest.Parent]); d != "" {
			t.Errorf("%s: users of %s (-want +got)\n%s", c.Name, inusetest.Parent, d)
		}
		// The shim: the parent's container users, never a network.
		var want []string
		for _, u := range c.Users {
			if strings.HasPrefix(u, "container ") {
				want = append(want, u)
			}
		}
		if d := cmp.Diff(want, users[netspec.ShimLinkName("ops")]); d != "" {
			t.Errorf("%s: users of ops's shim (-want +got)\n%s", c.Name, d)
		}
	}
}

// TestPolicyNeeded: Users says the same when only the containers
// PolicyNeeded names have their restart policy (ReadLinks asks dockerd
// for those alone), on the table and on a host whose stopped containers
// are mostly on a bridge network; those are not needed.
func TestPolicyNeeded(t *testing.T) {
	cases := inusetest.Cases()
	bridge := hostnet.DockerNetwork{Name: "bridge", ID: "n-bridge"}
	ops := hostnet.DockerNetwork{Name: "ops", ID: "n-ops", Parent: inusetest.Parent}
	cases = append(cases, inusetest.Case{Name: "stopped containers on a bridge network and on ops",
		Docker: hostnet.DockerLinks{
			Networks: []hostnet.DockerNetwork{bridge, ops},
			Containers: []hostnet.DockerContainer{
				{Name: "job", State: "exited", RestartPolicy: "always", Networks: map[string]string{"bridge": "n-bridge"}},
				{Name: "tool", State: "exited", RestartPolicy: "always", Networks: map[string]string{"bridge": "n-bridge", "ops": "n-ops"}},
				// Its endpoint names no network ID: found by name.
				{Name: "named", State: "created", RestartPolicy: "unless-stopped", Networks: map[string]string{"ops": ""}},
				{Name: "web", State: "running", Networks: map[string]string{"bridge": "n-bridge", "ops": "n-ops"}},
			}}})
	for _, c := range cases {
		need := c.Docker.PolicyNeeded()
		asked := c.Docker
		asked.Containers = slices.Clone(asked.Containers)
		for i := range asked.Containers {
			if !slices.Contains(need, i) {
				asked.Containers[i].RestartPolicy = ""
			}
		}
		if d := cmp.Diff(c.Docker.Users(), asked.Users()); d != "" {
			t.Errorf("%s: users with the policies of %v only (-all +those)\n%s", c.Name, need, d)
		}
	}
	last := cases[len(cases)-1].Docker
	if need := last.PolicyNeeded(); !slices.Equal(need, []int{1, 2}) {
		t.Errorf("policies needed of containers %v; want tool's and named's (1, 2), not the job's on the bridge network alone nor web's, running", need)
	}
}

// TestDockerLinksUsersQuoteNames: what uses a link names Docker's
// networks and containers, which `network rm` (the agent's log and its
// error) and `agent cleanup` print: a network is named at will (Docker
// checks no character of it), and a newline or an escape sequence in its
// name forged a line of the log or rewrote the terminal. Names that are
// not graphic are quoted.
func TestDockerLinksUsersQuoteNames(t *testing.T) {
	const odd = "lan\nlevel=INFO \x1b[2J"
	d := hostnet.DockerLinks{
		Networks: []hostnet.DockerNetwork{{Name: odd, ID: "n-odd", Parent: "eth2"}, {Name: "empty\u202e", ID: "n-empty", Parent: "eth2"}},
		Containers: []hostnet.DockerContainer{{Name: "web", State: "exited", RestartPolicy: "always",
			Networks: map[string]string{odd: "n-odd"}}},
	}
	want := []string{
		`Docker network "empty\u202e" (no container uses it: remove it to free the parent)`,
		`container web (network "lan\nlevel=INFO \x1b[2J"; stopped, restart policy always: dockerd starts it again)`,
	}
	if diff := cmp.Diff(want, d.Users()["eth2"]); diff != "" {
		t.Errorf("users of eth2 (-want +got)\n%s", diff)
	}
}
