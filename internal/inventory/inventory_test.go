package inventory

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

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
	if err := Publish(ctx, kv, "id-1", []Entry{{IP: "10.0.0.5", Node: "n1", Network: "lan", Container: "a"}}); err != nil {
		t.Fatal(err)
	}
	key := KVPrefix + "id 2"
	kv.Put(ctx, key, []byte(`[{"ip":`))
	es, bad, err := Load(ctx, kv)
	if err != nil || len(es) != 1 || es[0].Container != "a" {
		t.Fatalf("entries %+v, %v: want n1's", es, err)
	}
	if len(bad) != 1 || bad[0].Key != key || bad[0].Pool != "" || bad[0].Problem == "" || bad[0].Effect == "" || bad[0].Fix != "consul kv delete '"+key+"'" {
		t.Errorf("bad documents %+v: want %s, with its problem, effect and fix", bad, key)
	}
}
