package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/underlay/underlay/internal/backoff"
	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/decommission"
	"github.com/underlay/underlay/internal/dockerhost"
	"github.com/underlay/underlay/internal/doctor"
	"github.com/underlay/underlay/internal/hostnet"
	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/netagent"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/register"
	"github.com/underlay/underlay/internal/taskmetrics"
	"github.com/underlay/underlay/internal/unregistered"
)

// node runs the parts of the agent that act for the node in the cluster —
// networks, IPAM, inventory, doctor reports, task metrics — under its
// identity: its swarm node ID (the name is for display only).
type node struct {
	cfg  Config
	c    Clients
	src  *dockerhost.Source
	name string
	reg  *prometheus.Registry
	log  *slog.Logger
	// gate is the IPAM plugin's, opened once the identity is claimed and
	// the node's containers listed (nil: no IPAM).
	gate *ipam.Gate
	// registrar is the registration agent, whose left-out Swarm tasks the
	// node publishes.
	registrar leftOutSource
}

// leftOutSource is what publishing the unregistered tasks needs of the
// registration agent (register.Agent).
type leftOutSource interface {
	LeftOut() []register.LeftOut
	LeftOutChanged() <-chan struct{}
}

// run first claims the node's identity, and fails if another live agent
// holds it or takes it over.
func (n *node) run(ctx context.Context) error {
	cfg, log := n.cfg, n.log
	alog := agentLog(log)
	n.gate.Waiting(errors.New("waiting for this node's swarm node ID from Docker"))
	id, recorded, err := netagent.ResolveID(ctx, func(ctx context.Context) (string, error) {
		info, err := n.c.Docker.Info(ctx)
		return info.Swarm.NodeID, err
	}, cfg.StateDir, netagent.AskDockerFor, alog)
	if err != nil {
		return stopped(ctx, err)
	}
	ckv := consul.NewKV(n.c.Consul)
	kv := nodeKV(ckv, id)
	store := netspec.NewStore(kv)
	facts := &netagent.Facts{Store: store, ID: id, Node: n.name, Holder: netagent.Self(), Log: alog}
	if err := claim(ctx, facts, alog, n.gate.Waiting, claimWait); err != nil {
		if errors.Is(err, netspec.ErrNodeRemoved) {
			return stopped(ctx, n.awaitNewID(ctx, id, err))
		}
		return stopped(ctx, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return facts.Run(gctx, netagent.Heartbeat) })
	g.Go(func() error { return n.watchSwarmNodeID(gctx, id, netagent.Heartbeat, recorded) })
	nets := dockerhost.NewNetworks(n.c.Docker)
	host := n.linkHost(alog)
	rec := &netagent.Reconciler{
		ID: id, Node: n.name, Facts: facts, Store: store, Docker: nets, Swarm: nets,
		Host: host, RemoveShim: host.RemoveShim, RemoveOldShim: hostnet.RemoveOldShim, RemoveParent: host.RemoveParent, Marked: host.Marked,
		ReleasePromisc: host.ReleasePromisc,
		Log:            log, Metrics: netagent.NewMetrics(n.reg),
	}
	if cfg.IPAM.Enabled {
		rec.IPAM = n.runIPAM(gctx, g, kv, store, nets, id)
	}
	links, err := hostnet.Watch(gctx, alog)
	if err != nil {
		alog.Warn("link changes are not watched; drift is repaired at each --network-sync", "err", err)
	}
	g.Go(func() error { rec.Run(gctx, ckv.Watch(gctx, netspec.KVPrefix), links, cfg.NetworkSync); return nil })
	g.Go(func() error {
		inventory.Run(gctx, n.src, kv, n.name, id, cfg.NetworkSync, log, inventory.NewMetrics(n.reg))
		return nil
	})
	g.Go(func() error { n.publishUnregistered(gctx, kv, id); return nil })
	if cfg.DoctorInterval > 0 {
		g.Go(func() error { n.runDoctorReports(gctx, id, kv, store); return nil })
	}
	if cfg.TaskMetrics > 0 {
		g.Go(func() error {
			taskmetrics.Run(gctx, n.src, kv, n.name, id, cfg.TaskMetrics, log, taskmetrics.NewMetrics(n.reg), n.retire(kv, taskmetrics.KVPrefix+n.name, taskmetrics.IDPrefix, id))
			return nil
		})
	}
	return g.Wait()
}

