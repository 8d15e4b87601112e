package app

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/decommission"
	"github.com/underlay/underlay/internal/doctor"
	"github.com/underlay/underlay/internal/netspec"
)

// TestPrintRemoved: node rm says every key it deleted or rewrote, also
// the cluster-IPAM blocks where other nodes' addresses stay.
func TestPrintRemoved(t *testing.T) {
	var out, errOut bytes.Buffer
	printRemoved(IOStreams{Out: &out, ErrOut: &errOut}, decommission.Removed{ID: "gone",
		Addresses: map[string][]netip.Addr{"pool/v4": {netip.MustParseAddr("10.20.0.5")}},
		Keys:      []string{"underlay/ipam/pool/v4/blocks/10.20.0.0_28"},
		Changed:   []string{"underlay/ipam/pool/v4/blocks/10.20.0.16_28"},
	})
	want := `freed address 10.20.0.5 of pool pool/v4
deleted underlay/ipam/pool/v4/blocks/10.20.0.0_28
rewrote underlay/ipam/pool/v4/blocks/10.20.0.16_28 without its records: other nodes' addresses stay
`
	if diff := cmp.Diff(want, out.String()); diff != "" || errOut.Len() > 0 {
		t.Errorf("printed (-want +got):\n%s\nstderr %q", diff, errOut.String())
	}
}

// TestPrintRemovedServices: node rm says each service it deregistered
// from Consul's catalog, quoted where a name would break the line, and
// a removal of services alone is a removal.
func TestPrintRemovedServices(t *testing.T) {
	var out, errOut bytes.Buffer
	r := decommission.Removed{ID: "gone", Node: "old", Services: []decommission.CatalogService{
		{Node: "h-old", ID: "old:web.1:80", Name: "web"},
		{Node: "h\nx", ID: "old:db:1", Name: "db\x1b[2J"},
	}}
	printRemoved(IOStreams{Out: &out, ErrOut: &errOut}, r)
	want := `deregistered service old:web.1:80 (web) of Consul node h-old from the catalog
deregistered service old:db:1 ("db\x1b[2J") of Consul node "h\nx" from the catalog
`
	if diff := cmp.Diff(want, out.String()); diff != "" || errOut.Len() > 0 {
		t.Errorf("printed (-want +got):\n%s\nstderr %q", diff, errOut.String())
	}
	if got := removedLine(r); got != "node old (swarm node gone) removed" {
		t.Errorf("last line %q, want the node removed", got)
	}
}

// TestWriteNodeListQuotesFacts: node ls printed the node facts as
// stored: documents each agent writes, which every agent's Consul token
// may write under any identity. A newline in a node or host name forged
// rows (a removed node shown as an active swarm member) and an escape
// sequence rewrote the terminal. Such values are now printed quoted, on
// their row, in the table and in the warnings.
func TestWriteNodeListQuotesFacts(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	const id1, id2 = "id10000000000000000000000", "id20000000000000000000000"
	facts := []netspec.NodeFacts{
		{ID: id1, Node: "n1", UpdatedAt: now, Holder: netspec.Holder{Host: "h1"}},
		{ID: id2, Node: "n9\nid3  n3  active  1s  h3", UpdatedAt: now, Holder: netspec.Holder{Host: "h9\x1b]0;pwned\x07"}},
		// Under a key no agent writes: a warning, quoted, not a row.
		{ID: "id9\nid2", Node: "n8\x1b[2J", UpdatedAt: now},
	}
	misfiled := []netspec.MisfiledFacts{{Key: netspec.NodesKVPrefix + id2, Names: "x\ny"}}
	var out, errOut bytes.Buffer
	swarm := []netspec.SwarmNode{{ID: id1, State: "active"}}
	if err := writeNodeList(IOStreams{Out: &out, ErrOut: &errOut}, facts, misfiled, swarm, nil, now); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n"); len(lines) != 3 {
		t.Errorf("%d lines, want 3 (header, 2 nodes):\n%s", len(lines), out.String())
	}
	// Names no agent writes: shown as invalid, and said quoted in a
	// warning.
	if !strings.Contains(out.String(), id2+"  "+invalidCell) {
		t.Errorf("table does not show %s's name as invalid:\n%s", id2, out.String())
	}
	for _, w := range []string{`"underlay/nodes/id9\nid2"`, `"n8\x1b[2J"`, `"n9\nid3  n3  active  1s  h3"`, `"h9\x1b]0;pwned\a"`} {
		if !strings.Contains(errOut.String(), w) {
			t.Errorf("warnings do not hold %s:\n%s", w, errOut.String())
		}
	}
	if strings.ContainsAny(out.String()+errOut.String(), "\x1b\x07") {
		t.Errorf("output holds a control character:\n%q\n%q", out.String(), errOut.String())
	}
	if lines := strings.Split(strings.TrimSuffix(errOut.String(), "\n"), "\n"); len(lines) != 4 {
		t.Errorf("%d warning lines, want 4 (the facts under a key no agent writes, the misfiled facts, the invalid names, the removed node):\n%s", len(lines), errOut.String())
	}
}

