package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
	"github.com/hashicorp/consul/api"
	"golang.org/x/sync/errgroup"
)

// Up makes the lab cfg describes, or repairs it: a second Up on a healthy
// lab changes nothing; a node whose holder, dockerd, Consul agent or
// underlay agent died gets it back. When Up fails on a lab it was creating,
// it removes everything it made. Progress goes to log, one line per step.
func Up(ctx context.Context, cfg Config, log *slog.Logger) error {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := preflight(cfg); err != nil {
		return err
	}
	p, fresh, err := prepare(cfg)
	if err != nil {
		return err
	}
	log = log.With("component", "lab", "lab", cfg.Name)
	start := time.Now()
	if err := p.up(ctx, log); err != nil {
		if fresh {
			log.Warn("lab up failed; removing what it made", "err", err)
			if derr := Down(context.WithoutCancel(ctx), cfg.Name, log); derr != nil {
				return errors.Join(err, fmt.Errorf("clean up: %w", derr))
			}
		}
		return err
	}
	log.Info("lab up", "nodes", cfg.Nodes, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// preflight checks the machine: root, and the programs the lab runs.
func preflight(cfg Config) error {
	if os.Geteuid() != 0 {
		return errors.New("lab: must run as root (it creates namespaces, links and firewall rules)")
	}
	progs := []string{"dockerd", "consul", "unshare", "nsenter", "iptables", "bash"}
	if cfg.Agents == AgentsStack {
		progs = append(progs, "docker") // docker stack deploy, as users run it
	}
	for _, prog := range progs {
		if _, err := exec.LookPath(prog); err != nil {
			return fmt.Errorf("lab: %s not found in PATH (install it with scripts/install-deps.sh): %w", prog, err)
		}
	}
	if !cfg.NoAgent {
		if st, err := os.Stat(cfg.UnderlayBin); err != nil || st.IsDir() {
			return fmt.Errorf("lab: underlay binary %q for the agent: not a file (%v)", cfg.UnderlayBin, err)
		}
	}
	return nil
}

// prepare reads the lab's record, or makes one for a new lab after
// checking that its underlay subnet is free and choosing a free management
// subnet. fresh reports a new lab.
func prepare(cfg Config) (p *plan, fresh bool, err error) {
	if err := os.MkdirAll(cfg.StateRoot, 0o755); err != nil {
		return nil, false, fmt.Errorf("make %s: %w", cfg.StateRoot, err)
	}
	unlock, err := lock(cfg.StateRoot)
	if err != nil {
		return nil, false, err
	}
	defer unlock()
	if r, err := readRecord(cfg.StateRoot, cfg.Name); err == nil {
		old := r.Config.withDefaults()
		if old.Agents == "" {
			old.Agents = AgentsProcess
		}
		if cfg.Agents == "" {
			cfg.Agents = old.Agents
		}
		// Nodes may be added (they join as workers and Consul clients);
		// nothing else changes on a running lab.
		if old.Nodes > cfg.Nodes || old.Managers != cfg.Managers || old.ConsulServers != cfg.ConsulServers || old.UnderlaySubnet != cfg.UnderlaySubnet || old.Agents != cfg.Agents {
			return nil, false, fmt.Errorf("lab %s already exists with %d nodes, %d managers, %d consul servers, underlay subnet %s and %s agents; nodes can be added, but run `underlay lab down --name %s` first to change anything else",
				cfg.Name, old.Nodes, old.Managers, old.ConsulServers, old.UnderlaySubnet, old.Agents, cfg.Name)
		}
		r.Config = cfg
		if err := writeRecord(cfg.StateRoot, r); err != nil {
			return nil, false, err
		}
		p, err := newPlan(cfg, r.Management)
		return p, false, err
	} else if !errors.Is(err, ErrNotFound) {
		return nil, false, err
	}
	if cfg.Agents == "" {
		cfg.Agents = AgentsProcess
	}
	subnet, _, _ := underlay(cfg.UnderlaySubnet)
	used, err := usedPrefixes(cfg.Name)
	if err != nil {
		return nil, false, err
	}
	others := otherLabs(cfg.StateRoot, cfg.Name)
	for _, o := range others {
		if s, _, err := underlay(o.Config.withDefaults().UnderlaySubnet); err == nil && s.Overlaps(subnet) {
			return nil, false, fmt.Errorf("--underlay-subnet %s overlaps lab %s's underlay subnet %s", subnet, o.Config.Name, s)
		}
		used = append(used, o.Management)
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
	if err := writeRecord(cfg.StateRoot, r); err != nil {
		return nil, false, err
	}
	p, err = newPlan(cfg, mgmt)
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
	holders := make([]int, len(p.nodes))
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
	steps := []struct {
		name string
		run  func(context.Context) error
	}{
		{"network", func(context.Context) error { return p.ensureNetwork() }},
		{"nodes", func(ctx context.Context) error {
			return p.eachNode(ctx, func(ctx context.Context, n *nodePlan) error {
				pid, err := p.ensureHolder(ctx, n)
				if err != nil {
					return err
				}
				holders[n.Index-1] = pid
				if err := ensureNodeLinks(pid, p.links(n), p.mgmtGW); err != nil {
					return fmt.Errorf("node %s: %w", n.Name, err)
				}
				return nil
			})
		}},
		{"dockerd", func(ctx context.Context) error {
			return p.eachNode(ctx, func(ctx context.Context, n *nodePlan) error {
				return p.ensureDockerd(ctx, n, holders[n.Index-1])
			})
		}},
		{"consul", func(ctx context.Context) error {
			if err := p.eachNode(ctx, func(ctx context.Context, n *nodePlan) error {
				return p.ensureConsul(ctx, n, holders[n.Index-1])
			}); err != nil {
				return err
			}
			return p.waitConsulMembers(ctx)
		}},
		{"swarm", func(ctx context.Context) error { return p.ensureSwarm(ctx, clients) }},
		{"images", func(ctx context.Context) error {
			if p.cfg.Agents == AgentsStack && !p.cfg.NoAgent {
				var err error
				if agentImage, err = p.agentImage(ctx); err != nil {
					return err
				}
			}
			return p.loadImages(ctx, clients, agentImage, log)
		}},
		{"agents", func(ctx context.Context) error {
			if p.cfg.NoAgent {
				return nil
			}
			if p.cfg.Agents == AgentsStack {
				return p.deployStack(ctx, clients, holders[0], agentImage)
			}
			return p.eachNode(ctx, func(ctx context.Context, n *nodePlan) error {
				started, err := p.ensureAgent(n, holders[n.Index-1])
				if started {
					log.Debug("agent started", "node", n.Name)
				}
				return err
			})
		}},
	}
	for _, s := range steps {
		t := time.Now()
		if err := s.run(ctx); err != nil {
			return fmt.Errorf("lab %s: %s: %w", p.cfg.Name, s.name, err)
		}
		log.Info("step done", "step", s.name, "took", time.Since(t).Round(time.Millisecond))
	}
	return nil
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

// ensureNetwork makes the two bridges and the firewall rules.
func (p *plan) ensureNetwork() error {
	if err := ensureBridge(p.bridgeM, netip.PrefixFrom(p.mgmtGW, p.mgmt.Bits())); err != nil {
		return err
	}
	if err := ensureBridge(p.bridgeU, netip.PrefixFrom(p.gateway, p.subnet.Bits())); err != nil {
		return err
	}
	return ensureFirewall(p.cfg.Name)
}

// waitConsulMembers waits until every node's Consul agent sees every node alive.
func (p *plan) waitConsulMembers(ctx context.Context) error {
	return p.eachNode(ctx, func(ctx context.Context, n *nodePlan) error {
		c, err := api.NewClient(&api.Config{Address: p.consulAddr(n)})
		if err != nil {
			return err
		}
		return poll(ctx, 60*time.Second, func() error {
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
func (p *plan) ensureSwarm(ctx context.Context, clients []*client.Client) error {
	first := &p.nodes[0]
	addr := func(n *nodePlan) string { return netip.AddrPortFrom(n.MgmtIP, 2377).String() }
	st, err := swarmState(ctx, clients[0])
	if err != nil {
		return fmt.Errorf("node %s: %w", first.Name, err)
	}
	if st == swarm.LocalNodeStateInactive {
		if _, err := clients[0].SwarmInit(ctx, swarm.InitRequest{ListenAddr: addr(first), AdvertiseAddr: first.MgmtIP.String()}); err != nil {
			return fmt.Errorf("node %s: swarm init: %w", first.Name, err)
		}
	}
	sw, err := clients[0].SwarmInspect(ctx)
	if err != nil {
		return fmt.Errorf("node %s: swarm inspect: %w", first.Name, err)
	}
	for i := 1; i < len(p.nodes); i++ {
		n := &p.nodes[i]
		st, err := swarmState(ctx, clients[i])
		if err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		if st != swarm.LocalNodeStateInactive {
			continue
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
	return poll(ctx, 60*time.Second, func() error {
		nodes, err := clients[0].NodeList(ctx, swarm.NodeListOptions{})
		if err != nil {
			return err
		}
		ready := 0
		for _, sn := range nodes {
			if sn.Status.State == swarm.NodeStateReady {
				ready++
			}
		}
		if ready < len(p.nodes) {
			return fmt.Errorf("%d of %d swarm nodes ready", ready, len(p.nodes))
		}
		return nil
	}, func(err error) error { return fmt.Errorf("swarm: %w", err) })
}

// swarmState returns a node's swarm state once it is settled (not pending,
// as it is for a while after a restarted dockerd rejoins).
func swarmState(ctx context.Context, c *client.Client) (swarm.LocalNodeState, error) {
	var st swarm.LocalNodeState
	err := poll(ctx, 30*time.Second, func() error {
		info, err := c.Info(ctx)
		if err != nil {
			return err
		}
		st = info.Swarm.LocalNodeState
		if st == swarm.LocalNodeStatePending {
			return errors.New("swarm state pending")
		}
		if st == swarm.LocalNodeStateError {
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
	machine, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
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
