package ipam

import (
	"bytes"
	"encoding/json"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"testing"
)

// FuzzBlockDocRewrite: every write into a block rewrites its whole
// document from what the allocator read. Whatever a document that reads
// holds (another version's members, names in another case, escapes,
// duplicate members, odd times), it must be written back, and that
// write must read again as the same document: every allocation with its
// node, time, kind and generation, and every member this version does not
// know. An allocation lost on the way would free an address its node
// holds; a document read but not writable would freeze its block.
func FuzzBlockDocRewrite(f *testing.F) {
	for _, seed := range []string{
		`{"node":"n1","allocs":{"10.2.0.2":{"node":"n1","at":"2026-03-04T05:06:07Z","kind":"task","gen":"g1"}}}`,
		`{"Node":"n1","allocs":{"10.2.0.2":{"node":"n1","at":"2026-03-04T05:06:07Z","KIND":"task","container":"c0ffee","labels":{"a":[1,2]}}},"version":3,"lease":{"until":"2027-01-01T00:00:00Z"}}`,
		`{"node":"n1","allocs":{"10.2.0.2":{"node":"n1"}},"ALLOCS":{"10.2.0.3":{"node":"n2","x":1}}}`,
		`{"node":"n1","node":"n2","allocs":{"10.2.0.2":{"node":"n1","node":"n3","at":"2026-03-04T05:06:07.123456789+05:30"}}}`,
		`{"\u006eode":"n1","allocs":{"10.2.0.2":null,"10.2.0.3":{}},"x":null,"y":1e400}`,
		`{"node":"n1","allocs":{},"allocſ":{"10.2.0.4":{"node":"n2"}},"\u212aind":"k"}`,
		`{"allocs":{"10.2.0.2":{"node":"n1","at":"0001-01-01T00:00:00Z","\u0067en":"g","z":"\ud800"}}}`,
		`{"node":"","allocs":null}`,
	} {
		f.Add([]byte(seed))
	}
	blk := netip.MustParsePrefix("10.2.0.0/28")
	f.Fuzz(func(t *testing.T, raw []byte) {
		read, err := decodeBlock(pool26, blk, raw)
		if err != nil {
			return // refused whole, and kept as it is (FuzzPoolListing)
		}
		written, err := marshalBlockDoc(read)
		if err != nil {
			t.Fatalf("document read but not written back: %v\nread: %s", err, raw)
		}
		again, err := decodeBlock(pool26, blk, written)
		if err != nil {
			t.Fatalf("document written back does not read: %v\nread:    %s\nwritten: %s", err, raw, written)
		}
		sameBlockDoc(t, read, again, raw, written)
		twice, err := marshalBlockDoc(again)
		if err != nil || !bytes.Equal(twice, written) {
			t.Fatalf("written again otherwise (%v):\nfirst:  %s\nsecond: %s", err, written, twice)
		}
	})
}

// sameBlockDoc fails t unless a and b, a document as read and as read
// again after it was written back, hold the same.
func sameBlockDoc(t *testing.T, a, b BlockDoc, raw, written []byte) {
	t.Helper()
	fail := func(what string, args ...any) {
		t.Helper()
		t.Fatalf("document written back reads otherwise: "+what+"\nread:    %s\nwritten: %s", append(args, raw, written)...)
	}
	if a.Node != b.Node {
		fail("node %q, then %q", a.Node, b.Node)
	}
	if !sameMembers(a.Unknown, b.Unknown) {
		fail("unknown members %s, then %s", members(a.Unknown), members(b.Unknown))
	}
	if ka, kb := slices.Sorted(maps.Keys(a.Allocs)), slices.Sorted(maps.Keys(b.Allocs)); !slices.Equal(ka, kb) {
		fail("allocations %q, then %q", ka, kb)
	}
	for k, x := range a.Allocs {
		y := b.Allocs[k]
		if x.Node != y.Node || !x.At.Equal(y.At) || x.Kind != y.Kind || x.Gen != y.Gen || !sameMembers(x.Unknown, y.Unknown) {
			fail("allocation %s: %+v, then %+v", k, x, y)
		}
	}
}

// sameMembers compares members as JSON values, whatever their spacing
// and escapes (json.Marshal writes a member's & as \u0026), numbers as
// written.
func sameMembers(a, b map[string]json.RawMessage) bool {
	if len(a) != len(b) {
		return false
	}
	for name, v := range a {
		w, ok := b[name]
		if !ok {
			return false
		}
		x, errX := jsonValue(v)
		y, errY := jsonValue(w)
		if errX != nil || errY != nil || !reflect.DeepEqual(x, y) {
			return false
		}
	}
	return true
}

func jsonValue(raw json.RawMessage) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}

func members(m map[string]json.RawMessage) string {
	b, _ := json.Marshal(m)
	return string(b)
}