// TestWriteNodeListSetsApartFactsNoAgentWrites: node ls listed facts
// under a key no agent writes (underlay/nodes/X naming n1, and, naming no
// ID, underlay/nodes/a b naming n5) as nodes: X as a removed node, with
// `underlay node rm X` its fix, and a b as an older agent's node with no
// ID. They are no node's: each is now the doctor's nodes/facts warning,
// naming its key and why, with the consul kv delete that removes it, and
// no row; a misfiled warning of such a key is not given besides.
func TestWriteNodeListSetsApartFactsNoAgentWrites(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	const ida = "ida0000000000000000000000"
	facts := []netspec.NodeFacts{
		{ID: ida, Node: "n1", UpdatedAt: now, Key: netspec.NodesKVPrefix + ida},
		{ID: "X", Node: "n1", UpdatedAt: now, Key: netspec.NodesKVPrefix + "X"},
		{Node: "n5", UpdatedAt: now, Key: netspec.NodesKVPrefix + "a b"},
	}
	misfiled := []netspec.MisfiledFacts{{Key: netspec.NodesKVPrefix + "X", Names: ida}}
	var out, errOut bytes.Buffer
	if err := writeNodeList(IOStreams{Out: &out, ErrOut: &errOut}, facts, misfiled, []netspec.SwarmNode{{ID: ida, State: "active"}}, nil, now); err != nil {
		t.Fatal(err)
	}
	var rows []string
	for _, l := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")[1:] {
		rows = append(rows, strings.Fields(l)[0]+" "+strings.Fields(l)[1])
	}
	if d := cmp.Diff([]string{ida + " n1"}, rows); d != "" {
		t.Errorf("rows (-want +got):\n%s\n%s", d, out.String())
	}
	var want []string
	for _, k := range []string{"X", "a b"} {
		f := facts[1]
		if k == "a b" {
			f = facts[2]
		}
		r, ok := doctor.NoNodeFactsResult(f)
		if !ok || !strings.Contains(r.Fix, "consul kv delete") {
			t.Fatalf("no doctor warning with its deletion for %+v: %+v", f, r)
		}
		want = append(want, "warning: "+r.Message+"; fix: "+r.Fix)
	}
	if d := cmp.Diff(want, strings.Split(strings.TrimSuffix(errOut.String(), "\n"), "\n")); d != "" {
		t.Errorf("warnings (-want +got):\n%s", d)
	}
}

// TestPrintRemovedQuotesOddNames: node rm printed what it removed as the
// keys named it (networks, pools, keys, the node) and its warnings as
// they were; those keys are what any agent's Consul token may write, so a
// newline forged lines of the account (a removal that did not happen)
// and an escape sequence rewrote the terminal. Such values are now
// printed quoted.
func TestPrintRemovedQuotesOddNames(t *testing.T) {
	r := decommission.Removed{ID: "id9\nnode x removed", Node: "old\x1b[2J",
		Ranges:    map[string][]netip.Prefix{"lan\nreleased range 10.0.0.0/24 of network b": {netip.MustParsePrefix("10.1.0.0/26")}},
		Reports:   []string{"pool\rfake"},
		Addresses: map[string][]netip.Addr{"pool/v4\x1b]0;t\x07": {netip.MustParseAddr("10.2.0.9")}},
		Keys:      []string{"underlay/doctor/old\ndeleted x"},
		Warnings:  []string{"underlay/networks/lan/nodes/a\nb names swarm node id9"},
	}
	var out, errOut bytes.Buffer
	printRemoved(IOStreams{Out: &out, ErrOut: &errOut}, r)
	fmt.Fprintln(&out, removedLine(r))
	if lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n"); len(lines) != 5 {
		t.Errorf("%d lines, want 5 (range, report, address, key, node):\n%s", len(lines), out.String())
	}
	if lines := strings.Split(strings.TrimSuffix(errOut.String(), "\n"), "\n"); len(lines) != 1 {
		t.Errorf("%d warning lines, want 1:\n%s", len(lines), errOut.String())
	}
	if strings.ContainsAny(out.String()+errOut.String(), "\x1b\r\x07") {
		t.Errorf("output holds a control character:\n%q\n%q", out.String(), errOut.String())
	}
}

