package netspec

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/shellword"
	"github.com/underlay/underlay/internal/termtext"
)

// KVPrefix is where cluster networks live in Consul KV.
const KVPrefix = "underlay/networks/"

// ErrExists is returned when creating a network whose name is taken.
var ErrExists = errors.New("network already exists")

// ErrBadSpec is returned for a spec key whose document cannot be taken as
// that network's: agents refuse it, and `network rm` removes it.
var ErrBadSpec = errors.New("unreadable network spec")

// ErrRangesExhausted is returned when every per-node range is leased.
var ErrRangesExhausted = errors.New("no free per-node range")

// KV is the part of Consul's KV store the network store needs. Every write
// that must not be lost to a concurrent writer is a check-and-set inside a
// transaction.
type KV interface {
	// Get returns a key's pair; ok is false when absent.
	Get(ctx context.Context, key string) (p kvstore.Pair, ok bool, err error)
	// List returns every key under prefix with its value and modify index.
	List(ctx context.Context, prefix string) ([]kvstore.Pair, error)
	// Txn applies ops atomically: all of them, or none when a check fails.
	Txn(ctx context.Context, ops []kvstore.Op) (kvstore.Result, error)
	// Put writes unconditionally (for a node's own state reports).
	Put(ctx context.Context, key string, value []byte) error
	// DeleteTree removes every key under prefix.
	DeleteTree(ctx context.Context, prefix string) error
	// Delete removes one key.
	Delete(ctx context.Context, key string) error
}

// Store keeps network specs, range leases and node reports in KV, and
// remembers the newest listing of the specs it read (see Listed).
type Store struct {
	kv KV
	// absence confirms spec keys missing from a listing gone (SpecGone).
	absence kvstore.Absence

	mu sync.Mutex // guards following fields
	// begun numbers the listings of the specs as they start; kept is the
	// number of the one in listed.
	begun, kept uint64
	// listed is the newest listing of the specs; nil before the first.
	listed *Listing
}

// NewStore returns a store over kv.
func NewStore(kv KV) *Store { return &Store{kv: kv} }

// SpecKey is the key of network name's spec.
func SpecKey(name string) string { return KVPrefix + name + "/spec" }

func rangesPrefix(name string) string { return KVPrefix + name + "/ranges/" }
func nodesPrefix(name string) string  { return KVPrefix + name + "/nodes/" }
func rangeKey(name string, b netip.Prefix) string {
	return rangesPrefix(name) + strings.ReplaceAll(b.String(), "/", "_")
}

// IndexKey holds the names of every network. Creating or deleting a
// network rewrites it with check-and-set in the same transaction as the
// spec, so a create that validated its subnet against the networks it read
// cannot succeed if another network was created meanwhile.
const IndexKey = "underlay/network-index"

type networkIndex struct {
	Networks []string `json:"networks"`
}

// cas writes value at key if the key's modify index is index (0: only if
// absent), reporting whether it did.
func (st *Store) cas(ctx context.Context, key string, value []byte, index uint64) (bool, error) {
	res, err := st.kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.CAS, Key: key, Value: value, Index: index}})
	return res.OK, err
}

// readIndex returns the network index and the operation that rewrites it
// with names, checking it is unchanged since this read.
func (st *Store) readIndex(ctx context.Context, names func([]string) []string) (kvstore.Op, error) {
	p, found, err := st.kv.Get(ctx, IndexKey)
	if err != nil {
		return kvstore.Op{}, fmt.Errorf("read network index: %w", err)
	}
	var idx networkIndex
	if found {
		// An unreadable index is rewritten: only its modify index matters.
		json.Unmarshal(p.Value, &idx)
	}
	idx.Networks = names(idx.Networks)
	b, err := json.Marshal(idx)
	if err != nil {
		return kvstore.Op{}, err
	}
	return kvstore.Op{Verb: kvstore.CAS, Key: IndexKey, Value: b, Index: p.Index}, nil
}

