package soak_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/lab"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/soak"
)

// inject injects in and clears it (after its hold), returning what, beyond
// soak.Check, must hold again for it to have converged (nil: nothing).
func (r *runner) inject(ctx context.Context, in soak.Injection) (func(context.Context) error, error) {
	name, node := r.c.lab.Name, nodeName(in.Node)
	var labs lab.Labs // the fault API of the labs under the default root, where testenv.StartLab makes them
	switch in.Fault {
	case soak.AgentKill:
		// Killed -9, then started again as systemd would.
		if err := labs.Kill(ctx, name, node, lab.ComponentAgent); err != nil {
			return nil, err
		}
		return nil, labs.Start(ctx, name, node, lab.ComponentAgent)
	case soak.DockerdRestart:
		if err := labs.Kill(ctx, name, node, lab.ComponentDockerd); err != nil {
			return nil, err
		}
		return nil, labs.Start(ctx, name, node, lab.ComponentDockerd)
	case soak.ConsulClientRestart:
		if err := labs.Kill(ctx, name, node, lab.ComponentConsul); err != nil {
			return nil, err
		}
		return nil, hold(ctx, in.Hold, func() error { return labs.Start(context.WithoutCancel(ctx), name, node, lab.ComponentConsul) })
	case soak.NodeFreeze:
		n, err := labs.Freeze(ctx, name, node)
		if err != nil {
			labs.Thaw(context.WithoutCancel(ctx), name, node)
			return nil, err
		}
		r.c.event("froze %d processes of %s", n, node)
		return nil, hold(ctx, in.Hold, func() error {
			_, err := labs.Thaw(context.WithoutCancel(ctx), name, node)
			return err
		})
	case soak.Partition:
		if err := labs.SetManagementLink(ctx, name, node, false); err != nil {
			return nil, err
		}
		return nil, hold(ctx, in.Hold, func() error { return labs.SetManagementLink(context.WithoutCancel(ctx), name, node, true) })
	case soak.ConsulServerRestart:
		return nil, labs.RestartConsulServers(ctx, name)
	case soak.ControlLeaderKill:
		leader, err := r.c.controlLeader(ctx, 15*time.Second)
		if err != nil {
			return nil, err
		}
		r.c.event("control leader is %s", nodeName(leader))
		if err := labs.Kill(ctx, name, nodeName(leader), lab.ComponentControl); err != nil {
			return nil, err
		}
		if err := labs.Start(ctx, name, nodeName(leader), lab.ComponentControl); err != nil {
			return nil, err
		}
		return func(ctx context.Context) error { _, err := r.c.controlLeader(ctx, 0); return err }, nil
	case soak.StrayRelease:
		return nil, r.c.strayRelease(ctx, in.Node, in.Other)
	case soak.GarbageKey:
		key := fmt.Sprintf("%s%s/%s/blocks/soak-garbage-%d", ipam.KVPrefix, r.c.pool.Network, r.c.pool.Family(), in.Seq)
		if _, err := r.c.consul.KV().Put(&api.KVPair{Key: key, Value: []byte("{not json")}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
			return nil, fmt.Errorf("write %s: %w", key, err)
		}
		r.c.event("wrote garbage at %s", key)
		return r.c.phantomAllocation(ctx, in.Seq)
	}
	return nil, fmt.Errorf("fault %s: not known to the driver", in.Fault)
}

// hold waits d, then clears the fault, even when ctx ends meanwhile.
func hold(ctx context.Context, d time.Duration, clear func() error) error {
	err := sleep(ctx, d)
	if cerr := clear(); cerr != nil {
		return cerr
	}
	return err
}

