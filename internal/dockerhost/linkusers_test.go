package dockerhost

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/netspec"
)

// fakeLinkUsers is a dockerd's networks and containers, with their
// restart policies by ID; a container not in policies is gone (inspect:
// not found).
type fakeLinkUsers struct {
	nets     []network.Summary
	ctrs     []container.Summary
	policies map[string]container.RestartPolicyMode
	// inspectErr fails every inspect.
	inspectErr error
	// all is what ContainerList was asked for.
	all bool
}

func (d *fakeLinkUsers) NetworkList(context.Context, network.ListOptions) ([]network.Summary, error) {
	return d.nets, nil
}

func (d *fakeLinkUsers) ContainerList(_ context.Context, o container.ListOptions) ([]container.Summary, error) {
	d.all = o.All
	if o.All {
		return d.ctrs, nil
	}
	var running []container.Summary
	for _, c := range d.ctrs {
		if c.State == container.StateRunning || c.State == container.StatePaused || c.State == container.StateRestarting {
			running = append(running, c)
		}
	}
	return running, nil
}

// notFound is dockerd's answer for a container that is gone.
type notFound struct{}

func (notFound) Error() string { return "No such container" }
func (notFound) NotFound()     {}

func (d *fakeLinkUsers) ContainerInspect(_ context.Context, id string) (container.InspectResponse, error) {
	if d.inspectErr != nil {
		return container.InspectResponse{}, d.inspectErr
	}
	p, ok := d.policies[id]
	if !ok {
		return container.InspectResponse{}, notFound{}
	}
	return container.InspectResponse{ContainerJSONBase: &container.ContainerJSONBase{ID: id, HostConfig: &container.HostConfig{RestartPolicy: container.RestartPolicy{Name: p}}}}, nil
}

// ctrOn is a container of state on network pool.
func ctrOn(name string, state container.ContainerState) container.Summary {
	return container.Summary{ID: name + "-id", Names: []string{"/" + name}, State: state,
		NetworkSettings: &container.NetworkSettingsSummary{Networks: map[string]*network.EndpointSettings{"pool": {NetworkID: "n-pool"}}}}
}

// TestLinkUsersStoppedToComeBack: agent cleanup asked Docker for running
// containers only, so it deleted the VLAN parent of a container stopped
// with restart policy always, and dockerd, starting it again at boot,
// made the parent again unmarked. A stopped container that dockerd
// starts again (always, unless-stopped) uses its network's links, named
// as stopped with its policy; one stopped otherwise, or gone, does not.
func TestLinkUsersStoppedToComeBack(t *testing.T) {
	d := &fakeLinkUsers{
		nets: []network.Summary{
			{Name: "pool-config", ID: "n-poolc", ConfigOnly: true, Options: map[string]string{"parent": "bond0.40"}, Labels: map[string]string{netspec.LabelNetwork: "pool"}},
			{Name: "pool", ID: "n-pool", Driver: "macvlan", ConfigFrom: network.ConfigReference{Network: "pool-config"}},
		},
		ctrs: []container.Summary{
			ctrOn("web", container.StateRunning),
			ctrOn("frozen", container.StatePaused),
			ctrOn("solo", container.StateExited),
			ctrOn("daemon", container.StateExited),
			ctrOn("once", container.StateExited),
			ctrOn("fresh", container.StateCreated),
			ctrOn("gone", container.StateExited),
		},
		policies: map[string]container.RestartPolicyMode{
			"solo-id": container.RestartPolicyAlways, "daemon-id": container.RestartPolicyUnlessStopped,
			"once-id": container.RestartPolicyOnFailure, "fresh-id": container.RestartPolicyDisabled,
		},
	}
	got, err := LinkUsers(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	users := []string{
		"container daemon (network pool; stopped, restart policy unless-stopped: dockerd starts it again)",
		"container frozen (network pool)",
		"container solo (network pool; stopped, restart policy always: dockerd starts it again)",
		"container web (network pool)",
	}
	if d := cmp.Diff(map[string][]string{"bond0.40": users, netspec.ShimLinkName("pool"): users}, got); d != "" {
		t.Errorf("LinkUsers (-want +got)\n%s", d)
	}
	d.inspectErr = errors.New("Cannot connect to the Docker daemon")
	if _, err := LinkUsers(context.Background(), d); err == nil || !strings.Contains(err.Error(), "solo") {
		t.Errorf("LinkUsers with inspect failing: %v; want an error naming the stopped container", err)
	}
}
