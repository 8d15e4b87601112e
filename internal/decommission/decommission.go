// Package decommission removes from Consul what a node removed from the
// swarm for good left there: its facts, the ranges it leased and its state
// reports on every network, its cluster-IPAM addresses, the addresses it
// kept for starts and its reports of addresses allocated to no node, its
// inventory, doctor report, task metrics (those under its swarm node
// ID, and those an older agent kept under its name when they are its) and
// report of the tasks it left out of Consul,
// and, from Consul's catalog, the services its agent registered
// (NodeServices).
//
// Nothing else removes them. A node's identity is its swarm node ID, which
// never comes back once `docker node rm` removed it, but its agent cannot
// say it is gone: left alone, its facts make `underlay network create`
// check a parent it may never have had, its reports hold `network rm`
// waiting for it, and its leases hold per-node ranges that nodes joining
// later need. So an operator removes them, as with `docker node rm`, and
// only for a node the swarm no longer lists and whose agent is not running.
package decommission

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/underlay/underlay/internal/doctor"
	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/shellword"
	"github.com/underlay/underlay/internal/taskmetrics"
	"github.com/underlay/underlay/internal/termtext"
	"github.com/underlay/underlay/internal/unregistered"
)

// ErrRefused wraps the reasons a node is not removed.
var ErrRefused = errors.New("node not removed")

// KV is what removal needs of Consul's KV store.
type KV interface {
	netspec.KV
	ipam.KV
}

// Swarm lists the nodes the swarm knows, whatever their state, with
// their host names.
type Swarm interface {
	ListSwarmNodes(ctx context.Context) ([]netspec.SwarmNode, error)
}

// Options tune Remove.
type Options struct {
	// Stale is how long a node's facts must go unrefreshed for its agent
	// to count as stopped: a few of its heartbeats.
	Stale time.Duration
	// Heartbeat is how often a running agent refreshes its facts: facts
	// stamped over Stale ago are still watched this long, their stamp
	// being their node's clock, which may be behind this one (0: they
	// are taken at once).
	Heartbeat time.Duration
	// Poll is how often facts that may still be refreshed are read again.
	Poll time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// By says who removes the node (user@host), kept in the record of
	// the removal for node ls; "" records no one.
	By string
	// Services is Consul's catalog, from which the services the node's
	// agent registered are deregistered (NodeServices); nil leaves them.
	Services Services
}

// Removed is what Remove took away.
type Removed struct {
	ID   string
	Node string // "" when the identity had no facts
	// Ranges are the per-node ranges it leased, by network.
	Ranges map[string][]netip.Prefix
	// Reports are the networks whose state report of the node went.
	Reports []string
	// Addresses are the cluster-IPAM addresses it held, by pool.
	Addresses map[string][]netip.Addr
	// Keys are the other keys deleted: cluster-IPAM blocks left without
	// allocations, addresses kept for starts, reports of addresses
	// allocated to no node, inventory, doctor report, task metrics, report
	// of unregistered tasks, facts.
	Keys []string
	// Changed are the keys rewritten without the node's records:
	// cluster-IPAM blocks where other nodes' addresses stay, without its
	// addresses and with no affinity left for it.
	Changed []string
	// Warnings name documents that disagree with their keys about this
	// node, for the operator to look at.
	Warnings []string
	// Recorded is the key recording the removal, which its agent honours
	// (netspec.RemovedNodesKVPrefix); "" for an identity keyed by a name.
	Recorded string
	// Services are the services its agent registered that were
	// deregistered from Consul's catalog (Options.Services).
	Services []CatalogService
}

