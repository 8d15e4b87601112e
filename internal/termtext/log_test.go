package termtext

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestEscapeTextLog(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"plain", "level=INFO msg=registered service=web\n", "level=INFO msg=registered service=web\n"},
		{"letters, quotes and a backslash stay", `level=INFO msg="nœud é" name=網站 path=a\b q="say \"hi\\\""` + "\n", `level=INFO msg="nœud é" name=網站 path=a\b q="say \"hi\\\""` + "\n"},
		{"six characters written stay bare", `level=INFO name=web\u3164` + "\n", `level=INFO name=web\u3164` + "\n"},
		{"bare value shown as nothing is quoted", "level=INFO name=web\u3164\n", `level=INFO name="web\u3164"` + "\n"},
		{"bare with a backslash", "level=INFO name=a\\u2800\u2800\n", `level=INFO name="a\\u2800\u2800"` + "\n"},
		{"bare key", "level=INFO k\ufe0f=v\n", `level=INFO "k\ufe0f"=v` + "\n"},
		{"bare message", "level=INFO msg=\u115fstart\n", `level=INFO msg="\u115fstart"` + "\n"},
		{"in a quoted value", "level=INFO name=\"a b\u3164\" next=1\n", `level=INFO name="a b\u3164" next=1` + "\n"},
		{"quoted keeps its escapes", "level=INFO err=\"x: \\\"web\u2800\\\"\\n\"\n", `level=INFO err="x: \"web\u2800\"\n"` + "\n"},
		{"raw controls", "a=\x1b[2J b=\"\u202e\"\n", `a="\x1b[2J" b="\u202e"` + "\n"},
		{"invalid UTF-8", "a=\xff b=\"\xfe\"\n", `a="\xff" b="\xfe"` + "\n"},
		{"not closed", "a=\"x\u3164\nb=\u3164", "a=\"x\\u3164\nb=\"\\u3164\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(EscapeTextLog([]byte(tc.in))); got != tc.want {
				t.Errorf("EscapeTextLog(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestEscapeJSONLog(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"plain", `{"level":"INFO","msg":"nœud 網站","path":"a\\b"}` + "\n", `{"level":"INFO","msg":"nœud 網站","path":"a\\b"}` + "\n"},
		{"six characters written", `{"name":"web\\u3164"}` + "\n", `{"name":"web\\u3164"}` + "\n"},
		{"shown as nothing", "{\"name\":\"web\u3164\"}\n", `{"name":"web\u3164"}` + "\n"},
		{"bidi override and no-break space", "{\"name\":\"web\u202egnp.exe\u00a0\"}\n", `{"name":"web\u202egnp.exe\u00a0"}` + "\n"},
		{"beyond the BMP", "{\"k\":\"a\U000E0100\"}\n", `{"k":"a\udb40\udd00"}` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(EscapeJSONLog([]byte(tc.in))); got != tc.want {
				t.Errorf("EscapeJSONLog(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestLogHandlers logs through the handlers what GraphicRune refuses, in
// a message, a value, an error, a Stringer and a group.
func TestLogHandlers(t *testing.T) {
	noTime := &slog.HandlerOptions{ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey && groups == nil {
			return slog.Attr{}
		}
		return a
	}}
	log := func(h slog.Handler) {
		slog.New(h).Info("start \u3164", "name", "web\u202egnp.exe", "err", errors.New("bad \u2800"),
			"addr", stringer("a\u00a0b"), slog.Group("g", "tag", "x\ufe0f"), "plain", `web\u3164`)
	}
	var text, js bytes.Buffer
	log(NewTextLogHandler(&text, noTime))
	log(NewJSONLogHandler(&js, noTime))
	if want := `level=INFO msg="start \u3164" name="web\u202egnp.exe" err="bad \u2800" addr="a\u00a0b" g.tag="x\ufe0f" plain=web\u3164` + "\n"; text.String() != want {
		t.Errorf("text:\n got %s\nwant %s", text.String(), want)
	}
	if want := `{"level":"INFO","msg":"start \u3164","name":"web\u202egnp.exe","err":"bad \u2800","addr":"a\u00a0b","g":{"tag":"x\ufe0f"},"plain":"web\\u3164"}` + "\n"; js.String() != want {
		t.Errorf("json:\n got %s\nwant %s", js.String(), want)
	}
}

type stringer string

func (s stringer) String() string { return string(s) }

// FuzzEscapeLog: whatever the message, key and value, a line of either
// handler, escaped, is Graphic but for its newline and reads back as
// what was logged (JSON decodes to what the raw line decodes to; each
// quoted text item unquotes to what was logged); and any Graphic text is
// its own escape.
func FuzzEscapeLog(f *testing.F) {
	for _, s := range [][3]string{
		{"start", "name", "web"},
		{"start \u3164", "na me", "web\u202egnp.exe"},
		{"", "", `web\u3164`},
		{"a=b", "k\u2800", "\"x\xff\u00a0\""},
		{"m\n", "k=\\", "\ufe0f"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, msg, key, value string) {
		for _, in := range []string{msg, key, value} {
			for _, esc := range []func([]byte) []byte{EscapeTextLog, EscapeJSONLog} {
				out := string(esc([]byte(in)))
				checkLogSafe(t, out)
				if Graphic(in) && out != in {
					t.Errorf("%q, Graphic, escaped as %q", in, out)
				}
			}
		}
		if key == "" {
			return // slog writes an empty key's attribute in its own ways
		}
		noTime := &slog.HandlerOptions{ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && groups == nil {
				return slog.Attr{}
			}
			return a
		}}
		var raw, text bytes.Buffer
		slog.New(NewTextLogHandler(&text, noTime)).Info(msg, key, value)
		checkLogSafe(t, text.String())
		if got, want := readTextLine(t, text.String()), []string{"level", "INFO", "msg", msg, key, value}; strings.Join(got, "\x00") != strings.Join(want, "\x00") {
			t.Errorf("text line %s reads as %q, want %q", text.String(), got, want)
		}
		var js bytes.Buffer
		slog.New(slog.NewJSONHandler(&raw, noTime)).Info(msg, key, value)
		slog.New(NewJSONLogHandler(&js, noTime)).Info(msg, key, value)
		checkLogSafe(t, js.String())
		var a, b map[string]any
		if err := json.Unmarshal(raw.Bytes(), &a); err != nil {
			t.Fatalf("raw JSON line %s: %v", raw.String(), err)
		}
		if err := json.Unmarshal(js.Bytes(), &b); err != nil {
			t.Fatalf("escaped JSON line %s: %v", js.String(), err)
		}
		if a2, b2 := mustJSON(t, a), mustJSON(t, b); a2 != b2 {
			t.Errorf("escaped JSON line %s decodes as %s, raw as %s", js.String(), b2, a2)
		}
	})
}

func checkLogSafe(t *testing.T, s string) {
	t.Helper()
	if !Graphic(strings.ReplaceAll(s, "\n", "")) {
		t.Errorf("%q is not Graphic", s)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// readTextLine reads a line of slog's TextHandler as its keys and values
// one after the other, unquoting those that are quoted.
func readTextLine(t *testing.T, line string) []string {
	t.Helper()
	rest, ok := strings.CutSuffix(line, "\n")
	if !ok {
		t.Fatalf("line %q has no newline at its end", line)
	}
	var items []string
	for rest != "" {
		var item string
		if rest[0] == '"' {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				t.Fatalf("line %q: %v", line, err)
			}
			if item, err = strconv.Unquote(q); err != nil {
				t.Fatalf("line %q: %v", line, err)
			}
			rest = rest[len(q):]
		} else {
			n := strings.IndexAny(rest, " =")
			if n < 0 {
				n = len(rest)
			}
			item, rest = rest[:n], rest[n:]
			if !utf8.ValidString(item) {
				t.Fatalf("line %q: bare %q is not UTF-8", line, item)
			}
		}
		items = append(items, item)
		if rest != "" {
			rest = rest[1:] // the = or space after it
		}
	}
	return items
}

func TestQ(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"plain", "web", `"web"`},
		{"quotes, backslash, letters", `nœud "網站" \x`, `"nœud \"網站\" \\x"`},
		{"six characters written", `web\u3164`, `"web\\u3164"`},
		{"shown as nothing", "web\u3164\u2800\ufe0f", `"web\u3164\u2800\ufe0f"`},
		{"bidi override and controls", "a\u202eb\n\x1b", `"a\u202eb\n\x1b"`},
		{"invalid UTF-8", "a\xff", `"a\xff"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Q(tc.in); got != tc.want {
				t.Errorf("Q(%q) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}

// FuzzQ: Q's output is Graphic and unquotes to its input, and is %q's
// wherever %q's is Graphic.
func FuzzQ(f *testing.F) {
	for _, s := range []string{"web", "web\u3164", `a\u3164"`, "\xff\u202e\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q := Q(s)
		if !Graphic(q) {
			t.Errorf("Q(%q) = %q, not Graphic", s, q)
		}
		if u, err := strconv.Unquote(q); err != nil || u != s {
			t.Errorf("Q(%q) = %q unquotes as %q, %v", s, q, u, err)
		}
		if p := strconv.Quote(s); Graphic(p) && p != q {
			t.Errorf("Q(%q) = %q, %%q %q", s, q, p)
		}
	})
}

func TestQRune(t *testing.T) {
	for _, tc := range []struct {
		in   rune
		want string
	}{
		{'a', `'a'`}, {'\'', `'\''`}, {'"', `'"'`}, {'é', `'é'`}, {'\n', `'\n'`}, {'\x1b', `'\x1b'`},
		{'\u3164', `'\u3164'`}, {'\u00a0', `'\u00a0'`}, {'\U000e0100', `'\U000e0100'`}, {utf8.RuneError, `'�'`},
	} {
		if got := QRune(tc.in); got != tc.want {
			t.Errorf("QRune(%U) = %s, want %s", tc.in, got, tc.want)
		}
		q := QRune(tc.in)
		if u, _, _, err := strconv.UnquoteChar(q[1:len(q)-1], '\''); err != nil || u != tc.in {
			t.Errorf("QRune(%U) = %s unquotes as %U, %v", tc.in, QRune(tc.in), u, err)
		}
	}
}
