package netspec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path"
	"slices"
	"sort"
	"strings"
	"time"
)

// KVPrefix is where cluster networks live in Consul KV.
const KVPrefix = "underlay/networks/"

// ErrExists is returned when creating a network whose name is taken.
var ErrExists = errors.New("network already exists")

// ErrRangesExhausted is returned when every per-node range is leased.
var ErrRangesExhausted = errors.New("no free per-node range")

// KV is the part of Consul's KV store the network store needs. Every write
// that must not be lost to a concurrent writer is a check-and-set.
type KV interface {
	// Get returns a key's value and modify index; ok is false when absent.
	Get(ctx context.Context, key string) (value []byte, index uint64, ok bool, err error)
	// List returns every key under prefix with its value.
	List(ctx context.Context, prefix string) (map[string][]byte, error)
	// CAS writes value when the key's modify index is index; index 0
	// means "only if absent". It reports whether the write happened.
	CAS(ctx context.Context, key string, value []byte, index uint64) (bool, error)
	// Put writes unconditionally (for a node's own state reports).
	Put(ctx context.Context, key string, value []byte) error
	// DeleteTree removes every key under prefix.
	DeleteTree(ctx context.Context, prefix string) error
	// Delete removes one key.
	Delete(ctx context.Context, key string) error
}

// Store keeps network specs, range leases and node reports in KV.
type Store struct{ kv KV }

// NewStore returns a store over kv.
func NewStore(kv KV) *Store { return &Store{kv: kv} }

func specKey(name string) string      { return KVPrefix + name + "/spec" }
func rangesPrefix(name string) string { return KVPrefix + name + "/ranges/" }
func nodesPrefix(name string) string  { return KVPrefix + name + "/nodes/" }
func rangeKey(name string, b netip.Prefix) string {
	return rangesPrefix(name) + strings.ReplaceAll(b.String(), "/", "_")
}

// Create stores a new spec after validating it against every existing one;
// a concurrent create of the same name loses with ErrExists.
func (st *Store) Create(ctx context.Context, s Spec) error {
	existing, err := st.Specs(ctx)
	if err != nil {
		return err
	}
	for _, o := range existing {
		if o.Name == s.Name {
			return fmt.Errorf("network %q: %w", s.Name, ErrExists)
		}
	}
	if err := Validate(s, existing); err != nil {
		return err
	}
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encode network %s: %w", s.Name, err)
	}
	ok, err := st.kv.CAS(ctx, specKey(s.Name), b, 0)
	if err != nil {
		return fmt.Errorf("store network %s: %w", s.Name, err)
	}
	if !ok {
		return fmt.Errorf("network %q: %w", s.Name, ErrExists)
	}
	return nil
}

// Specs lists every network, by name.
func (st *Store) Specs(ctx context.Context) ([]Spec, error) {
	kvs, err := st.kv.List(ctx, KVPrefix)
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	var specs []Spec
	for k, v := range kvs {
		if path.Base(k) != "spec" || strings.Count(strings.TrimPrefix(k, KVPrefix), "/") != 1 {
			continue
		}
		var s Spec
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, fmt.Errorf("decode %s: %w", k, err)
		}
		specs = append(specs, s)
	}
	sort.Slice(specs, func(i, j int) bool { return specs[i].Name < specs[j].Name })
	return specs, nil
}

// Get returns one network's spec.
func (st *Store) Get(ctx context.Context, name string) (Spec, bool, error) {
	v, _, ok, err := st.kv.Get(ctx, specKey(name))
	if err != nil || !ok {
		return Spec{}, false, err
	}
	var s Spec
	if err := json.Unmarshal(v, &s); err != nil {
		return Spec{}, false, fmt.Errorf("decode network %s: %w", name, err)
	}
	return s, true, nil
}

// Leases maps each leased range of a network to the node holding it.
func (st *Store) Leases(ctx context.Context, name string) (map[netip.Prefix]string, error) {
	kvs, err := st.kv.List(ctx, rangesPrefix(name))
	if err != nil {
		return nil, fmt.Errorf("list ranges of %s: %w", name, err)
	}
	out := make(map[netip.Prefix]string, len(kvs))
	for k, v := range kvs {
		p, err := netip.ParsePrefix(strings.ReplaceAll(path.Base(k), "_", "/"))
		if err != nil {
			return nil, fmt.Errorf("range key %s: %w", k, err)
		}
		out[p] = string(v)
	}
	return out, nil
}

