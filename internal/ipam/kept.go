package ipam

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/termtext"
)

// A node's agent publishes, per pool, the addresses its last sweep kept
// although no container holds them, because a container start under way
// on the node may hold them (see planSweep): `underlay ips` and the
// dashboard show them as a starting container's, not as leaks. One key per
// node and pool, written only when the set changes (none: the key is
// deleted), so a sweep with nothing kept costs no write.

func keptPrefix(p Pool) string { return KVPrefix + p.Network + "/" + p.Family() + "/kept/" }

func keptKey(p Pool, node string) string { return keptPrefix(p) + node }

// keptDoc is one node's kept addresses in one pool.
type keptDoc struct {
	Addrs []netip.Addr `json:"addrs"`
	// At is when the sweep that kept them ran.
	At time.Time `json:"at"`
}

// Kept is an address a node's last sweep kept for a start under way.
type Kept struct {
	// Node is the node's identity (the key's last element).
	Node string
	// At is when that sweep ran.
	At time.Time
}

// KeptAddrs are a pool's kept addresses, by address.
type KeptAddrs map[netip.Addr]Kept

// For says whether al, at a, is an allocation its node keeps for a
// container start under way: only an allocation of the node that kept
// the address is.
func (k KeptAddrs) For(a netip.Addr, al Alloc) bool {
	kept, ok := k[a]
	return ok && kept.Node == al.Node
}

// decodeKept reads a pool's kept/ listing: by address, the node that kept
// it; keys that cannot be read are set apart.
func decodeKept(p Pool, pairs []kvstore.Pair) (KeptAddrs, []BadDoc) {
	out := KeptAddrs{}
	var bad []BadDoc
	prefix := keptPrefix(p)
	for _, pr := range pairs {
		node := strings.TrimPrefix(pr.Key, prefix)
		var doc keptDoc
		err := json.Unmarshal(pr.Value, &doc)
		switch {
		case err != nil:
			// netip quotes the address it refuses with %q, which leaves
			// U+3164 as it is; no caller unwraps the decoder's error.
			err = fmt.Errorf("not a kept-addresses document: %s", termtext.Lines(err.Error()))
		case node == "" || strings.Contains(node, "/"):
			err = fmt.Errorf("%s is not a node identity", termtext.Q(node))
		default:
			for _, a := range doc.Addrs {
				if !p.allocRange().Contains(a) {
					err = fmt.Errorf("%s is not in pool %s (%s)", a, p.ID(), p.allocRange())
					break
				}
			}
		}
		if err != nil {
			bad = append(bad, BadDoc{Key: pr.Key, Index: pr.Index, Err: err, Kept: true})
			continue
		}
		for _, a := range doc.Addrs {
			out[a] = Kept{Node: node, At: doc.At}
		}
	}
	return out, bad
}

// publishKept stores what this node's sweep of p kept, or deletes the key
// when it kept nothing. The key is stored only while p's spec gives p
// (see setUnderSpec): a sweep that read the specs before `network rm`
// would leave it under the deleted tree, where a network made again under
// the name would take its addresses as a start's.
func publishKept(ctx context.Context, kv KV, p Pool, node string, addrs []netip.Addr, at time.Time) error {
	var doc any // none: the key goes
	if len(addrs) > 0 {
		doc = keptDoc{Addrs: slices.SortedFunc(slices.Values(addrs), netip.Addr.Compare), At: at.UTC()}
	}
	if err := putUnderSpec(ctx, kv, p, keptKey(p, node), doc); err != nil {
		return fmt.Errorf("publish the addresses kept for starts in %s: %w", p.ID(), err)
	}
	return nil
}
