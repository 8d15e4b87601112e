package dockerhost

import (
	"context"
	"fmt"
	"slices"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"

	"github.com/underlay/underlay/internal/netspec"
)

// LinkUsersAPI is what LinkUsers asks the local dockerd (its client
// implements it): its networks, and its running containers with the
// networks they are on.
type LinkUsersAPI interface {
	NetworkList(ctx context.Context, options network.ListOptions) ([]network.Summary, error)
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
}

// LinkUsers names, by host link, the running containers that use it from
// their own network namespaces, where the host's listing does not see
// them: the parent of each macvlan or ipvlan network a container is on
// (its endpoint hangs off it) and the shim underlay makes for the
// network (the host reaches the container through it). A network made
// from a config-only one (underlay's: NAME from NAME-config) takes that
// one's parent and underlay network name.
func LinkUsers(ctx context.Context, d LinkUsersAPI) (map[string][]string, error) {
	nets, err := d.NetworkList(ctx, network.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list Docker networks, to leave the links their containers use: %w", err)
	}
	byName := map[string]network.Summary{}
	for _, n := range nets {
		byName[n.Name] = n
	}
	type links struct{ parent, shim string }
	onLinks := map[string]links{} // by network ID
	for _, n := range nets {
		conf := n
		if c, ok := byName[n.ConfigFrom.Network]; ok && n.ConfigFrom.Network != "" {
			conf = c
		}
		parent := conf.Options["parent"]
		if parent == "" {
			continue // no macvlan or ipvlan network
		}
		name := n.Name
		if l := conf.Labels[netspec.LabelNetwork]; l != "" {
			name = l
		}
		onLinks[n.ID] = links{parent: parent, shim: netspec.ShimLinkName(name)}
	}
	ctrs, err := d.ContainerList(ctx, container.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list running containers, to leave the links they use: %w", err)
	}
	users := map[string][]string{}
	for _, c := range ctrs {
		if c.NetworkSettings == nil {
			continue
		}
		for netName, ep := range c.NetworkSettings.Networks {
			l, ok := onLinks[ep.NetworkID]
			if !ok {
				if n, named := byName[netName]; named {
					l, ok = onLinks[n.ID]
				}
			}
			if !ok {
				continue
			}
			who := fmt.Sprintf("container %s (network %s)", ContainerName(c.Names, c.ID), netName)
			users[l.parent] = append(users[l.parent], who)
			users[l.shim] = append(users[l.shim], who)
		}
	}
	for link, u := range users {
		users[link] = slices.Compact(slices.Sorted(slices.Values(u)))
	}
	return users, nil
}
