package ipam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/underlay/underlay/internal/netspec"
)

// Held reports the addresses local containers hold, by network name.
type Held interface {
	HeldAddresses(ctx context.Context) (map[string]map[netip.Addr]bool, error)
}

// Cluster tells the reclaimer whether this node is the swarm leader and
// which nodes are alive.
type Cluster interface {
	IsLeader(ctx context.Context) (bool, error)
	ReadyNodes(ctx context.Context) ([]string, error)
}

// Reclaimer returns leaked addresses to the pool:
//   - on every node, task addresses this node allocated that no local
//     container holds, once they have been allocated for longer than Grace
//     (which protects allocations in flight: Docker asks for the address
//     before the container runs) and still unheld a Grace later; spares
//     of this node's previous agent count as task addresses (a container
//     holding one makes it a task address);
//   - the other way round, on every node, addresses local containers hold
//     that the pool does not record (Consul lost them) are recorded again;
//   - on the swarm leader only, every address of a node that has not been
//     a ready swarm node for NodeTimeout.
type Reclaimer struct {
	Node        string
	Alloc       *Allocator
	Pools       SpecPools
	Held        Held
	Cluster     Cluster
	Grace       time.Duration
	NodeTimeout time.Duration
	Log         *slog.Logger
	Metrics     *Metrics // optional

	mu sync.Mutex // guards following fields
	// unheld is when each of this node's task addresses was first seen
	// without a container: the state `underlay ips` shows as leaked-pending.
	unheld map[netip.Addr]time.Time
	// missing is when each node was first seen not ready (leader only).
	missing map[string]time.Time
	// unrecorded holds, by pool, addresses local containers hold that the
	// pool did not record at the last sweep.
	unrecorded map[string]map[netip.Addr]bool
}

// Sweep runs one pass over every cluster-IPAM pool.
func (r *Reclaimer) Sweep(ctx context.Context) error {
	specs, err := r.Pools.Store.Specs(ctx)
	if err != nil {
		return err
	}
	held, err := r.Held.HeldAddresses(ctx)
	if err != nil {
		return err
	}
	gone, err := r.deadNodes(ctx)
	if err != nil {
		return err
	}
	var errs []error
	seen := map[netip.Addr]bool{}
	for _, spec := range specs {
		if spec.IPAM != netspec.Cluster {
			continue
		}
		for _, v6 := range []bool{false, true} {
			if v6 && !spec.IPv6Subnet.IsValid() {
				continue
			}
			p, _ := r.Pools.pool(spec, v6)
			errs = append(errs, r.sweepPool(ctx, p, held[spec.Name], gone, seen))
		}
	}
	r.mu.Lock()
	for a := range r.unheld {
		if !seen[a] {
			delete(r.unheld, a)
		}
	}
	r.mu.Unlock()
	return errors.Join(errs...)
}

func (r *Reclaimer) sweepPool(ctx context.Context, p Pool, held map[netip.Addr]bool, gone map[string]bool, seen map[netip.Addr]bool) error {
	all, err := Allocations(ctx, r.Alloc.kv, p)
	if err != nil {
		return err
	}
	now := r.Alloc.now()
	var errs []error
	errs = append(errs, r.recordHeld(ctx, p, held, all))
	for addr, al := range all {
		switch {
		case gone[al.Node]:
			if err := r.Alloc.Release(ctx, p, addr); err != nil {
				errs = append(errs, err)
				continue
			}
			r.Log.Warn("reclaimed the address of a departed node", "pool", p.ID(), "address", addr, "node", al.Node)
			r.Metrics.reclaim("departed_node")
		case al.Node == r.Node && al.Kind == KindSpare && !r.Alloc.mySpare(al) && held[addr]:
			// A spare of this node's previous agent that Docker got before
			// the agent stopped: now a task's.
			if err := r.Alloc.adopt(ctx, p, addr); err != nil {
				errs = append(errs, err)
			}
		case al.Node == r.Node && !held[addr] && now.Sub(al.At) > r.Grace &&
			(al.Kind == KindTask || al.Kind == KindSpare && !r.Alloc.mySpare(al)):
			// A task address, or a previous agent's spare (it may have been
			// handed out just before that agent stopped), nobody holds.
			seen[addr] = true
			r.mu.Lock()
			since, ok := r.unheld[addr]
			if !ok {
				if r.unheld == nil {
					r.unheld = map[netip.Addr]time.Time{}
				}
				r.unheld[addr] = now
			}
			r.mu.Unlock()
			if !ok || now.Sub(since) < r.Grace {
				continue
			}
			if err := r.Alloc.Release(ctx, p, addr); err != nil {
				errs = append(errs, err)
				continue
			}
			r.mu.Lock()
			delete(r.unheld, addr)
			r.mu.Unlock()
			r.Log.Warn("reclaimed a leaked address: no container holds it", "pool", p.ID(), "address", addr, "allocated", al.At)
			r.Metrics.reclaim("leak")
		}
	}
	return errors.Join(errs...)
}

