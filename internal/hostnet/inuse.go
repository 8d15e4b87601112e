package hostnet

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/termtext"
)

// DockerLinks is what the local dockerd says of its macvlan and ipvlan
// networks and the containers on them: enough to tell which host links
// they use (Users), which the host's listing does not see (containers'
// endpoints are in their own network namespaces). `network rm` (the
// agent's teardown) and `agent cleanup` both judge by it.
type DockerLinks struct {
	Networks   []DockerNetwork
	Containers []DockerContainer
}

// DockerNetwork is a Docker network, as Users sees it.
type DockerNetwork struct {
	// Name and ID are Docker's.
	Name, ID string
	// Parent is its driver option parent: "" for a network of a driver
	// without one, or one made from a config-only network (see
	// ConfigFrom).
	Parent string
	// ConfigOnly is true for a config-only network: it has no endpoints
	// of its own; networks made from it take its Parent.
	ConfigOnly bool
	// ConfigFrom names the config-only network it is made from (--config-from;
	// underlay's NAME from NAME-config), "" for none.
	ConfigFrom string
	// Network is the underlay network it was made for (its, or its
	// config-only network's, netspec.LabelNetwork), "" for an operator's:
	// its shim is that network's.
	Network string
}

// DockerContainer is a container on Docker networks, as Users sees it.
type DockerContainer struct {
	// Name is its name, for messages.
	Name string
	// State is Docker's: running, paused, restarting, created, exited,
	// dead.
	State string
	// RestartPolicy is its restart policy's name (always, unless-stopped,
	// on-failure, no); asked only of those whose policy Users needs
	// (PolicyNeeded), "" when not asked or gone since.
	RestartPolicy string
	// Networks are the networks it is on, Docker name to network ID.
	Networks map[string]string
}

// UsesLinks reports whether c uses its networks' links: it runs (or is
// paused, or restarting), or it is stopped with a restart policy by
// which dockerd starts it again when it starts (always,
// unless-stopped), and Docker's driver would then make a parent deleted
// under it again, unmarked, no one's to remove.
func (c DockerContainer) UsesLinks() bool {
	return c.running() || c.comesBack()
}

// running reports whether c runs (or is paused, or restarting): not
// stopped.
func (c DockerContainer) running() bool {
	switch c.State {
	case "running", "paused", "restarting":
		return true
	}
	return false
}

// comesBack reports whether c is stopped with a restart policy dockerd
// starts it again by.
func (c DockerContainer) comesBack() bool {
	return !c.running() && (c.RestartPolicy == "always" || c.RestartPolicy == "unless-stopped")
}

// Users is the one rule of what a host link is in use by, for `network
// rm` (the agent leaves a VLAN parent it made, and the promiscuous mode
// it turned on) and for `agent cleanup` (it leaves the link): by link
// name, the containers and networks that use it.
//
//   - A parent (of a macvlan or ipvlan network, its own or its
//     config-only network's) is used by each container on the network
//     that runs or that dockerd starts again (see UsesLinks): deleting the
//     parent would delete their endpoints. A network on the parent that
//     no such container uses holds it too, named as the network: its
//     containers could not start on it, and dockerd would make it again,
//     unmarked, no one's; remove the network to free the parent. A
//     config-only network counts as the networks made from it do, or on
//     its own when there are none.
//   - A shim is used by the containers on its network that run or that
//     dockerd starts again (the host reaches them through it); a network
//     with none does not hold it.
//
// Each link's users are sorted, each named once.
func (d DockerLinks) Users() map[string][]string {
	nets := d.linkNets()
	users := map[string][]string{}
	used := map[string]bool{} // network IDs a container uses
	for _, c := range d.Containers {
		if !c.UsesLinks() {
			continue
		}
		for netName, id := range c.Networks {
			id, l, ok := nets.of(netName, id)
			if !ok {
				continue
			}
			used[id] = true
			back := ""
			if c.comesBack() {
				back = fmt.Sprintf("; stopped, restart policy %s: dockerd starts it again", c.RestartPolicy)
			}
			// Docker checks a container's name, but no character of a
			// network's: quoted when not graphic, as what is printed.
			who := fmt.Sprintf("container %s (network %s%s)", termtext.Cell(c.Name), termtext.Cell(netName), back)
			users[l.parent] = append(users[l.parent], who)
			users[l.shim] = append(users[l.shim], who)
		}
	}
	for id, l := range nets.onLinks {
		if !used[id] {
			users[l.parent] = append(users[l.parent], fmt.Sprintf("Docker network %s (no container uses it: remove it to free the parent)", termtext.Cell(l.name)))
		}
	}
	for link, u := range users {
		users[link] = slices.Compact(slices.Sorted(slices.Values(u)))
	}
	return users
}

// PolicyNeeded returns the indices in d.Containers of the containers
// whose RestartPolicy Users needs: the stopped ones on a network whose
// links it judges (a macvlan or ipvlan one). No other's policy changes
// what it says, and each is a call to dockerd (an inspect) to learn: a
// host keeps hundreds of stopped containers on its bridge networks.
func (d DockerLinks) PolicyNeeded() []int {
	nets := d.linkNets()
	var out []int
	for i, c := range d.Containers {
		if c.running() {
			continue
		}
		for netName, id := range c.Networks {
			if _, _, ok := nets.of(netName, id); ok {
				out = append(out, i)
				break
			}
		}
	}
	return out
}

// LinkNetworks are the names and IDs of the networks whose links Users
// judges (of d.Networks): a container on none of them changes nothing
// Users or PolicyNeeded says, so a listing of containers may ask Docker
// for those on these alone (its network filter). None when no network
// uses a link.
func (d DockerLinks) LinkNetworks() []string {
	var out []string
	for id, l := range d.linkNets().onLinks {
		out = append(out, id, l.name)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// linkNets are the networks whose links Users judges.
type linkNets struct {
	byName map[string]DockerNetwork
	// onLinks are, by network ID, the networks on a parent (their own
	// or their config-only network's), each with its links; a
	// config-only network others are made from is counted as those.
	onLinks map[string]netLinks
}

// netLinks are a network's name and the links it uses.
type netLinks struct{ name, parent, shim string }

func (d DockerLinks) linkNets() linkNets {
	nets := linkNets{byName: map[string]DockerNetwork{}, onLinks: map[string]netLinks{}}
	madeFrom := map[string]bool{} // config-only networks others are made from
	for _, n := range d.Networks {
		nets.byName[n.Name] = n
		if n.ConfigFrom != "" {
			madeFrom[n.ConfigFrom] = true
		}
	}
	for _, n := range d.Networks {
		conf := n
		if c, ok := nets.byName[n.ConfigFrom]; ok && n.ConfigFrom != "" {
			conf = c
		}
		if conf.Parent == "" || n.ConfigOnly && madeFrom[n.Name] {
			continue // no macvlan or ipvlan network, or one counted as those made from it
		}
		nets.onLinks[n.ID] = netLinks{name: n.Name, parent: conf.Parent, shim: netspec.ShimLinkName(cmp.Or(conf.Network, n.Name))}
	}
	return nets
}

// of is the network a container's endpoint on network netName, of
// network ID id, is on, by its ID, with its links; false when it has
// none. The endpoint's ID is looked up first, then its network's name.
func (nets linkNets) of(netName, id string) (string, netLinks, bool) {
	if l, ok := nets.onLinks[id]; ok {
		return id, l, true
	}
	id = nets.byName[netName].ID
	l, ok := nets.onLinks[id]
	return id, l, ok
}
