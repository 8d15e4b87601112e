// Package inventory keeps the cluster's list of underlay addresses: every
// agent publishes the macvlan and ipvlan endpoints of its node's containers
// to Consul KV, and `underlay ips` reads them all, so one view shows which
// IP and MAC is where, and flags any address used twice.
//
// PoolAddresses adds what cluster-IPAM pools hold that no container does,
// with the states `underlay ips` prints. It may import kvstore, netspec and
// ipam; Docker sits behind Source (dockerhost) and Consul KV behind KV and
// PoolKV (consul).
package inventory

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/shellword"
	"github.com/underlay/underlay/internal/termtext"
)

// KVPrefix is where agents publish their node's endpoints, one key per node.
const KVPrefix = "underlay/inventory/"

// Entry is one container address on an underlay network.
type Entry struct {
	IP   string `json:"ip"`
	MAC  string `json:"mac,omitempty"`
	Node string `json:"node"`
	// NodeID is the swarm node ID of the node whose agent published the
	// entry (its inventory's key, Run), which tells apart two nodes of
	// one name; none in an older agent's entries. A pool's allocation
	// shown as an entry (AllocationEntries) gives its node's identity
	// when facts name it.
	NodeID    string    `json:"node_id,omitempty"`
	Network   string    `json:"network"`
	Container string    `json:"container"`
	ID        string    `json:"container_id"`
	Service   string    `json:"service,omitempty"`
	Slot      string    `json:"slot,omitempty"`
	Task      string    `json:"task,omitempty"`
	Since     time.Time `json:"since"`
	// State is "in use" for a container's address; for addresses of a
	// cluster-IPAM pool held by no container, "reserved: …" or
	// "allocated, no container" (a leak, reclaimed after the grace period).
	State string `json:"state,omitempty"`
	// Duplicate names what else holds the same IP or MAC, set by Check.
	Duplicate string `json:"duplicate,omitempty"`
	// NetworkProblem is why the node's agent could not read the network
	// (its inspect failed): whether it is a macvlan or ipvlan one is not
	// known, and its address is listed all the same, as the node holds it.
	NetworkProblem string `json:"network_problem,omitempty"`
	// LeftOut marks an address its node's inventory lists by address
	// only: its entry was left out to fit Consul's value limit (fit), so
	// its container is not known; it names none.
	LeftOut bool `json:"left_out,omitempty"`
	// Unlisted counts, on one left-out entry of a node's inventory, the
	// node's addresses left out and not listed even by address: past a
	// few thousand, their addresses alone are above the limit.
	Unlisted int `json:"unlisted,omitempty"`
}

// Sort orders entries by network, then address.
func Sort(es []Entry) {
	slices.SortFunc(es, func(a, b Entry) int {
		return cmp.Or(strings.Compare(a.Network, b.Network), CompareIP(a.IP, b.IP), strings.Compare(a.Node, b.Node))
	})
}

// noteHolders is how many other holders of an address a duplicate's note
// names; the rest are counted. Naming all, n holders of one address made
// n notes of n names each.
const noteHolders = 5

// Check marks every entry whose IP or MAC another entry also holds, and
// every entry whose container ID another node's entry lists too (another
// name, or another swarm node ID: OtherNode): one container runs on one
// node, so one of those inventories is stale or forged (one container on
// several networks of its node is no clash). A MAC is one endpoint's (a
// container on a network), which lists an entry per address (IPv4 and
// IPv6) with it: those share it, and take the note of the first.
func Check(es []Entry) (duplicates int) {
	byIP := map[string][]int{}
	byMAC := map[string][]int{}
	byID := map[string][]int{}
	type endpoint struct{ mac, network, node, nodeID, id, container string }
	firstOf := map[endpoint]int{}
	sharing := map[int][]int{} // an endpoint's first entry → its others
	for i, e := range es {
		byIP[e.Network+"|"+e.IP] = append(byIP[e.Network+"|"+e.IP], i)
		if e.MAC != "" {
			ep := endpoint{e.MAC, e.Network, e.Node, e.NodeID, e.ID, e.Container}
			if f, ok := firstOf[ep]; ok {
				sharing[f] = append(sharing[f], i)
			} else {
				firstOf[ep] = i
				byMAC[e.MAC] = append(byMAC[e.MAC], i)
			}
		}
		if e.ID != "" {
			byID[e.ID] = append(byID[e.ID], i)
		}
	}
	mark := func(groups map[string][]int, what string, sameNode bool, sharing map[int][]int) {
		for _, idx := range groups {
			if len(idx) < 2 {
				continue
			}
			for x, note := range groupNotes(es, idx, what, sameNode) {
				if note == "" {
					continue
				}
				for _, i := range append([]int{idx[x]}, sharing[idx[x]]...) {
					if es[i].Duplicate == "" {
						duplicates++
						es[i].Duplicate = note
					} else {
						es[i].Duplicate += "; " + note
					}
				}
			}
		}
	}
	mark(byIP, "IP", true, nil)
	mark(byMAC, "MAC", true, sharing)
	// A container on several networks of its node is no clash.
	mark(byID, "container ID", false, nil)
	return duplicates
}

