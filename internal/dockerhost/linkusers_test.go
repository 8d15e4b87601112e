package dockerhost

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/hostnet"
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
	// inspected are the IDs inspected, in order.
	inspected []string
	// lists counts the container listings, listed the containers they
	// answered.
	lists, listed int
}

func (d *fakeLinkUsers) NetworkList(context.Context, network.ListOptions) ([]network.Summary, error) {
	return d.nets, nil
}

// ContainerList answers as dockerd does (daemon/list.go): all or the
// running ones, those on one of the networks a network filter names (by
// name, or a prefix of its ID) when it names any.
func (d *fakeLinkUsers) ContainerList(_ context.Context, o container.ListOptions) ([]container.Summary, error) {
	d.all = o.All
	d.lists++
	var out []container.Summary
	for _, c := range d.ctrs {
		running := c.State == container.StateRunning || c.State == container.StatePaused || c.State == container.StateRestarting
		if (o.All || running) && onFiltered(c, o.Filters.Get("network")) {
			out = append(out, c)
		}
	}
	d.listed += len(out)
	return out, nil
}

// onFiltered says whether c is on one of the networks named (by name, or
// a prefix of its ID), as dockerd's network filter does; any is, named none.
func onFiltered(c container.Summary, nets []string) bool {
	if len(nets) == 0 {
		return true
	}
	if c.NetworkSettings == nil {
		return false
	}
	for _, v := range nets {
		if _, ok := c.NetworkSettings.Networks[v]; ok {
			return true
		}
		for _, ep := range c.NetworkSettings.Networks {
			if ep != nil && strings.HasPrefix(ep.NetworkID, v) {
				return true
			}
		}
	}
	return false
}

// notFound is dockerd's answer for a container that is gone.
type notFound struct{}

func (notFound) Error() string { return "No such container" }
func (notFound) NotFound()     {}

