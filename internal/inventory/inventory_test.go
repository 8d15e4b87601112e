package inventory

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

// load reads the inventories as ips and the dashboard do: the node facts
// once, then Load with them.
func load(ctx context.Context, kv *kvtest.KV) ([]Entry, []BadDocument, error) {
	facts, err := netspec.NewStore(kv).Nodes(ctx)
	if err != nil {
		return nil, nil, err
	}
	return Load(ctx, kv, facts)
}

// publishFacts publishes the facts of the node named node, whose identity
// is id, as its agent does before it publishes its inventory.
func publishFacts(ctx context.Context, t *testing.T, kv *kvtest.KV, id, node string) {
	t.Helper()
	if err := netspec.NewStore(kv).PublishNode(ctx, netspec.NodeFacts{ID: id, Node: node, Interfaces: []string{"eth0"}}); err != nil {
		t.Fatal(err)
	}
}

func TestCheck(t *testing.T) {
	es := []Entry{
		{IP: "10.0.0.5", MAC: "02:00:00:00:00:05", Node: "n1", Network: "lan", Container: "a"},
		{IP: "10.0.0.6", MAC: "02:00:00:00:00:06", Node: "n2", Network: "lan", Container: "b"},
		{IP: "10.0.0.5", MAC: "02:00:00:00:00:07", Node: "n3", Network: "lan", Container: "c"},
		{IP: "10.0.0.5", MAC: "02:00:00:00:00:08", Node: "n3", Network: "other", Container: "d"}, // another network: no clash
		{IP: "10.0.0.9", MAC: "02:00:00:00:00:06", Node: "n1", Network: "lan", Container: "e"},
	}
	if got := Check(es); got != 4 {
		t.Errorf("Check = %d duplicates, want 4 (a, c by IP; b, e by MAC)", got)
	}
	want := map[string]string{"a": "IP also on c@n3", "c": "IP also on a@n1", "b": "MAC also on e@n1", "e": "MAC also on b@n2", "d": ""}
	for _, e := range es {
		if e.Duplicate != want[e.Container] {
			t.Errorf("%s: Duplicate %q, want %q", e.Container, e.Duplicate, want[e.Container])
		}
	}
}

func TestSortAndFilter(t *testing.T) {
	es := []Entry{
		{IP: "10.0.0.10", Node: "n1", Network: "lan"},
		{IP: "10.0.0.9", Node: "n2", Network: "lan"},
		{IP: "fd00::1", Node: "n2", Network: "lan"},
		{IP: "10.0.0.1", Node: "n1", Network: "dmz"},
	}
	Sort(es)
	var ips []string
	for _, e := range es {
		ips = append(ips, e.Network+"/"+e.IP)
	}
	if d := cmp.Diff([]string{"dmz/10.0.0.1", "lan/10.0.0.9", "lan/10.0.0.10", "lan/fd00::1"}, ips); d != "" {
		t.Errorf("order (-want +got):\n%s", d)
	}
	if got := Filter(es, "lan", "n2"); len(got) != 2 || !strings.HasPrefix(got[0].IP, "10.0.0.9") {
		t.Errorf("Filter(lan, n2) = %+v", got)
	}
	if got := Filter(es, "", ""); len(got) != 4 {
		t.Errorf("Filter with no criteria kept %d of 4", len(got))
	}
}

// TestLoadSetsBadDocumentsApart: one node's inventory that cannot be
// decoded (by hand, a bug) is set apart with its fix, and hides no other
// node's: `underlay ips` and the dashboard failed whole before.
func TestLoadSetsBadDocumentsApart(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	publishFacts(ctx, t, kv, "id10000000000000000000000", "n1")
	if err := Publish(ctx, kv, "id10000000000000000000000", []Entry{{IP: "10.0.0.5", Node: "n1", Network: "lan", Container: "a"}}); err != nil {
		t.Fatal(err)
	}
	key := KVPrefix + "id 2"
	kv.Put(ctx, key, []byte(`[{"ip":`))
	es, bad, err := load(ctx, kv)
	if err != nil || len(es) != 1 || es[0].Container != "a" {
		t.Fatalf("entries %+v, %v: want n1's", es, err)
	}
	if len(bad) != 1 || bad[0].Key != key || bad[0].Pool != "" || bad[0].Problem == "" || bad[0].Effect == "" || bad[0].Fix != "consul kv delete '"+key+"'" {
		t.Errorf("bad documents %+v: want %s, with its problem, effect and fix", bad, key)
	}
}

