package lab

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
	"github.com/hashicorp/consul/api"
	"golang.org/x/sync/errgroup"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/dockerhost"
)

// Up makes the lab cfg describes, or repairs it: a second Up on a healthy
// lab changes nothing; a node whose holder or VM, dockerd, Consul agent or
// underlay agent died gets it back. When Up fails on a lab it was
// creating, it removes everything it made. Progress goes to log, one line
// per step.
func (l Labs) Up(ctx context.Context, cfg Config, log *slog.Logger) error {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := preflight(cfg); err != nil {
		return err
	}
	p, fresh, err := prepare(l.root(), cfg, func() ([]netip.Prefix, error) { return usedPrefixes(cfg.Name) })
	if err != nil {
		return err
	}
	log = log.With("component", "lab", "lab", cfg.Name)
	start := time.Now()
	if err := p.up(ctx, log); err != nil {
		if fresh {
			log.Warn("lab up failed; removing what it made", "err", err)
			if derr := l.Down(context.WithoutCancel(ctx), cfg.Name, log); derr != nil {
				return errors.Join(err, fmt.Errorf("clean up: %w", derr))
			}
		}
		return err
	}
	log.Info("lab up", "nodes", cfg.Nodes, "kind", p.prov.Kind(), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// preflight checks the machine: root, the underlay binary, and what the
// kind of nodes needs.
func preflight(cfg Config) error {
	if os.Geteuid() != 0 {
		return errors.New("lab: must run as root (it creates namespaces, links and firewall rules)")
	}
	if cfg.Agents == AgentsStack && !cfg.NoAgent {
		if err := needPrograms("docker"); err != nil { // docker stack deploy, as users run it
			return err
		}
	}
	if !cfg.NoAgent || cfg.VM {
		if st, err := os.Stat(cfg.UnderlayBin); err != nil || st.IsDir() {
			return fmt.Errorf("lab: underlay binary %q for the agent: not a file (%v)", cfg.UnderlayBin, err)
		}
	}
	return providerFor(cfg).Preflight(cfg)
}

// prepare reads the lab's record, or makes one for a new lab after
// checking that its underlay subnet is free and choosing a free management
// subnet; routed lists the machine's routed prefixes but the lab's own.
// fresh reports a new lab.
func prepare(root string, cfg Config, routed func() ([]netip.Prefix, error)) (p *plan, fresh bool, err error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, false, fmt.Errorf("make %s: %w", root, err)
	}
	unlock, err := lock(root)
	if err != nil {
		return nil, false, err
	}
	defer unlock()
	if r, err := readRecord(root, cfg.Name); err == nil {
		old := r.Config.withDefaults()
		if old.Agents == "" {
			old.Agents = AgentsProcess
		}
		if cfg.Agents == "" {
			cfg.Agents = old.Agents
		}
		// Nodes may be added (they join as workers and Consul clients);
		// nothing else changes on a running lab.
		if old.Nodes > cfg.Nodes || old.Managers != cfg.Managers || old.ConsulServers != cfg.ConsulServers || old.UnderlaySubnet != cfg.UnderlaySubnet || old.VM != cfg.VM || old.Systemd != cfg.Systemd || old.Agents != cfg.Agents {
			return nil, false, fmt.Errorf("lab %s already exists with %d %s nodes, %d managers, %d consul servers, underlay subnet %s and %s agents; nodes can be added, but run `underlay lab down --name %s` first to change anything else",
				cfg.Name, old.Nodes, providerFor(old).Kind(), old.Managers, old.ConsulServers, old.UnderlaySubnet, old.Agents, cfg.Name)
		}
		// The record outlives a reboot, after which the machine may route
		// the lab's subnets elsewhere (a VPN, a LAN it joined): the lab's
		// bridges would then take the machine's traffic to those hosts.
		used, err := routed()
		if err != nil {
			return nil, false, err
		}
		subnet, _, _ := underlay(cfg.UnderlaySubnet)
		for _, u := range used {
			for _, s := range []struct {
				what   string
				prefix netip.Prefix
			}{{"underlay subnet", subnet}, {"management subnet", r.Management}} {
				if u.Bits() > 0 && u.Overlaps(s.prefix) {
					return nil, false, fmt.Errorf("lab %s's %s %s overlaps %s, now routed on this machine (not by the lab): take the lab down with `underlay lab down --name %s`, or remove that route",
						cfg.Name, s.what, s.prefix, u, cfg.Name)
				}
			}
		}
		r.Config = cfg
		if err := writeRecord(root, r); err != nil {
			return nil, false, err
		}
		p, err := newPlan(root, cfg, r.Management)
		return p, false, err
	} else if !errors.Is(err, ErrNotFound) {
		return nil, false, err
	}
	if cfg.Agents == "" {
		cfg.Agents = AgentsProcess
	}
	if others := otherRoots(root, cfg.Name); len(others) > 0 {
		return nil, false, fmt.Errorf("lab %s runs from state root %s: labs of one name share links and firewall rules; pick another --name", cfg.Name, strings.Join(others, ", "))
	}
	subnet, _, _ := underlay(cfg.UnderlaySubnet)
	used, err := routed()
	if err != nil {
		return nil, false, err
	}
	others := otherLabs(root, cfg.Name)
	for _, o := range others {
		s, _, err := underlay(o.Config.withDefaults().UnderlaySubnet)
		if err == nil && s.Overlaps(subnet) {
			// The other lab may be long dead (its record outlives a reboot or a
			// killed run) and keeps its subnet until it is taken down.
			return nil, false, fmt.Errorf("--underlay-subnet %s overlaps lab %s's underlay subnet %s: pick another subnet, or remove that lab with `underlay lab down --name %s`", subnet, o.Config.Name, s, o.Config.Name)
		}
		used = append(used, o.Management)
		if err == nil {
			// Taken even when no route shows it (that lab's bridges are
			// gone until its next up).
			used = append(used, s)
		}
	}
	for _, u := range used {
		if u.Overlaps(subnet) && u.Bits() > 0 {
			return nil, false, fmt.Errorf("--underlay-subnet %s overlaps %s, already routed on this machine", subnet, u)
		}
	}
	var mgmt netip.Prefix
	for _, c := range mgmtCandidates() {
		if !c.Overlaps(subnet) && !slices.ContainsFunc(used, func(u netip.Prefix) bool { return u.Bits() > 0 && u.Overlaps(c) }) {
			mgmt = c
			break
		}
	}
	if !mgmt.IsValid() {
		return nil, false, errors.New("no free management subnet in 172.31.0.0/16")
	}
	r := &record{Config: cfg, Management: mgmt}
	if err := writeRecord(root, r); err != nil {
		return nil, false, err
	}
	p, err = newPlan(root, cfg, mgmt)
	return p, true, err
}

// lock serializes the choice of subnets between concurrent Ups.
func lock(root string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(root, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", root, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", root, err)
	}
	return func() { f.Close() }, nil
}

