// Package shellword quotes words for the commands underlay prints for an
// operator to run (fixes, manual plans): a POSIX shell reads each back as
// the one word it was, whatever it holds, keys of Consul KV written by
// hand or by a bug included.
package shellword

import "strings"

// special holds the characters a shell would split a word at or expand.
const special = " \t\n'\"\\$`*?[]{}()<>|&;!#~"

// Quote returns s as one shell word: as it is when no character of it is
// special, else in single quotes (a quote inside closed, escaped and
// opened again).
func Quote(s string) string {
	if s != "" && !strings.ContainsAny(s, special) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
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
// printed for a key underlay cannot read.
func KVDelete(key string) string { return Join([]string{"consul", "kv", "delete", key}) }
