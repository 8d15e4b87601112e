package dockerhost_test

import (
	"slices"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"

	"github.com/underlay/underlay/internal/dockerhost"
	"github.com/underlay/underlay/internal/testenv"
)

// TestIntegrationNetworksOnParent: the networks on a parent, as dockerd
// reports them: a macvlan network's, and a config-only network's (driver
// "null", its parent in its options), but no network on another parent.
func TestIntegrationNetworksOnParent(t *testing.T) {
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
	for parent, want := range map[string][]string{mv.Parent: {mv.Name}, cfgParent: {cfg}, mv.Parent + ".10": nil} {
		got, err := n.NetworksOnParent(ctx, parent)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("networks on %s: %v, want %v", parent, got, want)
		}
	}
}
