// Package termtext makes text that underlay prints for a reader (tables,
// messages) safe to print: much of it comes from documents other nodes,
// other writers or webhook senders wrote (node facts and reports, scaling
// history, Consul keys), and printed as it is, a newline there would forge
// a line, a tab shift a table's columns and an escape sequence rewrite the
// terminal. Head, Shorten and QuoteShort bound such text, of any size,
// where it is quoted; Q (QRune) quotes as %q does, but escapes what %q leaves
// and would not show (U+3164). NewTextLogHandler and NewJSONLogHandler are slog's
// handlers with every character GraphicRune refuses escaped in the lines
// they write (EscapeTextLog, EscapeJSONLog), where slog's own leave a
// bidi override or U+3164 as it is, so that a log shows what a label or
// a document held.
package termtext

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Cell returns s as it is when it is Graphic, else Go-quoted with every
// character Graphic refuses escaped (\u00a0, \u3164), so that it prints
// on one line, in one table cell, and shows what it holds.
func Cell(s string) string {
	if Graphic(s) {
		return s
	}
	return quote(s)
}

// Graphic says s is valid UTF-8 and every character of it is graphic
// (GraphicRune): no control character, bidi override, zero-width or line
// separator, no space other than U+0020 and no character shown as
// nothing, that would make it read as other text than it holds ("web"
// and "web\u00a0" read the same).
func Graphic(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return !GraphicRune(r) })
}

// GraphicRune says r is shown as what it is: graphic as unicode.IsGraphic
// has it (letters, marks, numbers, punctuation, symbols, spaces), but
// not a space other than U+0020 (U+00A0, U+2000–U+200A, U+3000…), which
// reads as U+0020 or as nothing, nor a character shown as nothing
// (unicode.IsGraphic's default-ignorable ones: variation selectors, the
// Hangul fillers, U+034F; and U+2800, the blank Braille pattern).
func GraphicRune(r rune) bool {
	return unicode.IsGraphic(r) && (r == ' ' || !unicode.Is(unicode.Zs, r)) && !blank(r)
}

// blank says r is graphic but shown as nothing.
func blank(r rune) bool {
	return r == '\u2800' || unicode.In(r, unicode.Variation_Selector, unicode.Other_Default_Ignorable_Code_Point)
}

// CheckGraphic says why s is not Graphic, naming the first character that
// is not by its code point, what it is and its byte offset ("U+00A0 (a
// space other than U+0020) at byte 3"), or nil when s is Graphic. For
// errors about names that must read as what they hold: the code point
// tells apart two that read the same.
func CheckGraphic(s string) error {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, n := utf8.DecodeRuneInString(s[i:]); n == 1 {
				return fmt.Errorf("byte %#02x at byte %d is not UTF-8", s[i], i)
			}
		}
		if !GraphicRune(r) {
			return fmt.Errorf("%U (%s) at byte %d", r, unshown(r), i)
		}
	}
	return nil
}

// CheckEdges says why name starts or ends with a space (U+0020), or nil
// when it does not: such a name reads as the name without it ("web" and
// "web " read alike), as HTML collapses the space and a terminal or a
// table shows nothing of it. For names that must read as what they hold,
// with CheckGraphic; a space inside a name shows.
func CheckEdges(name string) error {
	switch {
	case strings.HasPrefix(name, " "):
		return errors.New("a space (U+0020) at its start, which reads as the name without it")
	case strings.HasSuffix(name, " "):
		return fmt.Errorf("a space (U+0020) at its end (byte %d), which reads as the name without it", len(name)-1)
	}
	return nil
}

// unshown says what r, which GraphicRune refuses, is.
func unshown(r rune) string {
	switch {
	case unicode.Is(unicode.Cc, r):
		return "a control character"
	case unicode.Is(unicode.Zs, r):
		return "a space other than U+0020"
	case unicode.Is(unicode.Cf, r):
		return "a format character: invisible, or reordering the text"
	case unicode.In(r, unicode.Zl, unicode.Zp):
		return "a line or paragraph separator"
	case blank(r):
		return "shown as nothing"
	}
	return "a private-use, surrogate or unassigned code point"
}

// Q is s quoted as %q quotes it, but with every character GraphicRune
// refuses escaped: %q leaves what Go counts printable (U+3164, U+2800, a
// variation selector) as it is, and "web\u3164" quoted so reads as
// "web". For text others wrote (labels, Consul documents, API and
// webhook bodies) quoted into an error or a message; strconv.Unquote
// reads it back.
func Q(s string) string { return quote(s) }

// QRune is r quoted as %q quotes a rune ('x', '\n'), but escaped when
// GraphicRune refuses it ('\u3164', which %q leaves as it is), as Q
// quotes a string.
func QRune(r rune) string {
	if GraphicRune(r) {
		return strconv.QuoteRune(r)
	}
	return "'" + escape(r) + "'"
}