// up runs the steps in order; each is idempotent.
func (p *plan) up(ctx context.Context, log *slog.Logger) error {
	clients := make([]*client.Client, len(p.nodes))
	var agentImage string // the stack's image (AgentsStack)
	for i := range p.nodes {
		c, err := p.dockerClient(&p.nodes[i])
		if err != nil {
			return err
		}
		defer c.Close()
		clients[i] = c
	}
	// Steps that do not depend on each other run at once: Consul beside
	// dockerd, the images beside the swarm (it matters on VM nodes, where
	// each takes seconds).
	timed := func(name string, run func(context.Context) error) func(context.Context) error {
		return func(ctx context.Context) error {
			t := time.Now()
			if err := run(ctx); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			log.Info("step done", "step", name, "took", time.Since(t).Round(time.Millisecond))
			return nil
		}
	}
	steps := []func(context.Context) error{
		timed("network", func(ctx context.Context) error { return p.prov.EnsureNetwork(ctx, p, log) }),
		timed("nodes", func(ctx context.Context) error {
			return p.eachNode(ctx, func(ctx context.Context, n *nodePlan) error { return p.prov.EnsureNode(ctx, p, n) })
		}),
		parallel(
			timed("dockerd", func(ctx context.Context) error { return p.eachNode(ctx, p.ensureDockerd) }),
			timed("consul", func(ctx context.Context) error {
				if err := p.eachNode(ctx, p.ensureConsul); err != nil {
					return err
				}
				return p.waitConsulMembers(ctx)
			})),
		parallel(
			timed("swarm", func(ctx context.Context) error { return p.ensureSwarm(ctx, clients) }),
			timed("images", func(ctx context.Context) error {
				if p.cfg.Agents == AgentsStack && !p.cfg.NoAgent {
					var err error
					if agentImage, err = p.agentImage(ctx); err != nil {
						return err
					}
				}
				return p.loadImages(ctx, clients, agentImage, log)
			})),
		timed("agents", func(ctx context.Context) error {
			if p.cfg.NoAgent {
				return nil
			}
			if p.cfg.Agents == AgentsStack {
				return p.deployStack(ctx, clients, agentImage)
			}
			return p.eachNode(ctx, func(ctx context.Context, n *nodePlan) error {
				started, err := p.ensureAgent(ctx, n)
				if started {
					log.Debug("agent started", "node", n.Name)
				}
				return err
			})
		}),
	}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return fmt.Errorf("lab %s: %w", p.cfg.Name, err)
		}
	}
	return nil
}