// maxCreateAttempts bounds Create's retries; each lost race means another
// network was created or removed, so this is only reached by a bug.
const maxCreateAttempts = 100

// Create stores a new spec after validating it against every existing one.
// The check and the claim of the name are one atomic step: the spec is
// written in one transaction with the network index, checked unchanged
// since before the existing specs were read, so two creates racing with
// overlapping subnets never both succeed; a concurrent create of the same
// name loses with ErrExists.
func (st *Store) Create(ctx context.Context, s Spec) error {
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encode network %s: %w", s.Name, err)
	}
	for range maxCreateAttempts {
		// The index first: whatever is created after this read changes it.
		index, err := st.readIndex(ctx, func(names []string) []string {
			return slices.Sorted(slices.Values(append(slices.DeleteFunc(names, func(n string) bool { return n == s.Name }), s.Name)))
		})
		if err != nil {
			return err
		}
		existing, err := st.Specs(ctx)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(existing, func(o Spec) bool { return o.Name == s.Name }) {
			return fmt.Errorf("network %q: %w", s.Name, ErrExists)
		}
		if err := Validate(s, existing); err != nil {
			return err
		}
		res, err := st.kv.Txn(ctx, []kvstore.Op{index, {Verb: kvstore.CAS, Key: SpecKey(s.Name), Value: b}})
		if err != nil {
			return fmt.Errorf("store network %s: %w", s.Name, err)
		}
		if res.OK {
			return nil
		}
		// Lost: another network was created or removed meanwhile, or this
		// name's key exists (unreadable, so not among the specs).
		if _, taken, err := st.kv.Get(ctx, SpecKey(s.Name)); err != nil || taken {
			if err == nil {
				err = fmt.Errorf("network %q: %w (its spec %s is unreadable: see `underlay network ls`)", s.Name, ErrExists, SpecKey(s.Name))
			}
			return err
		}
	}
	return fmt.Errorf("store network %s: too much contention on %s", s.Name, IndexKey)
}

// BadSpec is a key under KVPrefix that looks like a spec and cannot be
// read as one.
type BadSpec struct {
	Key  string
	Name string
	Err  error
}

// Listing is one reading of every network spec (see ReadSpecs). It is
// shared: not to be changed.
type Listing struct {
	Specs []Spec
	Bad   []BadSpec
	// Orphans are, by network name, the identities whose state reports
	// stay under a network that has no spec key, readable or not: its
	// spec deleted by hand (network rm deletes the reports with it).
	Orphans map[string][]string
	// Leased are, by network name, the identities holding range leases
	// under a network that has no spec key, readable or not: left by a
	// teardown that could not release them (Consul out of reach) before
	// the agent restarted, once the spec was deleted by hand.
	Leased map[string][]string

	// Unlisted are the keys under KVPrefix whose network name is "", "."
	// or ".." (underlay/networks/../spec: written by hand, since no
	// underlay gives such a name), sorted. Consul's HTTP paths redirect
	// such a network's keys to others' (../nodes/ID is a node's facts), so
	// they are in no other field: no reader acts on them, and each names
	// them in a warning (see UnlistedProblem).
	Unlisted []string

	// reports are, by network name, the identities that have a state
	// report under the network, each with the ReportSum of the value
	// stored.
	reports map[string]map[string]uint64
	// indexes are the modify indexes of the specs listed, by network
	// name; creates their create indexes.
	indexes, creates map[string]uint64
	// seq numbers the listing among the store's as it began; settled is
	// how many had begun once its read was answered (see Settled).
	seq, settled uint64

	once    sync.Once
	refused map[string]error
}

// Refused is what the agents refuse of the listing, by network name: the
// problems CheckStored finds in its specs, and each unreadable spec's
// error. It is worked out once.
func (l *Listing) Refused() map[string]error {
	l.once.Do(func() {
		l.refused = CheckStored(l.Specs)
		for _, b := range l.Bad {
			l.refused[b.Name] = b.Err
		}
	})
	return l.refused
}

