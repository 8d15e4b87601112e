package ipam

import (
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
