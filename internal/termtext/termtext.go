// Package termtext makes text that underlay prints for a reader (tables,
// messages) safe to print: much of it comes from documents other nodes,
// other writers or webhook senders wrote (node facts and reports, scaling
// history, Consul keys), and printed as it is, a newline there would forge
// a line, a tab shift a table's columns and an escape sequence rewrite the
// terminal.
package termtext

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Cell returns s as it is when it is valid UTF-8 and every character of
// it is graphic (spaces included), else Go-quoted, so that it prints on
// one line, in one table cell, and shows what it holds.
func Cell(s string) string {
	if utf8.ValidString(s) && !strings.ContainsFunc(s, notGraphic) {
		return s
	}
	return strconv.Quote(s)
}

func notGraphic(r rune) bool { return !unicode.IsGraphic(r) }

// Lines returns s with every character that is not graphic escaped as Go
// escapes it (\x1b, \r, \u202e; a byte that is not UTF-8 as \xNN), but
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
			q := strconv.QuoteRune(r) // '\x1b': the escape between quotes
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[:n])
		}
		s = s[n:]
	}
	return b.String()
}

func notLine(r rune) bool { return r != '\n' && r != '\t' && !unicode.IsGraphic(r) }