// Resolve finds the node arg names among facts: an identity (swarm node
// ID), or a node name only one identity has. An identity with no facts is
// returned as is, with found false: what is recorded under it can still be
// removed. An empty (or all-space) arg is refused: it would match facts
// with no identity (older agents') or no name, and what is recorded under
// no identity is not one node's (addresses allocated to no node).
//
// Facts under a key no agent writes (netspec.NodeFacts.KeyProblem) are
// no node's: they are found by their key's last part only (then as the
// identity of that key, even naming no ID), never by the name they give,
// which is another node's or none's.
func Resolve(facts []netspec.NodeFacts, arg string) (f netspec.NodeFacts, found bool, err error) {
	if strings.TrimSpace(arg) == "" {
		return netspec.NodeFacts{}, false, fmt.Errorf("%q names no node: give its swarm node ID or name, not an empty string", arg)
	}
	var byID *netspec.NodeFacts
	var byName []netspec.NodeFacts
	for _, n := range facts {
		if n.ID == arg && byID == nil {
			byID = &n
			continue
		}
		if n.KeyProblem() != nil {
			if byID == nil && n.ID == "" && strings.TrimPrefix(n.FactsKey(), netspec.NodesKVPrefix) == arg {
				n.ID = arg
				return n, true, nil
			}
			continue
		}
		if n.Node == arg && n.ID != "" && n.ID != arg {
			byName = append(byName, n)
		}
	}
	c := termtext.Cell
	if byID != nil {
		if len(byName) == 0 {
			return *byID, true, nil
		}
		// A swarm node ID is a host name too: which node was meant
		// cannot be told.
		each := make([]string, len(byName))
		for i, n := range byName {
			each[i] = describe(n)
		}
		node := ""
		if byID.Node != "" {
			node = " (node " + c(byID.Node) + ")"
		}
		return netspec.NodeFacts{}, false, fmt.Errorf("%s names %d nodes: swarm node %s%s, and %s by its name: which is meant cannot be told; name another by its swarm node ID, or, to remove swarm node %s, first give the node of that name another name (its agent's --node)",
			c(arg), 1+len(byName), c(byID.ID), node, strings.Join(each, ", "), c(byID.ID))
	}
	switch len(byName) {
	case 1:
		return byName[0], true, nil
	case 0:
		// Swarm node IDs are letters and digits; anything else would only
		// make keys ("..", '?', '%') that Consul's paths take elsewhere.
		if strings.ContainsFunc(arg, func(r rune) bool { return !alnum(r) }) {
			return netspec.NodeFacts{}, false, fmt.Errorf("%q is neither a node's name nor a swarm node ID (letters and digits)", arg)
		}
		return netspec.NodeFacts{ID: arg}, false, nil
	}
	ids := make([]string, len(byName))
	for i, n := range byName {
		ids[i] = c(n.ID)
	}
	return netspec.NodeFacts{}, false, fmt.Errorf("%d nodes are named %s (swarm node IDs %s): name one by its ID", len(byName), c(arg), strings.Join(ids, ", "))
}