// Timing of the report of unregistered tasks: the first is published
// unregisteredInitial after the agent starts, once its first resync has
// read the node's containers; a change unregisteredSettle after it, so
// that a burst of starts is one write; a failed write is tried again
// after unregisteredRetry, doubled with each failure in a row up to
// unregisteredMaxWait.
const (
	unregisteredInitial = 10 * time.Second
	unregisteredSettle  = time.Second
	unregisteredRetry   = 5 * time.Second
	unregisteredMaxWait = 2 * time.Minute
)

// publishUnregistered publishes, under the node's swarm node ID, the Swarm
// tasks the registration agent leaves out of Consul, with why, whenever
// they change (unregistered.Publisher): the dashboard shows them as not
// registered on purpose, not as mismatches.
func (n *node) publishUnregistered(ctx context.Context, kv unregistered.KV, id string) {
	p := &unregistered.Publisher{
		KV: kv, Node: n.name, NodeID: id, Changed: n.registrar.LeftOutChanged(),
		List:    func() []unregistered.Task { return unregisteredTasks(n.registrar.LeftOut()) },
		Initial: unregisteredInitial, Settle: unregisteredSettle, Retry: unregisteredRetry, MaxRetry: unregisteredMaxWait, Log: n.log,
	}
	p.Run(ctx)
}

// unregisteredTasks is the agent's left-out containers as the report's
// tasks.
func unregisteredTasks(ls []register.LeftOut) []unregistered.Task {
	out := make([]unregistered.Task, 0, len(ls))
	for _, l := range ls {
		out = append(out, unregistered.Task{TaskID: l.TaskID, ContainerID: l.ContainerID, Reason: l.Reason, NodeID: l.NodeID})
	}
	return out
}

// linkHost is the host side of the networks, marking the links it makes
// with the owner recorded in the state directory (netagent.LinkOwner),
// not the swarm node ID, which changes when the node joins the swarm
// again: another cluster's agent in this network namespace leaves them
// alone. Without one, marks name no owner, as before. Without a state
// directory nothing is recorded: no parent made again unmarked is taken.
func (n *node) linkHost(log *slog.Logger) hostnet.Host {
	owner, err := netagent.LinkOwner(n.cfg.StateDir)
	if err != nil {
		log.Warn("the host links the agent makes name no owner: another cluster's agent in this network namespace would take them for its own", "err", err)
	}
	h := hostnet.Host{Owner: owner, Log: log}
	if n.cfg.StateDir == "" {
		return h
	}
	// The VLAN parents it makes are recorded, so that one dockerd makes
	// again at boot, unmarked, before the agent runs is known for its own.
	h.Parents = hostnet.NewParentFile(n.cfg.StateDir)
	// The parents it makes promiscuous are recorded, to be made not
	// promiscuous again when no network uses them.
	if rec, err := hostnet.NewPromiscFiles(n.cfg.StateDir); err != nil {
		log.Warn("the parents the agent makes promiscuous are not recorded, and stay promiscuous when their networks are removed", "err", err)
	} else {
		h.Promisc = rec
	}
	return h
}

// claimWait bounds one claim of the node's identity: a Consul agent that
// accepted a call of it and never answered held the agent's start for
// good. A claim waits legitimately while the identity's holder may be
// alive, until its facts are netagent.StaleAfter old (30 s), looking every
// second, and makes a few calls besides: twice that leaves room for both.
// One cut short (node rm's hold renewed all along, or a claim made behind
// a slow Consul) is warned of and tried again, which loses nothing.
const claimWait = 2 * netagent.StaleAfter

// claim claims the node's identity, retrying with backoff until it is
// claimed, another live agent holds it, or ctx ends, each claim (and the
// read before) given up after wait. note is told of each failure.
func claim(ctx context.Context, facts *netagent.Facts, log *slog.Logger, note func(error), wait time.Duration) error {
	delays := backoff.Backoff{Min: 500 * time.Millisecond, Max: 15 * time.Second}
	note(fmt.Errorf("claim of swarm node %s under way (another agent's record of it may be alive yet)", facts.ID))
	// node rm holds the facts of a node it removes: the claim waits for
	// it, and is then refused (netspec.ErrNodeRemoved), or lands if node
	// rm was cut short and its hold went stale.
	rctx, cancel := context.WithTimeout(ctx, wait)
	cur, _, found, err := facts.Store.Facts(rctx, facts.ID)
	cancel()
	if err == nil && found && cur.Holder.Instance == decommission.Remover {
		log.Warn("`underlay node rm` is removing this node's records from Consul: once it is done this identity is refused (the node left the swarm for good); join the swarm again for a new identity, or stop this agent",
			"node", facts.Node, "node_id", facts.ID, "since", cur.UpdatedAt)
	}
	for {
		cctx, cancel := context.WithTimeout(ctx, wait)
		err := facts.Claim(cctx)
		cancel()
		if err == nil {
			break
		}
		if errors.Is(err, netspec.ErrIdentityHeld) || errors.Is(err, netspec.ErrNodeRemoved) || ctx.Err() != nil {
			return err
		}
		note(err)
		log.Warn("cannot claim this node's identity; retrying", "node", facts.Node, "node_id", facts.ID, "err", err)
		backoff.Sleep(ctx, delays.Next())
	}
	log.Info("node identity claimed", "node", facts.Node, "node_id", facts.ID)
	return nil
}