// TestLoadSetsBadEntriesApart: a document that decodes but holds an entry
// no agent writes (no address, no network or node, an address or MAC that
// is none) is set apart like one that does not decode, naming its key and
// the bad value: it was listed, as a row with no address or a garbage
// one, and empty addresses were flagged as duplicates of each other.
func TestLoadSetsBadEntriesApart(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	publishFacts(ctx, t, kv, "id10000000000000000000000", "n1")
	publishFacts(ctx, t, kv, "idempty000000000000000000", "n0")
	if err := Publish(ctx, kv, "id10000000000000000000000", []Entry{{IP: "10.0.0.5", MAC: "02:00:00:00:00:05", Node: "n1", Network: "lan", Container: "a"}}); err != nil {
		t.Fatal(err)
	}
	if err := Publish(ctx, kv, "idempty000000000000000000", nil); err != nil { // a node with no underlay container
		t.Fatal(err)
	}
	bad := map[string]struct{ doc, problem string }{
		"empty entry":   {`[{}]`, `entry 0: ip "" is not an address`},
		"null entry":    {`[null]`, `entry 0: ip "" is not an address`},
		"garbage ip":    {`[{"ip":"10.0.0.6","node":"n2","network":"lan"},{"ip":"ten","node":"n2","network":"lan"}]`, `entry 1: ip "ten" is not an address`},
		"no network":    {`[{"ip":"10.0.0.7","node":"n2"}]`, "entry 0 (10.0.0.7): no network"},
		"no node":       {`[{"ip":"10.0.0.8","network":"lan"}]`, "entry 0 (10.0.0.8): no node"},
		"garbage mac":   {`[{"ip":"10.0.0.9","mac":"zz","node":"n2","network":"lan"}]`, `entry 0 (10.0.0.9): mac "zz" is not a MAC address`},
		"not a list":    {`{"version":2,"entries":[]}`, "not an inventory"},
		"a future list": {`[[1]]`, "not an inventory"},
	}
	for name, b := range bad {
		kv.Put(ctx, KVPrefix+name, []byte(b.doc))
	}
	es, gotBad, err := load(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 1 || es[0].Container != "a" {
		t.Errorf("entries %+v: want n1's alone", es)
	}
	problems := map[string]string{}
	for _, d := range gotBad {
		problems[strings.TrimPrefix(d.Key, KVPrefix)] = d.Problem
		if d.Effect == "" || d.Fix != "consul kv delete '"+d.Key+"'" {
			t.Errorf("bad document %s: effect %q, fix %q", d.Key, d.Effect, d.Fix)
		}
	}
	for name, b := range bad {
		if !strings.Contains(problems[name], b.problem) {
			t.Errorf("%s (%s): problem %q, want it to say %q", name, b.doc, problems[name], b.problem)
		}
	}
	if len(gotBad) != len(bad) {
		t.Errorf("%d bad documents, want %d: %+v", len(gotBad), len(bad), gotBad)
	}
}

// TestLoadRefusesAPresetDuplicate: Duplicate is what Check finds, and no
// agent publishes it, but a document that carried it was read with it:
// Check then left the entry out of its count (it only notes entries whose
// Duplicate is empty), so ips said 1 address held twice where 2 entries
// clash, and the dashboard showed the document's text as a task's
// problem. Such a document is now set apart, naming the value.
func TestLoadRefusesAPresetDuplicate(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	publishFacts(ctx, t, kv, "id10000000000000000000000", "n1")
	publishFacts(ctx, t, kv, "id20000000000000000000000", "n2")
	if err := Publish(ctx, kv, "id10000000000000000000000", []Entry{{IP: "10.0.0.5", Node: "n1", Network: "lan", Container: "a"}}); err != nil {
		t.Fatal(err)
	}
	key := KVPrefix + "id20000000000000000000000"
	kv.Put(ctx, key, []byte(`[{"ip":"10.0.0.5","node":"n2","network":"lan","container":"b","duplicate":"none, all is well"}]`))
	es, bad, err := load(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.Duplicate != "" {
			t.Errorf("entry %s@%s read with Duplicate %q, which only Check sets", e.Container, e.Node, e.Duplicate)
		}
	}
	if len(bad) != 1 || bad[0].Key != key || !strings.Contains(bad[0].Problem, `entry 0 (10.0.0.5): duplicate "none, all is well"`) {
		t.Errorf("bad documents %+v: want %s, naming its preset duplicate", bad, key)
	}
}

// TestLoadReadsAddressesInOneSpelling: Check and PoolAddresses compare
// addresses as text, and Load kept each as its document spelt it, so
// fd00::5 and FD00:0::5, or 02:00:00:00:00:0a and 02-00-00-00-00-0A, one
// address each, were never flagged as held twice. Load now reads every
// address in its canonical spelling.
func TestLoadReadsAddressesInOneSpelling(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	publishFacts(ctx, t, kv, "id10000000000000000000000", "n1")
	publishFacts(ctx, t, kv, "id20000000000000000000000", "n2")
	if err := Publish(ctx, kv, "id10000000000000000000000", []Entry{{IP: "fd00::5", MAC: "02:00:00:00:00:0a", Node: "n1", Network: "lan", Container: "a"}}); err != nil {
		t.Fatal(err)
	}
	kv.Put(ctx, KVPrefix+"id20000000000000000000000", []byte(`[{"ip":"FD00:0::5","mac":"02:00:00:00:00:0B","node":"n2","network":"lan","container":"b"},`+
		`{"ip":"10.0.0.9","mac":"02-00-00-00-00-0A","node":"n2","network":"lan","container":"c"}]`))
	es, bad, err := load(ctx, kv)
	if err != nil || len(bad) != 0 {
		t.Fatalf("Load: %v, bad %+v", err, bad)
	}
	if got := Check(es); got != 3 {
		t.Errorf("Check = %d duplicates, want 3 (a and b by IP, c by MAC with a): %+v", got, es)
	}
	got := map[string]string{}
	for _, e := range es {
		got[e.Container] = e.IP + " " + e.MAC
	}
	want := map[string]string{"a": "fd00::5 02:00:00:00:00:0a", "b": "fd00::5 02:00:00:00:00:0b", "c": "10.0.0.9 02:00:00:00:00:0a"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("addresses read (-want +got):\n%s", d)
	}
}

// TestLoadRefusesARepeatedEntry: an agent lists each endpoint once, but a
// document holding one entry twice was read as two, and Check flagged the
// container as holding its address twice, with itself ("IP also on
// a@n1" on a@n1). Such a document is now set apart, naming the repeat;
// two containers of one node with one address are still both listed and
// flagged.
func TestLoadRefusesARepeatedEntry(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	publishFacts(ctx, t, kv, "id10000000000000000000000", "n1")
	publishFacts(ctx, t, kv, "id20000000000000000000000", "n2")
	entry := `{"ip":"10.0.0.5","node":"n1","network":"lan","container":"a","container_id":"c0ffee"}`
	kv.Put(ctx, KVPrefix+"id10000000000000000000000", []byte(`[`+entry+`,`+entry+`]`))
	if err := Publish(ctx, kv, "id20000000000000000000000", []Entry{
		{IP: "10.0.0.7", Node: "n2", Network: "lan", Container: "b", ID: "b0"},
		{IP: "10.0.0.7", Node: "n2", Network: "lan", Container: "c", ID: "c0"},
	}); err != nil {
		t.Fatal(err)
	}
	es, bad, err := load(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) != 1 || bad[0].Key != KVPrefix+"id10000000000000000000000" || !strings.Contains(bad[0].Problem, "entry 1 (10.0.0.5 of container c0ffee on lan) repeats entry 0") {
		t.Errorf("bad documents %+v: want %sid10000000000000000000000, naming the repeated entry", bad, KVPrefix)
	}
	if got := Check(es); got != 2 || len(es) != 2 {
		t.Errorf("Check = %d duplicates over %+v; want b and c flagged", got, es)
	}
}

// TestLoadRefusesControlCharacters: underlay ips prints an entry's names
// as its document spells them, so a node "named" with an escape sequence
// rewrote the operator's terminal. Docker's and hosts' names have no
// control character: such a document is now set apart, naming the field
// and its value. So is one with any other character that is not graphic:
// a right-to-left override (U+202E, a format character, no Cc) showed the
// name, and the text after it, reversed on the dashboard, and a line
// separator (U+2028) broke its line. The names agents quote, from a
// container's labels and its networks, are read quoted instead
// (TestLoadQuotesAnOlderAgentsLabelNames).
func TestLoadRefusesControlCharacters(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	for name, doc := range map[string]string{
		"escape":  `[{"ip":"10.0.0.6","node":"n1\u001b[2J","network":"lan","container":"c"}]`,
		"rtl":     `[{"ip":"10.0.0.8","node":"n1","network":"lan","container":"c","container_id":"ab\u202e1"}]`,
		"linesep": `[{"ip":"10.0.0.9","node":"n2","network":"lan","container":"b","state":"s\u2028x"}]`,
		"problem": `[{"ip":"10.0.0.10","node":"n2","network":"lan","container":"b","network_problem":"x\u001b[2J"}]`,
		"nbsp":    `[{"ip":"10.0.0.11","node":"n2\u00a0","network":"lan","container":"b"}]`,
	} {
		kv.Put(ctx, KVPrefix+name, []byte(doc))
	}
	es, bad, err := load(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 0 {
		t.Errorf("entries %+v listed; want none", es)
	}
	want := map[string]string{
		"escape":  `entry 0 (10.0.0.6): node "n1\x1b[2J": U+001B (a control character) at byte 2`,
		"rtl":     `entry 0 (10.0.0.8): container_id "ab\u202e1": U+202E (a format character: invisible, or reordering the text) at byte 2`,
		"linesep": `entry 0 (10.0.0.9): state "s\u2028x": U+2028 (a line or paragraph separator) at byte 1`,
		"problem": `entry 0 (10.0.0.10): network_problem "x\x1b[2J": U+001B (a control character) at byte 1`,
		"nbsp":    `entry 0 (10.0.0.11): node "n2\u00a0": U+00A0 (a space other than U+0020) at byte 2`,
	}
	got := map[string]string{}
	for _, b := range bad {
		got[strings.TrimPrefix(b.Key, KVPrefix)] = b.Problem
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("bad documents' problems (-want +got):\n%s", d)
	}
}

// TestCheckNotesStaySmall: each entry's note named every other holder of
// its address, so n entries on one address made n notes of n names: one
// document of 3,000 entries (well within Consul's 512 KiB) on one address
// made the dashboard, which checks at every refresh, build about 90 MB
// of notes. A note now names a few holders and counts the rest.
func TestCheckNotesStaySmall(t *testing.T) {
	es := make([]Entry, 3000)
	for i := range es {
		es[i] = Entry{IP: "10.0.0.5", Node: "n1", Network: "lan", Container: fmt.Sprintf("c%04d", i)}
	}
	if got := Check(es); got != len(es) {
		t.Errorf("Check = %d duplicates, want %d", got, len(es))
	}
	if want := "IP also on c0001@n1, c0002@n1, c0003@n1, c0004@n1, c0005@n1 and 2994 more"; es[0].Duplicate != want {
		t.Errorf("note of c0000 (%d bytes): %.80q…, want %q", len(es[0].Duplicate), es[0].Duplicate, want)
	}
	total := 0
	for _, e := range es {
		total += len(e.Duplicate)
	}
	if total > 100*len(es) {
		t.Errorf("notes of %d bytes over %d entries, want at most 100 bytes each", total, len(es))
	}
}

// TestLoadRefusesAnotherNodesEntries: an inventory is keyed by its node's
// identity (swarm node ID), whose name the node's facts give, but an entry
// could name any node: n1's document claiming an address for n2 was
// listed by `underlay ips --node n2` as n2's. Such a document is now set
// apart, naming the entry, the node it names and its key's node (an
// identity with no usable facts: TestLoadSetsApartInventoriesWithoutFacts).
func TestLoadRefusesAnotherNodesEntries(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	for id, facts := range map[string]string{
		"id10000000000000000000000": `{"id":"id10000000000000000000000","node":"n1","interfaces":["eth0"],"updated_at":"2026-12-03T12:00:00Z"}`,
		"id20000000000000000000000": `{"id":"id20000000000000000000000","node":"n2","interfaces":["eth0"],"updated_at":"2026-12-03T12:00:00Z"}`,
	} {
		kv.Put(ctx, "underlay/nodes/"+id, []byte(facts))
	}
	for id, es := range map[string][]Entry{
		"id10000000000000000000000": {{IP: "10.0.0.5", Node: "n1", Network: "lan", Container: "a"}, {IP: "10.0.0.9", Node: "n2", Network: "lan", Container: "forged"}},
		"id20000000000000000000000": {{IP: "10.0.0.6", Node: "n2", Network: "lan", Container: "b"}},
	} {
		if err := Publish(ctx, kv, id, es); err != nil {
			t.Fatal(err)
		}
	}
	es, bad, err := load(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	got := holders(es)
	if d := cmp.Diff([]string{"b@n2"}, got); d != "" {
		t.Errorf("entries listed (-want +got):\n%s", d)
	}
	want := `entry 1 (10.0.0.9) names node "n2", but its key is swarm node id10000000000000000000000's, "n1" by its facts`
	if len(bad) != 1 || bad[0].Key != KVPrefix+"id10000000000000000000000" || !strings.Contains(bad[0].Problem, want) || bad[0].Fix != "consul kv delete "+KVPrefix+"id10000000000000000000000" {
		t.Errorf("bad documents %+v: want %sid10000000000000000000000, saying %q, with its fix", bad, KVPrefix, want)
	}
}

// TestLoadSetsApartInventoriesWithoutFacts: an inventory under a node
// identity with no usable facts (none, unreadable, or naming no node) was
// listed unchecked, its entries naming any node. An agent publishes its
// facts before its inventory and keeps them fresh, and node rm deletes
// the inventory first: such a document is stale or forged. It is now set
// apart, naming its key's identity and where its facts would be.
func TestLoadSetsApartInventoriesWithoutFacts(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	for id, facts := range map[string]string{
		"id10000000000000000000000": `{"id":"id10000000000000000000000","node":"n1","interfaces":["eth0"],"updated_at":"2026-12-03T12:00:00Z"}`,
		"id40000000000000000000000": `{`,
		"id50000000000000000000000": `{"id":"id50000000000000000000000","interfaces":["eth0"],"updated_at":"2026-12-03T12:00:00Z"}`,
		"old-6":                     `{"node":"old-6","interfaces":["eth0"],"updated_at":"2026-12-03T12:00:00Z"}`, // an older agent's, keyed by name
	} {
		kv.Put(ctx, netspec.NodesKVPrefix+id, []byte(facts))
	}
	for id, es := range map[string][]Entry{
		"id10000000000000000000000": {{IP: "10.0.0.5", Node: "n1", Network: "lan", Container: "a"}},
		"id30000000000000000000000": {{IP: "10.0.0.7", Node: "n1", Network: "lan", Container: "forged"}},
		"id40000000000000000000000": {{IP: "10.0.0.8", Node: "n4", Network: "lan", Container: "d"}},
		"id50000000000000000000000": {{IP: "10.0.0.9", Node: "n5", Network: "lan", Container: "e"}},
		"old-6":                     {{IP: "10.0.0.10", Node: "old-6", Network: "lan", Container: "f"}},
		"id70000000000000000000000": nil, // no address, but no node either
	} {
		if err := Publish(ctx, kv, id, es); err != nil {
			t.Fatal(err)
		}
	}
	es, bad, err := load(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	got := holders(es)
	if d := cmp.Diff([]string{"a@n1", "f@old-6"}, got); d != "" {
		t.Errorf("entries listed (-want +got):\n%s", d)
	}
	problems := map[string]string{}
	for _, b := range bad {
		problems[strings.TrimPrefix(b.Key, KVPrefix)] = b.Problem
		if b.Effect == "" || b.Fix != "consul kv delete "+b.Key {
			t.Errorf("bad document %s: effect %q, fix %q", b.Key, b.Effect, b.Fix)
		}
	}
	for _, id := range []string{"id30000000000000000000000", "id40000000000000000000000", "id50000000000000000000000", "id70000000000000000000000"} {
		if want := fmt.Sprintf("no node facts name its key's node, swarm node %s (%s%s is absent, unreadable or names no node)", id, netspec.NodesKVPrefix, id); !strings.Contains(problems[id], want) {
			t.Errorf("%s: problem %q, want it to say %q", id, problems[id], want)
		}
	}
	if len(bad) != 4 {
		t.Errorf("%d bad documents, want 4 (id30000000000000000000000, id40000000000000000000000, id50000000000000000000000, id70000000000000000000000): %+v", len(bad), bad)
	}
}

// TestLoadTakesAJoiningNodesInventory: the caller reads the facts before
// Load reads the inventories, so a node that joins in between (its agent
// publishes its facts, then its inventory) has an inventory and no facts
// in what Load was given. It was set apart as stale or forged, and the
// doctor's inventory check failed, until the next read. Load now reads
// the facts again when an inventory's node has none, before judging it.
func TestLoadTakesAJoiningNodesInventory(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	publishFacts(ctx, t, kv, "id10000000000000000000000", "n1")
	if err := Publish(ctx, kv, "id10000000000000000000000", []Entry{{IP: "10.0.0.5", Node: "n1", Network: "lan", Container: "a"}}); err != nil {
		t.Fatal(err)
	}
	facts, err := netspec.NewStore(kv).Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// n2 joins after the facts were read.
	publishFacts(ctx, t, kv, "id20000000000000000000000", "n2")
	if err := Publish(ctx, kv, "id20000000000000000000000", []Entry{{IP: "10.0.0.6", Node: "n2", Network: "lan", Container: "b"}}); err != nil {
		t.Fatal(err)
	}
	es, bad, err := Load(ctx, kv, facts)
	if err != nil {
		t.Fatal(err)
	}
	got := holders(es)
	if d := cmp.Diff([]string{"a@n1", "b@n2"}, got); d != "" || len(bad) != 0 {
		t.Errorf("entries listed (-want +got):\n%s\nset apart: %+v", d, bad)
	}
}

// holders are es as container@node, in their order.
func holders(es []Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Container+"@"+e.Node)
	}
	return out
}

// TestLoadRefusesZonedAndMappedAddresses: Load kept an address's zone
// (fd00::5%eth0) and an IPv4-mapped IPv6 address (::ffff:10.0.0.5) as
// they came: compared as text, neither was flagged as a duplicate of the
// address it is (fd00::5, 10.0.0.5), and a zone is any text, a terminal's
// escape sequence too, which reached `underlay ips`. Docker lists neither:
// such a document is now set apart, naming the address.
func TestLoadRefusesZonedAndMappedAddresses(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	for _, n := range []string{"1", "2", "3"} {
		publishFacts(ctx, t, kv, "id"+n+"0000000000000000000000", "n"+n)
	}
	if err := Publish(ctx, kv, "id10000000000000000000000", []Entry{
		{IP: "10.0.0.5", Node: "n1", Network: "lan", Container: "a"},
		{IP: "fd00::5", Node: "n1", Network: "lan", Container: "a"},
	}); err != nil {
		t.Fatal(err)
	}
	kv.Put(ctx, KVPrefix+"id20000000000000000000000", []byte(`[{"ip":"::ffff:10.0.0.5","node":"n2","network":"lan","container":"b"}]`))
	kv.Put(ctx, KVPrefix+"id30000000000000000000000", []byte(`[{"ip":"fd00::5%\u001b[2J","node":"n3","network":"lan","container":"c"}]`))
	es, bad, err := load(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"a@n1", "a@n1"}, holders(es)); d != "" {
		t.Errorf("entries listed (-want +got):\n%s", d)
	}
	want := map[string]string{
		"id20000000000000000000000": `entry 0: ip "::ffff:10.0.0.5" is an IPv4-mapped IPv6 address; agents list it as 10.0.0.5`,
		"id30000000000000000000000": `entry 0: ip "fd00::5%\x1b[2J" has a zone, which no container address has`,
	}
	got := map[string]string{}
	for _, b := range bad {
		got[strings.TrimPrefix(b.Key, KVPrefix)] = b.Problem
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("bad documents' problems (-want +got):\n%s", d)
	}
}

// TestCheckNotesQuoteHolders: a duplicate's note names the other holders
// as they are spelt, and `underlay ips` prints notes as they are. What a
// pool holds is named by block documents, which any agent's token may
// write, unchecked: an allocation at the gateway "of" a node named with a
// newline forged a row of the listing in the gateway's note, and the note
// named the gateway itself as "@". Each holder is now quoted when it
// would break its line, and one without a container named by its state.
func TestCheckNotesQuoteHolders(t *testing.T) {
	forged := "n9\n10.9.0.77  02:00:00:00:00:77  n2  web  forged"
	es := []Entry{
		{IP: "10.9.0.1", Network: "web", State: StateGateway},
		{IP: "10.9.0.1", Network: "web", Node: forged, State: StateLeak},
	}
	if got := Check(es); got != 2 {
		t.Errorf("Check = %d duplicates, want 2", got)
	}
	want := []string{
		`IP also on allocated, no container (leak: reclaimed after the grace period)@"n9\n10.9.0.77  02:00:00:00:00:77  n2  web  forged"`,
		`IP also on reserved: gateway`,
	}
	for i, e := range es {
		if e.Duplicate != want[i] {
			t.Errorf("note of entry %d: %q, want %q", i, e.Duplicate, want[i])
		}
	}
}

// TestCheckFlagsAContainerIDOnTwoNodes: Check compared addresses and
// MACs only, so one container ID listed by two nodes' inventories (a
// stale inventory of a node the container left, or a forged one) passed
// unflagged: `underlay ips` showed one container running in two places.
// Such entries are now flagged like other clashes; one container on
// several networks of its own node is no clash.
func TestCheckFlagsAContainerIDOnTwoNodes(t *testing.T) {
	es := []Entry{
		{IP: "10.0.0.5", Node: "n1", Network: "lan", Container: "web", ID: "abc"},
		{IP: "10.1.0.5", Node: "n1", Network: "dmz", Container: "web", ID: "abc"},
		{IP: "10.0.0.6", Node: "n2", Network: "lan", Container: "web", ID: "abc"},
		{IP: "10.0.0.7", Node: "n2", Network: "lan", Container: "db", ID: "def"},
		{IP: "10.1.0.7", Node: "n2", Network: "dmz", Container: "db", ID: "def"},
		{IP: "10.0.0.8", Node: "n1", Network: "lan", Container: "x"}, // no ID: not compared
		{IP: "10.0.0.9", Node: "n2", Network: "lan", Container: "x"},
	}
	if got := Check(es); got != 3 {
		t.Errorf("Check = %d duplicates, want 3 (web on n1 twice, web on n2)", got)
	}
	want := []string{"container ID also on web@n2", "container ID also on web@n2", "container ID also on web@n1", "", "", "", ""}
	for i, e := range es {
		if e.Duplicate != want[i] {
			t.Errorf("entry %d (%s on %s, %s): Duplicate %q, want %q", i, e.Container, e.Node, e.Network, e.Duplicate, want[i])
		}
	}
}

// endpointsOnce is a Source that lists es and never signals a change.
type endpointsOnce []Entry

func (s endpointsOnce) Endpoints(context.Context, string) ([]Entry, error) {
	return append([]Entry(nil), s...), nil
}
func (endpointsOnce) Changes(context.Context) <-chan struct{} { return nil }

// putNotifier is a KV that tells each Put's key and value.
type putNotifier struct {
	*kvtest.KV
	put chan []byte
}

func (k putNotifier) Put(ctx context.Context, key string, value []byte) error {
	if err := k.KV.Put(ctx, key, value); err != nil {
		return err
	}
	k.put <- value
	return nil
}

// TestRunPublishesNodeID: entries named their node by name only, while
// the agent, which knows its swarm node ID (the inventory's key), could
// say which of two same-name nodes they are of: the dashboard could only
// name them the name's. Run now writes the identity into every entry
// (node_id), and Load reads it back; an entry without it (an older
// agent's) still reads, without one.
func TestRunPublishesNodeID(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kv := putNotifier{kvtest.New(), make(chan []byte, 1)}
	publishFacts(ctx, t, kv.KV, "id10000000000000000000000", "n1")
	publishFacts(ctx, t, kv.KV, "id20000000000000000000000", "n1")
	src := endpointsOnce{{IP: "10.0.0.5", Node: "n1", Network: "lan", Container: "a"}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, src, kv, "n1", "id10000000000000000000000", time.Hour, slog.New(slog.DiscardHandler), nil)
	}()
	value := <-kv.put
	cancel()
	<-done
	if !strings.Contains(string(value), `"node_id":"id10000000000000000000000"`) {
		t.Errorf("published %s: no node_id id10000000000000000000000", value)
	}
	// An older agent's entry, naming no identity, under id20000000000000000000000.
	if err := Publish(context.Background(), kv.KV, "id20000000000000000000000", []Entry{{IP: "10.0.0.6", Node: "n1", Network: "lan", Container: "b"}}); err != nil {
		t.Fatal(err)
	}
	es, bad, err := load(context.Background(), kv.KV)
	if err != nil || len(bad) != 0 {
		t.Fatalf("load: %v, bad %+v", err, bad)
	}
	got := map[string]string{}
	for _, e := range es {
		got[e.Container] = e.NodeID
	}
	if want := map[string]string{"a": "id10000000000000000000000", "b": ""}; !cmp.Equal(got, want) {
		t.Errorf("node IDs by container %v, want %v", got, want)
	}
}