// Remove removes what node arg left in Consul, after checking that the
// swarm no longer lists it (by its ID; an identity that is a node name an
// older agent keyed its records by, by its host name) and that its agent
// no longer refreshes its facts (watching them for Stale when their stamp
// is recent or ahead of this clock), then taking the facts over for node rm, so that an agent
// starting meanwhile waits, and recording the removal in the same
// transaction, so that its agent's writes are refused from then on.
// Facts go last, so that a removal cut short can be run again (node rm
// takes over its own facts at once, and keeps the record it finds).
func Remove(ctx context.Context, kv KV, sw Swarm, arg string, o Options) (Removed, error) {
	now := o.Now
	if now == nil {
		now = time.Now
	}
	st := netspec.NewStore(kv)
	all, misfiled, err := st.ReadNodes(ctx)
	if err != nil {
		return Removed{}, err
	}
	f, found, err := Resolve(all, arg)
	if err != nil {
		return Removed{}, fmt.Errorf("%w: %v", ErrRefused, err)
	}
	// Facts under a key no agent writes are no node's, and so are the
	// keys of the name they give: only what is recorded under their key's
	// identity goes, with them. Other nodes are judged by agents' facts.
	var warnings []string
	agents, _ := netspec.AgentsFacts(all)
	noNode := ""
	if r, ok := doctor.NoNodeFactsResult(f); ok && found {
		warnings = append(warnings, r.Message+"; node rm removes them with what is recorded under "+termtext.Cell(f.ID)+", and nothing under the node name they give")
		f.Node, noNode = "", f.FactsKey()
	}
	// Facts are listed as their key's identity's: name those whose
	// document says otherwise, so that an operator who took the node for
	// the one its document names learns why (facts no agent writes: said
	// above).
	for _, m := range misfiled {
		if m.Key == noNode {
			continue
		}
		if strings.TrimPrefix(m.Key, netspec.NodesKVPrefix) == f.ID || m.Names == f.ID {
			warnings = append(warnings, m.String())
		}
	}
	list, err := sw.ListSwarmNodes(ctx)
	if err != nil {
		return Removed{Warnings: warnings}, err
	}
	nodes := make(map[string]string, len(list))
	for _, n := range list {
		nodes[n.ID] = n.State
	}
	if !found {
		if w := startOfIDs(f.ID, agents, nodes); w != "" {
			warnings = append(warnings, w)
		}
	}
	// A name that is also the start of another node's ID (docker node
	// rm takes that) may mean either.
	if found && f.ID != arg {
		if each := idsStartingWith(arg, agents, nodes, f.ID); len(each) > 0 {
			return Removed{Warnings: warnings}, fmt.Errorf("%w: %s names %s and is the start of %s: name the node to remove by its whole swarm node ID",
				ErrRefused, termtext.Cell(arg), describe(f), strings.Join(each, ", "))
		}
	}
	// A node of that name node rm removed already: the operator may mean
	// it, not the one found (or, found none, be told why).
	gone, err := st.Removals(ctx)
	if err != nil {
		return Removed{Warnings: warnings}, err
	}
	for _, r := range gone {
		if r.Node == arg && r.ID != f.ID {
			warnings = append(warnings, fmt.Sprintf("%s: node rm removed a node of that name already: swarm node %s, at %s",
				termtext.Cell(arg), termtext.Cell(r.ID), r.RemovedAt.Format(time.RFC3339)))
		}
	}
	if state, ok := nodes[f.ID]; ok {
		return Removed{Warnings: warnings}, fmt.Errorf("%w: %s is still a swarm node (%s): drain it, stop it and run `docker node rm %s` first; underlay removes only what nodes the swarm no longer lists left behind",
			ErrRefused, describe(f), state, f.ID)
	}
	// The swarm lists nodes by ID, which an identity keyed by a name
	// never is: such a node is matched by its host name.
	if keyedByName(all, f.ID) {
		if err := listedByHostName(f, list); err != nil {
			return Removed{Warnings: warnings}, err
		}
	}
	same, err := checkSameSwarm(f, agents, nil, nodes, now(), o.Stale)
	if err != nil {
		return Removed{Warnings: warnings}, err
	}
	readAt := now()
	// Facts under the identity's key are watched even when not listed:
	// an agent older than identities keyed its facts (and lease) by its
	// name, without a holder, and may still run. index is 0 when none.
	cur, index, err := waitSilent(ctx, kv, f, o, now)
	if err != nil {
		return Removed{Warnings: warnings}, err
	}
	if !same {
		// The stamps told no running agent the swarm lists; but they
		// are their nodes' clocks, and behind this one's they make
		// running agents look stopped. One whose facts changed within a
		// heartbeat runs, whatever its stamp.
		if err := checkSameSwarmWatched(ctx, st, f, agents, nodes, readAt, o, now); err != nil {
			return Removed{Warnings: warnings}, err
		}
	}
	// The removal of a swarm node ID is recorded first, before anything
	// goes: its agent, cut off from Consul until now, has every write
	// refused from then on (netspec.RemovedGuard), so that it writes
	// nothing on the networks the removal has passed already, and, if
	// the record came at the end, would keep there after node rm
	// returned. An identity keyed by a name (an older agent's, which
	// reads no record) is not recorded. A record found (a removal cut
	// short, run again) is kept as it is: the removal began then.
	var r netspec.NodeRemoval
	name := f.Node // the node's name, for its services; a record found keeps it
	if !keyedByName(all, f.ID) {
		r = netspec.NodeRemoval{ID: f.ID, Node: f.Node, RemovedAt: now().UTC(), By: o.By}
		if first, found, err := st.Removal(ctx, f.ID); err != nil {
			return Removed{Warnings: warnings}, err
		} else if found {
			r, name = netspec.NodeRemoval{}, cmp.Or(name, first.Node)
		}
	}
	// The facts are taken over in the same transaction: an agent
	// starting now waits for the removal, and one that claimed them
	// since they were found silent has it refused, with nothing removed
	// or recorded; otherwise it would run with its facts alone, its
	// ranges, reports and addresses gone.
	if index, err = takeOver(ctx, kv, f, cur, index, r, now); err != nil {
		return Removed{Warnings: warnings}, err
	}
	recorded := ""
	if !keyedByName(all, f.ID) {
		recorded = netspec.RemovedNodesKVPrefix + f.ID
	}

	// The hold is renewed before each network and its IPv6 pool, so
	// that an agent starting meanwhile, which judges it by watching it
	// unchanged (see netspec.DecideClaim), waits however long the
	// removal takes; one that took it over stops the removal there.
	renew := func() error {
		if index == 0 {
			return nil
		}
		index, err = hold(ctx, kv, f, cur, index, now, "changed while it was being removed: is its agent running? Stop it and run this again")
		return err
	}
	out := Removed{ID: f.ID, Node: f.Node, Ranges: map[string][]netip.Prefix{}, Addresses: map[string][]netip.Addr{}, Warnings: warnings, Recorded: recorded}
	l, err := st.ReadListing(ctx)
	if err != nil {
		return out, err
	}
	// A network named "", "." or ".." (a hand-written key) has its ranges
	// and reports under keys no listing through Consul's HTTP paths
	// reaches (they are redirected): they are named, not read.
	for _, k := range l.Unlisted {
		out.Warnings = append(out.Warnings, netspec.UnlistedProblem(k))
	}
	// A network whose spec cannot be read keeps its ranges and reports by
	// its name alone, and `network rm` of it waits for every report.
	for _, b := range l.Bad {
		if err := renew(); err != nil {
			return out, err
		}
		if err := forgetOn(ctx, kv, st, b.Name, f.ID, &out); err != nil {
			return out, err
		}
	}
	for _, s := range l.Specs {
		if err := renew(); err != nil {
			return out, err
		}
		if err := forgetOn(ctx, kv, st, s.Name, f.ID, &out); err != nil {
			return out, err
		}
		if s.IPAM != netspec.Cluster {
			continue
		}
		for _, v6 := range []bool{false, true} {
			if v6 && !s.IPv6Subnet.IsValid() {
				continue
			}
			// Renewed again before the IPv6 pool: the IPv4 pool's
			// removal may outlast the hold's stale time (many blocks,
			// a slow Consul), and an agent that took its node over
			// meanwhile would have what it allocated there freed.
			if v6 {
				if err := renew(); err != nil {
					return out, err
				}
			}
			// And within the pool, before each of its writes: one
			// pool's removal may outlast the hold too, and an agent
			// that took its node over meanwhile would have what it
			// keeps for its containers' starts deleted.
			p, _ := ipam.PoolOf(s, v6)
			forgot, err := ipam.ForgetNode(ctx, kv, p, f.ID, ipam.ForgetOptions{Before: func(context.Context) error { return renew() }})
			if len(forgot.Freed) > 0 {
				out.Addresses[p.ID()] = forgot.Freed
			}
			out.Keys = append(out.Keys, forgot.Deleted...)
			out.Changed = append(out.Changed, forgot.Changed...)
			for _, d := range forgot.Skipped {
				out.Warnings = append(out.Warnings, fmt.Sprintf("%s cannot be read (%v): any address of %s recorded there is not freed; %s, and agents record again what their containers hold there",
					d.Key, d.Err, describe(f), d.RemovedBy()))
			}
			if err != nil {
				return out, err
			}
		}
	}
	if err := renew(); err != nil {
		return out, err
	}
	keys := []string{inventory.KVPrefix + f.ID, doctor.IDPrefix + f.ID, taskmetrics.IDPrefix + f.ID, unregistered.KVPrefix + f.ID}
	for _, k := range keys {
		// One transaction, which names the key in its body: through a URL,
		// a name with a ".." or empty segment is redirected by Consul's
		// paths, a read reading another node's key and a delete doing
		// nothing. The get fails it when the key is absent.
		res, err := kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.Get, Key: k}, {Verb: kvstore.Delete, Key: k}})
		if err != nil {
			return out, fmt.Errorf("delete %s: %w", k, err)
		}
		if res.OK {
			out.Keys = append(out.Keys, k)
		}
	}
	// Older agents keyed their doctor report and task metrics by node
	// name, which another identity may share (cloned hosts).
	if f.Node != "" {
		for _, k := range []struct{ key, byID string }{{doctor.KVPrefix + f.Node, doctor.IDPrefix}, {taskmetrics.KVPrefix + f.Node, taskmetrics.IDPrefix}} {
			if strings.HasPrefix(k.key, k.byID) {
				// A node name has no '/': this one (forged facts)
				// names a key of the swarm node IDs' layout, another
				// node's report ("id/OTHER") or none's.
				out.Warnings = append(out.Warnings, fmt.Sprintf("the facts of %s name node %q, not a node's name: %s, under the reports by swarm node ID, is not deleted with it", describe(f), f.Node, k.key))
				continue
			}
			others, err := otherWriters(ctx, kv, agents, f, k.byID)
			if err != nil {
				return out, err
			}
			deleted, err := deleteNameKey(ctx, kv, k.key, f.ID, others)
			if err != nil {
				return out, err
			}
			if deleted {
				out.Keys = append(out.Keys, k.key)
			}
		}
	}
	// Its services, deregistered from the catalog once the record refuses
	// its agent: a container it still runs is not registered again.
	if o.Services != nil {
		if err := renew(); err != nil {
			return out, err
		}
		sameName := slices.ContainsFunc(agents, func(n netspec.NodeFacts) bool { return n.ID != f.ID && n.Node == name })
		if err := forgetServices(ctx, o.Services, f.ID, name, sameName, &out); err != nil {
			return out, err
		}
	}
	// Facts that cannot be read, or name no holder, are not always listed
	// as the identity's: they go too, once watched like the rest. They go
	// last, so that a removal cut short is run again (node rm takes over
	// its own facts at once); the record, written first, stays.
	deleted, err := st.DeleteFacts(ctx, f.ID, index, netspec.NodeRemoval{})
	if err != nil {
		return out, err
	}
	if !deleted {
		return out, fmt.Errorf("%w: the facts of %s changed while it was being removed: is its agent running? Stop it and run this again", ErrRefused, describe(f))
	}
	if index != 0 {
		out.Keys = append(out.Keys, netspec.NodesKVPrefix+f.ID)
	}
	return out, nil
}

