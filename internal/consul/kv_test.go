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
