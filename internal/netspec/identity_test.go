package netspec

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestCheckNodeName: every host name Docker reports passes; a name that
// would split the node's KV keys or break a table row is refused, the
// error saying why.
func TestCheckNodeName(t *testing.T) {
	tests := []struct {
		name    string
		node    string
		wantErr string // "" for accepted
	}{
		{"short", "n1", ""},
		{"fully qualified", "node-1.dc1.example.com", ""},
		{"underscore", "web_1", ""},
		{"upper case", "NODE1", ""},
		{"64 characters", strings.Repeat("a", 64), ""},
		{"empty", "", "no name"},
		{"65 characters", strings.Repeat("a", 65), "65 characters, want at most 64"},
		{"slash", "rack1/n1", `'/' is not allowed`},
		{"dot dot slash", "../doctor", `'/' is not allowed`},
		{"space", "n 1", `' ' is not allowed`},
		{"newline", "n1\n", `'\n' is not allowed`},
		{"colon", "n:1", `':' is not allowed`},
		{"quote", `n"1`, `'"' is not allowed`},
		{"non-ASCII", "nœud", `'œ' is not allowed`},
		{"dash first", "-n1", "want a letter or digit first, not '-'"},
		{"dot first", ".n1", "want a letter or digit first, not '.'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckNodeName(tt.node)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("CheckNodeName(%q) = %v, want nil", tt.node, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("CheckNodeName(%q) = %v, want an error with %q", tt.node, err, tt.wantErr)
			}
		})
	}
}

func TestCheckNodeID(t *testing.T) {
	tests := []struct {
		name    string
		id      string
		wantErr string // "" for accepted
	}{
		// As swarmkit's identity.NewID draws them (Docker's own docs).
		{"swarm node ID", "1bcef6utixb0l0ca7gxuivsj0", ""},
		{"all letters", "abcdefghijklmnopqrstuvwxy", ""},
		{"all digits", "0123456789012345678901234", ""},
		{"empty", "", "0 bytes, want 25"},
		{"24 characters", strings.Repeat("a", 24), "24 bytes, want 25"},
		{"26 characters", strings.Repeat("a", 26), "26 bytes, want 25"},
		{"upper case", "1BCEF6UTIXB0L0CA7GXUIVSJ0", `'B' is not allowed`},
		{"slash", "1bcef6utixb0l0ca7gxuivs/0", `'/' is not allowed`},
		{"space", "1bcef6utixb0l0ca7gxuivs 0", `' ' is not allowed`},
		{"newline", "1bcef6utixb0l0ca7gxuivsj\n", `'\n' is not allowed`},
		{"dash", "1bcef6utixb0l0ca7gxuivs-0", `'-' is not allowed`},
		{"non-ASCII", "1bcef6utixb0l0ca7gxuivsé", `'é' is not allowed`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckNodeID(tt.id)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("CheckNodeID(%q) = %v, want nil", tt.id, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("CheckNodeID(%q) = %v, want an error with %q", tt.id, err, tt.wantErr)
			}
		})
	}
}

// TestSwarmNodesOf: the node of an agent's facts is the swarm node of
// its ID; an older agent's, naming no ID and keyed by its node name, may
// be any swarm node of that host name (sorted by ID), as node rm judges
// it; none is listed when the swarm no longer has it.
func TestSwarmNodesOf(t *testing.T) {
	const ida, idb, idc = "ida0000000000000000000000", "idb0000000000000000000000", "idc0000000000000000000000"
	list := []SwarmNode{
		{ID: idc, Hostname: "n7", State: "down"},
		{ID: ida, Hostname: "n6", State: "ready"},
		{ID: idb, Hostname: "n7", State: "ready"},
	}
	for _, tc := range []struct {
		name       string
		f          NodeFacts
		want       []SwarmNode
		byHostName bool
	}{
		{"by ID", NodeFacts{ID: ida, Node: "n9", Key: NodesKVPrefix + ida}, []SwarmNode{list[1]}, false},
		{"ID not listed", NodeFacts{ID: "gone000000000000000000000", Node: "n6"}, nil, false},
		{"older agent's", NodeFacts{Node: "n6", Key: NodesKVPrefix + "n6"}, []SwarmNode{list[1]}, true},
		{"older agent's, not read from a listing", NodeFacts{Node: "n6"}, []SwarmNode{list[1]}, true},
		{"two of its host name", NodeFacts{Node: "n7", Key: NodesKVPrefix + "n7"}, []SwarmNode{list[2], list[0]}, true},
		{"none of its host name", NodeFacts{Node: "n8", Key: NodesKVPrefix + "n8"}, nil, true},
	} {
		got, byHostName := SwarmNodesOf(tc.f, list)
		if d := cmp.Diff(tc.want, got); d != "" || byHostName != tc.byHostName {
			t.Errorf("%s: SwarmNodesOf (-want +got):\n%s\nby host name %v, want %v", tc.name, d, byHostName, tc.byHostName)
		}
	}
}

// TestNameProblem: the names node facts give are judged when read, as
// CheckNodeName judges an agent's --node: the error names the facts' key
// (quoted where it would break a line) and each bad name, shortened.
func TestNameProblem(t *testing.T) {
	const id = "id10000000000000000000000"
	for _, tc := range []struct {
		name string
		f    NodeFacts
		want []string // substrings; none: no problem
	}{
		{"good", NodeFacts{ID: id, Node: "n1", Holder: Holder{Host: "h1.example"}}, nil},
		{"no host", NodeFacts{ID: id, Node: "n1"}, nil},
		{"no name", NodeFacts{ID: id}, []string{"node facts underlay/nodes/" + id + ": node name \"\": no name"}},
		{"long name", NodeFacts{ID: id, Node: strings.Repeat("x", 5000)}, []string{`… (5000 bytes): 5000 characters, want at most 64`}},
		{"control in host", NodeFacts{ID: id, Node: "n1", Holder: Holder{Host: "h\x1b[2J"}}, []string{`host name "h\x1b[2J": '\x1b' is not allowed`}},
		{"both, key as read", NodeFacts{ID: id, Node: "a b", Holder: Holder{Host: "c/d"}, Key: NodesKVPrefix + "x\ny"},
			[]string{`node facts "underlay/nodes/x\ny": node name "a b": ' ' is not allowed`, `; host name "c/d": '/' is not allowed`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.f.NameProblem()
			if len(tc.want) == 0 {
				if err != nil {
					t.Errorf("NameProblem: %v, want none", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("NameProblem: none, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("NameProblem: %v, want it to say %q", err, w)
				}
			}
			if len(err.Error()) > 400 || strings.ContainsAny(err.Error(), "\n\x1b") {
				t.Errorf("NameProblem: %d bytes, %q: want it short, on one line", len(err.Error()), err)
			}
		})
	}
}