// parallel runs steps at once; the first error cancels the others.
func parallel(steps ...func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		g, ctx := errgroup.WithContext(ctx)
		for _, s := range steps {
			g.Go(func() error { return s(ctx) })
		}
		return g.Wait()
	}
}

// eachNode runs f for every node at once.
func (p *plan) eachNode(ctx context.Context, f func(context.Context, *nodePlan) error) error {
	g, ctx := errgroup.WithContext(ctx)
	for i := range p.nodes {
		n := &p.nodes[i]
		g.Go(func() error { return f(ctx, n) })
	}
	return g.Wait()
}

// waitConsulMembers waits until every node's Consul agent sees every node alive.
func (p *plan) waitConsulMembers(ctx context.Context) error {
	return p.eachNode(ctx, func(ctx context.Context, n *nodePlan) error {
		c, err := consul.NewClient(consul.Options{Addr: p.consulAddr(n)})
		if err != nil {
			return err
		}
		return poll(ctx, p.wait(n, 60*time.Second), func() error {
			alive, err := aliveMembers(c)
			if err == nil && alive != len(p.nodes) {
				err = fmt.Errorf("%d of %d members alive", alive, len(p.nodes))
			}
			return err
		}, func(err error) error { return fmt.Errorf("node %s: consul cluster: %w", n.Name, err) })
	})
}

// aliveMembers counts the LAN members an agent sees alive.
func aliveMembers(c *api.Client) (int, error) {
	ms, err := c.Agent().Members(false)
	if err != nil {
		return 0, err
	}
	alive := 0
	for _, m := range ms {
		if m.Status == 1 { // serf.StatusAlive
			alive++
		}
	}
	return alive, nil
}

