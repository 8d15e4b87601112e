package netspec

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/termtext"
)

// A node's identity in the cluster is its swarm node ID: unique by
// construction, unlike host names (cloned VMs share one) or the agent's
// --node, which is only its name for display. Everything a node owns —
// range leases, IPAM allocations, state reports, its facts — is keyed by
// it. One agent at a time holds an identity: it claims it at start and
// keeps its facts fresh; a second agent claiming an identity a live agent
// holds is refused.

// ErrIdentityHeld is returned when another live agent holds the identity.
var ErrIdentityHeld = errors.New("node identity held by another live agent")

// ErrNodeRemoved is returned when `underlay node rm` removed the identity
// (see RemovedNodesKVPrefix): its agent may not register it again.
var ErrNodeRemoved = errors.New("node removed from the cluster by `underlay node rm`")

// NodeFacts is what an agent publishes about its node, so that commands
// can check a spec against every node before changing anything, and so
// that the swarm leader knows which nodes are alive.
type NodeFacts struct {
	// ID is the node's identity, its swarm node ID.
	ID string `json:"id,omitempty"`
	// Node is the node's name (the agent's --node), for display.
	Node       string   `json:"node"`
	Interfaces []string `json:"interfaces"`
	// Holder is the agent process holding the identity.
	Holder Holder `json:"holder,omitzero"`
	// UpdatedAt is refreshed at every heartbeat: fresh facts mean a live
	// agent.
	UpdatedAt time.Time `json:"updated_at"`
	// Key is the key the facts were read from, set by the readers of a
	// listing (DecodeFacts) and never stored: facts naming no ID carry
	// no other trace of it. Empty for facts not read from one (FactsKey).
	Key string `json:"-"`
}

// FactsKey is the key f was read from, or for facts not read from a
// listing (Key empty), the key their agent writes: its ID's, or an older
// agent's, naming no ID, its node name's.
func (f NodeFacts) FactsKey() string {
	if f.Key != "" {
		return f.Key
	}
	return NodesKVPrefix + cmp.Or(f.ID, f.Node)
}

// KeyProblem says why no agent writes the key f is under (FactsKey), nil
// when an agent may have: agents write theirs under their swarm node ID
// (CheckNodeID), older ones, naming no ID, under the node name they name.
// f is as listed, its ID its key's when it names one. Facts under any
// other key (underlay/nodes/X, underlay/nodes/a b) are no node's: taken
// as one's, they give a name a swarm node no node has, and keep a dead
// node's records as a live one's. Every reader that sets such facts apart
// (AgentsNodes, IDsByName, node ls, ips, node rm, the doctor, the
// dashboard, the inventory) judges them by this rule.
func (f NodeFacts) KeyProblem() error {
	return factsKeyProblem(strings.TrimPrefix(f.FactsKey(), NodesKVPrefix), f.ID, f.Node)
}

// NameProblem says why the names facts f give are none an agent writes,
// naming their key (FactsKey), nil when they may be: its node name
// (CheckNodeName: the agent's --node, or Docker's host name), and its
// holder's host name when it gives one (the kernel's, which fits the
// same rule). Facts are documents any agent's token may write, read by
// every listing: node ls and ips show such names as invalid, and warn
// with this, rather than print what they hold as a node's name (a
// control sequence, a name of any length). NodeNameProblem and
// HostNameProblem judge each.
func (f NodeFacts) NameProblem() error {
	var each []string
	if err := f.NodeNameProblem(); err != nil {
		each = append(each, err.Error())
	}
	if err := f.HostNameProblem(); err != nil {
		each = append(each, err.Error())
	}
	if len(each) == 0 {
		return nil
	}
	return fmt.Errorf("node facts %s: %s", termtext.Shorten(termtext.Cell(f.FactsKey()), len(NodesKVPrefix)+MaxNodeNameLen), strings.Join(each, "; "))
}