// otherWriters says another identity of f's name, among all, may have
// written the report an older agent kept under the name: one that
// publishes its own under its swarm node ID (byID, the report's layout;
// it names its ID) has an upgraded agent, which writes no name key, so
// the name's is f's or its own from before the upgrade, read by nobody
// (shadowed). Else a node that joined the swarm again with an upgraded
// agent would keep its old identity's report under the name for ever.
func otherWriters(ctx context.Context, kv KV, all []netspec.NodeFacts, f netspec.NodeFacts, byID string) (bool, error) {
	for _, n := range all {
		if n.Node != f.Node || n.ID == f.ID {
			continue
		}
		if n.ID == "" || strings.Contains(n.ID, "/") {
			return true, nil // no report of its own to tell by
		}
		key := byID + n.ID
		res, err := kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.Get, Key: key}})
		if err != nil {
			return false, fmt.Errorf("read %s: %w", key, err)
		}
		if !res.OK || len(res.Pairs) == 0 {
			return true, nil
		}
		var doc struct {
			NodeID string `json:"node_id"`
		}
		if json.Unmarshal(res.Pairs[0].Value, &doc) != nil || doc.NodeID != n.ID {
			return true, nil // refused by readers: no sign of its agent
		}
	}
	return false, nil
}

// deleteNameKey deletes key, a report an older agent kept under its
// node's name, when it is the report of swarm node id: it names id, or
// names no swarm node and no other identity of the name may have written
// it (others, otherWriters: then it may be theirs, and stays). It is deleted as read, so that one
// written meanwhile (another node's agent of the name) stays.
func deleteNameKey(ctx context.Context, kv KV, key, id string, others bool) (bool, error) {
	// In transactions, which name the key in their body: through a URL,
	// a name with a ".." segment is redirected by Consul's paths to
	// another node's key (see Remove's keys).
	res, err := kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.Get, Key: key}})
	if err != nil {
		return false, fmt.Errorf("read %s: %w", key, err)
	}
	if !res.OK || len(res.Pairs) == 0 { // absent
		return false, nil
	}
	p := res.Pairs[0]
	var doc struct {
		NodeID string `json:"node_id"`
	}
	_ = json.Unmarshal(p.Value, &doc) // unreadable: it names no node ID
	if !NameKeyOwned(doc.NodeID, id, others) {
		return false, nil
	}
	res, err = kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.DeleteCAS, Key: key, Index: p.Index}})
	if err != nil {
		return false, fmt.Errorf("delete %s: %w", key, err)
	}
	return res.OK, nil
}