// OtherNode says whether entries a and b are of two nodes: of two names,
// or of one name and two swarm node IDs (NodeID). An entry giving no ID
// (an older agent's) may be of any node of its name: not another.
func OtherNode(a, b Entry) bool {
	return a.Node != b.Node || a.NodeID != "" && b.NodeID != "" && a.NodeID != b.NodeID
}

// maxHolderName is how much of a container's or node's name a
// duplicate's note holds: a name may be of any length (a label set by
// hand, or an inventory any agent's token may write), and every note
// naming its holder repeated it.
const maxHolderName = 128

// holder names what holds e in a duplicate's note: its container and node,
// or, for what a pool holds, its state (a gateway has no container) and
// node. Each quoted when it would break its line (termtext.Cell): the
// nodes of a pool's allocations come from block documents, which any
// agent's token may write, and the note is printed as it is; and
// shortened (maxHolderName).
func holder(e Entry) string {
	h := termtext.Shorten(termtext.Cell(cmp.Or(e.Container, e.State)), maxHolderName)
	if e.Node != "" {
		h += "@" + termtext.Shorten(termtext.Cell(e.Node), maxHolderName)
	}
	return h
}

// Filter keeps entries of network and node ("" matches all).
func Filter(es []Entry, network, node string) []Entry {
	var out []Entry
	for _, e := range es {
		if (network == "" || e.Network == network) && (node == "" || e.Node == node) {
			out = append(out, e)
		}
	}
	return out
}

// CompareIP orders addresses given as text numerically; with either
// unparsable, as text.
func CompareIP(a, b string) int {
	pa, ea := netip.ParseAddr(a)
	pb, eb := netip.ParseAddr(b)
	switch {
	case ea != nil || eb != nil:
		return strings.Compare(a, b)
	}
	return pa.Compare(pb)
}

// KV is what the inventory needs of Consul's KV store.
type KV interface {
	List(ctx context.Context, prefix string) ([]kvstore.Pair, error)
	Put(ctx context.Context, key string, value []byte) error
}

// Publish stores a node's entries under key, the node's identity (its
// swarm node ID): two nodes with one name never overwrite each other's.
func Publish(ctx context.Context, kv KV, key string, es []Entry) error {
	Sort(es)
	b, err := json.Marshal(es)
	if err != nil {
		return err
	}
	if err := kv.Put(ctx, KVPrefix+key, b); err != nil {
		return fmt.Errorf("publish inventory of %s: %w", key, err)
	}
	return nil
}

// Load reads every node's entries; inventories that cannot be decoded,
// whose key's node has no facts, or that list an entry of a node other
// than their key's (by facts), are set apart, and hide no other. facts are the node facts as
// netspec.Store.ReadNodes lists them: the caller reads them once and hands
// the same to everything else that judges by them, which a second read
// could contradict (a node publishing in between).
func Load(ctx context.Context, kv KV, facts []netspec.NodeFacts) ([]Entry, []BadDocument, error) {
	kvs, err := kv.List(ctx, KVPrefix)
	if err != nil {
		return nil, nil, fmt.Errorf("read inventories: %w", err)
	}
	names := NodeNames(facts)
	if err := namesOfJoined(ctx, kv, kvs, names); err != nil {
		return nil, nil, err
	}
	var all []Entry
	var bad []BadDocument
	for _, kv := range kvs {
		es, err := decode(kv.Value)
		if err == nil {
			err = ownEntries(es, strings.TrimPrefix(kv.Key, KVPrefix), names)
		}
		if err != nil {
			fix, why := shellword.KVRemoval(kv.Key, "")
			bad = append(bad, BadDocument{Key: kv.Key, Problem: err.Error() + why,
				Effect: "the addresses it held are not listed; if it is a node's, its agent publishes it again within its period",
				Fix:    fix})
			continue
		}
		all = append(all, es...)
	}
	Sort(all)
	return all, bad, nil
}