// TestWriteNodeListEscapesTheSwarmError: node ls printed the error of
// its swarm query as it came, and it carries dockerd's answer: an escape
// sequence there rewrote the terminal. Its control characters are now
// escaped.
func TestWriteNodeListEscapesTheSwarmError(t *testing.T) {
	var out, errOut bytes.Buffer
	err := fmt.Errorf("list swarm nodes: Error response from daemon: boom\x1b[2J\rforged")
	if err := writeNodeList(IOStreams{Out: &out, ErrOut: &errOut}, nil, nil, nil, err, time.Now()); err != nil {
		t.Fatal(err)
	}
	want := `warning: list swarm nodes: Error response from daemon: boom\x1b[2J\rforged: the SWARM column is unknown` + "\n"
	if errOut.String() != want {
		t.Errorf("stderr %q, want %q", errOut.String(), want)
	}
}

// TestWriteNodeListOlderAgentNamedByItsName: an older agent's facts name no
// swarm node ID (keyed by its name), so the swarm cannot be asked about
// it by ID: node ls showed it "removed" and counted it among the nodes the
// swarm no longer lists, whose fix, `underlay node rm ID`, named an empty
// ID ("()"). It is now judged by host name (the swarm lists no node of
// host name n6: removed, said so) and counted by its name, which node rm
// takes (TestWriteNodeListOlderAgentByHostName).
func TestWriteNodeListOlderAgentNamedByItsName(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	const ida = "ida0000000000000000000000"
	facts := []netspec.NodeFacts{
		{ID: ida, Node: "n1", UpdatedAt: now, Key: netspec.NodesKVPrefix + ida},
		{Node: "n6", UpdatedAt: now, Key: netspec.NodesKVPrefix + "n6"},
	}
	var out, errOut bytes.Buffer
	if err := writeNodeList(IOStreams{Out: &out, ErrOut: &errOut}, facts, nil, []netspec.SwarmNode{{ID: ida, State: "active"}}, nil, now); err != nil {
		t.Fatal(err)
	}
	rows := tableRows(out.String())
	if d := cmp.Diff([]string{ida + " n1 active 0s ago -", "- n6 removed (by host name) 0s ago -"}, rows); d != "" {
		t.Errorf("rows (-want +got):\n%s\n%s", d, out.String())
	}
	if want := "1 node(s) the swarm no longer lists: `underlay node rm NODE` removes what each left in Consul (n6)\n"; errOut.String() != want {
		t.Errorf("stderr %q, want %q", errOut.String(), want)
	}
}

// TestWriteNodeListOlderAgentByHostName: an older agent's facts name no
// swarm node ID (keyed by its node name, Docker's host name unless given
// --node): node ls showed "?" for its SWARM whatever the swarm listed.
// It is now matched by host name, as node rm matches it: the state of the
// swarm node of that host name, said to be by host name; "?" when several
// have it, with a warning naming them; removed (and counted, by its name,
// which node rm takes) when none has it.
func TestWriteNodeListOlderAgentByHostName(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	const ida = "ida0000000000000000000000"
	facts := []netspec.NodeFacts{
		{ID: ida, Node: "n1", UpdatedAt: now, Key: netspec.NodesKVPrefix + ida},
		{Node: "n6", UpdatedAt: now, Key: netspec.NodesKVPrefix + "n6"},
		{Node: "n7", UpdatedAt: now, Key: netspec.NodesKVPrefix + "n7"},
		{Node: "n8", UpdatedAt: now, Key: netspec.NodesKVPrefix + "n8"},
	}
	swarm := []netspec.SwarmNode{
		{ID: ida, Hostname: "n6", State: "ready"}, // the host name is not its node's name
		{ID: "old6000000000000000000000", Hostname: "n6", State: "down"},
		{ID: "a700000000000000000000000", Hostname: "n7", State: "ready"},
		{ID: "b700000000000000000000000", Hostname: "n7", State: "down"},
	}
	var out, errOut bytes.Buffer
	if err := writeNodeList(IOStreams{Out: &out, ErrOut: &errOut}, facts, nil, swarm[1:], nil, now); err != nil {
		t.Fatal(err)
	}
	rows := tableRows(out.String())
	want := []string{"- n6 down (by host name) 0s ago -", "- n7 ? 0s ago -", "- n8 removed (by host name) 0s ago -", ida + " n1 removed 0s ago -"}
	slices.Sort(rows)
	slices.Sort(want)
	if d := cmp.Diff(want, rows); d != "" {
		t.Errorf("rows (-want +got):\n%s\n%s", d, out.String())
	}
	wantErr := "warning: the swarm lists 2 nodes of host name n7 (swarm nodes a700000000000000000000000 (ready), b700000000000000000000000 (down)): the SWARM column of n7, an older agent's node keyed by its name, is unknown\n" +
		"2 node(s) the swarm no longer lists: `underlay node rm NODE` removes what each left in Consul (" + ida + ", n8)\n"
	if d := cmp.Diff(wantErr, errOut.String()); d != "" {
		t.Errorf("stderr (-want +got):\n%s", d)
	}
}

