package ipam

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// TestRewriteKeepsUnknownMembers: a newer agent may write members of a
// block document, or of its records, that this version does not know. The
// agent rewrote the whole document with what it read (with check-and-set),
// and dropped them, so that one older agent allocating in a block erased
// what the newer ones recorded there. They are now written back as read;
// known members spelt in another case are read, and written once, in
// their own spelling.
func TestRewriteKeepsUnknownMembers(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	key := blockPath(pool26, netip.MustParsePrefix("10.2.0.0/28"))
	kv.Put(ctx, key, []byte(`{"Node":"n1","allocs":{`+
		`"10.2.0.2":{"node":"n1","at":"2026-03-04T05:06:07Z","KIND":"task","container":"c0ffee","labels":{"a":[1,2]}},`+
		`"10.2.0.3":{"node":"n2","at":"2026-03-04T05:06:07Z","kind":"task"}},`+
		`"version":3,"lease":{"until":"2027-01-01T00:00:00Z"}}`))
	before, _, _ := kv.Get(ctx, key)
	a := newAllocator(kv, "n1", "g", func() time.Time { return t0 }, nil)
	if _, err := a.Allocate(ctx, pool26, netip.MustParseAddr("10.2.0.4"), KindTask); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctx, pool26, netip.MustParseAddr("10.2.0.4")); err != nil {
		t.Fatal(err)
	}
	after, _, _ := kv.Get(ctx, key)
	if after.Index <= before.Index {
		t.Fatalf("block not rewritten: index %d, then %d", before.Index, after.Index)
	}
	var got map[string]any
	if err := json.Unmarshal(after.Value, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"node": "n1",
		"allocs": map[string]any{
			"10.2.0.2": map[string]any{"node": "n1", "at": "2026-03-04T05:06:07Z", "kind": "task", "container": "c0ffee", "labels": map[string]any{"a": []any{1.0, 2.0}}},
			"10.2.0.3": map[string]any{"node": "n2", "at": "2026-03-04T05:06:07Z", "kind": "task"},
		},
		"version": 3.0,
		"lease":   map[string]any{"until": "2027-01-01T00:00:00Z"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("block after two rewrites (-want +got):\n%s\n%s", d, after.Value)
	}
	for _, twice := range []string{`"Node"`, `"KIND"`} {
		if strings.Contains(string(after.Value), twice) {
			t.Errorf("known member %s written back as unknown: %s", twice, after.Value)
		}
	}
}

// TestKnownMembersAreTheTags: the members read as known are exactly the
// json tags of BlockDoc and Alloc; one missing would be both read and
// written back as unknown, twice in the document.
func TestKnownMembersAreTheTags(t *testing.T) {
	for _, c := range []struct {
		typ   reflect.Type
		known func(string) bool
	}{{reflect.TypeFor[BlockDoc](), blockMember}, {reflect.TypeFor[Alloc](), allocMember}} {
		for i := range c.typ.NumField() {
			f := c.typ.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if tag == "-" {
				if c.known(f.Name) {
					t.Errorf("%s.%s: not in the document, yet read as known", c.typ.Name(), f.Name)
				}
				continue
			}
			if !c.known(tag) {
				t.Errorf("%s.%s: member %q not read as known", c.typ.Name(), f.Name, tag)
			}
		}
	}
}

// BenchmarkBlockDocument reads and writes a full /26 block's document, as
// every allocation and every sweep does: of this version's members only
// (the rule), and with a newer version's members in each record.
func BenchmarkBlockDocument(b *testing.B) {
	doc := BlockDoc{Node: "node-a", Allocs: map[string]Alloc{}}
	for i := 1; i < 63; i++ {
		doc.Allocs[netip.AddrFrom4([4]byte{10, 2, 0, byte(i)}).String()] = Alloc{Node: "node-a", At: t0, Kind: KindTask, Gen: "g1"}
	}
	known, err := marshalBlockDoc(doc)
	if err != nil {
		b.Fatal(err)
	}
	withNewer := bytes.ReplaceAll(known, []byte(`"kind":`), []byte(`"lease":{"until":"2027-01-01T00:00:00Z"},"kind":`))
	blk := netip.MustParsePrefix("10.2.0.0/26")
	for _, c := range []struct {
		name string
		raw  []byte
	}{{"known members", known}, {"newer members", withNewer}} {
		read, err := decodeBlock(pool26, blk, c.raw)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("decode/"+c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := decodeBlock(pool26, blk, c.raw); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("encode/"+c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := marshalBlockDoc(read); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