// TestLoadRefusesAnotherNodesID: an entry naming a swarm node other than
// its key's would be placed on that node; an agent publishes only its
// own. Such an inventory is set apart, as one naming another node's name,
// and so is one whose node ID has a control character.
func TestLoadRefusesAnotherNodesID(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	publishFacts(ctx, t, kv, "id10000000000000000000000", "n1")
	publishFacts(ctx, t, kv, "id20000000000000000000000", "n1")
	publishFacts(ctx, t, kv, "id30000000000000000000000", "n3")
	for id, es := range map[string][]Entry{
		"id10000000000000000000000": {{IP: "10.0.0.5", Node: "n1", NodeID: "id10000000000000000000000", Network: "lan", Container: "a"}},
		"id20000000000000000000000": {{IP: "10.0.0.6", Node: "n1", NodeID: "id10000000000000000000000", Network: "lan", Container: "forged"}},
		"id30000000000000000000000": {{IP: "10.0.0.7", Node: "n3", NodeID: "id30000000000000000000000\u202e", Network: "lan", Container: "c"}},
	} {
		kv.Put(ctx, KVPrefix+id, mustJSON(t, es))
	}
	es, bad, err := load(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"a@n1"}, holders(es)); d != "" {
		t.Errorf("entries listed (-want +got):\n%s", d)
	}
	problems := map[string]string{}
	for _, b := range bad {
		problems[strings.TrimPrefix(b.Key, KVPrefix)] = b.Problem
	}
	for id, want := range map[string]string{
		"id20000000000000000000000": `entry 0 (10.0.0.6) names swarm node "id10000000000000000000000", but its key is swarm node id20000000000000000000000's`,
		"id30000000000000000000000": `node_id "id30000000000000000000000\u202e": U+202E`,
	} {
		if !strings.Contains(problems[id], want) {
			t.Errorf("%s: problem %q, want it to say %q", id, problems[id], want)
		}
	}
	if len(bad) != 2 {
		t.Errorf("%d bad documents, want 2 (id20000000000000000000000, id30000000000000000000000): %+v", len(bad), bad)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCheckFlagsAContainerIDOnSameNameNodes: a container ID the
// inventories of two swarm nodes of one name list was no clash, their
// entries naming one node. Entries giving their nodes' IDs (node_id) are
// now told apart by them, and the note names the other node's ID; one
// giving none (an older agent's) is taken for either node of its name,
// as before.
func TestCheckFlagsAContainerIDOnSameNameNodes(t *testing.T) {
	es := []Entry{
		{IP: "10.0.0.5", Node: "n1", NodeID: "id10000000000000000000000", Network: "lan", Container: "web", ID: "abc"},
		{IP: "10.1.0.5", Node: "n1", NodeID: "id10000000000000000000000", Network: "dmz", Container: "web", ID: "abc"},
		{IP: "10.0.0.6", Node: "n1", NodeID: "id20000000000000000000000", Network: "lan", Container: "web", ID: "abc"},
		{IP: "10.0.0.7", Node: "n1", NodeID: "id20000000000000000000000", Network: "lan", Container: "db", ID: "def"},
		{IP: "10.1.0.7", Node: "n1", Network: "dmz", Container: "db", ID: "def"},
	}
	if got := Check(es); got != 3 {
		t.Errorf("Check = %d duplicates, want 3 (web on id10000000000000000000000 twice, web on id20000000000000000000000)", got)
	}
	want := []string{"container ID also on web@n1 (swarm node id20000000000000000000000)", "container ID also on web@n1 (swarm node id20000000000000000000000)", "container ID also on web@n1 (swarm node id10000000000000000000000)", "", ""}
	for i, e := range es {
		if e.Duplicate != want[i] {
			t.Errorf("entry %d (%s on %s, %s): Duplicate %q, want %q", i, e.Container, e.NodeID, e.Network, e.Duplicate, want[i])
		}
	}
	if OtherNode(es[3], es[4]) || !OtherNode(es[0], es[2]) || OtherNode(es[0], es[1]) {
		t.Error("OtherNode does not tell id10000000000000000000000 from id20000000000000000000000, or tells an entry giving no ID from one of its name")
	}
}

// TestLoadGivesNoDeleteConsulRedirects: an unreadable inventory under a
// key with an empty, "." or ".." segment had `consul kv delete KEY` as its
// fix, whose path Consul's HTTP API redirects to another key: the delete
// misses it. It has no command, and its problem says how it goes.
func TestLoadGivesNoDeleteConsulRedirects(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	for _, k := range []string{KVPrefix + "..", KVPrefix + "a//b", KVPrefix + "a/./b"} {
		kv.Put(ctx, k, []byte(`[{"ip":`))
	}
	_, bad, err := load(ctx, kv)
	if err != nil || len(bad) != 3 {
		t.Fatalf("bad documents %+v, %v; want the 3", bad, err)
	}
	for _, b := range bad {
		if b.Fix != "" || !strings.Contains(b.Problem, "PUT /v1/txn") {
			t.Errorf("bad document %+v: want no fix, and its problem saying to delete it by a transaction", b)
		}
	}
}

// TestLoadRefusesInventoriesUnderFactsNoAgentWrites: node facts under a
// key naming no swarm node ID (underlay/nodes/X naming node n1: no agent
// writes one) gave X the name n1, so an inventory under X listing n1's
// addresses was listed as n1's (a forged address, or a duplicate of
// n1's own). Such facts now name no node: the inventory is set apart as
// one whose key's node has no facts.
func TestLoadRefusesInventoriesUnderFactsNoAgentWrites(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	const ida = "ida0000000000000000000000"
	publishFacts(ctx, t, kv, ida, "n1")
	kv.Put(ctx, netspec.NodesKVPrefix+"X", []byte(`{"id":"X","node":"n1","interfaces":["eth0"]}`))
	if err := Publish(ctx, kv, ida, []Entry{{IP: "10.0.0.5", Node: "n1", Network: "lan", Container: "a"}}); err != nil {
		t.Fatal(err)
	}
	if err := Publish(ctx, kv, "X", []Entry{{IP: "10.0.0.5", Node: "n1", Network: "lan", Container: "forged"}}); err != nil {
		t.Fatal(err)
	}
	es, bad, err := load(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"a@n1"}, holders(es)); d != "" {
		t.Errorf("entries listed (-want +got):\n%s", d)
	}
	if len(bad) != 1 || bad[0].Key != KVPrefix+"X" || !strings.Contains(bad[0].Problem, "no node facts name its key's node") {
		t.Errorf("bad documents %+v; want only %sX's, whose key's node has no facts", bad, KVPrefix)
	}
}

