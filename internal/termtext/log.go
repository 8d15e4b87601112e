package termtext

import (
	"bytes"
	"io"
	"log/slog"
	"unicode/utf8"
)

// NewTextLogHandler is slog.NewTextHandler writing to w, with every line
// passed through EscapeTextLog: log values hold text others wrote
// (container labels, Consul documents, API bodies), and the handler
// leaves some of it as it is (U+3164, U+2800, a variation selector).
func NewTextLogHandler(w io.Writer, opts *slog.HandlerOptions) *slog.TextHandler {
	return slog.NewTextHandler(lineWriter{w, EscapeTextLog}, opts)
}

// NewJSONLogHandler is slog.NewJSONHandler writing to w, with every line
// passed through EscapeJSONLog: the handler escapes only C0 controls,
// quotes, backslashes, U+2028/9 and HTML's characters, and writes a
// bidi override or a space other than U+0020 as it is.
func NewJSONLogHandler(w io.Writer, opts *slog.HandlerOptions) *slog.JSONHandler {
	return slog.NewJSONHandler(lineWriter{w, EscapeJSONLog}, opts)
}

// lineWriter writes what escape makes of each Write. slog's handlers
// write each record, whole, in a single Write, and serialize them.
type lineWriter struct {
	w      io.Writer
	escape func([]byte) []byte
}

func (lw lineWriter) Write(p []byte) (int, error) {
	if _, err := lw.w.Write(lw.escape(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// EscapeJSONLog returns line, a line of JSON (slog's JSONHandler's), with
// every character GraphicRune refuses but the newline written as a \u
// escape, as WriteJSON writes its characters: it decodes to the same
// values. A value that held the six characters \u3164 shows as
// "\\u3164", one that held U+3164 as "\u3164". A line that is Graphic
// but for newlines is returned as it is.
func EscapeJSONLog(line []byte) []byte {
	if logSafe(line) {
		return line
	}
	return escapeJSON(line)
}

// EscapeTextLog returns line, a line slog's TextHandler wrote, with every
// character GraphicRune refuses escaped as Go escapes it (\u3164, \u202e,
// a byte that is not UTF-8 as \xNN), so that the line shows what its
// values hold; one that is Graphic but for newlines is returned as it is.
// The handler writes a key or value bare, or quoted with strconv.Quote
// when it holds a space, a quote, an = or what unicode.IsPrint refuses.
// In a quoted one an escape is Go's, and a backslash written is \\. A
// bare one holding what GraphicRune refuses (U+3164, U+2800 are
// printable to unicode.IsPrint) is quoted as Cell quotes it: name=web\u3164,
// bare, is the six characters \u3164 written, name="web\u3164" the
// character U+3164. So a value with an escape is always quoted, and one
// that is not quoted holds no escape, and strconv.Unquote reads each
// quoted one back.
func EscapeTextLog(line []byte) []byte {
	if logSafe(line) {
		return line
	}
	out := make([]byte, 0, len(line)+16)
	for len(line) > 0 {
		var n int
		switch line[0] {
		case ' ', '=', '\n':
			n = 1
			out = append(out, line[0])
		case '"':
			n = quotedLen(line)
			out = appendEscaped(out, line[:n])
		default:
			n = bytes.IndexAny(line, " =\"\n")
			if n < 0 {
				n = len(line)
			}
			if tok := line[:n]; logSafe(tok) {
				out = append(out, tok...)
			} else {
				out = append(out, quote(string(tok))...)
			}
		}
		line = line[n:]
	}
	return out
}

// logSafe says b is UTF-8 with every character of it graphic
// (GraphicRune) or a newline.
func logSafe(b []byte) bool {
	return utf8.Valid(b) && !bytes.ContainsFunc(b, func(r rune) bool { return r != '\n' && !GraphicRune(r) })
}

// quotedLen is the length of the quoted string b starts with, through its
// closing quote; a newline, or the end of b, ends one not closed.
func quotedLen(b []byte) int {
	for i := 1; i < len(b); i++ {
		switch b[i] {
		case '\\':
			if i+1 < len(b) && b[i+1] != '\n' {
				i++
			}
		case '"':
			return i + 1
		case '\n':
			return i
		}
	}
	return len(b)
}

// appendEscaped appends q, a quoted string, with every character in it
// GraphicRune refuses escaped; an escape in q stays what it is, as every
// character that follows a backslash in strconv.Quote's output is ASCII.
func appendEscaped(out, q []byte) []byte {
	for len(q) > 0 {
		r, n := utf8.DecodeRune(q)
		switch {
		case r == utf8.RuneError && n == 1:
			out = append(out, `\x`...)
			out = append(out, "0123456789abcdef"[q[0]>>4], "0123456789abcdef"[q[0]&0xf])
		case !GraphicRune(r):
			out = append(out, escape(r)...)
		default:
			out = append(out, q[:n]...)
		}
		q = q[n:]
	}
	return out
}
