package dockerhost

import (
	"context"
	"fmt"

	"github.com/docker/docker/api/types/container"
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
// on one (stopped ones too), and each stopped one's restart policy,
// which tells whether dockerd starts it again when it starts (at boot).
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
	ctrs, err := d.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		return hostnet.DockerLinks{}, fmt.Errorf("list containers, to leave the links they use: %w", err)
	}
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
		// Not running: its restart policy tells whether dockerd starts it again.
		if !dc.UsesLinks() {
			if dc.RestartPolicy, err = restartPolicy(ctx, d, c); err != nil {
				return hostnet.DockerLinks{}, err
			}
		}
		dl.Containers = append(dl.Containers, dc)
	}
	return dl, nil
}

// restartPolicy is stopped container c's restart policy: "" when it is
// gone since the listing.
func restartPolicy(ctx context.Context, d LinkUsersAPI, c container.Summary) (string, error) {
	j, err := d.ContainerInspect(ctx, c.ID)
	if client.IsErrNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("inspect stopped container %s, to tell whether dockerd starts it again: %w", ContainerName(c.Names, c.ID), err)
	}
	if j.ContainerJSONBase == nil || j.HostConfig == nil {
		return "", nil
	}
	return string(j.HostConfig.RestartPolicy.Name), nil
}