// ReportSum returns the ReportSum of the state report of the node with
// identity id under network name as the listing read it; ok is false when
// there is none. An agent writes its report again when it differs from
// the one it wrote last (a snapshot restored), and only then.
func (l *Listing) ReportSum(name, id string) (sum uint64, ok bool) {
	sum, ok = l.reports[name][id]
	return sum, ok
}

// SpecIndex is the modify index of network name's spec as the listing
// read it (0: not listed). The spec key is written only by `network
// create`, the mark of `network rm` and its delete, so a spec read at
// another index is another network under the name, or one being removed:
// writes bound to a network as read check this index (see ipam).
func (l *Listing) SpecIndex(name string) uint64 { return l.indexes[name] }

// SpecCreateIndex is the create index of network name's spec as the
// listing read it (0: not listed, or not known): the network's
// generation. It is kept by every write of the spec key (the mark of
// `network rm`, a rewrite by hand) and new once the key is deleted and
// written again: a network made again under the name has another.
func (l *Listing) SpecCreateIndex(name string) uint64 { return l.creates[name] }

// Settled is how many listings of its store had begun once this one's
// read of KV was answered: one whose number is higher (see BegunAfter)
// sent its read after, and shows KV as this one did, or later. Of two
// listings read at once, neither does: the one begun last may have been
// answered first.
func (l *Listing) Settled() uint64 { return l.settled }

// BegunAfter says the listing began once the listing whose Settled is
// settled had been answered: it is not older than that one.
func (l *Listing) BegunAfter(settled uint64) bool { return l.seq > settled }

// ReportSum is a digest of ns as Report stores it: what a listing holds
// of each report (see Listing.ReportSum), cheaper than the report.
func ReportSum(ns NodeState) (uint64, error) {
	b, err := json.Marshal(ns)
	if err != nil {
		return 0, fmt.Errorf("encode the report of %s: %w", cmp.Or(ns.ID, ns.Node), err)
	}
	return sumOf(b), nil
}

func sumOf(value []byte) uint64 {
	h := fnv.New64a()
	h.Write(value)
	return h.Sum64()
}

// Listed returns the newest listing of the specs this store read (nil
// before the first), without reading KV: for a caller that must not wait
// for Consul on every request, and whose store others read often enough
// (the agent's network reconciler reads at every change under KVPrefix).
// Of listings read at once, the one begun last is kept, whichever ends
// first: the other may have read the specs as they were before.
func (st *Store) Listed() *Listing {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.listed
}

// ReadSpecs lists every network by name, and apart the specs that cannot
// be decoded: one bad document never hides the others.
func (st *Store) ReadSpecs(ctx context.Context) ([]Spec, []BadSpec, error) {
	l, err := st.ReadListing(ctx)
	if err != nil {
		return nil, nil, err
	}
	return slices.Clone(l.Specs), slices.Clone(l.Bad), nil
}

