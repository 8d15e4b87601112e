package dockerhost

import (
	"context"
	"fmt"
	"slices"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

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

// LinkUsers names, by host link, the containers that use it from their
// own network namespaces, where the host's listing does not see them:
// the parent of each macvlan or ipvlan network a container is on (its
// endpoint hangs off it) and the shim underlay makes for the network
// (the host reaches the container through it). A container uses them
// while it runs (or is paused, or restarting), and also stopped with
// restart policy always or unless-stopped: dockerd starts it again when
// it starts (at boot), and Docker's driver then makes a parent deleted
// under it again, unmarked, no one's to remove. A network made from a
// config-only one (underlay's: NAME from NAME-config) takes that one's
// parent and underlay network name.
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
	ctrs, err := d.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		return nil, fmt.Errorf("list containers, to leave the links they use: %w", err)
	}
	users := map[string][]string{}
	for _, c := range ctrs {
		if c.NetworkSettings == nil || len(c.NetworkSettings.Networks) == 0 {
			continue
		}
		back, err := comesBack(ctx, d, c)
		if err != nil {
			return nil, err
		}
		if back == "-" {
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
			who := fmt.Sprintf("container %s (network %s%s)", ContainerName(c.Names, c.ID), netName, back)
			users[l.parent] = append(users[l.parent], who)
			users[l.shim] = append(users[l.shim], who)
		}
	}
	for link, u := range users {
		users[link] = slices.Compact(slices.Sorted(slices.Values(u)))
	}
	return users, nil
}

// comesBack says whether container c uses its networks' links: "" when
// it runs (or is paused, or restarting), what brings it back when it is
// stopped with a restart policy dockerd starts it again by, "-" when it
// does not (stopped otherwise, or gone since the listing).
func comesBack(ctx context.Context, d LinkUsersAPI, c container.Summary) (string, error) {
	switch c.State {
	case container.StateRunning, container.StatePaused, container.StateRestarting:
		return "", nil
	}
	j, err := d.ContainerInspect(ctx, c.ID)
	if client.IsErrNotFound(err) {
		return "-", nil
	}
	if err != nil {
		return "", fmt.Errorf("inspect stopped container %s, to tell whether dockerd starts it again: %w", ContainerName(c.Names, c.ID), err)
	}
	if j.ContainerJSONBase == nil || j.HostConfig == nil {
		return "-", nil
	}
	switch p := j.HostConfig.RestartPolicy.Name; p {
	case container.RestartPolicyAlways, container.RestartPolicyUnlessStopped:
		return fmt.Sprintf("; stopped, restart policy %s: dockerd starts it again", p), nil
	}
	return "-", nil
}
