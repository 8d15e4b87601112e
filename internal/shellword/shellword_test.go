package shellword

import (
	"os/exec"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

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
		{"single quote", []string{"it's"}, `'it'\''s'`},
		{"only a quote", []string{"'"}, `''\'''`},
		{"double quote", []string{`say "hi"`}, `'say "hi"'`},
		{"dollar", []string{"$HOME"}, "'$HOME'"},
		{"backquote", []string{"`id`"}, "'`id`'"},
		{"backslash", []string{`a\b`}, `'a\b'`},
		{"glob", []string{"*", "a?", "[ab]", "{a,b}"}, "'*' 'a?' '[ab]' '{a,b}'"},
		{"operators", []string{"a;b", "a|b", "a&b", "a>b", "a<b", "(a)"}, "'a;b' 'a|b' 'a&b' 'a>b' 'a<b' '(a)'"},
		{"history and comment and tilde", []string{"!x", "#x", "~x"}, "'!x' '#x' '~x'"},
		{"letters beyond ASCII are quoted", []string{"nœud-é"}, "'nœud-é'"},
		// Control characters and the like are written as printf's octal
		// escapes, so that the word stays on one line and prints as text.
		{"tab and newline", []string{"a\tb", "c\nd"}, `"$(printf 'a\011b')" "$(printf 'c\012d')"`},
		{"escape sequence", []string{"k\x1b[2Jx"}, `"$(printf 'k\033[2Jx')"`},
		{"bare word with a control character", []string{"a\rb"}, `"$(printf 'a\015b')"`},
		{"delete and C1", []string{"a\x7fb\u009bc"}, `"$(printf 'a\177b\302\233c')"`},
		{"bidi override and line separator", []string{"ab\u202ec\u2028d"}, `"$(printf 'ab\342\200\256c\342\200\250d')"`},
		{"invalid UTF-8", []string{"a\x9b[2J"}, `"$(printf 'a\233[2J')"`},
		// A space other than U+0020 and a character shown as nothing
		// would show the word as another one (termtext.GraphicRune).
		{"no-break space and Hangul filler", []string{"web\u00a0", "a\u3164b"}, `"$(printf 'web\302\240')" "$(printf 'a\343\205\244b')"`},
		// printf would take a format beginning with - for an option.
		{"leading dash before a control", []string{"-\v", "--x\t"}, `"$(printf '\055\013')" "$(printf '\055-x\011')"`},
		{"printf's own and the shell's specials beside a control", []string{"%d\\1'!$`\"é\n."},
			`"$(printf '%%d\\1\047\041$` + "`" + `"é\012.')"`},
		// No single-line POSIX word holds these: refused, with a word a
		// shell will not run.
		{"trailing newline", []string{"a\n"}, `)unquotable:"a\n"`},
		{"NUL", []string{"a\x00b"}, `)unquotable:"a\x00b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Join(tc.args); got != tc.want {
				t.Errorf("Join(%q) = %s, want %s", tc.args, got, tc.want)
			}
		})
	}
}

// shells are the POSIX shells on the machine that Quote's words are
// tried with: sh, and those of them that differ from it.
func shells(t *testing.T) [][]string {
	var out [][]string
	for _, sh := range [][]string{{"sh"}, {"dash"}, {"bash", "--posix"}, {"busybox", "sh"}} {
		if _, err := exec.LookPath(sh[0]); err == nil {
			out = append(out, sh)
		}
	}
	if len(out) == 0 {
		t.Skip("no shell")
	}
	return out
}

// TestJoinRoundTrip has real shells split Join's output back
// into the arguments.
func TestJoinRoundTrip(t *testing.T) {
	args := []string{"plain", "", "two words", "it's", `"dq"`, "$HOME", "`id`", `back\slash`, "*", "a;b", "tab\there", "line\nbreak", "!bang", "~tilde", "#hash", "parent=eth0",
		"nœud", "esc\x1b[2Jseq", "cr\rlf", "\nlead", "a\x7f\u0085\u009b", "bidi\u202eoff", "bad\xff\xfeutf8", `%s%%\0\101\n'!"$(x)`, ")", "x)", "a\u00a0b", "-\v", "--\n-"}
	script := `for a in "$@"; do printf '%s\0' "$a"; done`
	for _, sh := range shells(t) {
		out, err := exec.Command(sh[0], append(sh[1:], "-c", "set -- "+Join(args)+"\n"+script)...).Output()
		if err != nil {
			t.Fatalf("%s: %v", sh, err)
		}
		got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
		if d := cmp.Diff(args, got); d != "" {
			t.Errorf("%s split Join's output differently (-want +got):\n%s", sh, d)
		}
	}
}

// TestQuoteRefusedRunsNothing: a command with a refused word is one a
// shell runs no part of.
func TestQuoteRefusedRunsNothing(t *testing.T) {
	for _, sh := range shells(t) {
		for _, s := range []string{"a\n", "a\x00b", "\n\n"} {
			for _, line := range []string{"echo ran; echo " + Quote(s), Quote(s) + "; echo ran", "echo ran; echo x " + Quote(s) + " y"} {
				out, err := exec.Command(sh[0], append(sh[1:], "-c", line)...).Output()
				if err == nil || len(out) != 0 {
					t.Errorf("%s -c %q: printed %q, error %v; want nothing run and an error", sh, line, out, err)
				}
			}
		}
	}
}

func TestKVDelete(t *testing.T) {
	for key, want := range map[string]string{
		"underlay/ipam/net/v4/blocks/x": "consul kv delete underlay/ipam/net/v4/blocks/x",
		"underlay/doctor/bad one":       "consul kv delete 'underlay/doctor/bad one'",
		"it's":                          `consul kv delete 'it'\''s'`,
		"underlay/nodes/x\n\x1b[1Ay":    `consul kv delete "$(printf 'underlay/nodes/x\012\033[1Ay')"`,
	} {
		if got := KVDelete(key); got != want {
			t.Errorf("KVDelete(%q) = %s, want %s", key, got, want)
		}
	}
}

// FuzzQuote: whatever s holds, Quote prints it on one line in graphic
// characters only, refuses only what no such word can hold, and sh reads
// what it does not refuse back as s.
func FuzzQuote(f *testing.F) {
	for _, s := range []string{"", "plain", "it's", "a\nb", "a\n", "\x1b]0;x\a", "\x00", "é\u202e\xff", `%\'!`, "-\v"} {
		f.Add(s)
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		f.Skip("no sh:", err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q := Quote(s)
		if !utf8.ValidString(q) || strings.ContainsFunc(q, func(r rune) bool { return !unicode.IsGraphic(r) }) {
			t.Fatalf("Quote(%q) = %q: not graphic text on one line", s, q)
		}
		unquotable := strings.HasSuffix(s, "\n") || strings.Contains(s, "\x00")
		if refused := strings.HasPrefix(q, ")"); refused != unquotable {
			t.Fatalf("Quote(%q) = %s: refused %v, want %v", s, q, refused, unquotable)
		}
		if unquotable {
			return
		}
		out, err := exec.Command(sh, "-c", "printf '%s' "+q).Output()
		if err != nil || string(out) != s {
			t.Fatalf("sh read Quote(%q) = %s back as %q (%v)", s, q, out, err)
		}
	})
}

// TestKVRemoval: the removal of a key Consul's HTTP paths name is its
// deletion, then the note; of one whose path Consul redirects to another
// key (an empty, "." or ".." segment), no command, and how it goes.
func TestKVRemoval(t *testing.T) {
	if fix, why := KVRemoval("underlay/doctor/id/id1", " (note)"); fix != "consul kv delete underlay/doctor/id/id1 (note)" || why != "" {
		t.Errorf(`KVRemoval of a plain key = %q, %q; want its deletion and the note, no "why"`, fix, why)
	}
	for _, key := range []string{"underlay/doctor/..", "underlay/doctor/id/.", "underlay/doctor/a/../b", "underlay//b"} {
		if fix, why := KVRemoval(key, " (note)"); fix != "" || !strings.Contains(why, "PUT /v1/txn") {
			t.Errorf("KVRemoval(%q) = %q, %q; want no command, and the transaction that removes it", key, fix, why)
		}
	}
}