// ReadListing reads every spec, as ReadSpecs, into a Listing that Listed
// returns from then on unless a newer one is read: shared, and so not to
// be changed.
func (st *Store) ReadListing(ctx context.Context) (*Listing, error) {
	st.mu.Lock()
	st.begun++
	n := st.begun
	st.mu.Unlock()
	kvs, err := st.kv.List(ctx, KVPrefix)
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	l := &Listing{seq: n}
	reports := map[string]map[string]uint64{}
	leased := map[string]map[string]bool{}
	for _, p := range kvs {
		k := p.Key
		if name, _, ok := strings.Cut(strings.TrimPrefix(k, KVPrefix), "/"); ok && Unlistable(name) {
			l.Unlisted = append(l.Unlisted, k)
			continue
		}
		if name, id, ok := strings.Cut(strings.TrimPrefix(k, KVPrefix), "/nodes/"); ok && id != "" && !strings.Contains(name, "/") && !strings.Contains(id, "/") {
			if reports[name] == nil {
				reports[name] = map[string]uint64{}
			}
			reports[name][id] = sumOf(p.Value)
			continue
		}
		if name, b, ok := strings.Cut(strings.TrimPrefix(k, KVPrefix), "/ranges/"); ok && !strings.Contains(name, "/") && !strings.Contains(b, "/") {
			// As Leases reads them: a key it passes over leases nothing.
			if r, err := netip.ParsePrefix(strings.ReplaceAll(b, "_", "/")); err == nil && r == r.Masked() && rangeKey(name, r) == k {
				if leased[name] == nil {
					leased[name] = map[string]bool{}
				}
				leased[name][string(p.Value)] = true
			}
			continue
		}
		if path.Base(k) != "spec" || strings.Count(strings.TrimPrefix(k, KVPrefix), "/") != 1 {
			continue
		}
		// As written, so that RemoveFix names its keys (path.Dir makes
		// an empty name "/").
		name := strings.TrimSuffix(strings.TrimPrefix(k, KVPrefix), "/spec")
		s, err := DecodeSpec(name, p.Value)
		if err != nil {
			l.Bad = append(l.Bad, BadSpec{Key: k, Name: name, Err: err})
			continue
		}
		l.Specs = append(l.Specs, s)
		if l.indexes == nil {
			l.indexes, l.creates = map[string]uint64{}, map[string]uint64{}
		}
		l.indexes[name], l.creates[name] = p.Index, p.CreateIndex
	}
	sort.Slice(l.Specs, func(i, j int) bool { return l.Specs[i].Name < l.Specs[j].Name })
	slices.Sort(l.Unlisted)
	l.reports = reports
	// By name: looked up once per network with reports, at every sync.
	keyed := make(map[string]bool, len(l.Specs)+len(l.Bad))
	for _, s := range l.Specs {
		keyed[s.Name] = true
	}
	for _, b := range l.Bad {
		keyed[b.Name] = true
	}
	for name, ids := range reports {
		if keyed[name] {
			continue
		}
		if l.Orphans == nil {
			l.Orphans = map[string][]string{}
		}
		l.Orphans[name] = slices.Sorted(maps.Keys(ids))
	}
	for name, ids := range leased {
		if keyed[name] {
			continue
		}
		if l.Leased == nil {
			l.Leased = map[string][]string{}
		}
		l.Leased[name] = slices.Sorted(maps.Keys(ids))
	}
	st.mu.Lock()
	l.settled = st.begun
	if n > st.kept {
		st.kept, st.listed = n, l
	}
	st.mu.Unlock()
	return l, nil
}

// Unlistable says name is a network name whose keys Consul's HTTP paths
// redirect to other keys: "", "." or "..". No underlay gives one.
func Unlistable(name string) bool { return name == "" || name == "." || name == ".." }

// UnlistedProblem is the warning naming key, one of Listing.Unlisted.
func UnlistedProblem(key string) string {
	return fmt.Sprintf("%s is under a network name (\"\", \".\" or \"..\") no underlay writes, whose keys Consul's HTTP API redirects to other keys: skipped; "+
		"remove it by a transaction naming it (PUT /v1/txn, verb delete), not `consul kv delete`, whose path is redirected", shellword.Quote(key))
}

// RemoveFix is the command that removes network name, for a spec the
// agents refuse: `underlay network rm NAME`, or, for a key whose name is
// none (rm refuses it, since its keys are made of it), consul's deletion
// of the network's keys. For a name Unlistable it is "", no command:
// Consul's HTTP API redirects the path of such a name's keys to another
// key, so a delete by path misses them or hits others (UnlistedProblem
// says how they go).
func RemoveFix(name string) string {
	if Unlistable(name) {
		return ""
	}
	if nameRE.MatchString(name) {
		return "underlay network rm " + shellword.Quote(name)
	}
	return shellword.Join([]string{"consul", "kv", "delete", "-recurse", KVPrefix + name + "/"})
}