// tableRows returns the rows of the table writeNodeList printed, its
// header left out, each row's cells joined by one space.
func tableRows(out string) []string {
	var rows []string
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n")[1:] {
		rows = append(rows, strings.Join(strings.Fields(l), " "))
	}
	return rows
}

// TestRemovedLine: node rm said "node X removed" when nothing was
// recorded under X (an argument naming no node, such as the start of a
// node's ID, which docker node rm takes), as if it had removed a node.
func TestRemovedLine(t *testing.T) {
	for _, c := range []struct {
		r    decommission.Removed
		want string
	}{
		{decommission.Removed{ID: "gone", Node: "old", Keys: []string{"underlay/nodes/gone"}}, "node old (swarm node gone) removed"},
		{decommission.Removed{ID: "l"}, "nothing recorded under l: nothing removed"},
		{decommission.Removed{ID: "l", Warnings: []string{"l is not a whole swarm node ID"}}, "nothing recorded under l: nothing removed"},
	} {
		if got := removedLine(c.r); got != c.want {
			t.Errorf("removedLine(%+v) = %q, want %q", c.r, got, c.want)
		}
	}
}

// TestWriteRemovedNodes: node ls did not list the records node rm leaves
// of the nodes it removed, whose agents are refused their identity: an
// operator could not tell a removed node from one never known, nor see
// how to undo a mistaken removal. They are now listed apart, oldest
// first as read, with when and by whom, names quoted where they would
// break their row, and the command that undoes one; nothing when none.
func TestWriteRemovedNodes(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	var out bytes.Buffer
	if err := writeRemovedNodes(&out, nil, now); err != nil || out.Len() > 0 {
		t.Errorf("no records: %v, printed %q, want nothing", err, out.String())
	}
	removed := []netspec.NodeRemoval{
		{ID: "gone000000000000000000000", Node: "n1", RemovedAt: now.Add(-time.Hour), By: "ops@m1"},
		{ID: "old0000000000000000000000", RemovedAt: now.Add(-time.Minute)},
		{ID: "odd0000000000000000000000", Node: "n9\nforged  row", RemovedAt: now, By: "x\x1b[2J"},
	}
	if err := writeRemovedNodes(&out, removed, now); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	heading := "removed by `underlay node rm` (their agents are refused; `consul kv delete underlay/removed-nodes/ID` undoes a mistaken removal):"
	if len(lines) < 2 || lines[0] != "" || lines[1] != heading {
		t.Errorf("printed:\n%s\nwant a blank line, then %q", out.String(), heading)
	}
	rows := lines[min(2, len(lines)):]
	if len(rows) != 4 {
		t.Fatalf("%d rows, want the header and 3 records:\n%s", len(rows), out.String())
	}
	for i, w := range [][]string{
		{"ID", "NAME", "REMOVED", "BY"},
		{"gone000000000000000000000", "n1", "1h0m0s ago", "ops@m1"},
		{"old0000000000000000000000", "-", "1m0s ago", "-"},
		{"odd0000000000000000000000", `"n9\nforged  row"`, "0s ago", `"x\x1b[2J"`},
	} {
		for _, cell := range w {
			if !strings.Contains(rows[i], cell) {
				t.Errorf("row %d %q lacks %q", i, rows[i], cell)
			}
		}
	}
	if strings.Contains(out.String(), "\x1b") {
		t.Errorf("output holds a control character: %q", out.String())
	}
}