// NameKeyOwned says a report an older agent kept under a node name,
// naming swarm node named ("" when it names none), is the report of swarm
// node id, so that it may go with id's records: it names id, or it names
// none and no other node of the name may have written it (others says
// one may).
func NameKeyOwned(named, id string, others bool) bool {
	return named == id || named == "" && !others
}

// forgetOn releases the ranges of the node with identity id on network
// name and deletes its report there, adding them to out.
//
// Its report is the one under its key, whatever the document says: the
// key is where its agent writes, and another key is another node's, maybe
// live. A document disagreeing with its key about id is named in out's
// warnings.
func forgetOn(ctx context.Context, kv KV, st *netspec.Store, name, id string, out *Removed) error {
	released, err := st.Release(ctx, name, id)
	if len(released) > 0 {
		out.Ranges[name] = released
	}
	if err != nil {
		return err
	}
	reports, err := st.Reports(ctx, name)
	if err != nil {
		return err
	}
	for _, r := range reports {
		switch {
		case r.Owner == id:
			if r.State.ID != "" && r.State.ID != id {
				out.Warnings = append(out.Warnings, fmt.Sprintf("%s, the report of swarm node %s on network %s, names swarm node %s: removed with the rest of %s's records",
					r.Key, id, name, r.State.ID, id))
			}
			// By its key as listed, in a transaction: an identity with a
			// ".." segment (a hand-written key) is redirected by Consul's
			// paths, a delete deleting nothing (see Remove's keys).
			if _, err := kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.Delete, Key: r.Key}}); err != nil {
				return fmt.Errorf("delete the report of %s on %s: %w", id, name, err)
			}
			out.Reports = append(out.Reports, name)
		case r.State.ID == id:
			out.Warnings = append(out.Warnings, fmt.Sprintf("%s names swarm node %s, but is stored as the report of %s on network %s: left, as %s's; `underlay node rm %s` removes it once that node is gone",
				r.Key, id, r.Owner, name, r.Owner, shellword.Quote(r.Owner))) // a key any agent may write
		}
	}
	return nil
}

// Remover is the holder node rm writes into the facts of the node it
// removes: an agent claiming them meanwhile waits.
const Remover = netspec.Remover