// DecodeSpec decodes the document at network name's spec key, as every
// reader of specs does.
func DecodeSpec(name string, raw []byte) (Spec, error) {
	var s Spec
	// A field no underlay writes (a typo by hand, or a later version's)
	// is a constraint this one would not honour: refused, not dropped.
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	err := dec.Decode(&s)
	if err == nil && dec.Decode(new(json.RawMessage)) != io.EOF {
		err = errors.New("data after the spec's document")
	}
	// name is a key's, which any token that may write specs chooses:
	// quoted when not graphic, as the errors are logged and reported.
	key := termtext.Cell(SpecKey(name))
	if err != nil {
		// encoding/json and netip quote what they refuse (a field's
		// name, an address) with %q, which leaves U+3164 as it is.
		return Spec{}, fmt.Errorf("%w: decode %s: %s", ErrBadSpec, key, termtext.Lines(err.Error()))
	}
	if s.Name != name {
		// Written past `network create`: taken as network s.Name, its
		// ranges, reports and pool would sit apart from its spec, which
		// `network rm` could not find.
		return Spec{}, fmt.Errorf("%w: %s holds the spec of network %s; a network's spec is stored under its own name", ErrBadSpec, key, termtext.Q(s.Name))
	}
	if s.Parent != "" && !parentRE.MatchString(s.Parent) {
		// No link has such a name: written past `network create`, and
		// refused whole, deleting or not, since every reader (teardown's
		// VLAN removal, the doctor) would hand it on as a link's name.
		return Spec{}, fmt.Errorf("%w: %s: parent %s: not an interface name (at most 15 characters)", ErrBadSpec, key, termtext.Q(s.Parent))
	}
	return s, nil
}

// Specs lists every network that can be read, by name (see ReadSpecs).
func (st *Store) Specs(ctx context.Context) ([]Spec, error) {
	specs, _, err := st.ReadSpecs(ctx)
	return specs, err
}

// Get returns one network's spec.
func (st *Store) Get(ctx context.Context, name string) (Spec, bool, error) {
	p, ok, err := st.kv.Get(ctx, SpecKey(name))
	if err != nil || !ok {
		return Spec{}, false, err
	}
	s, err := DecodeSpec(name, p.Value)
	if err != nil {
		return Spec{}, false, err
	}
	return s, true, nil
}

// Leases maps each leased range of a network to the identity of the node
// holding it (its swarm node ID).
func (st *Store) Leases(ctx context.Context, name string) (map[netip.Prefix]string, error) {
	kvs, err := st.kv.List(ctx, rangesPrefix(name))
	if err != nil {
		return nil, fmt.Errorf("list ranges of %s: %w", name, err)
	}
	out := make(map[netip.Prefix]string, len(kvs))
	for _, kv := range kvs {
		// Only Lease writes here, one key per range spelt by rangeKey:
		// any other key (by hand, a bug) leases nothing, and is passed
		// over rather than stopping every node's lease.
		p, err := netip.ParsePrefix(strings.ReplaceAll(strings.TrimPrefix(kv.Key, rangesPrefix(name)), "_", "/"))
		if err != nil || p != p.Masked() || rangeKey(name, p) != kv.Key {
			continue
		}
		out[p] = string(kv.Value)
	}
	return out, nil
}

