package ipam

import (
	"context"
	"net/netip"
	"strings"

	"github.com/underlay/underlay/internal/kvstore"
)

// KVPrefix is where allocation state lives.
const KVPrefix = "underlay/ipam/"

// KV is what the allocator needs of Consul's KV store: reads (of keys with
// their values, or of keys alone), one atomic transaction of
// check-and-set operations, and a blocking read. Every block write is a
// check-and-set on the block's modify index.
type KV interface {
	// Get returns a key's pair; ok is false when absent.
	Get(ctx context.Context, key string) (p kvstore.Pair, ok bool, err error)
	// List returns every key under prefix with its value and modify index.
	List(ctx context.Context, prefix string) ([]kvstore.Pair, error)
	// Keys returns every key under prefix, without values, in key order:
	// what a node that needs a new block reads (see store.listed).
	Keys(ctx context.Context, prefix string) ([]string, error)
	// KeysIndex is Keys with the index Consul answers the listing with
	// (X-Consul-Index): the highest modify index under prefix, of a key
	// or of a deleted key's tombstone (see store.unchanged).
	KeysIndex(ctx context.Context, prefix string) ([]string, uint64, error)
	// Txn applies ops atomically: all of them, or none when a check fails.
	Txn(ctx context.Context, ops []kvstore.Op) (kvstore.Result, error)
	// Wait reads key once Consul's index for it is greater than index (a
	// blocking query; at once for 0), returning the index to wait on next.
	Wait(ctx context.Context, key string, index uint64) (p kvstore.Pair, ok bool, next uint64, err error)
}

// NetworkPrefix is the KV prefix of every pool of network name, removed
// with the network (netspec.Removal.Trees).
func NetworkPrefix(name string) string { return KVPrefix + name + "/" }

func poolPrefix(p Pool) string { return KVPrefix + p.Network + "/" + p.Family() + "/blocks/" }

func blockPath(p Pool, b netip.Prefix) string { return poolPrefix(p) + blockKey(b) }

// parseBlockPath reads a key of every pool's KV tree as blockPath spells
// it: the network named, and the block (masked, of the key's family).
// ok is false for any other key, and for one naming no network.
func parseBlockPath(key string) (network string, b netip.Prefix, ok bool) {
	rest, ok := strings.CutPrefix(key, KVPrefix)
	network, _, _ = strings.Cut(rest, "/")
	b, err := parseBlockKey(key[strings.LastIndex(key, "/")+1:])
	if !ok || network == "" || err != nil || b != b.Masked() || blockPath(Pool{Network: network, Prefix: b}, b) != key {
		return "", netip.Prefix{}, false
	}
	return network, b, true
}

// pressureKey is where a node short of addresses in p asks the others for
// their spares.
func pressureKey(p Pool) string { return KVPrefix + p.Network + "/" + p.Family() + "/pressure" }