// runIPAM starts the cluster IPAM's parts in g — the leak reclaimer, the
// spares keeper and the plugin — and returns what the network reconciler
// needs of it.
func (n *node) runIPAM(ctx context.Context, g *errgroup.Group, kv *netspec.RemovedGuard, store *netspec.Store, nets *dockerhost.Networks, id string) netagent.IPAM {
	cfg, log := n.cfg.IPAM, n.log
	alloc := ipam.NewAllocator(kv, id, log, append(n.freedStore(id), ipam.WithSpecs(store), ipam.WithHeld(n.src))...)
	pools := ipam.SpecPools{Store: store}
	ipamMetrics := ipam.NewMetrics(n.reg, alloc)
	plugin := &ipam.Plugin{Alloc: alloc, Pools: pools, Log: log, Metrics: ipamMetrics}
	reclaimer := &ipam.Reclaimer{
		Alloc: alloc, Pools: pools, Held: n.src, Cluster: nets, Metrics: ipamMetrics, Grace: cfg.LeakGrace,
		NodeTimeout: cfg.NodeTimeout, Fresh: max(cfg.NodeTimeout, netagent.StaleAfter), Log: log,
	}
	// The sweeps count the start of an exited container as under way
	// from the connect dockerd announces as it begins.
	g.Go(func() error { n.src.WatchConnects(ctx); return nil })
	g.Go(func() error { reclaimer.Run(ctx, cfg.Sweep); return nil })
	g.Go(func() error { alloc.KeepSpares(ctx, cfg.Spares, log); return nil })
	// The identity is claimed: the plugin's allocator is the only one of
	// it. It serves once the reclaimer's first listing of the containers
	// is taken in: before, it knows of no address they hold, and would
	// hand out again one Consul lost under a running container.
	g.Go(func() error { n.openGate(ctx, plugin, reclaimer.Listed()); return nil })
	return ipam.NodeIPAM{Alloc: alloc, Pools: pools}
}

// openGate opens the plugin's gate once listed is closed, or once the
// listing wait is over (see DefaultListingWait): at boot, dockerd lists
// no container before those it restores have their addresses.
func (n *node) openGate(ctx context.Context, pl *ipam.Plugin, listed <-chan struct{}) {
	wait, cancel := context.WithTimeout(ctx, n.cfg.IPAM.listingWait())
	defer cancel()
	n.gate.OpenWhenListed(wait, pl, listed)
	if ctx.Err() != nil {
		return
	}
	select {
	case <-listed:
	default:
		n.log.Warn("IPAM plugin serving before this node's containers could be listed (dockerd restoring containers lists none until they have their addresses); the first sweep passes over what they hold",
			"waited", n.cfg.IPAM.listingWait())
	}
	n.gate.Open(pl) // opened already when listed: a no-op
}

// freedStore keeps what the allocator freed lately in the state
// directory, so that a restarted agent still passes it over; with no
// state directory, or one it cannot use, it is kept in memory only.
func (n *node) freedStore(id string) []ipam.Option {
	if n.cfg.StateDir == "" {
		return nil
	}
	f, err := ipam.NewFreedFile(n.cfg.StateDir, id)
	if err != nil {
		agentLog(n.log).Warn("the addresses this node freed lately are kept in memory only: a restarted agent may hand them out again at once", "err", err)
		return nil
	}
	return []ipam.Option{ipam.WithFreedStore(f)}
}

// runDoctorReports runs the doctor's checks on this node every
// DoctorInterval and publishes the results for the dashboard. It never
// stops the agent: without its reports the dashboard only lacks them.
func (n *node) runDoctorReports(ctx context.Context, id string, kv *netspec.RemovedGuard, store *netspec.Store) {
	ca := doctor.NewConsulAPI(n.c.Consul, n.c.ConsulHTTP)
	env := doctor.Env{NodeID: id, Node: n.name, Docker: &doctor.DockerAPI{API: n.c.Docker}, Consul: ca, Networks: store, Pools: doctor.IPAMPools{KV: kv},
		Inventories: doctor.KVInventories{KV: kv}, TaskReports: doctor.KVTaskReports{KV: kv}, StateDir: n.cfg.StateDir}
	doctor.RunPeriodically(ctx, kv, n.name, id, n.cfg.Version, env.Checks(), n.cfg.DoctorInterval, n.log, n.retire(kv, doctor.KVPrefix+n.name, doctor.IDPrefix, id))
}

