// Package shellword quotes words for the commands underlay prints for an
// operator to run (fixes, manual plans): a POSIX shell reads each back as
// the one word it was, whatever it holds, keys of Consul KV written by
// hand or by a bug included. Each word is printed on one line in graphic
// characters only, so that a value cannot forge a line of the output,
// rewrite the terminal or break a copied command across lines.
package shellword

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/termtext"
)

// special holds the characters a shell would split a word at or expand.
const special = " \t\n'\"\\$`*?[]{}()<>|&;!#~"

// Quote returns s as one shell word on one line, in graphic characters
// only:
//   - as it is when it is printable ASCII and no character of it is
//     special;
//   - else in single quotes (a quote inside closed, escaped and opened
//     again) when it is valid UTF-8 and every character of it graphic;
//   - else (a control character, a format character such as a bidi
//     override, a line separator, a space other than U+0020, invalid
//     UTF-8: what termtext.GraphicRune refuses) as printf's output:
//     "$(printf 'a\033b')", each such byte an octal escape, which POSIX
//     printf writes back as that byte. bash's $'...' would be shorter,
//     but sh (dash) reads it as a $ and a quoted word.
//
// A value no such word holds is refused: one ending in a newline (a
// command substitution drops trailing newlines, so it would name another
// value) or holding a NUL (no argument can). Quote then returns
// ")unquotable:" and s Go-quoted: a syntax error wherever it stands, so
// that a shell runs no part of the command line it was copied into.
func Quote(s string) string {
	switch {
	case s != "" && plainASCII(s) && !strings.ContainsAny(s, special):
		return s
	case termtext.Graphic(s):
		return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
	case strings.HasSuffix(s, "\n") || strings.Contains(s, "\x00"):
		return ")unquotable:" + strconv.Quote(s)
	}
	return `"$(printf '` + printfFormat(s) + `')"`
}

// printfFormat is a printf format that writes s: graphic characters as
// they are, but for printf's own \ and %, and ' and ! (the quote around
// the format, and bash's history expansion, which double quotes do not
// stop); every other byte as an octal escape. A leading - is escaped too:
// printf (dash's, bash's) takes a format beginning with - for an option,
// prints nothing and fails, and the substitution would give "".
func printfFormat(s string) string {
	var b strings.Builder
	if strings.HasPrefix(s, "-") {
		b.WriteString(`\055`)
		s = s[1:]
	}
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case r == '%':
			b.WriteString("%%")
		case r == '\'' || r == '!' || r == utf8.RuneError && n == 1 || !termtext.GraphicRune(r):
			for i := range n {
				fmt.Fprintf(&b, `\%03o`, s[i])
			}
		default:
			b.WriteString(s[:n])
		}
		s = s[n:]
	}
	return b.String()
}

// plainASCII says whether s is printable ASCII with no space.
func plainASCII(s string) bool {
	for i := range len(s) {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// Join quotes each of args and joins them with spaces.
func Join(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = Quote(a)
	}
	return strings.Join(out, " ")
}

// KVDelete is the command that removes one Consul KV key: the fix
// printed for a key underlay cannot read. A key no shell word holds (see
// Quote) gives a command a shell refuses to run.
func KVDelete(key string) string { return Join([]string{"consul", "kv", "delete", key}) }

// KVRemoval is how one Consul KV key goes, in a result's words: fix is
// KVDelete(key) followed by note (what happens next, for the reader);
// or, for a key whose path Consul's HTTP API redirects to another key
// (kvstore.PathRedirected), which that command would miss while saying
// it deleted it, fix is "", no command, and why says how to remove it
// instead, to append to the result's message.
func KVRemoval(key, note string) (fix, why string) {
	if kvstore.PathRedirected(key) {
		return "", "; Consul's HTTP API redirects its path to another key, so `consul kv delete` misses it: remove it by a transaction naming it (PUT /v1/txn, verb delete)"
	}
	return KVDelete(key) + note, ""
}