// takeOver writes the facts of f, read as cur at index, as held by node
// rm, and the record of the removal r (when it names f's identity) in
// the same transaction, and returns the facts' new index: an agent
// claiming them then waits while Remove renews the hold (see hold),
// until they are gone, and its writes are refused (netspec.RemovedGuard).
// Facts changed since index refuse the removal, with nothing recorded.
// Index 0 (an identity with no facts) writes the record with a check
// that there are still none: an agent's writes check its facts
// unchanged, which a record written beside facts it claimed meanwhile
// would not change, so such a claim refuses the removal too.
func takeOver(ctx context.Context, kv KV, f netspec.NodeFacts, cur netspec.NodeFacts, index uint64, r netspec.NodeRemoval, now func() time.Time) (uint64, error) {
	var record []kvstore.Op
	if r.ID == f.ID {
		b, err := json.Marshal(r)
		if err != nil {
			return 0, err
		}
		record = []kvstore.Op{{Verb: kvstore.Set, Key: netspec.RemovedNodesKVPrefix + f.ID, Value: b}}
	}
	if index != 0 {
		return hold(ctx, kv, f, cur, index, now, "changed as they were found silent: is its agent running? Nothing was removed; stop it and run this again", record...)
	}
	if len(record) == 0 {
		return 0, nil
	}
	key := netspec.NodesKVPrefix + f.ID
	res, err := kv.Txn(ctx, append(record, kvstore.Op{Verb: kvstore.CheckNotExists, Key: key}))
	if err != nil {
		return 0, fmt.Errorf("record the removal of %s: %w", describe(f), err)
	}
	if !res.OK {
		return 0, fmt.Errorf("%w: %s was claimed as it was found with no facts: is its agent running? Nothing was removed; stop it and run this again", ErrRefused, key)
	}
	return 0, nil
}

// hold writes the facts of f, cur at index, as held by node rm, stamped
// now, with the operations also in the same transaction, and returns the
// facts' new index; facts changed since index refuse the removal, saying
// how they changed (lost).
func hold(ctx context.Context, kv KV, f netspec.NodeFacts, cur netspec.NodeFacts, index uint64, now func() time.Time, lost string, also ...kvstore.Op) (uint64, error) {
	cur.ID = f.ID // the key's (see netspec.ReadNodes)
	cur.Node = cmp.Or(cur.Node, f.Node)
	cur.Holder = netspec.Holder{Instance: Remover}
	cur.UpdatedAt = now().UTC()
	b, err := json.Marshal(cur)
	if err != nil {
		return 0, err
	}
	key := netspec.NodesKVPrefix + f.ID
	res, err := kv.Txn(ctx, append([]kvstore.Op{{Verb: kvstore.CAS, Key: key, Value: b, Index: index}}, also...))
	if err != nil {
		return 0, fmt.Errorf("hold the facts of %s for node rm: %w", describe(f), err)
	}
	if !res.OK || len(res.Pairs) == 0 {
		return 0, fmt.Errorf("%w: the facts of %s %s", ErrRefused, describe(f), lost)
	}
	return res.Pairs[0].Index, nil
}