// Lease returns the range node holds on network s, leasing the first free
// one if it holds none. Each lease is a create-only write, so two nodes can
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
		claimed := false
		for i, b := range blocks {
			if _, taken := leases[b]; taken {
				continue
			}
			ok, err := st.kv.CAS(ctx, rangeKey(s.Name, b), []byte(node), 0)
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

// Release gives up node's range on a network.
func (st *Store) Release(ctx context.Context, name, node string) error {
	leases, err := st.Leases(ctx, name)
	if err != nil {
		return err
	}
	for b, holder := range leases {
		if holder == node {
			if err := st.kv.Delete(ctx, rangeKey(name, b)); err != nil {
				return fmt.Errorf("release %s of %s: %w", b, name, err)
			}
		}
	}
	return nil
}

// Node states reported by agents.
const (
	StateReady   = "ready"
	StateError   = "error"
	StateRemoved = "removed"
)

// NodeState is what a node's agent reports about one network.
type NodeState struct {
	Node      string       `json:"node"`
	State     string       `json:"state"` // StateReady, StateError or StateRemoved
	Range     netip.Prefix `json:"range,omitzero"`
	Shim      netip.Addr   `json:"shim,omitzero"`
	ShimLink  string       `json:"shim_link,omitempty"`
	Parent    string       `json:"parent,omitempty"`
	Error     string       `json:"error,omitempty"`
	UpdatedAt time.Time    `json:"updated_at"`
}

// Report stores a node's state for a network.
func (st *Store) Report(ctx context.Context, name string, ns NodeState) error {
	b, err := json.Marshal(ns)
	if err != nil {
		return err
	}
	if err := st.kv.Put(ctx, nodesPrefix(name)+ns.Node, b); err != nil {
		return fmt.Errorf("report %s on %s: %w", name, ns.Node, err)
	}
	return nil
}

// NodeStates lists every node's report for a network, by node name.
func (st *Store) NodeStates(ctx context.Context, name string) ([]NodeState, error) {
	kvs, err := st.kv.List(ctx, nodesPrefix(name))
	if err != nil {
		return nil, fmt.Errorf("list node states of %s: %w", name, err)
	}
	var out []NodeState
	for k, v := range kvs {
		var ns NodeState
		if err := json.Unmarshal(v, &ns); err != nil {
			return nil, fmt.Errorf("decode %s: %w", k, err)
		}
		out = append(out, ns)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out, nil
}

// MarkDeleting flags a network for removal; agents then take their parts
// apart and report StateRemoved.
func (st *Store) MarkDeleting(ctx context.Context, name string) error {
	for {
		v, index, ok, err := st.kv.Get(ctx, specKey(name))
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("network %q does not exist", name)
		}
		var s Spec
		if err := json.Unmarshal(v, &s); err != nil {
			return fmt.Errorf("decode network %s: %w", name, err)
		}
		s.Deleting = true
		b, err := json.Marshal(s)
		if err != nil {
			return err
		}
		done, err := st.kv.CAS(ctx, specKey(name), b, index)
		if err != nil || done {
			return err
		}
	}
}

// Delete removes a network's spec, leases and reports.
func (st *Store) Delete(ctx context.Context, name string) error {
	if err := st.kv.DeleteTree(ctx, KVPrefix+name+"/"); err != nil {
		return fmt.Errorf("delete network %s: %w", name, err)
	}
	return nil
}

// NodeFacts is what an agent publishes about its node, so that commands
// can check a spec against every node before changing anything.
type NodeFacts struct {
	Node       string    `json:"node"`
	Interfaces []string  `json:"interfaces"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// NodesKVPrefix is where agents publish their node facts, one key per node.
const NodesKVPrefix = "underlay/nodes/"

// PublishNode stores a node's facts.
func (st *Store) PublishNode(ctx context.Context, f NodeFacts) error {
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return st.kv.Put(ctx, NodesKVPrefix+f.Node, b)
}

// Nodes lists the facts every agent published, by node name.
func (st *Store) Nodes(ctx context.Context) ([]NodeFacts, error) {
	kvs, err := st.kv.List(ctx, NodesKVPrefix)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	var out []NodeFacts
	for k, v := range kvs {
		var f NodeFacts
		if err := json.Unmarshal(v, &f); err != nil {
			return nil, fmt.Errorf("decode %s: %w", k, err)
		}
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out, nil
}

// CheckParent reports the nodes that lack s.Parent, as an error naming
// them. A VLAN parent (bond0.40) need not exist where its lower device
// does: the agent makes it.
func CheckParent(s Spec, nodes []NodeFacts) error {
	lower, _, vlan := VLANParent(s.Parent)
	var missing []string
	for _, n := range nodes {
		if !slices.Contains(n.Interfaces, s.Parent) && !(vlan && slices.Contains(n.Interfaces, lower)) {
			missing = append(missing, n.Node)
		}
	}
	if len(missing) > 0 {
		if vlan {
			return fmt.Errorf("parent %s: neither it nor %s exists on node(s) %s", s.Parent, lower, strings.Join(missing, ", "))
		}
		return fmt.Errorf("parent %s does not exist on node(s) %s", s.Parent, strings.Join(missing, ", "))
	}
	return nil
}