// decode reads one node's inventory. An entry no agent writes (no
// address, network or node, an address or MAC that is none, a name agents
// do not quote that is not graphic, a duplicate already noted, or an
// endpoint listed twice) makes the document unusable, as one that does
// not decode: it would be listed as a row with no address, and such rows
// flagged as duplicates of each other. Addresses and MACs are returned in
// their canonical spelling, and the names agents quote (quoteLabelNames)
// quoted, as the newest agent publishes them.
func decode(value []byte) ([]Entry, error) {
	var es []Entry
	if err := json.Unmarshal(value, &es); err != nil {
		return nil, fmt.Errorf("not an inventory: %w", err)
	}
	// An endpoint listed twice would be flagged as a duplicate of itself.
	type endpoint struct{ network, ip, id, container string }
	seen := make(map[endpoint]int, len(es))
	for i := range es {
		// Quoted as a newer agent quotes them: an older one published
		// them as they were (U+00A0 was graphic before stop 55), and a
		// rolling upgrade would hide its node's addresses until then.
		quoteLabelNames(&es[i])
		e := es[i]
		ip, err := netip.ParseAddr(e.IP)
		switch {
		case err != nil:
			return nil, fmt.Errorf("entry %d: ip %s is not an address", i, termtext.Q(e.IP))
		case ip.Zone() != "":
			// Docker gives none, and fd00::5%x is no duplicate of fd00::5
			// as text; the zone is any text, escape sequences included.
			return nil, fmt.Errorf("entry %d: ip %s has a zone, which no container address has", i, termtext.Q(e.IP))
		case ip.Is4In6():
			// ::ffff:10.0.0.5 is 10.0.0.5, but would be compared, and
			// matched against the pools, as another address.
			return nil, fmt.Errorf("entry %d: ip %s is an IPv4-mapped IPv6 address; agents list it as %s", i, termtext.Q(e.IP), ip.Unmap())
		}
		// Addresses are compared as text (Check, PoolAddresses): one
		// spelling each, or one address spelt two ways is no duplicate.
		es[i].IP = ip.String()
		if err := printable(e); err != nil {
			return nil, fmt.Errorf("entry %d (%s): %w", i, e.IP, err)
		}
		switch {
		case e.Network == "":
			return nil, fmt.Errorf("entry %d (%s): no network", i, e.IP)
		case e.Node == "":
			return nil, fmt.Errorf("entry %d (%s): no node", i, e.IP)
		case e.Duplicate != "":
			// Check sets it: kept, it would hide the entry from Check's count.
			return nil, fmt.Errorf("entry %d (%s): duplicate %s is what underlay ips finds, not what agents publish", i, e.IP, termtext.Q(e.Duplicate))
		case e.Unlisted < 0 || e.Unlisted > 0 && !e.LeftOut:
			return nil, fmt.Errorf("entry %d (%s): unlisted %d is not what agents publish (a count, on a left-out entry)", i, e.IP, e.Unlisted)
		case e.LeftOut && (e.Container != "" || e.ID != "" || e.MAC != "" || e.Service != "" || e.Slot != "" || e.Task != ""):
			// Its container would be trusted as known.
			return nil, fmt.Errorf("entry %d (%s): left out, yet it names a container", i, e.IP)
		}
		if e.MAC != "" {
			mac, err := net.ParseMAC(e.MAC)
			if err != nil {
				return nil, fmt.Errorf("entry %d (%s): mac %s is not a MAC address", i, e.IP, termtext.Q(e.MAC))
			}
			es[i].MAC = mac.String()
		}
		ep := endpoint{e.Network, es[i].IP, e.ID, e.Container}
		if j, ok := seen[ep]; ok {
			return nil, fmt.Errorf("entry %d (%s of container %s on %s) repeats entry %d", i, e.IP, cmp.Or(e.ID, e.Container), e.Network, j)
		}
		seen[ep] = i
	}
	return es, nil
}

