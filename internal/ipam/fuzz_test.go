package ipam

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/underlay/underlay/internal/kvstore"
)

// FuzzPoolListing: whatever stray key and document sit under a pool's
// blocks/ beside a real block document, the allocator's reading of the
// pool keeps the real allocation, accounts for every key once (a block's
// document, or a bad key whose fix deletes exactly that key), never
// claims a block with an unreadable key, and hands out only usable, free
// addresses of the block it fills.
func FuzzPoolListing(f *testing.F) {
	for _, seed := range []struct {
		key, value string
		v6         bool
	}{
		{"10.2.0.16_28", `{"node":"n2","allocs":{"10.2.0.17":{"node":"n2","kind":"task"}}}`, false},
		{"10.2.0.0_28", `{"node":"n1","allocs":{}}`, false}, // the real block itself: not a stray key
		{"10.2.0.32_28", `{not json`, false},
		{"10.2.0.48_28", `{"node":"n1","allocs":{"10.2.0.99":{"node":"n1"}}}`, false},
		{"10.2.0.17_28", `{"node":"n1","allocs":{}}`, false},
		{"garbage", `hello`, false},
		{"fd00::18.52.86.112_124", `{"node":"n1","allocs":{}}`, true}, // the real block, spelt otherwise
		{"FD00::1234:5680_124", `{"node":"n1","Allocs":{"fd00::1234:5681":{}}}`, true},
		{"fd00::1234:5690_124", `{"node":"n1","allocs":{"fd00::1234:5691%eth0":{}}}`, true},
		{"fd00::1234:56a0_124", `{"node":"n1","allocs":{"::ffff:10.2.0.1":{}}}`, true},
		{"it's a\nkey", `null`, false},
		{"key\x1b[2J\n", `null`, false}, // no shell word holds it
	} {
		f.Add(seed.key, []byte(seed.value), seed.v6)
	}
	f.Fuzz(func(t *testing.T, key string, value []byte, v6 bool) {
		p, held := pool26, netip.MustParseAddr("10.2.0.2")
		if v6 {
			p = Pool{Network: "net6", Prefix: netip.MustParsePrefix("fd00::/64"), Range: netip.MustParsePrefix("fd00::1234:5600/120"), BlockBits: 124,
				Reserved: map[netip.Addr]bool{netip.MustParseAddr("fd00::1"): true}}
			held = netip.MustParseAddr("fd00::1234:5671")
		}
		real := p.Block(held)
		if key == blockKey(real) {
			return // the real document itself, not a stray one beside it
		}
		realAlloc := Alloc{Node: "n1", At: time.Unix(1, 0).UTC(), Kind: KindTask}
		realDoc, err := json.Marshal(BlockDoc{Node: "n1", Allocs: map[string]Alloc{held.String(): realAlloc}})
		if err != nil {
			t.Fatal(err)
		}
		// As Consul lists them: in key order.
		pairs := []kvstore.Pair{{Key: blockPath(p, real), Value: realDoc, Index: 7}, {Key: poolPrefix(p) + key, Value: value, Index: 9}}
		slices.SortFunc(pairs, func(x, y kvstore.Pair) int { return strings.Compare(x.Key, y.Key) })

		v, bad := decodePool(p, pairs)

		if got, ok := v.docs[real].alloc(held); !ok || !got.same(realAlloc) {
			t.Fatalf("stray key %q (%q) changed the real allocation of %s: %+v, %v", key, value, held, got, ok)
		}
		// Every key once: a readable block under its own key, or a bad
		// key; a block with a bad key is taken all the same.
		if len(v.docs)+len(bad) != len(pairs) {
			t.Fatalf("%d blocks read and %d bad keys from %d keys: one was lost or counted twice (read %v, bad %v)", len(v.docs), len(bad), len(pairs), v.docs, bad)
		}
		badKeys := map[string]bool{}
		for _, d := range bad {
			badKeys[d.Key] = true
		}
		for b := range v.taken {
			_, readable := v.docs[b]
			if !p.isBlock(b) || readable == badKeys[blockPath(p, b)] {
				t.Errorf("%s taken: not a block of %s, or not exactly one of read and bad", b, p.ID())
			}
		}
		for _, d := range bad {
			if d.Err == nil || d.Err.Error() == "" {
				t.Errorf("bad key %q without a reason", d.Key)
			}
			fix, why := d.Removal()
			if kvstore.PathRedirected(d.Key) {
				// consul kv delete would miss it: no command, and how it goes.
				if fix != "" || !strings.Contains(why, "PUT /v1/txn") {
					t.Errorf("key %q, which Consul's paths redirect, removed by %q (%q)", d.Key, fix, why)
				}
				continue
			}
			// A key no shell word holds gets a fix a shell refuses to run.
			got, refused, ok := shellWord(strings.TrimPrefix(fix, "consul kv delete "))
			unquotable := strings.HasSuffix(d.Key, "\n") || strings.Contains(d.Key, "\x00")
			if refused != unquotable || !refused && (!ok || got != d.Key) {
				t.Errorf("fix %q deletes %q (refused %v), not the bad key %q", fix, got, refused, d.Key)
			}
			if !utf8.ValidString(fix) || strings.ContainsFunc(fix, func(r rune) bool { return !unicode.IsGraphic(r) }) {
				t.Errorf("fix %q of key %q: not graphic text on one line", fix, d.Key)
			}
		}
		for b, doc := range v.docs {
			for k := range doc.Allocs {
				if a, err := netip.ParseAddr(k); err != nil || a.String() != k || !b.Contains(a) {
					t.Errorf("block %s read with allocation %q, not one of its addresses", b, k)
				}
			}
		}
		// The allocator's choices from this view.
		for _, b := range unclaimed(p, v, reuse{}) {
			if v.taken[b] {
				t.Errorf("block %s has a key, offered as unclaimed", b)
			}
		}
		// A stray key naming a prefix of the pool (another size, another
		// spelling) shadows the blocks it overlaps: what it records there
		// cannot be read, so they are never filled.
		if q, err := netip.ParsePrefix(strings.ReplaceAll(key, "_", "/")); err == nil && badKeys[poolPrefix(p)+key] && q.Masked().Overlaps(real) && v.shadowed[real] == "" {
			t.Errorf("stray key %q overlaps %s, not shadowed", key, real)
		}
		for _, b := range unclaimed(p, v, reuse{}) {
			if v.shadowed[b] != "" {
				t.Errorf("block %s, shadowed by %s, offered as unclaimed", b, v.shadowed[b])
			}
		}
		for _, b := range candidates(p, v, "n1", true, reuse{}) {
			if v.shadowed[b] != "" {
				t.Errorf("block %s, shadowed by %s, is a candidate", b, v.shadowed[b])
			}
			doc, readable := v.docs[b]
			if !readable {
				if v.taken[b] {
					t.Fatalf("block %s, unreadable, is a candidate", b)
				}
				doc = BlockDoc{Allocs: map[string]Alloc{}}
			}
			before := doc.clone()
			_, got := fill(p, b, doc, "n1", make([]Alloc, 3), reuse{})
			seen := map[netip.Addr]bool{}
			for _, a := range got {
				if _, taken := before.alloc(a); taken || !p.usable(a) || !b.Contains(a) || seen[a] {
					t.Errorf("fill of %s gave %s: allocated already, reserved, outside the block or given twice", b, a)
				}
				seen[a] = true
			}
		}
	})
}

