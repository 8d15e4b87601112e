package ipam

import "github.com/underlay/underlay/internal/kvstore"

type kvPair struct{ key, value string }

func toPairs(in []kvPair) []kvstore.Pair {
	out := make([]kvstore.Pair, len(in))
	for i, p := range in {
		out[i] = kvstore.Pair{Key: p.key, Value: []byte(p.value), Index: uint64(i + 1)}
	}
	return out
}