// Lease returns the range the node with identity node (its swarm node ID,
// unique by construction: two hosts with one host name never share a
// range) holds on network s, leasing the first free one if it holds none. Each lease is a create-only write, so two nodes can
// never hold the same range: the loser of a race moves on to the next.
func (st *Store) Lease(ctx context.Context, s Spec, node string) (netip.Prefix, int, error) {
	blocks := Blocks(s)
	for {
		leases, err := st.Leases(ctx, s.Name)
		if err != nil {
			return netip.Prefix{}, 0, err
		}
		for i, b := range blocks {
			if leases[b] == node {
				return b, i, nil
			}
		}
		// A lease that is not one of the spec's ranges (its per_node_size
		// or range edited in KV since) still has containers in it: the
		// node keeps it, and no range overlapping it is leased to anyone,
		// or two nodes would hand out the same addresses.
		held := slices.SortedFunc(maps.Keys(leases), netip.Prefix.Compare)
		for _, p := range held {
			if leases[p] == node {
				return netip.Prefix{}, 0, fmt.Errorf("network %s, node %s: it holds range %s, which is not one of the network's ranges of %d addresses in %s (was the spec edited in KV?): %w",
					s.Name, node, p, cmp.Or(s.PerNodeSize, DefaultPerNodeSize), s.Range(), ErrLeaseMismatch)
			}
		}
		claimed := false
		for i, b := range blocks {
			if slices.ContainsFunc(held, b.Overlaps) {
				continue
			}
			ok, err := st.cas(ctx, rangeKey(s.Name, b), []byte(node), 0)
			if err != nil {
				return netip.Prefix{}, 0, fmt.Errorf("lease %s of %s for %s: %w", b, s.Name, node, err)
			}
			if ok {
				return b, i, nil
			}
			claimed = true // someone took it first: re-read and try again
			break
		}
		if !claimed {
			return netip.Prefix{}, 0, fmt.Errorf("network %s, node %s: all %d ranges of %d addresses in %s are leased: %w",
				s.Name, node, len(blocks), s.PerNodeSize, s.Range(), ErrRangesExhausted)
		}
	}
}

// ErrLeaseMismatch is a node's range lease that the network's spec does
// not give: the spec was changed under leases made from it.
var ErrLeaseMismatch = errors.New("lease does not match the spec")

// Release gives up the ranges of the node with identity node on a
// network, and returns those it released.
func (st *Store) Release(ctx context.Context, name, node string) ([]netip.Prefix, error) {
	leases, err := st.Leases(ctx, name)
	if err != nil {
		return nil, err
	}
	var released []netip.Prefix
	for _, b := range slices.SortedFunc(maps.Keys(leases), netip.Prefix.Compare) {
		if leases[b] != node {
			continue
		}
		if err := st.kv.Delete(ctx, rangeKey(name, b)); err != nil {
			return released, fmt.Errorf("release %s of %s: %w", b, name, err)
		}
		released = append(released, b)
	}
	return released, nil
}

// Node states reported by agents.
const (
	StateReady   = "ready"
	StateError   = "error"
	StateRemoved = "removed"
	// StateInvalid: the node refused the spec as `network create` would
	// have, and changed nothing for it.
	StateInvalid = "invalid"
)

// NodeState is what a node's agent reports about one network.
type NodeState struct {
	// ID is the node's identity (its swarm node ID); Node its name, for
	// display.
	ID    string       `json:"id,omitempty"`
	Node  string       `json:"node"`
	State string       `json:"state"` // StateReady, StateError, StateRemoved or StateInvalid
	Range netip.Prefix `json:"range,omitzero"`
	Shim  netip.Addr   `json:"shim,omitzero"`
	// Range6 and Shim6 are the IPv6 range reached through the shim (the
	// node's /80, or with cluster IPAM the subnet) and the shim's IPv6
	// address, on a network with an IPv6 subnet.
	Range6    netip.Prefix `json:"range6,omitzero"`
	Shim6     netip.Addr   `json:"shim6,omitzero"`
	ShimLink  string       `json:"shim_link,omitempty"`
	Parent    string       `json:"parent,omitempty"`
	Error     string       `json:"error,omitempty"`
	UpdatedAt time.Time    `json:"updated_at"`
}