// ensureSwarm initializes the swarm on node1 and joins every other node
// that is not in it, then waits until the managers see every node ready.
// A node in another swarm (node1's VM rebooted, with a fresh swarm) leaves
// it first; the entries a rebooted VM left (down, its host name also
// ready under a new ID) are removed.
func (p *plan) ensureSwarm(ctx context.Context, clients []*client.Client) error {
	first := &p.nodes[0]
	addr := func(n *nodePlan) string { return netip.AddrPortFrom(n.MgmtIP, 2377).String() }
	info, err := swarmInfo(ctx, clients[0])
	if err != nil {
		return fmt.Errorf("node %s: %w", first.Name, err)
	}
	if info.LocalNodeState == swarm.LocalNodeStateInactive {
		if _, err := clients[0].SwarmInit(ctx, swarm.InitRequest{ListenAddr: addr(first), AdvertiseAddr: first.MgmtIP.String()}); err != nil {
			return fmt.Errorf("node %s: swarm init: %w", first.Name, err)
		}
		if info, err = swarmInfo(ctx, clients[0]); err != nil {
			return fmt.Errorf("node %s: %w", first.Name, err)
		}
	}
	sw, err := clients[0].SwarmInspect(ctx)
	if err != nil {
		return fmt.Errorf("node %s: swarm inspect: %w", first.Name, err)
	}
	for i := 1; i < len(p.nodes); i++ {
		n := &p.nodes[i]
		ni, err := swarmInfo(ctx, clients[i])
		if err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		if ni.LocalNodeState != swarm.LocalNodeStateInactive {
			if knowsManager(ni, info.NodeID) {
				continue
			}
			if err := clients[i].SwarmLeave(ctx, true); err != nil {
				return fmt.Errorf("node %s: leave a swarm node1 is not in: %w", n.Name, err)
			}
		}
		token := sw.JoinTokens.Worker
		if n.Role == RoleManager {
			token = sw.JoinTokens.Manager
		}
		if err := clients[i].SwarmJoin(ctx, swarm.JoinRequest{
			ListenAddr: addr(n), AdvertiseAddr: n.MgmtIP.String(), RemoteAddrs: []string{addr(first)}, JoinToken: token,
		}); err != nil {
			return fmt.Errorf("node %s: swarm join: %w", n.Name, err)
		}
	}
	return poll(ctx, p.wait(first, 60*time.Second), func() error {
		nodes, err := clients[0].NodeList(ctx, swarm.NodeListOptions{})
		if err != nil {
			return err
		}
		ready := map[string]bool{}
		for _, sn := range nodes {
			if sn.Status.State == swarm.NodeStateReady {
				ready[sn.Description.Hostname] = true
			}
		}
		for _, sn := range nodes {
			if sn.Status.State == swarm.NodeStateDown && ready[sn.Description.Hostname] {
				clients[0].NodeRemove(ctx, sn.ID, swarm.NodeRemoveOptions{Force: true})
			}
		}
		if len(ready) < len(p.nodes) {
			// What each node missing says of itself, for the error.
			local := map[string]string{}
			for i := range p.nodes {
				if n := &p.nodes[i]; !ready[n.Host] {
					ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
					info, err := clients[i].Info(ictx)
					cancel()
					if err != nil {
						local[n.Host] = err.Error()
					} else {
						local[n.Host] = cmp.Or(string(info.Swarm.LocalNodeState)+" "+info.Swarm.Error, "?")
					}
				}
			}
			return fmt.Errorf("%d of %d swarm nodes ready%s", len(ready), len(p.nodes), notReady(p.nodes, nodes, ready, local))
		}
		return nil
	}, func(err error) error { return fmt.Errorf("swarm: %w", err) })
}

// notReady names the lab's nodes not ready in the swarm's node list, with
// the state and message the managers give each and what the node says of
// itself, by host name in local (": node3 down (heartbeat failure), itself
// active"), so that a lab that does not come up says which node holds it.
func notReady(plan []nodePlan, list []swarm.Node, ready map[string]bool, local map[string]string) string {
	var out []string
	for _, n := range plan {
		if ready[n.Host] {
			continue
		}
		state := "not in the swarm"
		for _, sn := range list {
			if sn.Description.Hostname != n.Host {
				continue
			}
			state = string(sn.Status.State)
			if sn.Status.Message != "" {
				state += " (" + sn.Status.Message + ")"
			}
		}
		if l, ok := local[n.Host]; ok {
			state += ", itself " + strings.TrimSpace(l)
		}
		out = append(out, n.Name+" "+state)
	}
	if len(out) == 0 {
		return ""
	}
	return ": " + strings.Join(out, ", ")
}

