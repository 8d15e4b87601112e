package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/doctor"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

// countingConsulKV is fakeConsulKV behind a proxy that counts the
// recursive listings of each prefix (lists).
func countingConsulKV(t *testing.T, pairs map[string]string) (srv *httptest.Server, lists func(prefix string) int) {
	t.Helper()
	u, err := url.Parse(fakeConsulKV(t, pairs).URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	var mu sync.Mutex
	listed := map[string]int{}
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if prefix, ok := strings.CutPrefix(r.URL.Path, "/v1/kv/"); ok && r.URL.Query().Has("recurse") {
			mu.Lock()
			listed[prefix]++
			mu.Unlock()
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, func(prefix string) int {
		mu.Lock()
		defer mu.Unlock()
		return listed[prefix]
	}
}

// TestIPsReadsNodeFactsOnce: ips listed the node facts three times, to
// check the inventories, to name the pools' holders and to check --node:
// a node publishing between two reads made them disagree (an inventory
// checked against facts the --node check did not see), and every read
// loaded Consul again. The facts are now read once and handed to all.
func TestIPsReadsNodeFactsOnce(t *testing.T) {
	srv, lists := countingConsulKV(t, map[string]string{
		"underlay/networks/lan/spec":                   `{"name":"lan","subnet":"10.1.0.0/24","gateway":"10.1.0.1","parent":"eth0","ipam":"cluster"}`,
		"underlay/nodes/id10000000000000000000000":     `{"id":"id10000000000000000000000","node":"n1","interfaces":["eth0"]}`,
		"underlay/inventory/id10000000000000000000000": `[{"ip":"10.1.0.5","mac":"02:00:00:00:00:05","node":"n1","network":"lan","container":"web.1","container_id":"c1"}]`,
	})
	var out, errOut bytes.Buffer
	if code := Run(context.Background(), []string{"ips", "--node", "n1", "--consul-addr", srv.URL}, IOStreams{Out: &out, ErrOut: &errOut}); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "10.1.0.5") {
		t.Errorf("stdout:\n%s\nwant n1's address", out.String())
	}
	if n := lists(netspec.NodesKVPrefix); n != 1 {
		t.Errorf("ips listed %s %d times, want once", netspec.NodesKVPrefix, n)
	}
}

// TestIPsWarnsOfMisfiledFacts: ips read the node facts without
// ReadNodes' notes, so facts filed under another node's key (taken as
// that key's node's, naming the inventories and pools' holders) passed
// in silence, where node ls warns. ips now warns of each, quoted, on
// stderr; and its help says which inventories it sets apart.
func TestIPsWarnsOfMisfiledFacts(t *testing.T) {
	srv := fakeConsulKV(t, map[string]string{
		"underlay/nodes/id10000000000000000000000":     `{"id":"id9\u001b[2J","node":"n1","interfaces":["eth0"]}`,
		"underlay/inventory/id10000000000000000000000": `[{"ip":"10.1.0.5","mac":"02:00:00:00:00:05","node":"n1","network":"lan","container":"web.1","container_id":"c1"}]`,
	})
	var out, errOut bytes.Buffer
	if code := Run(context.Background(), []string{"ips", "--consul-addr", srv.URL}, IOStreams{Out: &out, ErrOut: &errOut}); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	want := `warning: underlay/nodes/id10000000000000000000000 holds facts naming swarm node "id9\x1b[2J": taken as the facts of swarm node id10000000000000000000000, whose key it is` + "\n"
	if errOut.String() != want {
		t.Errorf("stderr %q, want %q", errOut.String(), want)
	}
	if !strings.Contains(out.String(), "10.1.0.5") {
		t.Errorf("stdout:\n%s\nwant n1's address", out.String())
	}

	var help bytes.Buffer
	if code := Run(context.Background(), []string{"ips", "--help"}, IOStreams{Out: &help, ErrOut: &help}); code != 0 {
		t.Fatalf("ips --help: exit %d: %s", code, help.String())
	}
	var missing []string
	for _, w := range []string{"names another node", "no node facts", "facts filed under another node's key"} {
		if !strings.Contains(strings.Join(strings.Fields(help.String()), " "), w) {
			missing = append(missing, w)
		}
	}
	if missing != nil {
		t.Errorf("ips --help says nothing of %q:\n%s", missing, help.String())
	}
}

// TestIPsWarnsOfInvalidNames: ips took the names node facts give as they
// came; one no agent writes (a host name with a space and a newline) is now warned
// of, naming its key, and the addresses are listed as before.
func TestIPsWarnsOfInvalidNames(t *testing.T) {
	srv := fakeConsulKV(t, map[string]string{
		"underlay/nodes/id10000000000000000000000":     `{"id":"id10000000000000000000000","node":"n1","interfaces":["eth0"],"holder":{"instance":"i","host":"h1 x\nwarning: none"}}`,
		"underlay/inventory/id10000000000000000000000": `[{"ip":"10.1.0.5","mac":"02:00:00:00:00:05","node":"n1","network":"lan","container":"web.1","container_id":"c1"}]`,
	})
	var out, errOut bytes.Buffer
	if code := Run(context.Background(), []string{"ips", "--consul-addr", srv.URL}, IOStreams{Out: &out, ErrOut: &errOut}); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	want := `warning: node facts underlay/nodes/id10000000000000000000000: host name "h1 x\nwarning: none": ' ' is not allowed`
	if !strings.HasPrefix(errOut.String(), want) || strings.Count(errOut.String(), "\n") != 1 {
		t.Errorf("stderr %q, want one line starting %q", errOut.String(), want)
	}
	if !strings.Contains(out.String(), "10.1.0.5") {
		t.Errorf("stdout:\n%s\nwant n1's address", out.String())
	}
}

// TestIPsJSONHoldsMisfiledFacts: ips --json warned of facts filed under
// another node's key on stderr only, so a script reading the JSON never
// learnt that the addresses' node names came from such a document. The
// JSON now lists them under "misfiled_facts" (an empty list when none),
// as it lists the documents it skips, and they are not repeated on
// stderr.
func TestIPsJSONHoldsMisfiledFacts(t *testing.T) {
	inv := `[{"ip":"10.1.0.5","mac":"02:00:00:00:00:05","node":"n1","network":"lan","container":"web.1","container_id":"c1"}]`
	for _, tc := range []struct {
		name  string
		facts string
		want  []map[string]string
	}{
		{"misfiled", `{"id":"id9\u001b[2J","node":"n1","interfaces":["eth0"]}`,
			[]map[string]string{{"key": "underlay/nodes/id10000000000000000000000", "names": "id9\x1b[2J", "taken_as": "id10000000000000000000000"}}},
		{"none", `{"id":"id10000000000000000000000","node":"n1","interfaces":["eth0"]}`, []map[string]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := fakeConsulKV(t, map[string]string{"underlay/nodes/id10000000000000000000000": tc.facts, "underlay/inventory/id10000000000000000000000": inv})
			var out, errOut bytes.Buffer
			if code := Run(context.Background(), []string{"ips", "--json", "--consul-addr", srv.URL}, IOStreams{Out: &out, ErrOut: &errOut}); code != 0 {
				t.Fatalf("exit %d: %s", code, errOut.String())
			}
			var doc struct {
				Addresses []struct {
					IP string `json:"ip"`
				} `json:"addresses"`
				Misfiled *[]map[string]string `json:"misfiled_facts"`
			}
			if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
				t.Fatalf("stdout %q: %v", out.String(), err)
			}
			if doc.Misfiled == nil {
				t.Fatalf("stdout has no misfiled_facts list:\n%s", out.String())
			}
			if d := cmp.Diff(tc.want, *doc.Misfiled); d != "" {
				t.Errorf("misfiled_facts (-want +got):\n%s", d)
			}
			if len(doc.Addresses) != 1 || doc.Addresses[0].IP != "10.1.0.5" {
				t.Errorf("addresses %+v, want n1's 10.1.0.5", doc.Addresses)
			}
			if errOut.Len() > 0 {
				t.Errorf("stderr %q, want nothing: the JSON holds the warnings", errOut.String())
			}
		})
	}
}