// Report stores a node's state for a network, under the node's identity
// (its name when it has none).
func (st *Store) Report(ctx context.Context, name string, ns NodeState) error {
	// Marshalled as ReportSum does: agents compare the digests.
	b, err := json.Marshal(ns)
	if err != nil {
		return err
	}
	if err := st.kv.Put(ctx, nodesPrefix(name)+cmp.Or(ns.ID, ns.Node), b); err != nil {
		return fmt.Errorf("report %s on %s: %w", name, ns.Node, err)
	}
	return nil
}

// NodeStates lists every node's report for a network, by node name.
func (st *Store) NodeStates(ctx context.Context, name string) ([]NodeState, error) {
	reports, err := st.Reports(ctx, name)
	if err != nil {
		return nil, err
	}
	out := make([]NodeState, len(reports))
	for i, r := range reports {
		out[i] = r.State
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out, nil
}

// StoredReport is a node's report on a network with where it is stored.
type StoredReport struct {
	// Key is the report's key; Owner its last segment: the identity of
	// the node whose agent writes it (an older agent's name).
	Key, Owner string
	State      NodeState
}

// Reports lists every node's report for a network, in key order; one that
// cannot be read is listed as its owner's error (see NodeStates).
func (st *Store) Reports(ctx context.Context, name string) ([]StoredReport, error) {
	kvs, err := st.kv.List(ctx, nodesPrefix(name))
	if err != nil {
		return nil, fmt.Errorf("list node states of %s: %w", name, err)
	}
	out := make([]StoredReport, 0, len(kvs))
	for _, kv := range kvs {
		owner := strings.TrimPrefix(kv.Key, nodesPrefix(name))
		var ns NodeState
		if err := json.Unmarshal(kv.Value, &ns); err != nil {
			// Listed as that node's error, so that one bad key neither
			// hides the others nor stops what waits on them; its node
			// may not be ready or removed yet, which its agent's next
			// report says.
			msg := fmt.Sprintf("unreadable report %s (%s): the node's agent writes it again at its next change of state or restart", termtext.Cell(kv.Key), termtext.Lines(err.Error()))
			if fix, why := shellword.KVRemoval(kv.Key, ""); fix != "" {
				msg += "; to remove it: " + fix
			} else {
				msg += why
			}
			ns = NodeState{ID: owner, Node: owner, State: StateError, Error: msg}
		}
		out = append(out, StoredReport{Key: kv.Key, Owner: owner, State: ns})
	}
	return out, nil
}

// SpecGone reports whether network name's spec key, missing from a
// listing, is absent, by a direct read of it (kvstore.Absence): Consul
// leaves out of a listing the keys the token may not read, so a spec not
// listed is no proof the network was removed. Whatever is to be removed
// or freed for a spec's absence (an orphan's config-only network, shim,
// VLAN parents, lease and shim addresses; reports under it) waits for
// this; a read that fails is warned of through log, once per key while
// it lasts, and nothing goes.
func (st *Store) SpecGone(ctx context.Context, name string, log *slog.Logger) bool {
	return st.absence.Gone(ctx, st.kv, log, SpecKey(name))
}

// FactsReadable reports whether node id's facts key, missing from a
// listing of the facts, can be read directly (kvstore.Absence.Readable):
// Consul leaves out of a listing the keys the token may not read, so
// facts not listed are no proof the node's agent wrote none. A read that
// fails is warned of through log, once per key while it lasts.
func (st *Store) FactsReadable(ctx context.Context, id string, log *slog.Logger) bool {
	return st.absence.Readable(ctx, st.kv, log, factsKey(id))
}

// DeleteReport removes the state report of the node with identity id for
// a network (a node removed for good).
func (st *Store) DeleteReport(ctx context.Context, name, id string) error {
	if err := st.kv.Delete(ctx, nodesPrefix(name)+id); err != nil {
		return fmt.Errorf("delete the report of %s on %s: %w", id, name, err)
	}
	return nil
}

// MarkDeleting flags a network for removal; agents then take their parts
// apart and report StateRemoved.
func (st *Store) MarkDeleting(ctx context.Context, name string) error {
	for {
		p, ok, err := st.kv.Get(ctx, SpecKey(name))
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("network %q does not exist", name)
		}
		s, err := DecodeSpec(name, p.Value)
		if errors.Is(err, ErrBadSpec) {
			// Taking a network apart needs only its name: what agents
			// made for it is named after it. What else can be read (a
			// field no underlay writes aside) helps: its parent names a
			// VLAN the agents made.
			s, err = Spec{Name: name}, nil
			var loose Spec
			if json.Unmarshal(p.Value, &loose) == nil && loose.Name == name {
				s = loose
			}
			if !parentRE.MatchString(s.Parent) {
				s.Parent = "" // no link's name: no VLAN of it was made
			}
		}
		if err != nil {
			return err
		}
		s.Deleting = true
		b, err := json.Marshal(s)
		if err != nil {
			return err
		}
		done, err := st.cas(ctx, SpecKey(name), b, p.Index)
		if err != nil || done {
			return err
		}
	}
}