// retire is what runs once this node's first report (doctor's or task
// metrics') is published under its swarm node ID id: the one an older
// agent kept under its name, key, goes if it is this node's
// (retireNameKey).
func (n *node) retire(kv *netspec.RemovedGuard, key, byID, id string) func(context.Context) {
	return func(ctx context.Context) {
		retireNameKey(ctx, kv, key, byID, n.name, id, time.Now(), agentLog(n.log))
	}
}

// awaitNewID is what an agent refused its identity by `underlay node rm`
// (removed, the error saying so) does: it serves nothing, its IPAM
// plugin answering why, and waits for Docker to give the node another
// swarm node ID (it joined the swarm again), then returns an error for
// the agent to start over under it (see watchSwarmNodeID). Exiting at
// once would have a supervisor restart it into the same refusal, over
// and over.
func (n *node) awaitNewID(ctx context.Context, id string, removed error) error {
	agentLog(n.log).Error("this node was removed from the cluster by `underlay node rm`: the agent serves nothing under its swarm node ID, which never comes back, and waits for the node to join the swarm again (docker swarm leave, then docker swarm join) to start over under the new one",
		"node", n.name, "node_id", id, "err", removed)
	n.gate.Waiting(removed)
	return n.watchSwarmNodeID(ctx, id, netagent.Heartbeat, true)
}

// watchSwarmNodeID watches Docker's swarm node ID for this node every
// every. A node that left the swarm (no ID) is warned of once and goes on
// under id: the swarm leader reclaims its addresses after the node
// timeout, and the node may join again. It returns an error once the ID
// is another (the node joined the swarm again as a new node): everything
// this agent owns is keyed by the old one, so it must start over.
//
// An unconfirmed id (the one recorded at the last start, served while
// Docker did not answer at boot) is checked every netagent.AskDockerFor
// until Docker answers once: a record gone stale (the node joined the
// swarm again while the agent was down) would otherwise serve the IPAM
// plugin under a node the swarm no longer lists for up to a heartbeat
// more, as swarm starts its tasks, their addresses recorded for that node
// and reclaimed by the leader while in use. Each ask is given up at the
// next tick.
func (n *node) watchSwarmNodeID(ctx context.Context, id string, every time.Duration, unconfirmed bool) error {
	log := agentLog(n.log)
	period := every
	if unconfirmed {
		period = min(every, netagent.AskDockerFor)
	}
	t := time.NewTicker(period)
	defer t.Stop()
	left := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		// Given up by the next tick: a dockerd that never answered held
		// the watch for good.
		ictx, cancel := context.WithTimeout(ctx, period)
		info, err := n.c.Docker.Info(ictx)
		cancel()
		if err != nil {
			continue // Docker out of reach says nothing of the swarm
		}
		if period != every { // Docker answered: confirmed, or found changed below
			period = every
			t.Reset(every)
		}
		switch got := info.Swarm.NodeID; {
		case got == "" && !left:
			left = true
			log.Warn("this node left the swarm (Docker reports no swarm node ID): the agent goes on under its last identity; the swarm leader reclaims its addresses after --ipam-node-timeout; join the swarm again (the agent then starts over under the new identity), or stop the agent",
				"node", n.name, "node_id", id, "local_node_state", info.Swarm.LocalNodeState)
		case got == id && left:
			left = false
			log.Info("this node is back in the swarm under its swarm node ID", "node", n.name, "node_id", id)
		case got != "" && got != id:
			log.Warn("this node's swarm node ID changed: it joined the swarm again as another node; the agent stops to start over under the new identity",
				"node", n.name, "node_id", id, "new_node_id", got)
			return fmt.Errorf("this node's swarm node ID changed from %s to %s (it joined the swarm again): restart the agent to serve the new identity", id, got)
		}
	}
}

// nodeKV is the KV store as the parts of the node of swarm node ID id
// write it: refused once `underlay node rm` removed the node, so that an
// agent cut off from Consul meanwhile writes nothing when it comes back,
// before its heartbeat finds the removal (netspec.RemovedGuard).
func nodeKV(kv netspec.NodeKV, id string) *netspec.RemovedGuard { return netspec.GuardRemoved(kv, id) }
