package dockerhost

import (
	"context"
	"fmt"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/underlay/underlay/internal/hostnet"
	"github.com/underlay/underlay/internal/netspec"
)

// LinkUsersAPI is what LinkUsers asks the local dockerd (its client
// implements it): its networks, its containers with the networks they
// are on, and a stopped container's restart policy.
type LinkUsersAPI interface {
	NetworkList(ctx context.Context, options network.ListOptions) ([]network.Summary, error)
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
	ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error)
}

// LinkUsers names, by host link, the containers and Docker networks
// that use it (see hostnet.DockerLinks.Users, the rule `network rm` and
// `agent cleanup` share), as the local dockerd says (ReadLinks).
func LinkUsers(ctx context.Context, d LinkUsersAPI) (map[string][]string, error) {
	dl, err := ReadLinks(ctx, d)
	if err != nil {
		return nil, err
	}
	return dl.Users(), nil
}

// ReadLinks is what dockerd says of its networks and the containers on
// them, for hostnet.DockerLinks.Users: every network, every container
// on one (stopped ones too), and the restart policy of each stopped one
// on a macvlan or ipvlan network (hostnet.DockerLinks.PolicyNeeded),
// which tells whether dockerd starts it again when it starts (at boot).
// The listing does not give a policy, and inspecting every stopped
// container was a call each, at every read, on a host keeping hundreds.
// Only the containers on those networks are listed (see onLinks).
func ReadLinks(ctx context.Context, d LinkUsersAPI) (hostnet.DockerLinks, error) {
	nets, err := d.NetworkList(ctx, network.ListOptions{})
	if err != nil {
		return hostnet.DockerLinks{}, fmt.Errorf("list Docker networks, to leave the links their containers use: %w", err)
	}
	var dl hostnet.DockerLinks
	for _, n := range nets {
		dl.Networks = append(dl.Networks, hostnet.DockerNetwork{Name: n.Name, ID: n.ID, Parent: n.Options["parent"],
			ConfigOnly: n.ConfigOnly, ConfigFrom: n.ConfigFrom.Network, Network: n.Labels[netspec.LabelNetwork]})
	}
	f, some := onLinks(dl)
	if !some {
		return dl, nil // no container's network uses a link
	}
	ctrs, err := d.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return hostnet.DockerLinks{}, fmt.Errorf("list containers, to leave the links they use: %w", err)
	}
	var ids []string // of dl.Containers
	for _, c := range ctrs {
		if c.NetworkSettings == nil || len(c.NetworkSettings.Networks) == 0 {
			continue
		}
		dc := hostnet.DockerContainer{Name: ContainerName(c.Names, c.ID), State: string(c.State), Networks: map[string]string{}}
		for name, ep := range c.NetworkSettings.Networks {
			id := ""
			if ep != nil {
				id = ep.NetworkID
			}
			dc.Networks[name] = id
		}
		dl.Containers = append(dl.Containers, dc)
		ids = append(ids, c.ID)
	}
	for _, i := range dl.PolicyNeeded() {
		dc := &dl.Containers[i]
		if dc.RestartPolicy, err = restartPolicy(ctx, d, ids[i], dc.Name); err != nil {
			return hostnet.DockerLinks{}, err
		}
	}
	return dl, nil
}

// maxNetworkFilter bounds the networks a listing of containers names in
// its filter: each is some 80 bytes of the request's URL, which dockerd
// takes up to 1 MiB of with the headers. Past it every container is
// listed.
const maxNetworkFilter = 512

// onLinks is the filter that lists the containers on the networks of dl
// whose links Users judges, by name and by ID (dockerd matches either:
// an endpoint's key, or a prefix of its network's ID), which are all
// Users and PolicyNeeded look at: on a host keeping thousands of
// containers on its bridge networks, a listing of all carried them at
// every read. false when there are no such networks: no container need
// be listed.
func onLinks(dl hostnet.DockerLinks) (filters.Args, bool) {
	refs := dl.LinkNetworks()
	f := filters.NewArgs()
	if len(refs) > maxNetworkFilter {
		return f, true
	}
	for _, r := range refs {
		if r != "" { // a prefix of every network's ID
			f.Add("network", r)
		}
	}
	return f, f.Len() > 0
}

// restartPolicy is stopped container id's (named name) restart policy:
// "" when it is gone since the listing.
func restartPolicy(ctx context.Context, d LinkUsersAPI, id, name string) (string, error) {
	j, err := d.ContainerInspect(ctx, id)
	if client.IsErrNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("inspect stopped container %s, to tell whether dockerd starts it again: %w", name, err)
	}
	if j.ContainerJSONBase == nil || j.HostConfig == nil {
		return "", nil
	}
	return string(j.HostConfig.RestartPolicy.Name), nil
}