// NodeNameProblem is NameProblem of f's node name alone, without the key.
func (f NodeFacts) NodeNameProblem() error {
	if err := CheckNodeName(f.Node); err != nil {
		return fmt.Errorf("node name %s: %v", termtext.QuoteShort(f.Node, MaxNodeNameLen), err)
	}
	return nil
}

// HostNameProblem is NameProblem of f's holder's host name alone ("" is
// none), without the key.
func (f NodeFacts) HostNameProblem() error {
	if f.Holder.Host == "" {
		return nil
	}
	if err := CheckNodeName(f.Holder.Host); err != nil {
		return fmt.Errorf("host name %s: %v", termtext.QuoteShort(f.Holder.Host, MaxNodeNameLen), err)
	}
	return nil
}

// SwarmNode is a node the swarm lists, whatever its state: its swarm node
// ID, the host name its engine reports (Docker's Description.Hostname,
// the name an older agent keyed its facts by unless given --node), its
// state (ready, down, …) and its availability (active, pause, drain; ""
// when not known).
type SwarmNode struct {
	ID, Hostname, State, Availability string
}

// SwarmNodesOfHostName lists, by ID, the swarm nodes in list whose host
// name is name: those a node an older agent keyed its facts and records
// by name may be, for it named its node by Docker's host name, the one
// the swarm lists for it, unless given --node. Two or more (cloned hosts):
// any may be it. node rm and node ls both judge such a node by it.
func SwarmNodesOfHostName(list []SwarmNode, name string) []SwarmNode {
	var named []SwarmNode
	for _, n := range list {
		if n.Hostname == name {
			named = append(named, n)
		}
	}
	slices.SortFunc(named, func(a, b SwarmNode) int { return strings.Compare(a.ID, b.ID) })
	return named
}

// SwarmNodesOf lists the swarm nodes in list that the node of an agent's
// facts f (AgentsFacts) may be: the one of its swarm node ID; for facts
// naming no ID (an older agent's, keyed by its node name), those of the
// host name its key names (SwarmNodesOfHostName), byHostName set. None:
// the swarm no longer lists it (by host name: unless the older agent was
// given a --node other than its host name).
func SwarmNodesOf(f NodeFacts, list []SwarmNode) (nodes []SwarmNode, byHostName bool) {
	if f.ID == "" {
		return SwarmNodesOfHostName(list, strings.TrimPrefix(f.FactsKey(), NodesKVPrefix)), true
	}
	for _, n := range list {
		if n.ID == f.ID {
			return []SwarmNode{n}, false
		}
	}
	return nil, false
}

// Holder identifies one agent process.
type Holder struct {
	// Instance is random, drawn at the agent's start.
	Instance string `json:"instance"`
	// Host is the kernel's host name, for messages.
	Host string `json:"host,omitempty"`
	// BootID and PIDNS name the process-ID space PID and Start are in: an
	// agent in the same space can tell whether the holder still runs.
	BootID string `json:"boot_id,omitempty"`
	PIDNS  string `json:"pid_ns,omitempty"`
	PID    int    `json:"pid,omitempty"`
	// Start is the process's start time, in clock ticks since boot: a PID
	// reused by another process has another.
	Start uint64 `json:"start,omitempty"`
}

func (h Holder) sameSpace(o Holder) bool {
	return h.BootID != "" && h.BootID == o.BootID && h.PIDNS == o.PIDNS
}

func (h Holder) String() string {
	return fmt.Sprintf("instance %s on host %s (pid %d)", h.Instance, h.Host, h.PID)
}

// MaxNodeNameLen is the longest node name: Linux's host name limit, so
// that every host name Docker reports fits.
const MaxNodeNameLen = 64