// TestNodeListOfOneName: node ls of two live nodes of one name (cloned
// hosts), and of a node of that name node rm removed before, lists each
// on its own row by its swarm node ID, its own swarm state: the removed
// one in the second table, never taken for either.
func TestNodeListOfOneName(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	const ida, idb, idc = "ida0000000000000000000000", "idb0000000000000000000000", "idc0000000000000000000000"
	facts := []netspec.NodeFacts{
		{ID: ida, Node: "n1", UpdatedAt: now, Holder: netspec.Holder{Host: "h1"}},
		{ID: idb, Node: "n1", UpdatedAt: now, Holder: netspec.Holder{Host: "h1"}},
	}
	swarm := []netspec.SwarmNode{{ID: ida, State: "ready", Hostname: "n1"}, {ID: idb, State: "down", Hostname: "n1"}}
	var out, errOut bytes.Buffer
	streams := IOStreams{Out: &out, ErrOut: &errOut}
	if err := writeNodeList(streams, facts, nil, swarm, nil, now); err != nil {
		t.Fatal(err)
	}
	if err := writeRemovedNodes(&out, []netspec.NodeRemoval{{ID: idc, Node: "n1", RemovedAt: now.Add(-time.Hour), By: "ops@m1"}}, now); err != nil {
		t.Fatal(err)
	}
	live, removed, _ := strings.Cut(out.String(), "\n\n")
	want := []string{ida + " n1 ready 0s ago h1", idb + " n1 down 0s ago h1"}
	if diff := cmp.Diff(want, tableRows(live)); diff != "" || errOut.Len() > 0 {
		t.Errorf("live nodes (-want +got):\n%s\nstderr %q", diff, errOut.String())
	}
	if rows := tableRows(removed); len(rows) != 2 || rows[1] != idc+" n1 1h0m0s ago ops@m1" {
		t.Errorf("removed nodes: %q, want the heading's table with %s alone", rows, idc)
	}
}

// TestWriteNodeListShowsInvalidNames: node ls printed whatever name node
// facts gave, quoted at most: a name of 10 000 characters, or one of
// spaces and a newline, as a node's. Facts are documents any agent's
// token may write: names no agent writes (netspec.CheckNodeName) are now
// shown as invalid, each warned of naming its key and why, and the other
// nodes listed as before.
func TestWriteNodeListShowsInvalidNames(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	const id1, id2, id3 = "id10000000000000000000000", "id20000000000000000000000", "id30000000000000000000000"
	long := strings.Repeat("x", 10000)
	facts := []netspec.NodeFacts{
		{ID: id1, Node: "n1", UpdatedAt: now, Holder: netspec.Holder{Host: "h1"}},
		{ID: id2, Node: long, UpdatedAt: now, Holder: netspec.Holder{Host: "h2"}},
		{ID: id3, Node: "n3", UpdatedAt: now, Holder: netspec.Holder{Host: "h 3\nid4  n4"}},
	}
	var out, errOut bytes.Buffer
	swarm := []netspec.SwarmNode{{ID: id1, State: "active"}, {ID: id2, State: "active"}, {ID: id3, State: "active"}}
	if err := writeNodeList(IOStreams{Out: &out, ErrOut: &errOut}, facts, nil, swarm, nil, now); err != nil {
		t.Fatal(err)
	}
	var rows []string
	for _, l := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")[1:] {
		f := strings.Fields(l)
		rows = append(rows, f[0]+" "+f[1]+" "+f[len(f)-1])
	}
	want := []string{id1 + " n1 h1", id2 + " (invalid) h2", id3 + " n3 (invalid)"}
	if d := cmp.Diff(want, rows); d != "" {
		t.Errorf("rows (-want +got):\n%s\n%s", d, out.String())
	}
	if out.Len() > 1000 {
		t.Errorf("node ls printed %d bytes for 3 nodes", out.Len())
	}
	for _, w := range []string{"node facts underlay/nodes/" + id2 + ": node name \"xxx", "10000 characters, want at most 64",
		"node facts underlay/nodes/" + id3 + `: host name "h 3\nid4  n4": ' ' is not allowed`} {
		if !strings.Contains(errOut.String(), w) {
			t.Errorf("warnings do not say %q:\n%s", w, errOut.String())
		}
	}
	if errOut.Len() > 2000 {
		t.Errorf("node ls warned in %d bytes", errOut.Len())
	}
}
