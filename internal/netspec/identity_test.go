package netspec

import (
	"strings"
	"testing"
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