// quote is s Go-quoted as strconv.Quote quotes it, but with every
// character GraphicRune refuses escaped (strconv.Quote leaves U+3164 or a
// variation selector as it is); strconv.Unquote reads it back.
func quote(s string) string {
	b := []byte{'"'}
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && n == 1:
			b = fmt.Appendf(b, `\x%02x`, s[0])
		case r == '"' || r == '\\':
			b = append(b, '\\', s[0])
		case !GraphicRune(r):
			b = append(b, escape(r)...)
		default:
			b = append(b, s[:n]...)
		}
		s = s[n:]
	}
	return string(append(b, '"'))
}

// escape is r as Go escapes it (\x1b, \r, \u00a0), or as a \u or \U
// escape where Go would leave it as it is (U+3164).
func escape(r rune) string {
	q := strconv.QuoteRune(r)
	if q = q[1 : len(q)-1]; strings.HasPrefix(q, `\`) {
		return q
	}
	if r > 0xffff {
		return fmt.Sprintf(`\U%08x`, r)
	}
	return fmt.Sprintf(`\u%04x`, r)
}

// Lines returns s with every character that is not graphic (GraphicRune)
// escaped as Go escapes it (\x1b, \r, \u202e, \u00a0; a byte that is not
// UTF-8 as \xNN), but
// newlines and tabs: it prints as the lines it holds and no others, and
// cannot move the cursor, rewrite the terminal or reorder what it shows.
// For messages, errors above all, whose text quotes what others wrote (a
// Consul key, a server's answer) and may run over lines (errors.Join).
func Lines(s string) string {
	if utf8.ValidString(s) && !strings.ContainsFunc(s, notLine) {
		return s
	}
	var b strings.Builder
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[0])
		case notLine(r):
			b.WriteString(escape(r))
		default:
			b.WriteString(s[:n])
		}
		s = s[n:]
	}
	return b.String()
}

func notLine(r rune) bool { return r != '\n' && r != '\t' && !GraphicRune(r) }

// WriteJSON writes v as indented JSON and a newline, with every character
// that is not graphic (GraphicRune: C1 controls such as U+009B, a CSI to
// terminals that take 8-bit controls; DEL; bidi overrides; spaces other
// than U+0020) as a \u escape: encoding/json
// escapes only C0 controls, and --json output quotes what others wrote
// and may go to a terminal. It decodes to the same values.
func WriteJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	out := escapeJSON(b)
	out = append(out, '\n')
	_, err = w.Write(out)
	return err
}

// escapeJSON returns the JSON text b with its characters that are not
// graphic as \u escapes. Outside strings JSON holds only graphic
// characters, spaces and newlines, so every one escaped is in a string,
// where an escape means the same. A byte that is not UTF-8 (Marshal
// replaces them, but not in a json.RawMessage) becomes \ufffd, as Marshal
// would have made it.
func escapeJSON(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		switch {
		case r == utf8.RuneError && n == 1:
			out = append(out, `\ufffd`...)
		case r == '\n' || GraphicRune(r):
			out = append(out, b[:n]...)
		case r > 0xffff:
			r1, r2 := utf16.EncodeRune(r)
			out = fmt.Appendf(out, `\u%04x\u%04x`, r1, r2)
		default:
			out = fmt.Appendf(out, `\u%04x`, r)
		}
		b = b[n:]
	}
	return out
}

// RedactAddr is addr with the password of its user information, if any,
// replaced by "xxxxx", as url.URL.Redacted does, for an address quoted in
// an error or a log. It is found by hand: a refused address may not parse
// as a URL, and may have no scheme ("ops:pw@host:8500"). A password may
// hold / ? # (base64 has /) and @, written unescaped: nothing tells which
// @ ends it, so the user information runs to the address's last @, a
// host and path hidden rather than part of a password shown. So an
// address with an @ in its path or query loses its host (and port) when
// what comes before the first / ? # can be user:password, or holds an @
// itself: http://ops:pw@host:8500/x@y is http://ops:xxxxx@y (the password
// may be pw@host:8500/x), http://prom:9090/x@y is http://prom:xxxxx@y.
// Only http, https, unix and tcp, in any case, are schemes (those of a
// Consul address, a Prometheus URL or its Location, a Docker daemon's
// address): ops://pw@host is the user ops and the password //pw. Such a
// scheme may itself be a user, its password starting with //: with it,
// an @ past the first / ? # hides all before it (http://prom/x@y may be
// the user http and the password //prom/x, and is http:xxxxx@y), but in
// a unix socket's path (unix:///run/docker@x/docker.sock, kept). Only
// without a scheme does a host that cannot be user:password (a name or
// IP address with no port, an IPv6 address in brackets) with no @ before
// it keep an @ after it (//prom/x@y). The forms every address of those
// schemes has are read as the scheme's, whatever else they may be:
// http://ops:pw@host shows the user ops (a user http's password
// //ops:pw would show its ops), http://ops@host keeps the user ops (a
// user http's password //ops would show whole).
func RedactAddr(addr string) string {
	prefix, rest := splitScheme(addr)
	end := len(rest)
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		end = i
	}
	at := strings.LastIndex(rest, "@")
	// The password starts at the first colon, which a user cannot hold;
	// one past the first / ? # would be a user's holding them, one past
	// the last @ a port's.
	colon := strings.Index(rest, ":")
	if at < 0 {
		return addr
	}
	if colon >= 0 && colon < end && colon < at && (strings.Contains(rest[:end], "@") || !isHost(rest[:end])) {
		return prefix + rest[:colon] + ":xxxxx@" + rest[at+1:]
	}
	// No password after the scheme; but the scheme may be a user, its
	// password running to an @ past the first / ? #.
	scheme, ok := strings.CutSuffix(prefix, "://")
	if !ok || at < end || strings.EqualFold(scheme, "unix") && strings.HasPrefix(rest, "/") {
		return addr
	}
	return scheme + ":xxxxx@" + rest[at+1:]
}

// knownScheme tells whether s is a scheme RedactAddr reads as one: http,
// https, unix or tcp (a Docker daemon's), in any case.
func knownScheme(s string) bool {
	for _, k := range []string{"http", "https", "unix", "tcp"} {
		if strings.EqualFold(s, k) {
			return true
		}
	}
	return false
}

// splitScheme cuts addr into its scheme and // ("https://"; "//" with no
// scheme) and the rest. Anything before a :// but a knownScheme is no
// scheme: a user, its password starting with //
// (ops://pw@host), or part of a password or a path (ops:a://b@host).
func splitScheme(addr string) (prefix, rest string) {
	if scheme, r, ok := strings.Cut(addr, "://"); ok && knownScheme(scheme) {
		return addr[:len(scheme)+3], r
	}
	if r, ok := strings.CutPrefix(addr, "//"); ok {
		return "//", r
	}
	return "", addr
}

// Head returns s when it has at most n bytes, else its first n bytes cut
// on a character boundary: a character that starts within n bytes and
// ends past them is left out whole. Bytes that are no UTF-8 have no
// boundary to keep; with no character starting in the last
// utf8.UTFMax-1 bytes before the cut, s is cut at n as it comes. So a
// head is never much shorter than n, however little of s is UTF-8.
func Head(s string, n int) string {
	if len(s) <= n {
		return s
	}
	if n <= 0 {
		return ""
	}
	for i := n; i > n-utf8.UTFMax && i > 0; i-- {
		if utf8.RuneStart(s[i]) {
			return s[:i]
		}
	}
	return s[:n]
}

// Tail returns s when it has at most n bytes, else its last n bytes cut
// on a character boundary, as Head cuts its first: a character that
// starts before the cut is left out whole, and with no character
// starting in the first utf8.UTFMax-1 bytes past it, s is cut at
// len(s)-n as it comes.
func Tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	if n <= 0 {
		return ""
	}
	start := len(s) - n
	for i := start; i < start+utf8.UTFMax && i < len(s); i++ {
		if utf8.RuneStart(s[i]) {
			return s[i:]
		}
	}
	return s[start:]
}

// Shorten returns s when it has at most n bytes, else its Head of n
// bytes, "…" and how long s was: "abc… (2097152 bytes)". For text that
// others wrote, of any size, quoted into a warning or a log.
func Shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return Head(s, n) + shortened(s)
}

// QuoteShort is s quoted as %q quotes it (with what Cell escapes escaped),
// Shortened as Shorten does:
// "\"abc\"… (2097152 bytes)". For text quoted into an error.
func QuoteShort(s string, n int) string {
	if len(s) <= n {
		return quote(s)
	}
	return quote(Head(s, n)) + shortened(s)
}

// shortened is what Shorten and QuoteShort append to a head of s.
func shortened(s string) string { return fmt.Sprintf("… (%d bytes)", len(s)) }

// LoopbackHost tells whether host, a name or IP address with no port
// and no brackets (url.URL.Hostname's), names this machine's loopback: a
// loopback address (IPv4-mapped, or with a zone, too) or localhost, in
// any case. What goes there in clear stays on the machine; the Consul
// client and the Prometheus adapter warn of credentials sent in clear
// anywhere else.
func LoopbackHost(host string) bool {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.IsLoopback()
	}
	return strings.EqualFold(host, "localhost")
}

// isHost tells whether s is a host with no port that cannot be
// user:password: a name or IPv4 address (no colon), an IPv6 address in
// brackets (a zone's % escaped as %25 or not) with a port after it or
// not, or one without brackets. A name:port can be user:password.
func isHost(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}
	if h, ok := strings.CutPrefix(s, "["); ok {
		_, port, ok := strings.Cut(h, "]")
		return ok && (port == "" || strings.HasPrefix(port, ":") && strings.Trim(port[1:], "0123456789") == "")
	}
	return !strings.Contains(s, ":")
}