// namesOfJoined adds to names the nodes of the inventories in kvs that
// names lacks, from the facts read again: the caller read the facts
// before Load read the inventories, and a node that joined in between
// (its agent publishes its facts, then its inventory) would have its
// inventory set apart as stale. The facts are read again only then.
func namesOfJoined(ctx context.Context, kv KV, kvs []kvstore.Pair, names map[string]string) error {
	missing := false
	for _, p := range kvs {
		if _, ok := names[strings.TrimPrefix(p.Key, KVPrefix)]; !ok {
			missing = true
			break
		}
	}
	if !missing {
		return nil
	}
	pairs, err := kv.List(ctx, netspec.NodesKVPrefix)
	if err != nil {
		return fmt.Errorf("read node facts again, for inventories of nodes without facts: %w", err)
	}
	facts, _ := netspec.DecodeNodes(pairs)
	for id, name := range NodeNames(facts) {
		if _, ok := names[id]; !ok {
			names[id] = name
		}
	}
	return nil
}

// NodeNames maps each node identity to its name, as the facts its agent
// publishes under netspec.NodesKVPrefix give it: the facts ReadNodes lists
// as an identity's (their key's, whatever identity their document names);
// an older agent's, which name no identity, were keyed, with its
// inventory, by its name. Facts that name no node give no name, nor do
// facts under a key no agent writes (netspec.NodeFacts.KeyProblem: one
// naming no swarm node ID, unless the facts name no ID and it is the
// node name they name): the inventory under such a key, or under the
// name such facts naming no ID give, would be taken as the node's they
// name.
func NodeNames(facts []netspec.NodeFacts) map[string]string {
	names := make(map[string]string, len(facts))
	for _, f := range facts {
		if f.Node != "" && f.KeyProblem() == nil {
			names[cmp.Or(f.ID, f.Node)] = f.Node
		}
	}
	return names
}

// ownEntries says which of es, the inventory under identity id, names a
// node other than id's (names, by the node facts), or another identity
// (NodeID; an older agent's entries name none): an agent publishes
// only its own node's addresses, and such an entry would be listed as the
// other node's. With no name for id, the inventory is refused whole: an
// agent publishes its facts before its inventory and keeps them fresh,
// and node rm deletes the inventory before the facts, so an inventory
// whose node has none is stale or forged, and its entries, naming any
// node, would be trusted unchecked.
func ownEntries(es []Entry, id string, names map[string]string) error {
	name, ok := names[id]
	// id is the key's, which any agent's token may write, of any
	// characters and length.
	quoted := func(s string) string { return termtext.Shorten(termtext.Cell(s), maxHolderName) }
	if !ok {
		return fmt.Errorf("no node facts name its key's node, swarm node %s (%s is absent, unreadable or names no node): an agent publishes its facts before its inventory, so this one is stale or forged",
			quoted(id), quoted(netspec.NodesKVPrefix+id))
	}
	for i, e := range es {
		if e.Node != name {
			return fmt.Errorf("entry %d (%s) names node %s, but its key is swarm node %s's, %s by its facts: an agent publishes only its own node's addresses", i, e.IP, termtext.Q(e.Node), quoted(id), termtext.Q(name))
		}
		if e.NodeID != "" && e.NodeID != id {
			return fmt.Errorf("entry %d (%s) names swarm node %s, but its key is swarm node %s's: an agent publishes only its own node's addresses", i, e.IP, termtext.Q(e.NodeID), quoted(id))
		}
	}
	return nil
}

// printable says which of e's names has a control character, or any
// other that is not graphic, once those agents quote are quoted
// (quoteLabelNames): no other name Docker or a host gives has one, and
// printed as is, a newline would forge a row of `underlay ips`, an escape
// sequence rewrite the terminal, and a bidirectional override (U+202E) or
// a line separator (U+2028), which are no Cc control characters, reorder
// or break what the dashboard and a terminal show.
func printable(e Entry) error {
	for _, f := range []struct{ name, value string }{
		{"node", e.Node}, {"node_id", e.NodeID}, {"network", e.Network}, {"container", e.Container}, {"container_id", e.ID},
		{"service", e.Service}, {"slot", e.Slot}, {"task", e.Task}, {"state", e.State}, {"network_problem", e.NetworkProblem},
	} {
		if err := termtext.CheckGraphic(f.value); err != nil {
			return fmt.Errorf("%s %s: %w", f.name, termtext.Q(f.value), err)
		}
	}
	return nil
}

