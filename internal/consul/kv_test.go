package consul

import (
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
)

// TestTxnRefusal: a transaction ACLs refused is an error (the allocator
// used to take it for a lost check-and-set and retry until "too much
// contention"); a failed index check is not.
func TestTxnRefusal(t *testing.T) {
	for _, tc := range []struct {
		name string
		resp *api.TxnResponse
		want string
	}{
		{"no response", nil, ""},
		{"stale index", &api.TxnResponse{Errors: api.TxnErrors{{OpIndex: 0, What: `failed to set key "underlay/ipam/x", index is stale`}}}, ""},
		{"refused", &api.TxnResponse{Errors: api.TxnErrors{{OpIndex: 0, What: "Permission denied"}}}, "Permission denied"},
		{"unknown token", &api.TxnResponse{Errors: api.TxnErrors{{OpIndex: 1, What: "ACL not found"}}}, "ACL not found"},
	} {
		err := txnRefusal(tc.resp)
		if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: txnRefusal = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestNextIndex: a watch never waits on index 0 twice (Consul answers a
// wait on 0 at once: a spin), starts over when the index goes backwards,
// and reports a change only when the index moved. Before, an answer with
// index 0 kept the watch querying without pause.
func TestNextIndex(t *testing.T) {
	for _, tc := range []struct {
		prev, last, next uint64
		changed          bool
	}{
		{0, 7, 7, true},  // the first answer
		{7, 7, 7, false}, // the wait timed out
		{7, 9, 9, true},  // a write
		{9, 3, 1, true},  // Consul restarted: a new history
		{0, 0, 1, false}, // an index below 1 is waited on as 1
		{1, 0, 1, true},  // ... even when it went backwards to 0
		{12, 12, 12, false},
	} {
		next, changed := NextIndex(tc.prev, tc.last)
		if next != tc.next || changed != tc.changed {
			t.Errorf("NextIndex(%d, %d) = %d, %v; want %d, %v", tc.prev, tc.last, next, changed, tc.next, tc.changed)
		}
	}
}
