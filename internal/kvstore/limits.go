package kvstore

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
)

// Consul's limits on what a write may carry (its defaults, 1.8 on): a
// request beyond them is answered 413 with no key named. CheckValue and
// CheckTxn refuse it first, naming the key.
const (
	// MaxValueSize is kv_max_value_size: the largest value, in bytes, of
	// a PUT /v1/kv (its body) or of one operation of a transaction.
	MaxValueSize = 512 << 10
	// MaxTxnSize is txn_max_req_len: the largest body, in bytes, of a
	// PUT /v1/txn, where values are base64, a third larger.
	MaxTxnSize = 512 << 10
	// MaxTxnOps is how many operations one transaction may have.
	MaxTxnOps = 64
)

// CheckValue refuses a value for key that Consul's KV store refuses:
// above MaxValueSize.
func CheckValue(key string, value []byte) error {
	if len(value) > MaxValueSize {
		return fmt.Errorf("the value of %s is %d bytes, above Consul's limit of %d (kv_max_value_size)", key, len(value), MaxValueSize)
	}
	return nil
}

// CheckTxn refuses a transaction that Consul refuses before running it:
// no operation or more than MaxTxnOps, a value above MaxValueSize, or a
// request body above MaxTxnSize (naming its largest value's key).
func CheckTxn(ops []Op) error {
	if len(ops) == 0 || len(ops) > MaxTxnOps {
		return fmt.Errorf("%d operations: Consul takes 1 to %d in one transaction", len(ops), MaxTxnOps)
	}
	largest := 0
	for i, op := range ops {
		if err := CheckValue(op.Key, op.Value); err != nil {
			return err
		}
		if len(op.Value) > len(ops[largest].Value) {
			largest = i
		}
	}
	if n := TxnSize(ops); n > MaxTxnSize {
		return fmt.Errorf("a transaction of %d operations is %d bytes as sent, above Consul's limit of %d (txn_max_req_len); its largest value, of %s, is %d bytes (sent in base64)", len(ops), n, MaxTxnSize, ops[largest].Key, len(ops[largest].Value))
	}
	return nil
}

// TxnSize is the size in bytes of the body of Consul's PUT /v1/txn for
// ops, as Consul's API client encodes it (JSON, values in base64).
func TxnSize(ops []Op) int {
	n := len("[]\n") + len(ops) - 1 // brackets, newline, commas
	for _, op := range ops {
		n += len(`{"KV":{"Verb":,"Key":,"Value":,"Flags":0,"Index":,"Session":""},"Node":null,"Service":null,"Check":null}`)
		n += jsonLen(string(op.Verb)) + jsonLen(op.Key) + len(strconv.FormatUint(op.Index, 10))
		if op.Value == nil {
			n += len("null")
		} else {
			n += len(`""`) + base64.StdEncoding.EncodedLen(len(op.Value))
		}
	}
	return n
}

// jsonLen is the length of s as a JSON string, quotes and escapes in.
func jsonLen(s string) int {
	b, _ := json.Marshal(s)
	return len(b)
}