// knowsManager reports whether a node's swarm has manager id among its managers.
func knowsManager(info swarm.Info, id string) bool {
	for _, m := range info.RemoteManagers {
		if m.NodeID == id {
			return true
		}
	}
	return info.NodeID == id
}

// swarmInfo returns a node's swarm state once it is settled (not pending,
// as it is for a while after a restarted dockerd rejoins).
func swarmInfo(ctx context.Context, c *client.Client) (swarm.Info, error) {
	var st swarm.Info
	err := poll(ctx, 30*time.Second, func() error {
		info, err := c.Info(ctx)
		if err != nil {
			return err
		}
		st = info.Swarm
		if st.LocalNodeState == swarm.LocalNodeStatePending {
			return errors.New("swarm state pending")
		}
		if st.LocalNodeState == swarm.LocalNodeStateError {
			return fmt.Errorf("swarm error: %s", info.Swarm.Error)
		}
		return nil
	}, func(err error) error { return err })
	return st, err
}

// loadImages copies each image, and the stack's agent image when there is
// one, from the machine's dockerd into the nodes that lack it (or hold
// another version). No registry is used.
func (p *plan) loadImages(ctx context.Context, clients []*client.Client, agentImage string, log *slog.Logger) error {
	images := p.cfg.Images
	if agentImage != "" {
		images = append(slices.Clip(images), agentImage)
	}
	if len(images) == 0 {
		return nil
	}
	machine, err := dockerhost.NewClient()
	if err != nil {
		return fmt.Errorf("machine's docker client: %w", err)
	}
	defer machine.Close()
	for _, ref := range images {
		src, err := machine.ImageInspect(ctx, ref)
		if err != nil && ref == agentImage {
			return fmt.Errorf("image %s %w", ref, errNoAgentImage)
		}
		if err != nil {
			log.Warn("image not on the machine's dockerd; not loaded", "image", ref, "err", err)
			continue
		}
		var need []int
		for i, c := range clients {
			if have, err := c.ImageInspect(ctx, ref); err != nil || have.ID != src.ID {
				need = append(need, i)
			}
		}
		if len(need) == 0 {
			continue
		}
		if err := p.copyImage(ctx, machine, ref, clients, need); err != nil {
			return err
		}
	}
	return nil
}

func (p *plan) copyImage(ctx context.Context, machine *client.Client, ref string, clients []*client.Client, need []int) error {
	tar := filepath.Join(p.dir(), "image.tar")
	defer os.Remove(tar)
	if err := saveImage(ctx, machine, ref, tar); err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	for _, i := range need {
		g.Go(func() error {
			f, err := os.Open(tar)
			if err != nil {
				return err
			}
			defer f.Close()
			resp, err := clients[i].ImageLoad(ctx, f, client.ImageLoadWithQuiet(true))
			if err != nil {
				return fmt.Errorf("node %s: load %s: %w", p.nodes[i].Name, ref, err)
			}
			defer resp.Body.Close()
			io.Copy(io.Discard, resp.Body)
			if _, err := clients[i].ImageInspect(ctx, ref); err != nil {
				return fmt.Errorf("node %s: %s after load: %w", p.nodes[i].Name, ref, err)
			}
			return nil
		})
	}
	return g.Wait()
}

func saveImage(ctx context.Context, c *client.Client, ref, path string) error {
	rc, err := c.ImageSave(ctx, []string{ref})
	if err != nil {
		return fmt.Errorf("save %s: %w", ref, err)
	}
	defer rc.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, rc); err != nil {
		f.Close()
		return fmt.Errorf("save %s: %w", ref, err)
	}
	return f.Close()
}
