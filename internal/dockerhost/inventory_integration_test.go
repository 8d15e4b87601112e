package dockerhost_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/underlay/underlay/internal/dockerhost"
	"github.com/underlay/underlay/internal/testenv"
)

// TestIntegrationHeldAddressesFailedStart: a container whose start failed
// holds no address, though Docker 20.10 lists the one the start had (and
// released when it failed; inspect shows none). Counted as held, it made
// the reclaimer record that address again for the node, and keep it for as
// long as the failed container exists: a swarm task's, until the task
// history is pruned.
func TestIntegrationHeldAddressesFailedStart(t *testing.T) {
	testenv.Require(t)
	d := testenv.Docker(t)
	ctx := testenv.Context(t, time.Minute)
	subnet, _, _ := testenv.Subnets(t)
	n := testenv.MacvlanNetwork(t, d, testenv.Network{Name: "held-" + testenv.ID(t), Subnet: subnet})
	running := testenv.RunContainer(t, d, testenv.Container{Name: "held-run-" + testenv.ID(t), Networks: []string{n.Name}})
	failed := testenv.CreateContainer(t, d, testenv.Container{Name: "held-failed-" + testenv.ID(t), Networks: []string{n.Name}, Entrypoint: []string{"/nonexistent"}})
	if err := d.ContainerStart(ctx, failed, container.StartOptions{}); err == nil {
		t.Fatal("start of a container with no entrypoint binary succeeded")
	}
	ci, err := d.ContainerInspect(ctx, running)
	if err != nil {
		t.Fatal(err)
	}
	want := netip.MustParseAddr(ci.NetworkSettings.Networks[n.Name].IPAddress)

	local, err := dockerhost.NewSource(d).HeldAddresses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if held := local.Held[n.Name]; len(held) != 1 || !held[want] {
		t.Errorf("held on %s: %v, want only the running container's %s", n.Name, held, want)
	}
}
