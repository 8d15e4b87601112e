package dockerhost_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"

	"github.com/underlay/underlay/internal/dockerhost"
	"github.com/underlay/underlay/internal/testenv"
)

// TestIntegrationDockerLinks: what uses a parent, as dockerd reports its
// networks: a macvlan network with no container, and a config-only
// network (driver "null", its parent in its options) from which none is
// made, each named; no network on another parent.
func TestIntegrationDockerLinks(t *testing.T) {
	testenv.Require(t)
	d := testenv.Docker(t)
	ctx := testenv.Context(t, time.Minute)
	subnet, _, _ := testenv.Subnets(t)
	mv := testenv.MacvlanNetwork(t, d, testenv.Network{Name: "onparent-" + testenv.ID(t), Subnet: subnet})
	// A config-only network names its parent without dockerd checking it.
	cfgParent := mv.Parent + ".9"
	cfg := "onparent-cfg-" + testenv.ID(t)
	if _, err := d.NetworkCreate(ctx, cfg, network.CreateOptions{ConfigOnly: true, Options: map[string]string{"parent": cfgParent},
		Labels: map[string]string{"io.underlay.test": "1"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.NetworkRemove(testenv.Context(t, 30*time.Second), cfg) })

	n := dockerhost.NewNetworks(d)
	dl, err := n.DockerLinks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	users := dl.Users()
	for parent, want := range map[string][]string{mv.Parent: {mv.Name}, cfgParent: {cfg}, mv.Parent + ".10": nil} {
		var got []string
		for _, u := range users[parent] {
			if name, ok := strings.CutPrefix(u, "Docker network "); ok {
				got = append(got, strings.Fields(name)[0])
			}
		}
		// The lab's other networks may share mv's parent.
		if want == nil && len(got) > 0 || want != nil && !slices.Contains(got, want[0]) {
			t.Errorf("users of %s: %v, want Docker network %v among them", parent, users[parent], want)
		}
	}
}