// controlLeader finds the manager whose control leads, trying for up to
// wait.
func (c *cluster) controlLeader(ctx context.Context, wait time.Duration) (int, error) {
	deadline := time.Now().Add(wait)
	hc := &http.Client{Timeout: 3 * time.Second}
	for {
		var seen []string
		for i, url := range c.controls {
			var info struct {
				Leading bool `json:"leading"`
			}
			// Reads want the lab's token, as scaling does.
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/underlay/leader", nil)
			if err != nil {
				return 0, err
			}
			req.Header.Set("Authorization", "Bearer "+c.token)
			resp, err := hc.Do(req)
			if err == nil {
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("GET /v1/underlay/leader: %s", resp.Status)
				} else {
					err = json.NewDecoder(resp.Body).Decode(&info)
				}
				resp.Body.Close()
			}
			if err == nil && info.Leading {
				return i, nil // managers are the first nodes
			}
			seen = append(seen, fmt.Sprintf("%s: leading=%v %v", url, info.Leading, err))
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("no control leads: %v", seen)
		}
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

// strayRelease asks node at's IPAM plugin (on its Docker plugin socket, as
// its dockerd would) to release an address that node owner holds: one of
// its running containers' on the cluster network, else its shim. The pool
// must record that address as before.
func (c *cluster) strayRelease(ctx context.Context, at, owner int) error {
	cs, _ := c.containers(ctx)
	var addr netip.Addr
	for _, ct := range cs {
		if ct.Node == c.hosts[owner] && ct.Network == poolNet {
			addr = ct.IP
			break
		}
	}
	before, err := ipam.Allocations(ctx, c.kv, c.pool)
	if err != nil {
		return err
	}
	if !addr.IsValid() {
		for a, al := range before {
			if c.ids[al.Node] == c.hosts[owner] && al.Kind == ipam.KindShim {
				addr = a
			}
		}
	}
	if !addr.IsValid() {
		return fmt.Errorf("%s holds no address of %s to release", c.hosts[owner], poolNet)
	}
	c.event("releasing %s (%s of %s) through %s's plugin", addr, before[addr].Kind, c.hosts[owner], c.hosts[at])
	if err := c.releaseThrough(ctx, at, addr); err != nil {
		c.event("the stray release was refused: %v", err)
	}
	after, err := ipam.Allocations(ctx, c.kv, c.pool)
	if err != nil {
		return err
	}
	if b, a := before[addr], after[addr]; b.Node != "" && (a.Node != b.Node || a.Kind != b.Kind) {
		return fmt.Errorf("stray release of %s through %s freed it: recorded %s of %s before, %q of %q after",
			addr, c.hosts[at], b.Kind, c.ids[b.Node], a.Kind, c.ids[a.Node])
	}
	return nil
}

// phantomAllocation is garbage that decodes: an address recorded for a
// node that does not exist (no swarm node), as a node removed for good
// leaves behind, with its facts stamped a year ahead, as an agent whose
// clock was wrong left them. It is allocated by an allocator of that
// identity, so it lands in a free block if there is one and never
// overwrites a real allocation. The leader must reclaim it once that node
// has looked departed for the node timeout — its facts unchanged for
// fresh, by the leader's clock, whatever their stamp — until then the
// check counts it as a leak. The facts, which nothing else removes (that
// is underlay node rm's), are deleted once it converged.
func (c *cluster) phantomAllocation(ctx context.Context, seq int) (func(context.Context) error, error) {
	// A swarm node ID's shape (25 lowercase letters and digits): facts
	// under a key no swarm node ID can be are no agent's, and the reclaim
	// leaves them out.
	ghost := fmt.Sprintf("soakghost%016d", seq)
	ahead := time.Now().AddDate(1, 0, 0)
	facts := netspec.NodeFacts{ID: ghost, Node: ghost, Holder: netspec.Holder{Instance: ghost, Host: ghost}}
	if err := netspec.NewStore(c.kv).Claim(ctx, facts, netspec.ClaimOptions{Stale: time.Minute, Poll: time.Second, Now: func() time.Time { return ahead }}); err != nil {
		return nil, fmt.Errorf("publish the facts of %s: %w", ghost, err)
	}
	addr, err := ipam.NewAllocator(c.kv, ghost, nil).Allocate(ctx, c.pool, netip.Addr{}, ipam.KindTask)
	if err != nil {
		return nil, fmt.Errorf("record an address of %s for %s: %w", c.pool.ID(), ghost, err)
	}
	c.event("recorded %s for %s, a node that does not exist, its facts stamped %s", addr, ghost, ahead.UTC().Format(time.RFC3339))
	return func(ctx context.Context) error {
		all, err := ipam.Allocations(ctx, c.kv, c.pool)
		if err != nil {
			return err
		}
		if al, ok := all[addr]; ok && al.Node == ghost {
			return fmt.Errorf("%s is still recorded for %s", addr, ghost)
		}
		return c.kv.Delete(ctx, netspec.NodesKVPrefix+ghost)
	}, nil
}

// releaseThrough sends ReleaseAddress to node i's plugin socket, in the
// node's own /run.
func (c *cluster) releaseThrough(ctx context.Context, i int, addr netip.Addr) error {
	sock := filepath.Join("/proc", strconv.Itoa(c.hold[i]), "root", ipam.DefaultSocket)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	body, _ := json.Marshal(map[string]string{"PoolID": c.pool.ID(), "Address": netip.PrefixFrom(addr, c.pool.Prefix.Bits()).String()})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://plugin/IpamDriver.ReleaseAddress", bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
	}
	return nil
}