// recordHeld allocates again, to this node, addresses local containers
// hold that the pool does not record: Consul lost them (a snapshot
// restored, a dev agent restarted). Seen twice in a row first, since a
// container being removed may still be listed after its release.
func (r *Reclaimer) recordHeld(ctx context.Context, p Pool, held map[netip.Addr]bool, all map[netip.Addr]Alloc) error {
	r.mu.Lock()
	if r.unrecorded == nil {
		r.unrecorded = map[string]map[netip.Addr]bool{}
	}
	prev, now := r.unrecorded[p.ID()], map[netip.Addr]bool{}
	r.unrecorded[p.ID()] = now
	var adopt []netip.Addr
	for addr := range held {
		if _, ok := all[addr]; ok || !p.usable(addr) {
			continue
		}
		if prev[addr] {
			adopt = append(adopt, addr)
		} else {
			now[addr] = true
		}
	}
	r.mu.Unlock()
	var errs []error
	for _, addr := range adopt {
		if _, err := r.Alloc.Allocate(ctx, p, addr, KindTask); err != nil {
			r.Log.Error("a local container holds an address the pool does not record, and it cannot be recorded: another node may use it too", "pool", p.ID(), "address", addr, "err", err)
			errs = append(errs, err)
			continue
		}
		r.Log.Warn("recorded an address a local container holds that the pool had lost", "pool", p.ID(), "address", addr)
		r.Metrics.reclaim("recorded_held")
	}
	return errors.Join(errs...)
}

// deadNodes returns, on the leader, the nodes gone for longer than
// NodeTimeout; elsewhere, none.
func (r *Reclaimer) deadNodes(ctx context.Context) (map[string]bool, error) {
	if r.Cluster == nil || r.NodeTimeout <= 0 {
		return nil, nil
	}
	leader, err := r.Cluster.IsLeader(ctx)
	if err != nil || !leader {
		return nil, err
	}
	ready, err := r.Cluster.ReadyNodes(ctx)
	if err != nil {
		return nil, err
	}
	alive := map[string]bool{}
	for _, n := range ready {
		alive[n] = true
	}
	nodes, err := r.Pools.Store.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	now := r.Alloc.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.missing == nil {
		r.missing = map[string]time.Time{}
	}
	gone := map[string]bool{}
	for _, f := range nodes {
		if alive[f.Node] {
			delete(r.missing, f.Node)
			continue
		}
		since, ok := r.missing[f.Node]
		if !ok {
			r.missing[f.Node] = now
			continue
		}
		if now.Sub(since) > r.NodeTimeout {
			gone[f.Node] = true
		}
	}
	return gone, nil
}

// Pending reports the addresses this node considers leaked but has not yet
// reclaimed.
func (r *Reclaimer) Pending() map[netip.Addr]time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[netip.Addr]time.Time, len(r.unheld))
	for a, t := range r.unheld {
		out[a] = t
	}
	return out
}

// Run sweeps every period until ctx ends.
func (r *Reclaimer) Run(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := r.Sweep(ctx); err != nil && ctx.Err() == nil {
			r.Log.Warn("address reclaim sweep incomplete", "err", fmt.Errorf("sweep: %w", err))
		}
	}
}
