package dockerhost

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/underlay/underlay/internal/backoff"
	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/register"
)

// Endpoints implements inventory.Source: the running containers' addresses
// on macvlan and ipvlan networks.
func (s *Source) Endpoints(ctx context.Context, node string) ([]inventory.Entry, error) {
	list, err := s.api.ContainerList(ctx, container.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	return s.endpoints(ctx, list, node)
}

// endpoints lists the underlay endpoints of the listed containers that
// show an address.
func (s *Source) endpoints(ctx context.Context, list []container.Summary, node string) ([]inventory.Entry, error) {
	var out []inventory.Entry
	for _, c := range list {
		// An exited container may still show the address it had when a
		// crashed dockerd lost track of it: it holds nothing.
		if c.NetworkSettings == nil || c.State == "exited" || c.State == "dead" || c.State == "removing" {
			continue
		}
		for name, ep := range c.NetworkSettings.Networks {
			if ep == nil || ep.IPAddress == "" && ep.GlobalIPv6Address == "" {
				continue
			}
			driver, err := s.driver(ctx, ep.NetworkID)
			if err != nil {
				return nil, err
			}
			if driver != "macvlan" && driver != "ipvlan" {
				continue
			}
			e := inventory.Entry{
				MAC: ep.MacAddress, Node: node, Network: name, ID: c.ID,
				Container: strings.TrimPrefix(firstOr(c.Names, c.ID[:12]), "/"),
				Service:   c.Labels[labelSwarmService],
				Task:      c.Labels["com.docker.swarm.task.id"],
				Slot:      register.SwarmSlot(c.Labels["com.docker.swarm.task.name"]),
				Since:     time.Unix(c.Created, 0).UTC(),
			}
			for _, ip := range []string{ep.IPAddress, ep.GlobalIPv6Address} {
				if ip != "" {
					e.IP = ip
					out = append(out, e)
				}
			}
		}
	}
	return out, nil
}

// Changes implements inventory.Source.
func (s *Source) Changes(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	go func() {
		delays := backoff.Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
		for ctx.Err() == nil {
			f := filters.NewArgs(filters.Arg("type", string(events.ContainerEventType)), filters.Arg("type", string(events.NetworkEventType)))
			msgs, errs := s.api.Events(ctx, events.ListOptions{Filters: f})
			signal(out) // (re)subscribed: anything may have changed meanwhile
		stream:
			for {
				select {
				case <-ctx.Done():
					return
				case <-errs:
					break stream
				case m := <-msgs:
					switch m.Action {
					case "start", "die", "destroy", "connect", "disconnect", "rename":
						signal(out)
						delays.Reset()
					}
				}
			}
			backoff.Sleep(ctx, delays.Next())
		}
	}()
	return out
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func firstOr(s []string, def string) string {
	if len(s) > 0 {
		return s[0]
	}
	return def
}

// HeldAddresses implements ipam.Held: the addresses containers hold on
// underlay networks (containers that are not running yet count once
// Docker shows their address), and the starts that may be under way, by
// network name, from one listing.
func (s *Source) HeldAddresses(ctx context.Context) (ipam.Local, error) {
	list, err := s.api.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		return ipam.Local{}, fmt.Errorf("list containers: %w", err)
	}
	es, err := s.endpoints(ctx, list, "")
	if err != nil {
		return ipam.Local{}, err
	}
	out := ipam.Local{Held: map[string]map[netip.Addr]bool{}, Starts: map[string][]ipam.Start{}}
	for _, e := range es {
		a, err := netip.ParseAddr(e.IP)
		if err != nil {
			continue
		}
		if out.Held[e.Network] == nil {
			out.Held[e.Network] = map[netip.Addr]bool{}
		}
		out.Held[e.Network][a] = true
	}
	for _, st := range s.starts(ctx, list) {
		for _, name := range st.networks {
			out.Starts[name] = append(out.Starts[name], st.Start)
		}
	}
	return out, nil
}

// inspectWait is how long a start's inspect may take: dockerd answers it
// only once the container's start (which holds the container) is done.
const inspectWait = 2 * time.Second

type listedStart struct {
	ipam.Start
	networks []string
}

// starts inspects, at once, the listed containers that are created or
// restarting on a network of their own, and returns those that may be
// starting (see startOf).
func (s *Source) starts(ctx context.Context, list []container.Summary) []listedStart {
	var wg sync.WaitGroup
	found := make([]*listedStart, len(list))
	for i, c := range list {
		networks := startNetworks(c)
		if networks == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ictx, cancel := context.WithTimeout(ctx, inspectWait)
			defer cancel()
			j, err := s.api.ContainerInspect(ictx, c.ID)
			if client.IsErrNotFound(err) {
				return
			}
			if st, ok := startOf(c, j, err); ok {
				found[i] = &listedStart{Start: st, networks: networks}
			}
		}()
	}
	wg.Wait()
	var out []listedStart
	for _, st := range found {
		if st != nil {
			out = append(out, *st)
		}
	}
	return out
}

// startNetworks are the networks of a listed container that may be
// starting on them: created or restarting, on networks that are not the
// engine's own (bridge, host, none); nil for others.
func startNetworks(c container.Summary) []string {
	if c.State != "created" && c.State != "restarting" || c.NetworkSettings == nil {
		return nil
	}
	var out []string
	for name := range c.NetworkSettings.Networks {
		if name != "bridge" && name != "host" && name != "none" {
			out = append(out, name)
		}
	}
	return out
}

// startOf judges a listed container that may be starting from its inspect
// (err: dockerd did not answer it in time). A created container may be
// starting unless its start failed (an error recorded: the start released
// its address); one dockerd holds is; a restarting one is (dockerd starts
// it again after a delay), from its last exit on.
func startOf(c container.Summary, j container.InspectResponse, err error) (ipam.Start, bool) {
	created := time.Unix(c.Created, 0)
	if err != nil {
		return ipam.Start{Since: created, Busy: true}, true
	}
	if j.ContainerJSONBase == nil || j.State == nil {
		return ipam.Start{Since: created}, true
	}
	if c.State == "restarting" {
		if t, err := time.Parse(time.RFC3339Nano, j.State.FinishedAt); err == nil && t.After(created) {
			return ipam.Start{Since: t}, true
		}
		return ipam.Start{Since: created}, true
	}
	if !j.State.Running && (j.State.Error != "" || j.State.ExitCode != 0) {
		return ipam.Start{}, false
	}
	return ipam.Start{Since: created}, true
}