// waitSilent returns f's facts and their modify index once its agent is seen
// not running: its facts stamped over o.Stale ago and unchanged while
// watched for o.Heartbeat (a stamp is the agent's clock, which may be
// behind this one), or unchanged while watched for o.Stale (a stamp
// recent or ahead of this clock proves nothing by itself). Facts
// refreshed meanwhile refuse the removal. It returns index 0 when f.ID
// has no facts; facts that name no holder and carry no stamp (unreadable,
// returned empty) are returned at once, no agent refreshing them.
func waitSilent(ctx context.Context, kv KV, f netspec.NodeFacts, o Options, now func() time.Time) (netspec.NodeFacts, uint64, error) {
	poll := o.Poll
	if poll <= 0 {
		poll = time.Second
	}
	// An agent of another process-ID space: only its facts can say
	// whether it runs.
	me := netspec.Holder{Instance: Remover}
	var first *netspec.NodeFacts
	var firstAt time.Time
	// Facts naming no holder are watched by their modify index.
	var noHolderIndex uint64
	var noHolderAt time.Time
	for {
		cur, index, found, err := readFacts(ctx, kv, f.ID)
		if err != nil {
			return netspec.NodeFacts{}, 0, err
		}
		if !found {
			return netspec.NodeFacts{}, 0, nil
		}
		if cur.Holder.Instance == "" {
			// DecideClaim takes such facts at once (an agent may take
			// over what no holder claims), but their writer may be an
			// agent older than holders, which stamped them, still
			// running. Facts with no stamp either cannot be read or
			// were written by no agent: no agent refreshes them.
			switch {
			case cur.UpdatedAt.IsZero():
				return cur, index, nil
			case noHolderIndex != 0 && index != noHolderIndex:
				return netspec.NodeFacts{}, 0, fmt.Errorf("%w: the agent of %s is running: its facts (naming no holder, as agents older than holders wrote them) changed while watched; stop it first",
					ErrRefused, describe(f))
			case now().Sub(cur.UpdatedAt) > o.Stale && (o.Heartbeat <= 0 || noHolderIndex != 0 && now().Sub(noHolderAt) >= o.Heartbeat):
				return cur, index, nil
			case noHolderIndex != 0 && now().Sub(noHolderAt) > o.Stale:
				return cur, index, nil
			case noHolderIndex == 0:
				noHolderIndex, noHolderAt = index, now()
			}
		} else {
			if first != nil && first.Holder.Instance != cur.Holder.Instance {
				// Taken over while watched: another start of its agent,
				// or a second one. Watching afresh at each change would
				// wait for as long as they go on.
				return netspec.NodeFacts{}, 0, fmt.Errorf("%w: the agent of %s is running: its facts passed from agent %s to %s while watched; stop it first",
					ErrRefused, describe(f), termtext.Cell(first.Holder.Instance), termtext.Cell(cur.Holder.Instance))
			}
			verdict := netspec.DecideClaim(&cur, first, firstAt, me, now(), o.Stale, func(int, uint64) bool { return true })
			watched := first != nil && first.Holder.Instance == cur.Holder.Instance && now().Sub(firstAt) >= o.Heartbeat
			if verdict == netspec.ClaimTake && o.Heartbeat > 0 && !watched && now().Sub(cur.UpdatedAt) > o.Stale {
				verdict = netspec.ClaimWait // stamped long ago by its clock: watched for a heartbeat first
			}
			switch verdict {
			case netspec.ClaimTake:
				return cur, index, nil
			case netspec.ClaimRefuse:
				return netspec.NodeFacts{}, 0, fmt.Errorf("%w: the agent of %s is running: it refreshed its facts at %s; stop it first",
					ErrRefused, describe(f), cur.UpdatedAt.Format(time.RFC3339))
			}
			if first == nil {
				c := cur
				first, firstAt = &c, now()
			}
		}
		select {
		case <-ctx.Done():
			return netspec.NodeFacts{}, 0, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// readFacts reads the facts of identity id with their modify index, as
// netspec's Store.Facts does (facts that cannot be read are found, empty),
// in a transaction, which names the key in its body: through a URL, an
// identity with a ".." segment (a hand-written key) is redirected by
// Consul's paths to another node's facts, or refused by consul.KV.
func readFacts(ctx context.Context, kv KV, id string) (f netspec.NodeFacts, index uint64, found bool, err error) {
	key := netspec.NodesKVPrefix + id
	res, err := kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.Get, Key: key}})
	if err != nil {
		return netspec.NodeFacts{}, 0, false, fmt.Errorf("read facts of node %s: %w", id, err)
	}
	if !res.OK || len(res.Pairs) == 0 { // the get fails the transaction when the key is absent
		return netspec.NodeFacts{}, 0, false, nil
	}
	p := res.Pairs[0]
	if json.Unmarshal(p.Value, &f) != nil {
		return netspec.NodeFacts{}, p.Index, true, nil
	}
	return f, p.Index, true, nil
}

// keyedByName says identity id is a node name an older agent keyed its
// facts and records by, not a swarm node ID: facts naming no ID are
// listed under its key (all; an older agent's), or it is not made like a
// swarm node ID (netspec.CheckNodeID; a name, or a key no agent writes).
func keyedByName(all []netspec.NodeFacts, id string) bool {
	if netspec.CheckNodeID(id) != nil {
		return true
	}
	for _, n := range all {
		if n.ID == "" && n.FactsKey() == netspec.NodesKVPrefix+id {
			return true
		}
	}
	return false
}

// listedByHostName refuses the removal of f, whose identity is a node
// name (keyedByName), while the swarm lists a node of that host name:
// an older agent named its node by Docker's host name, the one the swarm
// lists for it, unless given --node. Two such swarm nodes (cloned hosts)
// are both named: either may be the node.
func listedByHostName(f netspec.NodeFacts, list []netspec.SwarmNode) error {
	named := netspec.SwarmNodesOfHostName(list, f.ID)
	const why = "an older agent keyed its facts and records by its node name, Docker's host name unless given --node, and underlay removes only what nodes the swarm no longer lists left behind"
	switch len(named) {
	case 0:
		return nil
	case 1:
		n := named[0]
		return fmt.Errorf("%w: %s is still a swarm node by its host name: swarm node %s, host name %s (%s): drain it, stop it and run `docker node rm %s` first; %s",
			ErrRefused, describe(f), n.ID, n.Hostname, n.State, n.ID, why)
	}
	each := make([]string, len(named))
	for i, n := range named {
		each[i] = fmt.Sprintf("%s (%s)", n.ID, n.State)
	}
	return fmt.Errorf("%w: %s may still be a swarm node by its host name: the swarm lists %d nodes of host name %s (swarm nodes %s): drain, stop and run `docker node rm` on each that may be it first; %s",
		ErrRefused, describe(f), len(named), f.ID, strings.Join(each, ", "), why)
}