// CheckNodeName checks a node's name (the agent's --node, or Docker's host
// name): 1 to MaxNodeNameLen letters, digits, '_', '.' or '-', starting
// with a letter or digit. The name is a segment of Consul KV keys (older
// agents' doctor and task metrics reports, NODE in underlay/doctor/NODE;
// with no '/', none is under underlay/doctor/id/, where agents now publish
// them by swarm node ID), is shown with every report, and is a segment of
// service IDs (NODE:container:port), and a field of ips' and inspect's
// tables: a '/' would split its keys, a space or newline break the tables.
func CheckNodeName(name string) error {
	switch {
	case name == "":
		return errors.New("no name")
	case len(name) > MaxNodeNameLen:
		return fmt.Errorf("%d characters, want at most %d", len(name), MaxNodeNameLen)
	}
	for _, r := range name {
		if !alnum(r) && r != '_' && r != '.' && r != '-' {
			return fmt.Errorf("%s is not allowed: want letters, digits, '_', '.' or '-' (the name is part of Consul KV keys and service IDs)", termtext.QRune(r))
		}
	}
	if !alnum(rune(name[0])) {
		return fmt.Errorf("want a letter or digit first, not %q", name[0])
	}
	return nil
}

// NodeIDLen is the length of a swarm node ID.
const NodeIDLen = 25

// CheckNodeID checks a swarm node ID, as a segment of the Consul KV keys
// a node's reports live under (underlay/doctor/id/ID,
// underlay/metrics/id/ID): NodeIDLen lowercase letters and digits.
// Swarmkit draws every node ID (identity.NewID, the node certificate's
// CN) as 25 base-36 digits, and has since Docker 1.12: any other key is
// not one an agent wrote.
func CheckNodeID(id string) error {
	if len(id) != NodeIDLen {
		return fmt.Errorf("%d bytes, want %d", len(id), NodeIDLen)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return fmt.Errorf("%s is not allowed: want lowercase letters and digits", termtext.QRune(r))
		}
	}
	return nil
}

func alnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

// NodesKVPrefix is where agents publish their node facts, one key per
// node identity.
const NodesKVPrefix = "underlay/nodes/"

func factsKey(id string) string { return NodesKVPrefix + id }

// RemovedNodesKVPrefix is where `underlay node rm` records each swarm
// node ID it removed, one key per ID (NodeRemoval), written first, as it
// takes the node's facts over, before it removes anything: every write of
// the node's agent from then on is refused (RemovedGuard), none landing
// on a network the removal passed already. A swarm node ID never comes back once `docker node rm`
// removed it, so the record stays: an agent cut off from Consul for
// longer than node rm watched its facts would otherwise come back and
// write them again, its node looking alive and its old ranges and
// addresses claimed again. Such an agent is refused (ErrNodeRemoved); the
// node joins the swarm again, under a new ID, to come back.
const RemovedNodesKVPrefix = "underlay/removed-nodes/"

// NodeRemoval is the record node rm leaves of a node it removed.
type NodeRemoval struct {
	ID   string `json:"id"`
	Node string `json:"node,omitempty"`
	// RemovedAt is node rm's clock when it removed the node.
	RemovedAt time.Time `json:"removed_at"`
	// By says who ran node rm (user@host), for node ls; "" when not
	// recorded (node rm before it).
	By string `json:"by,omitempty"`
}

// Removals lists the records node rm left of the nodes it removed
// (RemovedNodesKVPrefix), oldest first; the identity is its key's.
func (st *Store) Removals(ctx context.Context) ([]NodeRemoval, error) {
	kvs, err := st.kv.List(ctx, RemovedNodesKVPrefix)
	if err != nil {
		return nil, fmt.Errorf("list the records of removed nodes: %w", err)
	}
	out := make([]NodeRemoval, 0, len(kvs))
	for _, p := range kvs {
		out = append(out, parseRemoval(strings.TrimPrefix(p.Key, RemovedNodesKVPrefix), p.Value))
	}
	slices.SortStableFunc(out, func(a, b NodeRemoval) int {
		return cmp.Or(a.RemovedAt.Compare(b.RemovedAt), strings.Compare(a.ID, b.ID))
	})
	return out, nil
}

