// Package kvstore is the vocabulary of underlay's key/value store (Consul
// KV): pairs with their modify indexes, and the operations of an atomic
// transaction; the rule for a key missing from a listing (Absence), which
// reads through the store it is given; Consul's rules for the index a
// loop of blocking reads waits on, and for how long (BlockingIndex); and
// the bound on a loop's write (WriteContext). It does no I/O of its own.
// Packages that keep state in the store declare the small interface they
// need over these types (ipam.KV, netspec.KV); internal/consul implements
// it, and kvtest fakes it for unit tests.
//
// It imports only the standard library.
package kvstore

import (
	"errors"
	"path"
	"strings"
)

// Pair is one key with its value, modify index and create index.
type Pair struct {
	Key   string
	Value []byte
	// Index is the key's modify index: it changes with every write of the
	// key, so a check-and-set on it fails if anyone wrote since it was read.
	Index uint64
	// CreateIndex is the index of the write that created the key: kept
	// across its updates, new once it is deleted and written again. A key
	// whose CreateIndex is above an index it was read at was made again
	// since, not rewritten.
	CreateIndex uint64
}

// Verb is what one operation of a transaction does, as Consul's /v1/txn
// names it.
type Verb string

// Transaction verbs.
const (
	// Set writes Value unconditionally.
	Set Verb = "set"
	// CAS writes Value if the key's modify index is Index; Index 0 writes
	// only if the key is absent.
	CAS Verb = "cas"
	// Get reads the key; an absent key fails the transaction.
	Get Verb = "get"
	// Delete removes the key (absent is no failure).
	Delete Verb = "delete"
	// DeleteCAS removes the key if its modify index is Index; an absent
	// key is no failure (Consul's kvsDeleteCASTxn).
	DeleteCAS Verb = "delete-cas"
	// DeleteTree removes every key starting with Key.
	DeleteTree Verb = "delete-tree"
	// CheckIndex fails the transaction unless the key's modify index is
	// Index.
	CheckIndex Verb = "check-index"
	// CheckNotExists fails the transaction if the key exists.
	CheckNotExists Verb = "check-not-exists"
)

// Op is one operation of a transaction.
type Op struct {
	Verb  Verb
	Key   string
	Value []byte
	Index uint64
}

// Result is what a transaction did. When OK is false a check (or a CAS)
// failed and nothing was written; Pairs then is empty. Otherwise Pairs has
// one entry per Set, CAS and Get operation, in order: the key with its new
// modify index and its create index (and, for Get, its value).
type Result struct {
	OK    bool
	Pairs []Pair
}

// PathRedirected says Consul's HTTP API cannot name key by its path
// (/v1/kv/KEY): the path holds an empty, "." or ".." segment, which
// Consul's HTTP server cleans and redirects to another key's path, as Go's
// ServeMux does (a trailing '/' is kept). A write or delete by path then
// misses key, or hits the other key; a transaction (/v1/txn) names its
// keys in its body and takes any key.
func PathRedirected(key string) bool {
	p := "/v1/kv/" + strings.TrimPrefix(key, "/")
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c != p
}

// ErrPermissionDenied is what a read the store's ACLs refused wraps
// (Consul answers 403). Consul 1.8 refuses a read of one key the token
// may not read, present or not (agent/consul/kvs_endpoint.go KVS.Get
// returns acl.ErrPermissionDenied), but leaves such keys out of a listing
// (KVS.List and KVS.ListKeys filter through FilterDirEnt,
// agent/consul/filter.go) with no error and no header: a key missing from
// a listing is no proof it is gone (see Absence).
var ErrPermissionDenied = errors.New("permission denied")
