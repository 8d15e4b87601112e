// Package termtext makes text that underlay prints for a reader (tables,
// messages) safe to print: much of it comes from documents other nodes,
// other writers or webhook senders wrote (node facts and reports, scaling
// history, Consul keys), and printed as it is, a newline there would forge
// a line, a tab shift a table's columns and an escape sequence rewrite the
// terminal.
package termtext

import (
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