// Removal reads the record node rm left of identity id, if any (found
// false when none). A token that may not read it (an agent policy from
// before the record: see deploy/consul/agent.hcl) finds none, so that
// such agents keep running; what node rm removed is then not guarded.
func (st *Store) Removal(ctx context.Context, id string) (r NodeRemoval, found bool, err error) {
	p, found, err := st.kv.Get(ctx, RemovedNodesKVPrefix+id)
	switch {
	case errors.Is(err, kvstore.ErrPermissionDenied):
		return NodeRemoval{}, false, nil
	case err != nil:
		return NodeRemoval{}, false, fmt.Errorf("read the record of the removal of node %s: %w", id, err)
	case !found:
		return NodeRemoval{}, false, nil
	}
	return parseRemoval(id, p.Value), true, nil
}

// parseRemoval reads the record b of the removal of identity id: an
// unreadable record still records the removal.
func parseRemoval(id string, b []byte) NodeRemoval {
	var r NodeRemoval
	_ = json.Unmarshal(b, &r)
	r.ID = id
	return r
}

// notRemoved refuses an agent's write of facts f when node rm removed
// their identity (ErrNodeRemoved, naming when). Read after the facts
// were found absent and before they are created at index 0: node rm
// writes the record as it takes them over (Remover, whose hold an agent
// waits on), before it deletes them, so facts found present are either
// not removed or node rm's, or fail the check-and-set, and facts found
// gone by node rm have their record found.
func (st *Store) notRemoved(ctx context.Context, f NodeFacts) error {
	r, found, err := st.Removal(ctx, f.ID)
	if err != nil || !found {
		return err
	}
	return fmt.Errorf("node %s (swarm node %s): %w at %s (%s): a swarm node ID never comes back; to bring the node back, join the swarm again (docker swarm leave, then docker swarm join), and the agent serves the new ID",
		f.Node, f.ID, ErrNodeRemoved, r.RemovedAt.Format(time.RFC3339), RemovedNodesKVPrefix+f.ID)
}

// Remover is the holder `underlay node rm` writes into the facts of the
// node it removes: an agent claiming them meanwhile waits (see
// DecideClaim).
const Remover = "underlay node rm"

// ClaimVerdict is what an agent does about an identity's current holder.
type ClaimVerdict int

// Claim verdicts.
const (
	// ClaimTake: the identity is free, this agent's, or its holder is
	// gone (its process no longer runs, or its facts went stale).
	ClaimTake ClaimVerdict = iota
	// ClaimWait: the holder may be alive; look again until its facts go
	// stale or it refreshes them.
	ClaimWait
	// ClaimRefuse: the holder refreshed its facts while this agent waited:
	// it is alive.
	ClaimRefuse
)

// DecideClaim judges the facts cur stored under an identity for the agent
// me: first the facts seen when it started waiting (nil at first), at
// firstAt by its clock. stale is how old facts may be before their holder
// counts as gone; running reports whether a process of this process-ID
// space still runs.
//
// A holder that refreshed its facts while this agent waited is alive; one
// that did not for stale is gone, whatever its stamp says: the stamp is the
// holder's clock, and facts stamped ahead (a clock set back since) would
// otherwise look fresh, and the identity held, for as long. Facts node rm
// holds (Remover) are judged by watching only, their stamp being another
// machine's clock: renewed, they are waited for (first must then be the
// renewal).
func DecideClaim(cur, first *NodeFacts, firstAt time.Time, me Holder, now time.Time, stale time.Duration, running func(pid int, start uint64) bool) ClaimVerdict {
	if cur == nil || cur.Holder.Instance == "" || cur.Holder.Instance == me.Instance {
		return ClaimTake
	}
	watched := first != nil && first.Holder.Instance == cur.Holder.Instance
	switch {
	case cur.Holder.Instance == Remover:
		// Its stamp is the clock of the machine node rm runs on, not
		// this node's: ahead of it, a removal under way would look
		// long over, and this agent would run while its addresses and
		// ranges are freed. Only watching tells it is over: node rm
		// renews its hold as it goes, and a renewal is watched anew.
		if watched && cur.UpdatedAt.Equal(first.UpdatedAt) && now.Sub(firstAt) > stale {
			return ClaimTake
		}
		return ClaimWait
	case watched && !cur.UpdatedAt.Equal(first.UpdatedAt):
		return ClaimRefuse
	case cur.Holder.sameSpace(me) && !running(cur.Holder.PID, cur.Holder.Start):
		return ClaimTake // its process died (an agent killed and restarted)
	case now.Sub(cur.UpdatedAt) > stale:
		return ClaimTake
	case watched && now.Sub(firstAt) > stale:
		return ClaimTake // not refreshed while watched
	}
	return ClaimWait
}

