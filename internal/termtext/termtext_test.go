package termtext

import "testing"

func TestCell(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"plain", "node-1", "node-1"},
		{"empty", "", ""},
		{"spaces and punctuation stay", `gateway 10.9.0.1 is outside subnet "x"`, `gateway 10.9.0.1 is outside subnet "x"`},
		{"unicode letters stay", "nœud-é", "nœud-é"},
		{"newline", "n1\nn2  ready", `"n1\nn2  ready"`},
		{"tab", "a\tb", `"a\tb"`},
		{"carriage return", "ok\rfail", `"ok\rfail"`},
		{"escape sequence", "\x1b[2J", `"\x1b[2J"`},
		{"C1 control", "a\u009bb", `"a\u009bb"`},
		{"bidi override", "abc\u202edef", `"abc\u202edef"`},
		{"line separator", "a\u2028b", `"a\u2028b"`},
		{"invalid UTF-8", "a\x9b[2Jb", `"a\x9b[2Jb"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Cell(tc.in); got != tc.want {
				t.Errorf("Cell(%q) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}

func TestLines(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"plain", "read spec of x: not found", "read spec of x: not found"},
		{"empty", "", ""},
		{"newlines and tabs stay", "two errors:\n\tfirst\nsecond", "two errors:\n\tfirst\nsecond"},
		{"unicode letters and quotes stay", `nœud "é" \x`, `nœud "é" \x`},
		{"escape sequence", "a\x1b[2Jb", `a\x1b[2Jb`},
		{"carriage return", "ok\rfail", `ok\rfail`},
		{"other C0 and DEL", "\x00\a\b\f\v\x7f", `\x00\a\b\f\v\x7f`},
		{"C1 control", "a\u009bb\u0085", `a\u009bb\u0085`},
		{"bidi override", "abc\u202edef", `abc\u202edef`},
		{"line and paragraph separators", "a\u2028b\u2029", `a\u2028b\u2029`},
		{"invalid UTF-8", "a\x9b[2Jb\xff", `a\x9b[2Jb\xff`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Lines(tc.in); got != tc.want {
				t.Errorf("Lines(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
