package termtext

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

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
		{"no-break space", "web\u00a0", `"web\u00a0"`},
		{"ideographic space", "we\u3000b", `"we\u3000b"`},
		{"soft hyphen", "we\u00adb", `"we\u00adb"`},
		{"Hangul filler", "we\u3164b", `"we\u3164b"`},
		{"variation selector", "we\ufe0fb", `"we\ufe0fb"`},
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
		{"spaces other than U+0020", "a\u00a0b\u2007c\u202f", `a\u00a0b\u2007c\u202f`},
		{"shown as nothing", "a\u3164b\u034f\ufe0f", `a\u3164b\u034f\ufe0f`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Lines(tc.in); got != tc.want {
				t.Errorf("Lines(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestWriteJSON(t *testing.T) {
	type doc struct {
		Name  string            `json:"name"`
		Keys  map[string]string `json:"keys"`
		Raw   json.RawMessage   `json:"raw"`
		Count int               `json:"count"`
	}
	in := doc{
		Name:  "n1\u009b2J\x7f\u202eé 😀 <a&b>",
		Keys:  map[string]string{"k\u2066\u0085": "\x1b[0m\u2028\U000e0001"},
		Raw:   json.RawMessage(`{"x":"a` + "\u009b\xff" + `b"}`),
		Count: 3,
	}
	var b bytes.Buffer
	if err := WriteJSON(&b, in); err != nil {
		t.Fatal(err)
	}
	if i := strings.IndexFunc(b.String(), func(r rune) bool { return r != '\n' && !unicode.IsGraphic(r) }); i >= 0 {
		t.Errorf("output holds %q at %d:\n%s", []rune(b.String()[i:])[0], i, b.String())
	}
	if !utf8.Valid(b.Bytes()) || !strings.HasSuffix(b.String(), "}\n") || !strings.Contains(b.String(), "\n  \"name\": ") {
		t.Errorf("want indented valid UTF-8 ending in a newline:\n%q", b.String())
	}
	var back doc
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatalf("decode: %v:\n%s", err, b.String())
	}
	want := in
	want.Raw = json.RawMessage(`{"x":"a` + "\u009b\ufffd" + `b"}`)
	var gotRaw, wantRaw any
	if err := json.Unmarshal(back.Raw, &gotRaw); err != nil {
		t.Fatalf("decode raw %q: %v", back.Raw, err)
	}
	json.Unmarshal(want.Raw, &wantRaw)
	back.Raw, want.Raw = nil, nil
	if !reflect.DeepEqual(back, want) || !reflect.DeepEqual(gotRaw, wantRaw) {
		t.Errorf("decoded %+v %v, want %+v %v", back, gotRaw, want, wantRaw)
	}

	b.Reset()
	if err := WriteJSON(&b, []string{}); err != nil || b.String() != "[]\n" {
		t.Errorf("empty list: %q (%v), want []", b.String(), err)
	}
	if err := WriteJSON(&b, func() {}); err == nil {
		t.Error("a func: no error")
	}
}

func TestGraphic(t *testing.T) {
	for s, want := range map[string]bool{
		"": true, "web 1": true, "café": true,
		"a\nb": false, "a\x1b[2J": false, "x\u202ey": false, "x\u200by": false, "x\u2028y": false, "\xff": false,
		// Spaces other than U+0020, and characters shown as nothing:
		// "web\u00a0" reads as "web " or "web".
		"web\u00a0": false, "a\u1680b": false, "a\u2000b": false, "a\u200ab": false, "a\u202fb": false,
		"a\u205fb": false, "a\u3000b": false, "a\u00adb": false, "a\u2060b": false, "a\u200db": false,
		"a\u3164b": false, "a\u115fb": false, "a\uffa0b": false, "a\u034fb": false, "a\ufe0fb": false,
		"a\U000e0100b": false, "a\u2800b": false,
		"ウェブ": true, "e\u0301": true, "\u2014 \u2026": true,
	} {
		if got := Graphic(s); got != want {
			t.Errorf("Graphic(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestRedactAddr(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://ops:s3cret@consul.example:8501", "https://ops:xxxxx@consul.example:8501"},
		{"ops:s3cret@consul.example:8500", "ops:xxxxx@consul.example:8500"},
		{"http://ops@prom:9090", "http://ops@prom:9090"},
		// A password with / ? or # (base64 has /) does not parse as a URL.
		{"https://ops:pa/ss+w0rd==@consul.example:8501", "https://ops:xxxxx@consul.example:8501"},
		// A password may hold a / ? or # and an @ after it: with no @
		// before the first / ? #, any @ of the address may end it, and
		// the user information ends at the last one (a host hidden
		// rather than part of a password shown).
		{"https://ops:ab/cd@ef@host:8501", "https://ops:xxxxx@host:8501"},
		{"ops:ab/cd@ef@host:8501", "ops:xxxxx@host:8501"},
		{"ops:ab/cd@ef/gh@host:8501/v1", "ops:xxxxx@host:8501/v1"},
		{"ops:a?b#c@consul.example:8500/x@y", "ops:xxxxx@y"},
		{"ops:ab/cd@ef@[::1]:8500", "ops:xxxxx@[::1]:8500"},
		{"http://ops:a?b@c#d@[fe80::1%25eth0]:9090/", "http://ops:xxxxx@[fe80::1%25eth0]:9090/"},
		// A password holding an @ before its / ? # and another @ after
		// them: the user information still ends at the last @ (the
		// password may be p@ss/x@y), though net/url ends it at p@ss. So
		// an address with an @ in its host's part and another in its path
		// or query loses its host: nothing tells it from such a password.
		{"ops:p@ss/x@y@host", "ops:xxxxx@host"},
		{"https://ops:p@ss/x@y@host:8501", "https://ops:xxxxx@host:8501"},
		{"http://ops:p@ss?x@y#z@host:8500/v1", "http://ops:xxxxx@host:8500/v1"},
		{"http://ops:p@ss@prom:9090/api?q=a@b", "http://ops:xxxxx@b"},
		{"http://ops:pw@host:8500/x@y", "http://ops:xxxxx@y"},
		{"http://ops@prom:9090/x@y", "http://ops@prom:xxxxx@y"},
		{"http://me@example.com:pw@prom:9090", "http://me@example.com:xxxxx@prom:9090"},
		// A password starting with // and no scheme: only http, https,
		// unix and tcp (any case) are schemes, what a Consul address, a
		// Prometheus URL, a Location or a Docker daemon's address names.
		{"ops://pw@host:8500", "ops:xxxxx@host:8500"},
		{"ops:///pw@host:8500", "ops:xxxxx@host:8500"},
		{"ops://a:b@host:8500", "ops:xxxxx@host:8500"},
		{"HTTPS://ops:pw@host:8501", "HTTPS://ops:xxxxx@host:8501"},
		{"Unix:///run/consul@x/consul.sock", "Unix:///run/consul@x/consul.sock"},
		{"ops://host:8500", "ops://host:8500"},
		{"tcp://ops:pw@host:2375", "tcp://ops:xxxxx@host:2375"},
		{"tcp://ops@host:2375", "tcp://ops@host:2375"},
		// A :// in the password, or in the path, is no scheme's.
		{"ops:a://b@consul.example:8500", "ops:xxxxx@consul.example:8500"},
		{"ops:pw@consul.example:8500/x://y", "ops:xxxxx@consul.example:8500/x://y"},
		{"https://ops:a://b@consul.example:8501", "https://ops:xxxxx@consul.example:8501"},
		// An address with no scheme and // before its host (net/url
		// reads user information there).
		{"//ops:pw@prom:9090", "//ops:xxxxx@prom:9090"},
		// A password of digits up to its / ? or # reads as a port, with
		// an @ in the path after it: the password's reading wins, as no
		// rule tells the two apart (http://prom:9090/x@y loses its port).
		{"https://ops:1234/consul@host:8501", "https://ops:xxxxx@host:8501"},
		{"ops:1234/consul@host:8501", "ops:xxxxx@host:8501"},
		{"http://ops:1234?x@prom:9090/api", "http://ops:xxxxx@prom:9090/api"},
		{"ops:1234#x@prom", "ops:xxxxx@prom"},
		{":1234/x@prom:9090", ":xxxxx@prom:9090"},
		{"ops:1234/x@[::1]:8500", "ops:xxxxx@[::1]:8500"},
		{"http://prom:9090/x@y", "http://prom:xxxxx@y"},
		{"http://prom:9090?to=a@b", "http://prom:xxxxx@b"},
		// A password holding a : and digits after it reads as no host:port.
		{"ops:12:34/x@consul.example:8500", "ops:xxxxx@consul.example:8500"},
		{"https://ops:12:34@consul.example:8501", "https://ops:xxxxx@consul.example:8501"},
		// Every other form of a Consul address or a Prometheus URL, with
		// and without a scheme, keeps its host and port.
		{"ops:1234@consul.example", "ops:xxxxx@consul.example"},
		{"ops:1234@consul.example:8500", "ops:xxxxx@consul.example:8500"},
		{"ops:@consul.example:8500", "ops:xxxxx@consul.example:8500"},
		{"ops:pw@[::1]:8500", "ops:xxxxx@[::1]:8500"},
		{"http://ops:pw@[fe80::1%25eth0]:8500/", "http://ops:xxxxx@[fe80::1%25eth0]:8500/"},
		{"127.0.0.1:8500", "127.0.0.1:8500"},
		{"consul.example:8500", "consul.example:8500"},
		{"consul.example", "consul.example"},
		{"https://consul.example:8501/", "https://consul.example:8501/"},
		{"[::1]:8500", "[::1]:8500"},
		{"http://[::1]:8500", "http://[::1]:8500"},
		{"[2001:db8::1]", "[2001:db8::1]"},
		{"::1", "::1"},
		{"2001:db8::1:8500", "2001:db8::1:8500"},
		{"[::1]:8500/x@y", "[::1]:8500/x@y"},
		{"fe80::1/x@y", "fe80::1/x@y"},
		// With a scheme, an @ past the first / ? # where the scheme's
		// reading has no password: the scheme may be a user (http), its
		// password starting with // (http://prom/x@y may be the user
		// http, the password //prom/x), so the host is hidden with it,
		// as for http://prom:9090/x@y. But for a unix socket's path
		// (unix:///...), Docker's form, and a user with no password
		// (http://ops@prom:9090), kept below.
		{"http://2001:db8::1/x@y", "http:xxxxx@y"},
		{"http://[::1]:9090/x@y", "http:xxxxx@y"},
		{"http://[fe80::1%25eth0]:9090/x@y", "http:xxxxx@y"},
		{"http://prom/x@y", "http:xxxxx@y"},
		{"HTTPS://prom?to=a@b", "HTTPS:xxxxx@b"},
		{"tcp://host/a@b", "tcp:xxxxx@b"},
		{"http:///pw@host", "http:xxxxx@host"},
		{"unix://host/a@b", "unix:xxxxx@b"},
		{"http://prom:9090/prometheus", "http://prom:9090/prometheus"},
		{"http://prom:9090?to=a", "http://prom:9090?to=a"},
		{"unix:///run/consul/consul.sock", "unix:///run/consul/consul.sock"},
		{"unix:///run/consul@x/consul.sock", "unix:///run/consul@x/consul.sock"},
		{"unix:///run/a:b@c/consul@x.sock", "unix:///run/a:b@c/consul@x.sock"},
		{"http://o@p/a:b@c", "http:xxxxx@c"},
		{"http://ops:pw@host:8500", "http://ops:xxxxx@host:8500"},
		{"https://host:8501/path", "https://host:8501/path"},
		{"https://host:8501/path?q=a:b", "https://host:8501/path?q=a:b"},
		{"http://ops@prom:9090", "http://ops@prom:9090"},
		{"http://[2001:db8::1]:9090/api", "http://[2001:db8::1]:9090/api"},
		{"/graph?x=a@b", "/graph?x=a@b"},
		{"", ""},
	} {
		if got := RedactAddr(tc.in); got != tc.want {
			t.Errorf("RedactAddr(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1": true, "127.1.2.3": true, "::1": true, "::ffff:127.0.0.1": true, "::1%lo": true,
		"localhost": true, "LocalHost": true,
		"10.0.0.5": false, "2001:db8::5": false, "prom.example": false, "localhost.example": false,
		"[::1]": false, "127.0.0.1:9090": false, "": false,
	} {
		if got := LoopbackHost(host); got != want {
			t.Errorf("LoopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}

// TestHead: a head ends on a whole character, and bytes that are no
// UTF-8 are cut as they come, at n: before, a value of such bytes had
// its whole head cut away where register shortened it.
func TestHead(t *testing.T) {
	for _, c := range []struct {
		name, in string
		n        int
		want     string
	}{
		{"short", "short", 10, "short"},
		{"exactly n", "abcde", 5, "abcde"},
		{"ascii", "abcdef", 5, "abcde"},
		{"a character across the cut", strings.Repeat("a", 9) + "é" + "b", 10, strings.Repeat("a", 9)},
		{"whole characters", strings.Repeat("é", 70), 120, strings.Repeat("é", 60)},
		{"four bytes across the cut", "ab" + "😀" + "c", 4, "ab"},
		{"four bytes ending at the cut", "ab" + "😀" + "c", 6, "ab😀"},
		{"continuation bytes only", strings.Repeat("\x80", 2000), 1024, strings.Repeat("\x80", 1024)},
		{"no UTF-8 after text", "abc" + strings.Repeat("\xbf", 100), 50, "abc" + strings.Repeat("\xbf", 47)},
		{"a stray lead byte, kept as it comes", strings.Repeat("a", 9) + "\xe2" + strings.Repeat("a", 5), 10, strings.Repeat("a", 9) + "\xe2"},
		{"none", "abc", 0, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := Head(c.in, c.n)
			if got != c.want {
				t.Errorf("Head(%.30q… of %d bytes, %d) = %.30q… of %d bytes, want %.30q… of %d bytes", c.in, len(c.in), c.n, got, len(got), c.want, len(c.want))
			}
			if len(got) > c.n || !strings.HasPrefix(c.in, got) {
				t.Errorf("Head(…, %d) = %d bytes, not a prefix of at most %d", c.n, len(got), c.n)
			}
		})
	}
}

// TestTail: a tail starts on a whole character, and bytes that are no
// UTF-8 are cut as they come.
func TestTail(t *testing.T) {
	for _, c := range []struct {
		name, in string
		n        int
		want     string
	}{
		{"short", "short", 10, "short"},
		{"ascii", "abcdef", 5, "bcdef"},
		{"a character across the cut", "a" + "é" + strings.Repeat("b", 9), 10, strings.Repeat("b", 9)},
		{"four bytes across the cut", "a" + "😀" + "bc", 4, "bc"},
		{"four bytes starting at the cut", "a" + "😀" + "bc", 6, "😀bc"},
		{"continuation bytes only", strings.Repeat("\x80", 200), 64, strings.Repeat("\x80", 64)},
		{"none", "abc", 0, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := Tail(c.in, c.n)
			if got != c.want {
				t.Errorf("Tail(%.30q…, %d) = %.30q… of %d bytes, want %.30q… of %d bytes", c.in, c.n, got, len(got), c.want, len(c.want))
			}
			if len(got) > c.n || !strings.HasSuffix(c.in, got) {
				t.Errorf("Tail(…, %d) = %d bytes, not a suffix of at most %d", c.n, len(got), c.n)
			}
		})
	}
}

func TestShorten(t *testing.T) {
	bad := strings.Repeat("\x80", 2000)
	for _, c := range []struct{ name, got, want string }{
		{"short", Shorten("web", 10), "web"},
		{"long", Shorten("abcdefgh", 5), "abcde… (8 bytes)"},
		{"no UTF-8", Shorten(bad, 1024), bad[:1024] + "… (2000 bytes)"},
		{"quoted short", QuoteShort("a\"b", 10), `"a\"b"`},
		{"quoted long", QuoteShort("abcdefgh", 5), `"abcde"… (8 bytes)`},
		{"quoted no UTF-8", QuoteShort(bad, 4), `"\x80\x80\x80\x80"… (2000 bytes)`},
	} {
		if c.got != c.want {
			t.Errorf("%s: %.60q…, want %.60q…", c.name, c.got, c.want)
		}
	}
}

// TestCheckGraphic: CheckGraphic says what Graphic refuses, naming the
// first character it refuses by its code point, with what it is and
// where, so that an error can say which of two names that read the same
// holds what.
func TestCheckGraphic(t *testing.T) {
	for _, s := range []string{"", "web 1", "café", "ウェブ"} {
		if err := CheckGraphic(s); err != nil {
			t.Errorf("CheckGraphic(%q) = %v, want nil", s, err)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"web\u00a0", "U+00A0 (a space other than U+0020) at byte 3"},
		{"we\u3000b", "U+3000 (a space other than U+0020) at byte 2"},
		{"a\x1bb", "U+001B (a control character) at byte 1"},
		{"x\u202ey", "U+202E (a format character: invisible, or reordering the text) at byte 1"},
		{"\ufeffweb", "U+FEFF (a format character"},
		{"a\u00adb", "U+00AD (a format character"},
		{"x\u2028y", "U+2028 (a line or paragraph separator) at byte 1"},
		{"a\u3164b", "U+3164 (shown as nothing) at byte 1"},
		{"a\ufe0fb", "U+FE0F (shown as nothing) at byte 1"},
		{"a\ue000b", "U+E000 (a private-use, surrogate or unassigned code point) at byte 1"},
		{"ab\xff", "byte 0xff at byte 2 is not UTF-8"},
		{"a\u00a0\u200b", "U+00A0"}, // the first
	} {
		err := CheckGraphic(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckGraphic(%q) = %v, want an error containing %q", tc.in, err, tc.want)
		}
		if Graphic(tc.in) {
			t.Errorf("Graphic(%q) = true, but CheckGraphic refuses it", tc.in)
		}
	}
}

// TestCheckEdges: a name starting or ending with U+0020 reads as the
// name without it; one with a space inside, or none, is fine.
func TestCheckEdges(t *testing.T) {
	for _, ok := range []string{"", "web", "web api", "w", "web\u00a0"} {
		if err := CheckEdges(ok); err != nil {
			t.Errorf("CheckEdges(%q) = %v, want nil", ok, err)
		}
	}
	for in, want := range map[string]string{
		" web":  "a space (U+0020) at its start",
		"web ":  "a space (U+0020) at its end (byte 3)",
		" ":     "at its start",
		" web ": "at its start",
	} {
		if err := CheckEdges(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckEdges(%q) = %v, want an error containing %q", in, err, want)
		}
	}
}