// Delete removes a network's spec, leases and reports, its name from the
// network index, and the KV trees (prefixes) given, in one transaction.
func (st *Store) Delete(ctx context.Context, name string, trees ...string) error {
	for range maxCreateAttempts {
		index, err := st.readIndex(ctx, func(names []string) []string {
			return slices.DeleteFunc(names, func(n string) bool { return n == name })
		})
		if err != nil {
			return err
		}
		ops := []kvstore.Op{index, {Verb: kvstore.DeleteTree, Key: KVPrefix + name + "/"}}
		for _, t := range trees {
			ops = append(ops, kvstore.Op{Verb: kvstore.DeleteTree, Key: t})
		}
		res, err := st.kv.Txn(ctx, ops)
		if err != nil {
			return fmt.Errorf("delete network %s: %w", name, err)
		}
		if res.OK {
			return nil
		}
	}
	return fmt.Errorf("delete network %s: too much contention on %s", name, IndexKey)
}

// CheckParent reports the nodes that lack s.Parent, as an error naming
// them. A VLAN parent (bond0.40) need not exist where its lower device
// does: the agent makes it. Nodes not heard from (down, or removed from the
// swarm with their facts left behind) that lack the parent are returned for
// a warning instead, since they would otherwise refuse every such network
// for good.
//
// Whether a node is heard from is the swarm's word when swarm (the swarm's
// nodes' states by ID) holds it: a node is silent unless it is ready, and
// one the swarm no longer lists is silent. The facts' stamp, written by the
// node's clock, is judged only without it (facts over stale before now):
// by the stamp, a live node whose clock is behind would only be warned of,
// and a down one whose clock was ahead would refuse the network for as
// long.
func CheckParent(s Spec, nodes []NodeFacts, swarm map[string]string, now time.Time, stale time.Duration) (silent []NodeFacts, err error) {
	lower, _, vlan := VLANParent(s.Parent)
	var missing []string
	for _, n := range nodes {
		if slices.Contains(n.Interfaces, s.Parent) || vlan && slices.Contains(n.Interfaces, lower) {
			continue
		}
		quiet := now.Sub(n.UpdatedAt) > stale
		if swarm != nil && n.ID != "" {
			quiet = swarm[n.ID] != "ready" // swarm.NodeStateReady
		}
		if quiet {
			silent = append(silent, n)
			continue
		}
		missing = append(missing, n.Node)
	}
	if len(missing) > 0 {
		if vlan {
			return silent, fmt.Errorf("parent %s: neither it nor %s exists on node(s) %s", s.Parent, lower, strings.Join(missing, ", "))
		}
		return silent, fmt.Errorf("parent %s does not exist on node(s) %s", s.Parent, strings.Join(missing, ", "))
	}
	return silent, nil
}