// shellWord undoes shellword.Quote: a bare word (printable ASCII), a single-quoted word in
// which each quote is closed, escaped with a backslash and opened again,
// or printf's output, "$(printf 'FORMAT')", whose format escapes only \,
// % and octal bytes. refused is true for Quote's refusal (a word starting
// with ")", which a shell runs nothing of); ok is false for anything else.
func shellWord(s string) (word string, refused, ok bool) {
	if format, isPrintf := strings.CutPrefix(s, `"$(printf '`); isPrintf {
		format, isPrintf = strings.CutSuffix(format, `')"`)
		word, ok := printfWord(format)
		return word, false, isPrintf && ok
	}
	if strings.HasPrefix(s, ")") {
		return "", true, false
	}
	if !strings.HasPrefix(s, "'") {
		plain := !strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r > '~' }) // printable ASCII
		return s, false, s != "" && plain && !strings.ContainsAny(s, "'\"\\$`*?[]{}()<>|&;!#~")
	}
	var b strings.Builder
	for rest := s; rest != ""; {
		if !strings.HasPrefix(rest, "'") {
			return "", false, false
		}
		end := strings.IndexByte(rest[1:], '\'')
		if end < 0 {
			return "", false, false
		}
		b.WriteString(rest[1 : 1+end])
		rest = rest[2+end:]
		if rest == "" {
			break
		}
		if !strings.HasPrefix(rest, `\'`) {
			return "", false, false
		}
		b.WriteByte('\'')
		rest = rest[2:]
	}
	return b.String(), false, true
}

// printfWord is what printf writes for format, a format shellword.Quote
// writes: ok is false for anything else.
func printfWord(format string) (string, bool) {
	var b strings.Builder
	for rest := format; rest != ""; {
		switch {
		case strings.HasPrefix(rest, `\\`), strings.HasPrefix(rest, "%%"):
			b.WriteByte(rest[1])
			rest = rest[2:]
		case rest[0] == '\\':
			n, err := strconv.ParseUint(rest[1:min(4, len(rest))], 8, 8)
			if err != nil || len(rest) < 4 {
				return "", false
			}
			b.WriteByte(byte(n))
			rest = rest[4:]
		case rest[0] == '%' || rest[0] == '\'':
			return "", false
		default:
			b.WriteByte(rest[0])
			rest = rest[1:]
		}
	}
	return b.String(), true
}