func (d *fakeLinkUsers) ContainerInspect(_ context.Context, id string) (container.InspectResponse, error) {
	d.inspected = append(d.inspected, id)
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

// ctrOnNets is a container of state on the networks given, by name and
// endpoint network ID.
func ctrOnNets(name string, state container.ContainerState, nets ...string) container.Summary {
	eps := map[string]*network.EndpointSettings{}
	for i := 0; i+1 < len(nets); i += 2 {
		eps[nets[i]] = &network.EndpointSettings{NetworkID: nets[i+1]}
	}
	return container.Summary{ID: name + "-id", Names: []string{"/" + name}, State: state,
		NetworkSettings: &container.NetworkSettingsSummary{Networks: eps}}
}

// manyStopped is a host of bridge and macvlan networks with n stopped
// containers on the bridge network alone (jobs that ran, build steps),
// each of restart policy always, and a few on the macvlan networks;
// onLinks are the IDs of those whose restart policy the rule needs: the
// stopped ones on a macvlan network.
func manyStopped(n int) (d *fakeLinkUsers, onLinks []string) {
	d = &fakeLinkUsers{
		nets: []network.Summary{
			{Name: "bridge", ID: "n-bridge", Driver: "bridge"},
			{Name: "host", ID: "n-host", Driver: "host"},
			{Name: "pool-config", ID: "n-poolc", ConfigOnly: true, Options: map[string]string{"parent": "bond0.40"}, Labels: map[string]string{netspec.LabelNetwork: "pool"}},
			{Name: "pool", ID: "n-pool", Driver: "macvlan", ConfigFrom: network.ConfigReference{Network: "pool-config"}},
			{Name: "lan", ID: "n-lan", Driver: "macvlan", Options: map[string]string{"parent": "eth2"}},
		},
		ctrs: []container.Summary{
			ctrOnNets("web", container.StateRunning, "pool", "n-pool"),
			ctrOnNets("solo", container.StateExited, "pool", "n-pool"),
			ctrOnNets("both", container.StateExited, "bridge", "n-bridge", "lan", "n-lan"),
			// Its endpoint names no network ID: the rule finds it by name.
			ctrOnNets("byname", container.StateCreated, "lan", ""),
			ctrOnNets("proxy", container.StateRunning, "bridge", "n-bridge"),
		},
		policies: map[string]container.RestartPolicyMode{
			"solo-id": container.RestartPolicyAlways, "both-id": container.RestartPolicyUnlessStopped, "byname-id": container.RestartPolicyOnFailure,
		},
	}
	for i := range n {
		c := ctrOnNets(fmt.Sprintf("job%d", i), container.StateExited, "bridge", "n-bridge")
		d.ctrs = append(d.ctrs, c)
		d.policies[c.ID] = container.RestartPolicyAlways
	}
	return d, []string{"solo-id", "both-id", "byname-id"}
}

// TestReadLinksInspectsOnlyStoppedOnLinks: ReadLinks inspected every
// stopped container on any network, to learn its restart policy, at every
// `network rm`, `agent cleanup` and teardown: hundreds of calls to dockerd
// on a host that keeps its stopped jobs, though the rule needs the policy
// of those on a macvlan or ipvlan network alone. It inspects those only,
// and the rule's answer is the same.
func TestReadLinksInspectsOnlyStoppedOnLinks(t *testing.T) {
	d, onLinks := manyStopped(300)
	got, err := LinkUsers(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(slices.Sorted(slices.Values(d.inspected)), slices.Sorted(slices.Values(onLinks))) {
		t.Errorf("%d containers inspected (%q…); want the %d stopped on a macvlan network: %q", len(d.inspected), d.inspected[:min(len(d.inspected), 5)], len(onLinks), onLinks)
	}
	users := []string{"container web (network pool)", "container solo (network pool; stopped, restart policy always: dockerd starts it again)"}
	slices.Sort(users)
	want := map[string][]string{
		"bond0.40": users, netspec.ShimLinkName("pool"): users,
		"eth2":                      {"container both (network lan; stopped, restart policy unless-stopped: dockerd starts it again)"},
		netspec.ShimLinkName("lan"): {"container both (network lan; stopped, restart policy unless-stopped: dockerd starts it again)"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("LinkUsers (-want +got)\n%s", diff)
	}
}

// TestReadLinksListsOnlyContainersOnLinks: ReadLinks listed every
// container of the host (stopped ones too) at every `network rm`, agent
// cleanup and teardown, though only those on a macvlan or ipvlan network
// change what Users says: on a host keeping thousands of containers on
// its bridge networks, each read carried them all. Docker is now asked
// for the containers on those networks alone (its network filter, by name
// and ID), and for none when there are no such networks; the rule's
// answer is the same.
func TestReadLinksListsOnlyContainersOnLinks(t *testing.T) {
	d, _ := manyStopped(500)
	want, err := (&fakeLinkUsers{nets: d.nets, ctrs: d.ctrs, policies: d.policies}).usersUnfiltered(t)
	if err != nil {
		t.Fatal(err)
	}
	got, err := LinkUsers(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("LinkUsers (-unfiltered +filtered)\n%s", diff)
	}
	// web, solo, both and byname: the containers on pool and lan.
	if d.lists != 1 || d.listed != 4 {
		t.Errorf("%d listings of %d containers; want one of the 4 on macvlan networks (of %d)", d.lists, d.listed, len(d.ctrs))
	}
	bridged := &fakeLinkUsers{nets: d.nets[:2], ctrs: d.ctrs, policies: d.policies}
	if _, err := LinkUsers(context.Background(), bridged); err != nil {
		t.Fatal(err)
	}
	if bridged.lists != 0 {
		t.Errorf("%d container listings on a host with no macvlan or ipvlan network, want none", bridged.lists)
	}
}

// usersUnfiltered is what Users says of d from every container of it,
// as listed with no filter.
func (d *fakeLinkUsers) usersUnfiltered(t *testing.T) (map[string][]string, error) {
	t.Helper()
	var dl hostnet.DockerLinks
	for _, n := range d.nets {
		dl.Networks = append(dl.Networks, hostnet.DockerNetwork{Name: n.Name, ID: n.ID, Parent: n.Options["parent"],
			ConfigOnly: n.ConfigOnly, ConfigFrom: n.ConfigFrom.Network, Network: n.Labels[netspec.LabelNetwork]})
	}
	var ids []string
	for _, c := range d.ctrs {
		dc := hostnet.DockerContainer{Name: ContainerName(c.Names, c.ID), State: string(c.State), Networks: map[string]string{}}
		for name, ep := range c.NetworkSettings.Networks {
			dc.Networks[name] = ep.NetworkID
		}
		dl.Containers = append(dl.Containers, dc)
		ids = append(ids, c.ID)
	}
	for _, i := range dl.PolicyNeeded() {
		p, err := restartPolicy(context.Background(), d, ids[i], dl.Containers[i].Name)
		if err != nil {
			return nil, err
		}
		dl.Containers[i].RestartPolicy = p
	}
	return dl.Users(), nil
}

// BenchmarkReadLinks reads a host's links with 500 stopped containers on
// its bridge network and a few on macvlan networks, and reports the
// containers inspected per read (inspects/op): each is a call to dockerd.
func BenchmarkReadLinks(b *testing.B) {
	d, _ := manyStopped(500)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ReadLinks(context.Background(), d); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(d.inspected))/float64(b.N), "inspects/op")
	b.ReportMetric(float64(d.listed)/float64(b.N), "listed/op")
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
