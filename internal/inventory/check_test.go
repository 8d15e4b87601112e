package inventory

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/underlay/underlay/internal/termtext"
)

// checkPairwise is Check as it was, comparing every pair of a group:
// the reference for the notes Check writes. A MAC's group holds each
// endpoint once, its first entry, whose note its others take.
func checkPairwise(es []Entry) (duplicates int) {
	byIP := map[string][]int{}
	byMAC := map[string][]int{}
	byID := map[string][]int{}
	type endpoint struct{ mac, network, node, nodeID, id, container string }
	firstOf := map[endpoint]int{}
	sharing := map[int][]int{}
	for i, e := range es {
		byIP[e.Network+"|"+e.IP] = append(byIP[e.Network+"|"+e.IP], i)
		if e.MAC != "" {
			ep := endpoint{e.MAC, e.Network, e.Node, e.NodeID, e.ID, e.Container}
			if f, ok := firstOf[ep]; ok {
				sharing[f] = append(sharing[f], i)
			} else {
				firstOf[ep] = i
				byMAC[e.MAC] = append(byMAC[e.MAC], i)
			}
		}
		if e.ID != "" {
			byID[e.ID] = append(byID[e.ID], i)
		}
	}
	anyOther := func(i, j int) bool { return i != j }
	mark := func(groups map[string][]int, what string, clash func(i, j int) bool, sharing map[int][]int) {
		for _, idx := range groups {
			if len(idx) < 2 {
				continue
			}
			for _, i := range idx {
				var others []string
				n := 0
				for _, j := range idx {
					if !clash(i, j) {
						continue
					}
					h := holder(es[j])
					if es[j].Node == es[i].Node && OtherNode(es[i], es[j]) {
						h += " (swarm node " + termtext.Cell(es[j].NodeID) + ")"
					}
					if slices.Contains(others, h) {
						continue
					}
					if n++; len(others) < noteHolders {
						others = append(others, h)
					}
				}
				if n == 0 {
					continue
				}
				note := fmt.Sprintf("%s also on %s", what, strings.Join(others, ", "))
				if more := n - len(others); more > 0 {
					note += fmt.Sprintf(" and %d more", more)
				}
				for _, i := range append([]int{i}, sharing[i]...) {
					if es[i].Duplicate == "" {
						duplicates++
						es[i].Duplicate = note
					} else {
						es[i].Duplicate += "; " + note
					}
				}
			}
		}
	}
	mark(byIP, "IP", anyOther, nil)
	mark(byMAC, "MAC", anyOther, sharing)
	mark(byID, "container ID", func(i, j int) bool { return OtherNode(es[i], es[j]) }, nil)
	return duplicates
}

// TestCheckNotesAsBefore: Check compared every pair of entries holding
// one address (or container ID), so a forged inventory listing one
// address thousands of times cost the square of that in `underlay ips`
// and each dashboard rebuild (BenchmarkCheckOneAddress). Its notes,
// holders named and counts, are the same as the pairwise comparison's:
// on the cases of the other tests, and on random groups mixing nodes of
// one name, swarm node IDs given or not, holders repeated, and holder
// names that collide across nodes and with another ID's suffix.
func TestCheckNotesAsBefore(t *testing.T) {
	cases := [][]Entry{
		{
			{IP: "10.0.0.5", MAC: "02:00:00:00:00:05", Node: "n1", Network: "lan", Container: "a"},
			{IP: "10.0.0.6", MAC: "02:00:00:00:00:06", Node: "n2", Network: "lan", Container: "b"},
			{IP: "10.0.0.5", MAC: "02:00:00:00:00:07", Node: "n3", Network: "lan", Container: "c"},
			{IP: "10.0.0.5", MAC: "02:00:00:00:00:08", Node: "n3", Network: "other", Container: "d"},
			{IP: "10.0.0.9", MAC: "02:00:00:00:00:06", Node: "n1", Network: "lan", Container: "e"},
		},
		{
			{IP: "10.0.0.5", Node: "n1", NodeID: "id-1", Network: "lan", Container: "web", ID: "abc"},
			{IP: "10.1.0.5", Node: "n1", NodeID: "id-1", Network: "dmz", Container: "web", ID: "abc"},
			{IP: "10.0.0.6", Node: "n1", NodeID: "id-2", Network: "lan", Container: "web", ID: "abc"},
			{IP: "10.0.0.7", Node: "n1", NodeID: "id-2", Network: "lan", Container: "db", ID: "def"},
			{IP: "10.1.0.7", Node: "n1", Network: "dmz", Container: "db", ID: "def"},
		},
		oneAddress(1000, 1),
		oneAddress(500, 7),
	}
	r := rand.New(rand.NewPCG(1, 2))
	pick := func(s ...string) string { return s[r.IntN(len(s))] }
	for range 3000 {
		es := make([]Entry, 1+r.IntN(24))
		for i := range es {
			es[i] = Entry{
				IP: pick("10.0.0.1", "10.0.0.2"), MAC: pick("", "02:00:00:00:00:01", "02:00:00:00:00:02"),
				Network: "lan", ID: pick("", "abc", "def"),
				// "a@n1" on node "" and "a" on n1 are one holder's name; so
				// are "a@n1 (swarm node x)" and a on n1 with ID x, and a on
				// n1 with ID "x)@n1 (swarm node y" and "a@n1 (swarm node x)"
				// on n1 with ID y.
				Node:      pick("n1", "n1", "n2", "n3", "", "", "n1 (swarm node x)"),
				NodeID:    pick("", "", "x", "y", "z", "x)@n1 (swarm node y"),
				Container: pick("a", "a", "b", "c", "d", "e", "f", "g", "", "a@n1", "b@n1", "c@n1", "d@n1", "e@n1", "a@n1 (swarm node x)"),
				State:     pick("", "reserved: gateway"),
			}
		}
		cases = append(cases, es)
	}
	for k, es := range cases {
		want := slices.Clone(es)
		wantN := checkPairwise(want)
		got := slices.Clone(es)
		if n := Check(got); n != wantN || !slices.Equal(got, want) {
			for i := range got {
				if got[i].Duplicate != want[i].Duplicate {
					t.Errorf("case %d, entry %d (%+v): note %q, want %q", k, i, es[i], got[i].Duplicate, want[i].Duplicate)
				}
			}
			t.Fatalf("case %d: Check = %d, want %d", k, n, wantN)
		}
	}
}

