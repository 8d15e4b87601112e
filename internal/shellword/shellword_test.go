package shellword

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestJoin(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"nothing", nil, ""},
		{"plain", []string{"network", "create", "--subnet", "10.0.0.0/24"}, "network create --subnet 10.0.0.0/24"},
		{"equals and colons stay bare", []string{"parent=eth0.100", "fd00::/64", "a-b_c.d@e,f:g%h+i"}, "parent=eth0.100 fd00::/64 a-b_c.d@e,f:g%h+i"},
		{"empty", []string{"a", "", "b"}, "a '' b"},
		{"space", []string{"--label", "owner=my team"}, "--label 'owner=my team'"},
		{"tab and newline", []string{"a\tb", "c\nd"}, "'a\tb' 'c\nd'"},
		{"single quote", []string{"it's"}, `'it'\''s'`},
		{"only a quote", []string{"'"}, `''\'''`},
		{"double quote", []string{`say "hi"`}, `'say "hi"'`},
		{"dollar", []string{"$HOME"}, "'$HOME'"},
		{"backquote", []string{"`id`"}, "'`id`'"},
		{"backslash", []string{`a\b`}, `'a\b'`},
		{"glob", []string{"*", "a?", "[ab]", "{a,b}"}, "'*' 'a?' '[ab]' '{a,b}'"},
		{"operators", []string{"a;b", "a|b", "a&b", "a>b", "a<b", "(a)"}, "'a;b' 'a|b' 'a&b' 'a>b' 'a<b' '(a)'"},
		{"history and comment and tilde", []string{"!x", "#x", "~x"}, "'!x' '#x' '~x'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Join(tc.args); got != tc.want {
				t.Errorf("Join(%q) = %s, want %s", tc.args, got, tc.want)
			}
		})
	}
}

// TestJoinRoundTrip has a real shell split Join's output back
// into the arguments.
func TestJoinRoundTrip(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh:", err)
	}
	args := []string{"plain", "", "two words", "it's", `"dq"`, "$HOME", "`id`", `back\slash`, "*", "a;b", "tab\there", "line\nbreak", "!bang", "~tilde", "#hash", "parent=eth0"}
	script := `for a in "$@"; do printf '%s\0' "$a"; done`
	out, err := exec.Command(sh, "-c", "set -- "+Join(args)+"\n"+script).Output()
	if err != nil {
		t.Fatalf("sh: %v", err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if d := cmp.Diff(args, got); d != "" {
		t.Errorf("sh split Join's output differently (-want +got):\n%s", d)
	}
}

func TestKVDelete(t *testing.T) {
	for key, want := range map[string]string{
		"underlay/ipam/net/v4/blocks/x": "consul kv delete underlay/ipam/net/v4/blocks/x",
		"underlay/doctor/bad one":       "consul kv delete 'underlay/doctor/bad one'",
		"it's":                          `consul kv delete 'it'\''s'`,
	} {
		if got := KVDelete(key); got != want {
			t.Errorf("KVDelete(%q) = %s, want %s", key, got, want)
		}
	}
}