// ClaimOptions tune Claim.
type ClaimOptions struct {
	// Stale is how old a holder's facts may be before it counts as gone:
	// a few of its heartbeats.
	Stale time.Duration
	// Poll is how often a waiting claim looks again.
	Poll time.Duration
	// Running reports whether a process of this process-ID space runs.
	Running func(pid int, start uint64) bool
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Claim takes the identity f.ID for the agent f.Holder and publishes f. It
// waits while a holder may be alive and returns ErrIdentityHeld, naming
// the holder, when it proves alive.
func (st *Store) Claim(ctx context.Context, f NodeFacts, o ClaimOptions) error {
	if f.ID == "" {
		return errors.New("claim node identity: no swarm node ID")
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	var first *NodeFacts
	var firstAt time.Time
	for {
		p, found, cur, err := st.readFacts(ctx, f.ID)
		if err != nil {
			return err
		}
		if !found {
			cur = nil
		}
		switch DecideClaim(cur, first, firstAt, f.Holder, now(), o.Stale, o.Running) {
		case ClaimTake:
			// Checked at every claim, not only of absent facts: facts
			// written after the removal by an agent older than the
			// record are taken for no removal otherwise.
			if err := st.notRemoved(ctx, f); err != nil {
				return err
			}
			f.UpdatedAt = now().UTC()
			if won, err := st.writeFacts(ctx, f, p.Index); err != nil || won {
				return err
			}
			continue // someone wrote meanwhile: judge again
		case ClaimRefuse:
			return fmt.Errorf("node %s (swarm node %s): %w: %s, facts refreshed %s; is another agent running against this node's dockerd? Stop one of them",
				f.Node, f.ID, ErrIdentityHeld, cur.Holder, cur.UpdatedAt.Format(time.RFC3339))
		}
		// Facts changed since first are node rm's renewed hold (any
		// other holder's refuse the claim above): watched anew.
		if first == nil || first.Holder.Instance != cur.Holder.Instance || !first.UpdatedAt.Equal(cur.UpdatedAt) {
			first, firstAt = cur, now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("claim node identity %s: %w", f.ID, ctx.Err())
		case <-time.After(o.Poll):
		}
	}
}

// PublishNode stores the facts of the node whose identity f's holder
// holds, refreshing UpdatedAt; it returns ErrIdentityHeld if another agent
// took the identity over meanwhile (this one looked gone).
func (st *Store) PublishNode(ctx context.Context, f NodeFacts) error {
	for {
		p, found, cur, err := st.readFacts(ctx, f.ID)
		if err != nil {
			return err
		}
		if found && cur.Holder.Instance != "" && cur.Holder.Instance != f.Holder.Instance {
			return fmt.Errorf("node %s (swarm node %s): %w since: %s", f.Node, f.ID, ErrIdentityHeld, cur.Holder)
		}
		// Facts gone: node rm may have removed the node while this agent
		// was cut off from Consul (see RemovedNodesKVPrefix). Facts
		// present are this agent's, and need no read more per heartbeat.
		if p.Index == 0 {
			if err := st.notRemoved(ctx, f); err != nil {
				return err
			}
		}
		f.UpdatedAt = time.Now().UTC()
		if won, err := st.writeFacts(ctx, f, p.Index); err != nil || won {
			return err
		}
	}
}

// readFacts reads one identity's facts; unreadable facts count as absent
// (they are rewritten) but keep their index for the check-and-set.
func (st *Store) readFacts(ctx context.Context, id string) (kvstore.Pair, bool, *NodeFacts, error) {
	p, found, err := st.kv.Get(ctx, factsKey(id))
	if err != nil {
		return p, false, nil, fmt.Errorf("read facts of node %s: %w", id, err)
	}
	var cur NodeFacts
	if found && json.Unmarshal(p.Value, &cur) != nil {
		return p, false, nil, nil
	}
	return p, found, &cur, nil
}

func (st *Store) writeFacts(ctx context.Context, f NodeFacts, index uint64) (bool, error) {
	b, err := json.Marshal(f)
	if err != nil {
		return false, err
	}
	won, err := st.cas(ctx, factsKey(f.ID), b, index)
	if err != nil {
		return false, fmt.Errorf("publish facts of node %s: %w", f.ID, err)
	}
	return won, nil
}

// Facts reads the facts of one identity with their modify index; found is
// false when there are none. Facts that cannot be read are found, empty.
func (st *Store) Facts(ctx context.Context, id string) (f NodeFacts, index uint64, found bool, err error) {
	p, found, cur, err := st.readFacts(ctx, id)
	if err != nil || !found {
		return NodeFacts{}, p.Index, p.Index != 0, err
	}
	return *cur, p.Index, true, nil
}

// DeleteFacts removes the facts of an identity removed for good, if they
// are unchanged since index was read, and records the removal (r, under
// RemovedNodesKVPrefix) in the same transaction when r names the
// identity: its agent, cut off meanwhile, finds the record as it finds
// its facts gone. deleted is false when they changed (its agent published
// meanwhile); nothing is then recorded. Index 0 records the removal
// alone (an identity with no facts), if there are still none (deleted
// false otherwise): RemovedGuard's check of the facts would not see a
// record written beside facts claimed meanwhile. node rm records the
// removal before (as it takes the facts over), and deletes them with no
// r.
func (st *Store) DeleteFacts(ctx context.Context, id string, index uint64, r NodeRemoval) (deleted bool, err error) {
	var ops []kvstore.Op
	if index != 0 {
		ops = append(ops, kvstore.Op{Verb: kvstore.DeleteCAS, Key: factsKey(id), Index: index})
	}
	if r.ID == id {
		b, err := json.Marshal(r)
		if err != nil {
			return false, err
		}
		ops = append(ops, kvstore.Op{Verb: kvstore.Set, Key: RemovedNodesKVPrefix + id, Value: b})
		if index == 0 {
			ops = append(ops, kvstore.Op{Verb: kvstore.CheckNotExists, Key: factsKey(id)})
		}
	}
	if len(ops) == 0 {
		return true, nil
	}
	res, err := st.kv.Txn(ctx, ops)
	if err != nil {
		return false, fmt.Errorf("delete the facts of node %s and record its removal: %w", id, err)
	}
	return res.OK, nil
}

// Nodes lists the facts every agent published, by node name, as ReadNodes
// does, without the misfiled ones' notes.
func (st *Store) Nodes(ctx context.Context) ([]NodeFacts, error) {
	out, _, err := st.ReadNodes(ctx)
	return out, err
}

// MisfiledFacts is a facts document naming another identity than the key
// it is stored under: no agent writes one (each writes its own identity's
// key, with that identity), so it was written by hand or copied.
type MisfiledFacts struct {
	// Key is where it is stored; ReadNodes lists it as the facts of the
	// identity the key names.
	Key string
	// Names is the identity the document names.
	Names string
}

func (m MisfiledFacts) String() string {
	c := termtext.Cell // a key and a document anyone with an agent's token may write
	return fmt.Sprintf("%s holds facts naming swarm node %s: taken as the facts of swarm node %s, whose key it is",
		c(m.Key), c(m.Names), c(strings.TrimPrefix(m.Key, NodesKVPrefix)))
}

// ReadNodes lists the facts every agent published, by node name, and
// apart notes on those whose document names another identity than their
// key. Unreadable ones are left out.
//
// Facts are the identity's their key names, whatever their document says:
// the key is what the identity's agent claims and refreshes, and what
// `node rm` watches and deletes, so facts listed by their document's ID
// would have node rm check the swarm for one identity, watch the facts of
// another and leave the key behind. Facts naming no identity (older
// agents') keep none.
func (st *Store) ReadNodes(ctx context.Context) ([]NodeFacts, []MisfiledFacts, error) {
	l, err := st.ReadFacts(ctx)
	return l.Facts, l.Misfiled, err
}

// UnreadableFacts is a node facts document that does not decode, which
// ReadNodes leaves out: no reader lists it, and its key stays until
// removed.
type UnreadableFacts struct {
	Key     string
	Problem string
}

// FactsListing is ReadNodes' facts and misfiled documents, and apart the
// unreadable ones, from one listing.
type FactsListing struct {
	Facts      []NodeFacts
	Misfiled   []MisfiledFacts
	Unreadable []UnreadableFacts
}

// ReadFacts is ReadNodes, with the unreadable documents (for the doctor).
func (st *Store) ReadFacts(ctx context.Context) (FactsListing, error) {
	kvs, err := st.kv.List(ctx, NodesKVPrefix)
	if err != nil {
		return FactsListing{}, fmt.Errorf("list nodes: %w", err)
	}
	return DecodeFacts(kvs), nil
}

// AgentsNodes is Nodes without the facts under a key no agent writes
// (AgentsFacts, NodeFacts.KeyProblem): one naming no swarm node ID,
// unless the facts name no ID and it is the node name they name (an
// older agent's). Judged by their key or by the name they give, such
// facts would keep a dead node's records as a live one's; the IPAM's
// departed-node reclaim judges liveness by these only.
func (st *Store) AgentsNodes(ctx context.Context) ([]NodeFacts, error) {
	l, err := st.ReadFacts(ctx)
	if err != nil {
		return nil, err
	}
	agents, _ := AgentsFacts(l.Facts)
	return agents, nil
}

// DecodeNodes is ReadNodes on a listing of NodesKVPrefix already read.
func DecodeNodes(kvs []kvstore.Pair) ([]NodeFacts, []MisfiledFacts) {
	l := DecodeFacts(kvs)
	return l.Facts, l.Misfiled
}

// DecodeFacts is ReadFacts on a listing of NodesKVPrefix already read.
func DecodeFacts(kvs []kvstore.Pair) FactsListing {
	var out []NodeFacts
	var misfiled []MisfiledFacts
	var unreadable []UnreadableFacts
	for _, kv := range kvs {
		var f NodeFacts
		if err := json.Unmarshal(kv.Value, &f); err != nil {
			unreadable = append(unreadable, UnreadableFacts{Key: kv.Key, Problem: err.Error()})
			continue
		}
		f.Key = kv.Key
		if id := strings.TrimPrefix(kv.Key, NodesKVPrefix); f.ID != "" && f.ID != id {
			misfiled = append(misfiled, MisfiledFacts{Key: kv.Key, Names: f.ID})
			f.ID = id
		}
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool {
		return cmp.Or(strings.Compare(out[i].Node, out[j].Node), strings.Compare(out[i].ID, out[j].ID), strings.Compare(out[i].Key, out[j].Key)) < 0
	})
	return FactsListing{Facts: out, Misfiled: misfiled, Unreadable: unreadable}
}

// IDsByName gives, by node name, the swarm node IDs whose facts (under
// NodesKVPrefix) name it; nil when the facts cannot be listed. A document
// that cannot be read names no node, nor does one under a key no agent
// writes (agentsFactsKey). Readers of reports kept under a
// node's name use it to tell which nodes a name may stand for.
func IDsByName(ctx context.Context, kv interface {
	List(ctx context.Context, prefix string) ([]kvstore.Pair, error)
}) map[string][]string {
	pairs, err := kv.List(ctx, NodesKVPrefix)
	if err != nil {
		return nil
	}
	out := map[string][]string{}
	for _, p := range pairs {
		var f struct {
			ID   string `json:"id"`
			Node string `json:"node"`
		}
		seg := strings.TrimPrefix(p.Key, NodesKVPrefix)
		if json.Unmarshal(p.Value, &f) == nil && f.Node != "" && agentsFactsKey(seg, f.ID, f.Node) {
			out[f.Node] = append(out[f.Node], seg)
		}
	}
	return out
}

// AgentsFacts splits facts, as listed, into those an agent may have
// written and, apart, those under a key no agent writes
// (NodeFacts.KeyProblem), which are no node's: node ls, ips and node rm
// list the latter as problems, never as nodes.
func AgentsFacts(facts []NodeFacts) (agents, none []NodeFacts) {
	for _, f := range facts {
		if f.KeyProblem() != nil {
			none = append(none, f)
		} else {
			agents = append(agents, f)
		}
	}
	return agents, none
}

// agentsFactsKey says whether facts naming identity id ("" for none) and
// node name node may be an agent's under the key whose segment under
// NodesKVPrefix is seg (factsKeyProblem, NodeFacts.KeyProblem).
func agentsFactsKey(seg, id, node string) bool {
	return factsKeyProblem(seg, id, node) == nil
}

// factsKeyProblem is NodeFacts.KeyProblem of facts naming identity id
// ("" for none) and node name node under the key whose segment under
// NodesKVPrefix is seg.
func factsKeyProblem(seg, id, node string) error {
	err := CheckNodeID(seg)
	if err == nil {
		return nil
	}
	c := termtext.Cell // a key and a name anyone with an agent's token may write
	if id != "" {
		return fmt.Errorf("%s is not a swarm node ID: %v", c(seg), err)
	}
	if seg == node {
		nerr := CheckNodeName(node)
		if nerr == nil {
			return nil
		}
		return fmt.Errorf("%s is not a swarm node ID: %v; nor a node name, as an older agent's key is: %v", c(seg), err, nerr)
	}
	return fmt.Errorf("%s is not a swarm node ID: %v; nor is it the node name %s that its facts, naming no swarm node ID, give, as an older agent's key is",
		c(seg), err, c(node))
}

// NameReportOfNoNode says whether a report an older agent kept under the
// node name name (one naming no swarm node ID) may be no node's: every
// swarm node the facts give the name (ids, IDsByName's) publishes its
// report under its ID, and one of those reports names another node than
// name (its agent's --node changed since its facts were written, or the
// report is forged), so the name's report may not be theirs from before
// an upgrade. reported gives, by swarm node ID, the node the ID's report
// names. other is the first such ID, in order, and more how many more
// there are. When every ID report names name, the name's report is the
// name's nodes' own from before their upgrade (not of no node).
func NameReportOfNoNode(name string, ids []string, reported map[string]string) (other string, more int, ok bool) {
	var others []string
	for _, id := range slices.Sorted(slices.Values(ids)) {
		node, has := reported[id]
		if !has {
			return "", 0, false // a node of the name reports under no ID: an older agent's
		}
		if node != name {
			others = append(others, id)
		}
	}
	if len(others) == 0 {
		return "", 0, false
	}
	return others[0], len(others) - 1, true
}