// TestIPsSetsApartFactsNoAgentWrites: ips took facts under a key no
// agent writes as a node's: underlay/nodes/X (naming n1 and n1's swarm
// node ID) named the pool's and inventories' holder X as n1, its
// misfiled warning saying it was taken as "swarm node X"'s; facts naming
// no ID under underlay/nodes/a b made n5 a node --node accepts. They are
// no node's: each is now the doctor's nodes/facts warning with the consul
// kv delete that removes it (--json: no_node_facts), and gives no node a
// name.
func TestIPsSetsApartFactsNoAgentWrites(t *testing.T) {
	const ida = "ida0000000000000000000000"
	pairs := map[string]string{
		"underlay/nodes/" + ida:     `{"id":"` + ida + `","node":"n1","interfaces":["eth0"]}`,
		"underlay/nodes/X":          `{"id":"` + ida + `","node":"n1","interfaces":["eth0"]}`,
		"underlay/nodes/a b":        `{"node":"n5","interfaces":["eth0"]}`,
		"underlay/inventory/" + ida: `[{"ip":"10.1.0.5","mac":"02:00:00:00:00:05","node":"n1","network":"lan","container":"web.1","container_id":"c1"}]`,
	}
	srv := fakeConsulKV(t, pairs)
	var out, errOut bytes.Buffer
	if code := Run(context.Background(), []string{"ips", "--consul-addr", srv.URL}, IOStreams{Out: &out, ErrOut: &errOut}); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var want []string
	for _, f := range []netspec.NodeFacts{{ID: "X", Node: "n1", Key: "underlay/nodes/X"}, {Node: "n5", Key: "underlay/nodes/a b"}} {
		r, _ := doctor.NoNodeFactsResult(f)
		want = append(want, "warning: "+r.Message+"; fix: "+r.Fix)
	}
	if d := cmp.Diff(want, strings.Split(strings.TrimSuffix(errOut.String(), "\n"), "\n")); d != "" {
		t.Errorf("stderr (-want +got):\n%s", d)
	}
	if !strings.Contains(out.String(), "10.1.0.5") {
		t.Errorf("stdout:\n%s\nwant n1's address", out.String())
	}

	out.Reset()
	errOut.Reset()
	if code := Run(context.Background(), []string{"ips", "--node", "n5", "--consul-addr", srv.URL}, IOStreams{Out: &out, ErrOut: &errOut}); code == 0 || !strings.Contains(errOut.String(), `--node "n5": no such node`) {
		t.Errorf("ips --node n5: exit %d, stderr %q; want n5, named only by facts no agent writes, refused as no such node", code, errOut.String())
	}

	out.Reset()
	errOut.Reset()
	if code := Run(context.Background(), []string{"ips", "--json", "--consul-addr", srv.URL}, IOStreams{Out: &out, ErrOut: &errOut}); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var doc struct {
		Misfiled []map[string]string `json:"misfiled_facts"`
		NoNode   []map[string]string `json:"no_node_facts"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("stdout %q: %v", out.String(), err)
	}
	var keys []string
	for _, f := range doc.NoNode {
		keys = append(keys, f["key"])
		if !strings.HasPrefix(f["fix"], "consul kv delete ") || !strings.Contains(f["problem"], "no agent writes it") {
			t.Errorf("no_node_facts entry %v; want its problem and its consul kv delete", f)
		}
	}
	if d := cmp.Diff([]string{"underlay/nodes/X", "underlay/nodes/a b"}, keys); d != "" || len(doc.Misfiled) != 0 {
		t.Errorf("no_node_facts keys (-want +got):\n%s\nmisfiled_facts %v, want none (X's is among no_node_facts)", d, doc.Misfiled)
	}
	if errOut.Len() > 0 {
		t.Errorf("stderr %q, want nothing: the JSON holds the warnings", errOut.String())
	}
}

// TestIPsShowsLeftOutAddressesAsNotReported: an address a node's
// inventory left out to fit Consul's value limit was listed as
// "allocated, no container", a leak, though its container runs. The
// inventory now lists it by address (left_out): ips shows it as not
// reported, warns of it by node, and lists a real leak as one.
func TestIPsShowsLeftOutAddressesAsNotReported(t *testing.T) {
	const id = "id10000000000000000000000"
	pairs := map[string]string{
		"underlay/nodes/" + id: `{"id":"` + id + `","node":"n1","interfaces":["eth0"]}`,
		"underlay/inventory/" + id: `[{"ip":"10.1.0.5","node":"n1","node_id":"` + id + `","network":"lan","container":"web.1","container_id":"c1"},` +
			`{"ip":"10.1.0.6","node":"n1","node_id":"` + id + `","network":"lan","container":"","container_id":"","left_out":true}]`,
	}
	// The pool as n1's allocator leaves it: 10.1.0.7's container is gone.
	ctx := context.Background()
	kv := kvtest.New()
	s := netspec.Spec{Name: "lan", Subnet: netip.MustParsePrefix("10.1.0.0/24"), Gateway: netip.MustParseAddr("10.1.0.1"), Parent: "eth0", IPAM: netspec.Cluster}
	if err := netspec.NewStore(kv).Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	pool, _ := ipam.PoolOf(s, false)
	alloc := ipam.NewAllocator(kv, id, slog.New(slog.DiscardHandler))
	for _, a := range []string{"10.1.0.5", "10.1.0.6", "10.1.0.7"} {
		if _, err := alloc.Allocate(ctx, pool, netip.MustParseAddr(a), ipam.KindTask); err != nil {
			t.Fatal(err)
		}
	}
	stored, err := kv.List(ctx, "underlay/")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range stored {
		pairs[p.Key] = string(p.Value)
	}
	srv := fakeConsulKV(t, pairs)
	var out, errOut bytes.Buffer
	if code := Run(ctx, []string{"ips", "--consul-addr", srv.URL}, IOStreams{Out: &out, ErrOut: &errOut}); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	rows := map[string]string{}
	for _, l := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			rows[f[0]] = l
		}
	}
	for ip, want := range map[string]string{"10.1.0.5": "in use", "10.1.0.6": "not reported (inventory full)", "10.1.0.7": "allocated, no container (leak"} {
		if !strings.Contains(rows[ip], want) {
			t.Errorf("row of %s: %q, want it %q", ip, rows[ip], want)
		}
	}
	if want := "warning: 1 address(es) of node n1 not reported"; !strings.Contains(errOut.String(), want) {
		t.Errorf("stderr %q, want %q", errOut.String(), want)
	}
}

// TestIPsShowsUnreadableNetworks: a node whose agent could not read one
// of its networks published nothing more at all; it now publishes that
// network's addresses with the error (network_problem), which ips shows
// in the row's PROBLEM.
func TestIPsShowsUnreadableNetworks(t *testing.T) {
	const id = "id10000000000000000000000"
	srv := fakeConsulKV(t, map[string]string{
		"underlay/nodes/" + id: `{"id":"` + id + `","node":"n1","interfaces":["eth0"]}`,
		"underlay/inventory/" + id: `[{"ip":"10.1.0.5","node":"n1","node_id":"` + id + `","network":"lan","container":"web.1","container_id":"c1",` +
			`"network_problem":"inspect network n1: Error response from daemon: plugin not found"}]`,
	})
	var out, errOut bytes.Buffer
	if code := Run(context.Background(), []string{"ips", "--consul-addr", srv.URL}, IOStreams{Out: &out, ErrOut: &errOut}); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if want := "NETWORK UNREADABLE ON ITS NODE: inspect network n1: Error response from daemon: plugin not found"; !strings.Contains(out.String(), want) {
		t.Errorf("stdout:\n%s\nwant %q", out.String(), want)
	}
}

// TestIPsBoundsLongNames: a name in an inventory may be of any length
// (a plain container's service label set by hand; any agent's token may
// write any node's inventory), and ips printed it whole in its column,
// which tabwriter pads every row to: one name of 100 KB made every row
// 100 KB wide, and the duplicates' notes naming its holder repeated it.
// Each cell is now shortened, saying how long it was (--json keeps it).
func TestIPsBoundsLongNames(t *testing.T) {
	const id, id2 = "id10000000000000000000000", "id20000000000000000000000"
	long := strings.Repeat("x", 100<<10)
	var rows []string
	for i := range 50 {
		rows = append(rows, fmt.Sprintf(`{"ip":"10.1.0.%d","node":"n1","node_id":"%s","network":"lan","container":"web.%d","container_id":"c%d"}`, 10+i, id, i, i))
	}
	rows = append(rows, `{"ip":"10.1.0.200","node":"n1","node_id":"`+id+`","network":"lan","container":"`+long+`","container_id":"big","service":"`+long+`","task":"t`+long+`"}`)
	srv := fakeConsulKV(t, map[string]string{
		"underlay/nodes/" + id:      `{"id":"` + id + `","node":"n1","interfaces":["eth0"]}`,
		"underlay/nodes/" + id2:     `{"id":"` + id2 + `","node":"n2","interfaces":["eth0"]}`,
		"underlay/inventory/" + id:  "[" + strings.Join(rows, ",") + "]",
		"underlay/inventory/" + id2: `[{"ip":"10.1.0.200","node":"n2","node_id":"` + id2 + `","network":"lan","container":"other","container_id":"o1"}]`,
	})
	var out, errOut bytes.Buffer
	if code := Run(context.Background(), []string{"ips", "--consul-addr", srv.URL}, IOStreams{Out: &out, ErrOut: &errOut}); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if out.Len() > 40<<10 {
		t.Errorf("ips printed %d bytes for 52 rows; want each name shortened", out.Len())
	}
	if want := fmt.Sprintf("… (%d bytes)", len(long)); !strings.Contains(out.String(), want) {
		t.Errorf("stdout does not say how long the name was (%q)", want)
	}
	out.Reset()
	if code := Run(context.Background(), []string{"ips", "--json", "--consul-addr", srv.URL}, IOStreams{Out: &out, ErrOut: &errOut}); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), `"container": "`+long+`"`) {
		t.Errorf("ips --json does not hold the long name whole")
	}
}

// TestIPsFilterErrorQuotesNames: a --node or --network naming nothing
// the cluster knows is refused with the names it knows, which come from
// documents any agent's token may write (node facts name their node
// unchecked): printed as they were, a newline there forged a line of the
// error, and a name of any length made it as long. Each is now quoted
// when it would break the line, and shortened.
func TestIPsFilterErrorQuotesNames(t *testing.T) {
	long := strings.Repeat("y", 10<<10)
	err := checkIPsFilters(nil, "", "nx", nil, []string{"n1", "n2\nunderlay: forged", long})
	if err == nil {
		t.Fatal("checkIPsFilters: no error for an unknown node")
	}
	for _, want := range []string{`"n2\nunderlay: forged"`, fmt.Sprintf("… (%d bytes)", len(long))} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %.300q does not hold %q", err.Error(), want)
		}
	}
	if strings.Contains(err.Error(), "\n") || len(err.Error()) > 1000 {
		t.Errorf("error %.300q (%d bytes): want one short line", err.Error(), len(err.Error()))
	}
}
