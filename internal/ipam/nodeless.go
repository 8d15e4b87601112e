package ipam

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"time"

	"github.com/underlay/underlay/internal/kvstore"
)

// A node's agent publishes, per pool, the allocations naming no node that
// its last sweep found none of its containers holding, nor any start under
// way there able to hold (see planSweep). The leader reclaims such an
// allocation only once every node that may hold it has reported so: a
// node whose agent is down (or whose sweeps fail) cannot adopt what its
// container holds, and the address, freed, would be handed to a second
// container. One key per node and pool, written when the set changes and
// every reportRefresh while it has any (so that a key lost or spoiled is
// written again), deleted when it has none; a sweep with nothing new costs
// no write.

// reportRefresh is how often a node writes its report again, unchanged.
const reportRefresh = 10 * time.Minute

func nodelessPrefix(p Pool) string { return KVPrefix + p.Network + "/" + p.Family() + "/nodeless/" }

func nodelessKey(p Pool, node string) string { return nodelessPrefix(p) + node }

// nodelessDoc is one node's report in one pool.
type nodelessDoc struct {
	// Allocs are the allocations naming no node that it holds none of, by
	// address: a report is about one allocation, not a later one of the
	// same address.
	Allocs map[string]Alloc `json:"allocs"`
}

// nodelessReport is what a node last published in a pool.
type nodelessReport struct {
	allocs map[netip.Addr]Alloc
	at     time.Time
}

// decodeNodeless reads a pool's nodeless/ listing: by node, the
// allocations it reported holding none of. A key that cannot be read is
// left out, as no report: its node writes it again within reportRefresh.
func decodeNodeless(p Pool, pairs []kvstore.Pair) map[string]map[netip.Addr]Alloc {
	out := map[string]map[netip.Addr]Alloc{}
	prefix := nodelessPrefix(p)
	for _, pr := range pairs {
		node := strings.TrimPrefix(pr.Key, prefix)
		var doc nodelessDoc
		if node == "" || strings.Contains(node, "/") || json.Unmarshal(pr.Value, &doc) != nil {
			continue
		}
		m := map[netip.Addr]Alloc{}
		for k, al := range doc.Allocs {
			if a, err := netip.ParseAddr(k); err == nil && p.allocRange().Contains(a) {
				m[a] = al
			}
		}
		out[node] = m
	}
	return out
}

// publishNodeless stores node's report in p, or deletes the key when it
// reports nothing.
func publishNodeless(ctx context.Context, kv KV, p Pool, node string, allocs map[netip.Addr]Alloc) error {
	var doc any // none: the key goes
	if len(allocs) > 0 {
		d := nodelessDoc{Allocs: make(map[string]Alloc, len(allocs))}
		for a, al := range allocs {
			d.Allocs[a.String()] = al
		}
		doc = d
	}
	// Only while p's spec gives p: left under a deleted tree, the report
	// would speak for a network made again under the name.
	if err := putUnderSpec(ctx, kv, p, nodelessKey(p, node), doc); err != nil {
		return fmt.Errorf("publish the addresses allocated to no node that this node does not hold in %s: %w", p.ID(), err)
	}
	return nil
}

// republish says whether a report of allocs is due at now, after last
// (known: this agent published one).
func republish(last nodelessReport, known bool, allocs map[netip.Addr]Alloc, now time.Time) bool {
	switch {
	case !known || !maps.EqualFunc(last.allocs, allocs, Alloc.same):
		return true
	case len(allocs) == 0:
		return false
	}
	return now.Sub(last.at) >= reportRefresh || now.Before(last.at)
}
