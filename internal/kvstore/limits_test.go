package kvstore

import (
	"strings"
	"testing"
)

// TestCheckTxn: what Consul refuses with a raw 413 before running a
// transaction (more than 64 operations, a value above 512 KiB, a body
// above 512 KiB once values are base64) is refused first with an error
// naming the key; what it takes passes.
func TestCheckTxn(t *testing.T) {
	big := func(n int) []byte { return make([]byte, n) }
	many := make([]Op, MaxTxnOps+1)
	for i := range many {
		many[i] = Op{Verb: Set, Key: "k"}
	}
	for _, tc := range []struct {
		name string
		ops  []Op
		want string // "" when accepted
	}{
		{"one small write", []Op{{Verb: CAS, Key: "a", Value: []byte("v"), Index: 7}}, ""},
		{"64 operations", many[:MaxTxnOps], ""},
		{"65 operations", many, "65 operations"},
		{"none", nil, "0 operations"},
		{"a value at the limit's base64 bound", []Op{{Verb: Set, Key: "a", Value: big(380 << 10)}}, ""},
		{"a value above kv_max_value_size", []Op{{Verb: Set, Key: "a"}, {Verb: Set, Key: "underlay/big", Value: big(MaxValueSize + 1)}}, "underlay/big is 524289 bytes"},
		{"a body above txn_max_req_len", []Op{{Verb: Set, Key: "a", Value: big(100 << 10)}, {Verb: Set, Key: "underlay/b", Value: big(300 << 10)}}, "largest value, of underlay/b, is 307200 bytes"},
	} {
		err := CheckTxn(tc.ops)
		if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: CheckTxn = %v, want %q", tc.name, err, tc.want)
		}
	}
	if err := CheckValue("k", big(MaxValueSize)); err != nil {
		t.Errorf("a value of 512 KiB: %v", err)
	}
	if err := CheckValue("underlay/k", big(MaxValueSize+1)); err == nil || !strings.Contains(err.Error(), "underlay/k") {
		t.Errorf("a value above 512 KiB: %v, want an error naming the key", err)
	}
}