// TestLoadRefusesInventoriesOfFactsNamingNoIDUnderAnotherKey: facts
// naming no ID (an older agent's document) under a key other than the
// node name they give (underlay/nodes/a b naming n1) reached NodeNames
// without their key and gave the name n1 its identity: an inventory under
// underlay/inventory/n1 (an older agent's layout) was taken as n1's, its
// entries listed as n1's addresses. No agent writes such facts: the
// inventory is now set apart as one whose key's node has no facts, as
// under facts naming an ID under a key naming no swarm node ID.
func TestLoadRefusesInventoriesOfFactsNamingNoIDUnderAnotherKey(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	const ida = "ida0000000000000000000000"
	publishFacts(ctx, t, kv, ida, "n2")
	kv.Put(ctx, netspec.NodesKVPrefix+"a b", []byte(`{"node":"n1","interfaces":["eth0"]}`))
	kv.Put(ctx, netspec.NodesKVPrefix+"n3", []byte(`{"node":"n3","interfaces":["eth0"]}`)) // an older agent's
	for id, e := range map[string]Entry{
		ida:  {IP: "10.0.0.5", Node: "n2", Network: "lan", Container: "a"},
		"n1": {IP: "10.0.0.6", Node: "n1", Network: "lan", Container: "forged"},
		"n3": {IP: "10.0.0.7", Node: "n3", Network: "lan", Container: "old"},
	} {
		if err := Publish(ctx, kv, id, []Entry{e}); err != nil {
			t.Fatal(err)
		}
	}
	es, bad, err := load(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"a@n2", "old@n3"}, holders(es)); d != "" {
		t.Errorf("entries listed (-want +got):\n%s", d)
	}
	if len(bad) != 1 || bad[0].Key != KVPrefix+"n1" || !strings.Contains(bad[0].Problem, "no node facts name its key's node") {
		t.Errorf("bad documents %+v; want only %sn1's, whose key's node has no facts", bad, KVPrefix)
	}
}