// checkSameSwarm refuses a swarm that lists none of the other nodes whose
// agents run: DOCKER_HOST naming another cluster's manager, to which
// every node of this one looks removed, and f, a node whose agent is
// merely down, would lose its ranges and addresses. An agent runs whose
// facts were refreshed within stale by their stamp or, with before (the
// facts read at least a heartbeat earlier), changed since: a stamp is its
// node's clock, which may be behind this one. With no other agent
// running (the last nodes of a cluster taken down), the swarm cannot be
// told apart, and is taken. same says a running agent's node is listed:
// the swarm is this cluster's.
func checkSameSwarm(f netspec.NodeFacts, all []netspec.NodeFacts, before map[string]time.Time, nodes map[string]string, now time.Time, stale time.Duration) (same bool, err error) {
	var running []string
	for _, n := range all {
		if n.ID == "" || n.ID == f.ID {
			continue
		}
		last, seen := before[n.ID]
		fresh := !n.UpdatedAt.IsZero() && now.Sub(n.UpdatedAt) <= stale
		if changed := before != nil && (!seen || !last.Equal(n.UpdatedAt)); !fresh && !changed {
			continue
		}
		if _, ok := nodes[n.ID]; ok {
			return true, nil
		}
		running = append(running, termtext.Cell(n.ID))
	}
	if len(running) == 0 {
		return false, nil
	}
	named := running
	if len(named) > 5 { // documents any agent writes: named, not all
		named = append(named[:5:5], "…")
	}
	watched := ""
	if before != nil {
		watched = " or while node rm watched them"
	}
	return false, fmt.Errorf("%w: the swarm lists none of the %d nodes whose agents refreshed their facts within %s%s (%s): is DOCKER_HOST a manager of this cluster's swarm? Whether it still lists %s cannot be told",
		ErrRefused, len(running), stale, watched, strings.Join(named, ", "), describe(f))
}

// checkSameSwarmWatched is checkSameSwarm once the agents' facts, all as
// read at readAt, have been watched for a heartbeat: it reads them again
// then (waiting for what is left of it), and takes those changed meanwhile
// as running.
func checkSameSwarmWatched(ctx context.Context, st *netspec.Store, f netspec.NodeFacts, all []netspec.NodeFacts, nodes map[string]string, readAt time.Time, o Options, now func() time.Time) error {
	if left := o.Heartbeat - now().Sub(readAt); left > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(left):
		}
	}
	before := make(map[string]time.Time, len(all))
	for _, n := range all {
		before[n.ID] = n.UpdatedAt
	}
	again, _, err := st.ReadNodes(ctx)
	if err != nil {
		return err
	}
	agents, _ := netspec.AgentsFacts(again)
	_, err = checkSameSwarm(f, agents, before, nodes, now(), o.Stale)
	return err
}

// startOfIDs warns when arg, an identity no facts have, is only the
// start of the IDs of swarm nodes (nodes, by ID) or of agents' facts
// (all): docker node rm takes that, node rm takes it for an identity of
// its own, with nothing recorded under it.
func startOfIDs(arg string, all []netspec.NodeFacts, nodes map[string]string) string {
	each := idsStartingWith(arg, all, nodes, "")
	if len(each) == 0 {
		return ""
	}
	return fmt.Sprintf("%s is not a whole swarm node ID, only the start of %s: node rm names a node by its whole ID, or its name, and removes what is recorded under that",
		termtext.Cell(arg), strings.Join(each, ", "))
}

// idsStartingWith names the swarm nodes (nodes, by ID) and agents' facts
// (all) whose IDs start with arg, but except's, with their state: at
// most five, then "…".
func idsStartingWith(arg string, all []netspec.NodeFacts, nodes map[string]string, except string) []string {
	of := map[string]string{}
	for id, state := range nodes {
		if len(id) > len(arg) && strings.HasPrefix(id, arg) && id != except {
			of[id] = state
		}
	}
	for _, n := range all {
		if len(n.ID) > len(arg) && strings.HasPrefix(n.ID, arg) && n.ID != except && of[n.ID] == "" {
			of[n.ID] = "not in the swarm"
			if n.Node != "" {
				of[n.ID] += "; its facts name node " + termtext.Cell(n.Node)
			}
		}
	}
	var each []string
	for _, id := range slices.Sorted(maps.Keys(of)) {
		each = append(each, fmt.Sprintf("swarm node %s's (%s)", termtext.Cell(id), of[id]))
	}
	if len(each) > 5 { // documents any agent writes: named, not all
		each = append(each[:5:5], "…")
	}
	return each
}

func alnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

// describe names a node for messages: its name and identity.
func describe(f netspec.NodeFacts) string {
	// Facts are documents any agent's token may write: names quoted
	// where they would break the line.
	if f.Node == "" {
		return "node " + termtext.Cell(f.ID)
	}
	return fmt.Sprintf("node %s (swarm node %s)", termtext.Cell(f.Node), termtext.Cell(f.ID))
}