// oneAddress is a forged inventory's n entries of one address and
// container ID, of containers c0000… on nodes n0…n(nodes-1), each of
// its own ID.
func oneAddress(n, nodes int) []Entry {
	es := make([]Entry, n)
	for i := range es {
		es[i] = Entry{IP: "10.0.0.5", MAC: "02:00:00:00:00:05", Network: "lan", ID: "abc",
			Node: fmt.Sprintf("n%d", i%nodes), NodeID: fmt.Sprintf("id-%d", i%(nodes+1)),
			Container: fmt.Sprintf("c%04d", i)}
	}
	return es
}

// BenchmarkCheckOneAddress: a forged inventory of 5,000 entries on one
// address, MAC and container ID.
func BenchmarkCheckOneAddress(b *testing.B) {
	es := oneAddress(5000, 3)
	work := make([]Entry, len(es))
	for b.Loop() {
		copy(work, es)
		Check(work)
	}
}

// TestCheckDualStackEndpointIsNoMACClash: a container's endpoint on a
// dual-stack network holds an IPv4 and an IPv6 address behind one MAC,
// which its inventory lists as two entries (dockerhost's Endpoints).
// Check flagged every such container as holding its MAC twice, with
// itself. One endpoint's addresses share its MAC; another endpoint's
// entry of that MAC still clashes, once, with every address of it noted.
func TestCheckDualStackEndpointIsNoMACClash(t *testing.T) {
	es := []Entry{
		{IP: "10.0.0.5", MAC: "02:00:00:00:00:05", Node: "n1", NodeID: "id-1", Network: "lan", Container: "web", ID: "abc"},
		{IP: "fd00::5", MAC: "02:00:00:00:00:05", Node: "n1", NodeID: "id-1", Network: "lan", Container: "web", ID: "abc"},
		{IP: "10.0.0.6", MAC: "02:00:00:00:00:06", Node: "n1", NodeID: "id-1", Network: "lan", Container: "db", ID: "def"},
		{IP: "fd00::6", MAC: "02:00:00:00:00:06", Node: "n1", NodeID: "id-1", Network: "lan", Container: "db", ID: "def"},
		{IP: "10.0.0.7", MAC: "02:00:00:00:00:06", Node: "n2", NodeID: "id-2", Network: "lan", Container: "cache", ID: "ghi"},
	}
	if n := Check(es); n != 3 {
		t.Errorf("Check = %d duplicates, want 3 (db's two addresses and cache, on one MAC)", n)
	}
	want := []string{"", "", "MAC also on cache@n2", "MAC also on cache@n2", "MAC also on db@n1"}
	for i, e := range es {
		if e.Duplicate != want[i] {
			t.Errorf("entry %d (%s of %s): note %q, want %q", i, e.IP, e.Container, e.Duplicate, want[i])
		}
	}
}