// TestRunPublishesLabelNamesReadersTake: an entry's service and task
// names are a container's labels (Swarm's, which anyone may set on a
// plain container), of any characters, and readers set apart a node's
// whole inventory for one name with a control character: one container
// hid every address of its node from underlay ips and the dashboard. Run
// now publishes such a name quoted, and the node's inventory reads. So
// with a network's name: Docker's network made by hand, named at will
// (U+00A0 set the node's inventory apart too).
func TestRunPublishesLabelNamesReadersTake(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kv := putNotifier{kvtest.New(), make(chan []byte, 1)}
	publishFacts(ctx, t, kv.KV, "id10000000000000000000000", "n1")
	src := endpointsOnce{
		{IP: "10.0.0.5", Node: "n1", Network: "lan", Container: "a", Service: "web"},
		{IP: "10.0.0.6", Node: "n1", Network: "lan", Container: "b", Service: "x\x1b[2J", Task: "t\n10.0.0.9", Slot: "1\u202e"},
		// A network's name is the Docker network's, made by hand.
		{IP: "10.1.0.7", Node: "n1", Network: "lan\u00a0", Container: "c"},
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, src, kv, "n1", "id10000000000000000000000", time.Hour, slog.New(slog.DiscardHandler), nil)
	}()
	<-kv.put
	cancel()
	<-done
	es, bad, err := load(context.Background(), kv.KV)
	if err != nil || len(bad) != 0 {
		t.Fatalf("load: %v, set apart %+v", err, bad)
	}
	got := map[string][4]string{}
	for _, e := range es {
		got[e.Container] = [4]string{e.Network, e.Service, e.Task, e.Slot}
	}
	want := map[string][4]string{"a": {"lan", "web", "", ""}, "b": {"lan", `"x\x1b[2J"`, `"t\n10.0.0.9"`, `"1\u202e"`}, "c": {`"lan\u00a0"`, "", "", ""}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("names read (-want +got):\n%s", d)
	}
}