// quoteLabelNames quotes (termtext.Cell) the names of e that come from
// its container or its network, when one is not graphic: Docker checks a
// container's name, but its service, task and slot are Swarm's labels,
// which anyone may set on a plain container, to anything, and a network
// made by hand is named at will; and readers set apart the node's whole
// inventory for one such name (printable), which would hide every
// address of the node for one container's label. No cluster network's
// name is quoted: its spec's name is graphic. Readers quote them too
// (decode), so that what an older agent published as it was, before it
// quoted them or took for graphic what now is not (U+00A0 before stop
// 55), reads as what the newest publishes, and its node is not hidden
// mid-upgrade. Cell leaves what it quoted as it is.
func quoteLabelNames(e *Entry) {
	for _, f := range []*string{&e.Network, &e.Container, &e.Service, &e.Slot, &e.Task} {
		*f = termtext.Cell(*f)
	}
}

// noteUnreadable logs the networks of es whose agent could not read them
// (Entry.NetworkProblem), with the problem, when they differ from was,
// those it logged last; or, once there are none, that they read again.
// It returns them.
func noteUnreadable(log *slog.Logger, was []string, es []Entry) []string {
	var now []string
	for _, e := range es {
		if e.NetworkProblem != "" {
			now = append(now, e.Network+": "+e.NetworkProblem)
		}
	}
	slices.Sort(now)
	now = slices.Compact(now)
	switch {
	case slices.Equal(was, now):
	case len(now) > 0:
		log.Warn("networks of the node's containers could not be read: their addresses are published marked so (underlay ips shows the problem), the rest as usual; tried again every period",
			"networks", strings.Join(now, "; "))
	default:
		log.Info("every network of the node's containers reads again", "were_unreadable", len(was))
	}
	return now
}

// Source lists the node's underlay endpoints and signals when they may have
// changed.
type Source interface {
	Endpoints(ctx context.Context, node string) ([]Entry, error)
	// Changes fires after container or network events; it reconnects by
	// itself and ends with ctx.
	Changes(ctx context.Context) <-chan struct{}
}

// Run publishes the entries of node (its name) under key (its identity,
// its swarm node ID, which each entry names too: NodeID) whenever they
// change, and every period (Consul may have lost them). When they are
// above Consul's value limit, it publishes what fit makes of them, logs
// what was shortened or left out when that changes, and counts it in m
// (nil: not counted). A publish is given up after kvstore.WriteWait, or
// period when shorter, and tried again at the next change or period.
func Run(ctx context.Context, src Source, kv KV, node, key string, period time.Duration, log *slog.Logger, m *Metrics) {
	log = log.With("component", "inventory")
	changes := src.Changes(ctx)
	t := time.NewTicker(period)
	defer t.Stop()
	var last []byte
	var fits fitted
	var unreadable []string
	for {
		es, err := src.Endpoints(ctx, node)
		if err == nil {
			for i := range es {
				es[i].NodeID = key // tells apart two nodes of one name
				quoteLabelNames(&es[i])
			}
			unreadable = noteUnreadable(log, unreadable, es)
			Sort(es)
			var f fitted
			es, f = fit(es)
			fits = noteFitted(log, fits, f)
			m.set(len(f.leftOut), f.shortened)
			b, _ := json.Marshal(es)
			if !bytes.Equal(b, last) {
				// Bounded: a Consul agent that never answers would hold
				// the loop for good.
				wctx, cancel := kvstore.WriteContext(ctx, period)
				if err = Publish(wctx, kv, key, es); err == nil {
					last = b
				}
				cancel()
			}
		}
		if err != nil && ctx.Err() == nil {
			log.Warn("inventory not published; will retry", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-changes:
			// Events come in bursts (create, connect, start): let it pass.
			time.Sleep(100 * time.Millisecond)
		case <-t.C:
			last = nil
		}
	}
}
