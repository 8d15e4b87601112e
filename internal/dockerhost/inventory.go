package dockerhost

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"

	"github.com/underlay/underlay/internal/backoff"
	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/register"
)

// Endpoints implements inventory.Source: the running containers' addresses
// on macvlan and ipvlan networks.
func (s *Source) Endpoints(ctx context.Context, node string) ([]inventory.Entry, error) {
	return s.endpoints(ctx, node, false)
}

// endpoints lists underlay endpoints of running containers, or with all of
// every container, starting ones included.
func (s *Source) endpoints(ctx context.Context, node string, all bool) ([]inventory.Entry, error) {
	list, err := s.api.ContainerList(ctx, container.ListOptions{All: all})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
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
// underlay networks, by network name. Containers that are not running yet
// count: a container being started already holds its address.
func (s *Source) HeldAddresses(ctx context.Context) (map[string]map[netip.Addr]bool, error) {
	es, err := s.endpoints(ctx, "", true)
	if err != nil {
		return nil, err
	}
	out := map[string]map[netip.Addr]bool{}
	for _, e := range es {
		a, err := netip.ParseAddr(e.IP)
		if err != nil {
			continue
		}
		if out[e.Network] == nil {
			out[e.Network] = map[netip.Addr]bool{}
		}
		out[e.Network][a] = true
	}
	return out, nil
}