// TestLoadQuotesTheKeyInItsProblem: the problem of an inventory whose
// key's node has no facts named the key's node as the key gives it, and
// any agent's token may write any key: a newline or an escape sequence
// in it reached `underlay ips`'s warning, the dashboard and --json as
// they were. The key's node is quoted when not graphic.
func TestLoadQuotesTheKeyInItsProblem(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	const key = "X\nwarning: \x1b[2J\u202e"
	kv.Put(ctx, KVPrefix+key, mustJSON(t, []Entry{{IP: "10.0.0.5", Node: "n1", Network: "lan", Container: "a"}}))
	_, bad, err := load(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	const want = `no node facts name its key's node, swarm node "X\nwarning: \x1b[2J\u202e" ("underlay/nodes/X\nwarning: \x1b[2J\u202e" is absent`
	if len(bad) != 1 || !strings.Contains(bad[0].Problem, want) || strings.ContainsAny(bad[0].Problem, "\n\x1b\u202e") {
		t.Errorf("bad documents %+v; want one whose problem says %s, with no newline, escape or override", bad, want)
	}
}

// TestLoadQuotesAnOlderAgentsLabelNames: an agent before stop 55 took
// U+00A0 (and the other spaces that read as U+0020 or as nothing) as
// graphic, and published a label or hand-made network's name holding it
// as it is; readers now refuse it as not graphic, and set apart the
// node's whole inventory until its agent is upgraded: mid-upgrade, every
// address of the node left `underlay ips` and the dashboard. Readers now
// quote what a newer agent quotes (the names from a container's labels
// and its networks), as it would have published them, and list the
// entry; the names agents do not quote (node, IDs) are still refused.
func TestLoadQuotesAnOlderAgentsLabelNames(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	const id1, id2 = "id10000000000000000000000", "id20000000000000000000000"
	publishFacts(ctx, t, kv, id1, "n1")
	publishFacts(ctx, t, kv, id2, "n2")
	kv.Put(ctx, KVPrefix+id1, []byte(`[{"ip":"10.0.0.5","node":"n1","network":"lan\u00a0","container":"a","service":"web\u00a0","slot":"1\u3164","task":"t\u2007"},`+
		`{"ip":"10.0.0.6","node":"n1","network":"lan","container":"b","service":"web"},`+
		`{"ip":"10.0.0.8","node":"n1","network":"lan","container":"d\n10.0.0.9  n2","task":"t\r"}]`))
	kv.Put(ctx, KVPrefix+id2, []byte(`[{"ip":"10.0.0.7","node":"n2","node_id":"id20000000000000000000000\u00a0","network":"lan","container":"c"}]`))
	es, bad, err := load(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][4]string{}
	for _, e := range es {
		got[e.Container] = [4]string{e.Network, e.Service, e.Slot, e.Task}
	}
	want := map[string][4]string{"a": {`"lan\u00a0"`, `"web\u00a0"`, `"1\u3164"`, `"t\u2007"`}, "b": {"lan", "web", "", ""},
		`"d\n10.0.0.9  n2"`: {"lan", "", "", `"t\r"`}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("names read (-want +got):\n%s", d)
	}
	if len(bad) != 1 || bad[0].Key != KVPrefix+id2 || !strings.Contains(bad[0].Problem, `node_id "id20000000000000000000000\u00a0": U+00A0`) {
		t.Errorf("bad documents %+v; want only %s's, its node_id refused", bad, id2)
	}
}

// TestDecodeQuotesToShow: the errors of an inventory refused for what
// its entries hold, which any agent's token may write, quote it with
// what would not show escaped (U+3164 reads as nothing, and %q left it
// as it is).
func TestDecodeQuotesToShow(t *testing.T) {
	const f = "\u3164"
	entry := func(fields string) string { return `[{"ip":"10.0.0.5","node":"n1","network":"lan"` + fields + `}]` }
	for _, tc := range []struct{ name, doc, want string }{
		{"ip", `[{"ip":"10.0.0.5` + f + `","node":"n1","network":"lan"}]`, `ip "10.0.0.5\u3164" is not an address`},
		{"ip with a zone", `[{"ip":"fd00::5%x` + f + `","node":"n1","network":"lan"}]`, `ip "fd00::5%x\u3164" has a zone`},
		{"duplicate", entry(`,"duplicate":"n2` + f + `"`), `duplicate "n2\u3164" is what`},
		{"mac", entry(`,"mac":"02:00` + f + `"`), `mac "02:00\u3164" is not a MAC address`},
		{"a name not graphic", entry(`,"state":"up` + f + `"`), `state "up\u3164": U+3164`},
	} {
		_, err := decode([]byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: decode error %v, want it to hold %s", tc.name, err, tc.want)
		}
	}
	es := []Entry{{IP: "10.0.0.5", Node: "n1" + f, Network: "lan"}}
	if err := ownEntries(es, "id1", map[string]string{"id1": "n1"}); err == nil || !strings.Contains(err.Error(), `names node "n1\u3164", but its key is swarm node id1's, "n1"`) {
		t.Errorf("ownEntries error %v, want it to name node \"n1\\u3164\"", err)
	}
	es = []Entry{{IP: "10.0.0.5", Node: "n1", NodeID: "id2" + f, Network: "lan"}}
	if err := ownEntries(es, "id1", map[string]string{"id1": "n1"}); err == nil || !strings.Contains(err.Error(), `names swarm node "id2\u3164"`) {
		t.Errorf("ownEntries error %v, want it to name swarm node \"id2\\u3164\"", err)
	}
}
