package hostnet_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

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
