# unit-env.awk prints the --state-dir underlay-agent.service would give
# the agent at its next start, read from its unit files (the arguments:
# the unit file, then its drop-ins, in systemd's order) as systemd reads
# them: the --state-dir of its ExecStart=, else UNDERLAY_STATE_DIR of its
# environment, as the agent takes a flag over its variable. It fails when
# neither is set, and when the value depends on what it cannot know (a
# variable the unit's files do not set, a specifier it leaves), saying
# why. The files are read as data, never run. Used by the package's
# prerm when no agent runs; installed as /usr/share/underlay/unit-env.awk,
# apart from the prerm so that the maintainer script holds shell only.
#
# Variables (awk -v): name, the variable; unit, the unit's name (%n, %N,
# %p); nounit, empty when no unit file was found (then agentenv alone is
# read); systemd, systemd's version ("" unknown); agentenv, the package's
# EnvironmentFile (/etc/underlay/agent.env). The host name (%H) is
# UNDERLAY_HOST of the environment, as it is (-v would take its
# backslashes for escapes).
BEGIN {
	host = ENVIRON["UNDERLAY_HOST"]
	comment_goes_on = systemd != "" && systemd + 0 < 254
	sq = sprintf("%c", 39)
	esc["a"] = sprintf("%c", 7); esc["b"] = sprintf("%c", 8); esc["f"] = sprintf("%c", 12)
	esc["n"] = "\n"; esc["r"] = "\r"; esc["t"] = "\t"; esc["v"] = sprintf("%c", 11)
	esc["\\"] = "\\"; esc["\""] = "\""; esc[sq] = sq; esc["s"] = " "
	hex = "0123456789abcdef"
	# A byte's value (run under LC_ALL=C: a string is bytes).
	for (b = 1; b < 256; b++) ord[sprintf("%c", b)] = b
	# The directories of the system manager, as its specifiers name them
	# (strings only: nothing there is read or written).
	dirs["S"] = "/var/lib"; dirs["t"] = "/run"; dirs["C"] = "/var/cache"
	dirs["L"] = "/var/log"; dirs["E"] = "/etc"; dirs["T"] = "/tmp"; dirs["V"] = "/var/tmp"
}
# specifiers resolves the specifiers of s that name the same for every
# system service: %% %H (but with no host name: "" or "(none)") %n %N
# %p and the directories. Any other
# (%h %m %i...) systemd resolves from the running system or refuses;
# guessed, it could send cleanup and purge to a directory not the
# agent's, so it stays as written and unres names it ("" when none):
# a value it makes is not known here. As in systemd, a % before what
# is not a letter or digit stays.
function specifiers(s,   out, c, i) {
	out = ""; unres = ""
	while ((i = index(s, "%")) > 0) {
		out = out substr(s, 1, i - 1)
		c = substr(s, i + 1, 1)
		if (c == "%") out = out "%"
		# No host name: systemd's is its default one, not known here.
		else if (c == "H" && host != "" && host != "(none)") out = out host
		else if (c == "n") out = out unit
		else if (c == "N" || c == "p") out = out substr(unit, 1, length(unit) - 8)
		else if (c in dirs) out = out dirs[c]
		else {
			if (c ~ /[A-Za-z0-9]/ && unres == "") unres = "%" c
			out = out "%" c
		}
		s = substr(s, i + 2)
	}
	return out s
}
# hexval is the value of the hexadecimal digits s, -1 when s is not m
# of them.
function hexval(s, m,   k, d, v) {
	if (length(s) != m) return -1
	v = 0
	for (k = 1; k <= m; k++) {
		d = index(hex, tolower(substr(s, k, 1)))
		if (d == 0) return -1
		v = v * 16 + d - 1
	}
	return v
}
# unichar tells whether c is a code point systemd's unichar_is_valid
# takes: none past U+10FFFF, no UTF-16 surrogate, no noncharacter.
function unichar(c) {
	return c < 1114112 && !(c >= 55296 && c < 57344) && !(c >= 64976 && c <= 65007) && c % 65536 < 65534
}
# utf8 is code point c written in UTF-8, as systemd's
# utf8_encode_unichar writes it (a surrogate too).
function utf8(c) {
	if (c < 128) return sprintf("%c", c)
	if (c < 2048) return sprintf("%c%c", 192 + int(c / 64), 128 + c % 64)
	if (c < 65536) return sprintf("%c%c%c", 224 + int(c / 4096), 128 + int(c / 64) % 64, 128 + c % 64)
	return sprintf("%c%c%c%c", 240 + int(c / 262144), 128 + int(c / 4096) % 64, 128 + int(c / 64) % 64, 128 + c % 64)
}
# validutf8 tells whether s is UTF-8 as systemd's utf8_is_valid takes it:
# no byte out of a sequence, no overlong form, each code point one
# unichar takes.
function validutf8(s,   n, k, j, b, m, c) {
	n = length(s)
	for (k = 1; k <= n; k += m) {
		b = ord[substr(s, k, 1)]
		if (b < 128) { m = 1; continue }
		if (b >= 192 && b < 224) { m = 2; c = b - 192 }
		else if (b >= 224 && b < 240) { m = 3; c = b - 224 }
		else if (b >= 240 && b < 248) { m = 4; c = b - 240 }
		else return 0
		if (k + m - 1 > n) return 0
		for (j = 1; j < m; j++) {
			b = ord[substr(s, k + j, 1)]
			if (b < 128 || b >= 192) return 0
			c = c * 64 + b - 128
		}
		if (c < 128 || (m > 2 && c < 2048) || (m > 3 && c < 65536) || !unichar(c)) return 0
	}
	return 1
}
# words splits v into w[1..n] and returns n, as systemd's
# extract_first_word (unquote, C escapes) does: words split by blanks,
# quotes off, C escapes (\x and octal a byte, \u and \U a code point in
# UTF-8: cunescape_one's limits, no NUL). A bad escape or an open quote
# ends it there (werr set), as in systemd. For an ExecStart= (exec), an
# unquoted ; word separates commands (sep[k] set) and \; is a plain ;.
function words(v, w, sep, exec,   n, len, c, nx, word, inword, quote, e, k) {
	len = length(v); n = 0; werr = 0
	word = ""; inword = 0; quote = ""
	for (k = 1; k <= len + 1; k++) {
		c = k <= len ? substr(v, k, 1) : ""
		if (c == "" || (quote == "" && (c == " " || c == "\t"))) {
			if (quote != "") { werr = 1; return n }
			if (inword) { w[++n] = word; sep[n] = 0 }
			word = ""; inword = 0
			if (c == "") return n
			continue
		}
		if (exec && !inword) {
			nx = substr(v, k + 1, 1)
			if (c == ";" && (nx == "" || nx == " " || nx == "\t")) { w[++n] = ";"; sep[n] = 1; continue }
			if (c == "\\" && nx == ";" && substr(v, k + 2, 1) ~ /^[ \t]?$/) { w[++n] = ";"; sep[n] = 0; k++; continue }
		}
		inword = 1
		if (c == "\\") {
			k++
			c = substr(v, k, 1)
			if (c in esc) { word = word esc[c]; continue }
			if (c == "x" && (e = hexval(substr(v, k + 1, 2), 2)) > 0) {
				word = word sprintf("%c", e)
				k += 2
				continue
			}
			if (substr(v, k, 3) ~ /^[0-3][0-7][0-7]$/ && substr(v, k, 3) != "000") {
				word = word sprintf("%c", substr(v, k, 1) * 64 + substr(v, k + 1, 1) * 8 + substr(v, k + 2, 1))
				k += 2
				continue
			}
			# \u: any code point but 0; \U: a valid one.
			if ((c == "u" || c == "U") && (e = hexval(substr(v, k + 1, c == "u" ? 4 : 8), c == "u" ? 4 : 8)) > 0 && (c == "u" || unichar(e))) {
				word = word utf8(e)
				k += c == "u" ? 4 : 8
				continue
			}
			werr = 1
			return n
		}
		if (quote != "" && c == quote) { quote = ""; continue }
		if (quote == "" && (c == "\"" || c == sq)) { quote = c; continue }
		word = word c
	}
}
# envname tells whether k names a variable as systemd's
# env_name_is_valid (v252) takes it: letters, digits and "_", not
# starting with a digit. (Its limit, ARG_MAX less 2 bytes, is not
# checked: no unit's variable comes near.)
function envname(k) { return k ~ /^[A-Za-z_][A-Za-z0-9_]*$/ }
# environment reads an Environment= value: each word NAME=VALUE, its
# specifiers resolved, sets NAME; one systemd's env_assignment_is_valid
# refuses once resolved (after specifier_printf: %H may make any byte) is
# ignored, as systemd ignores it: a NAME envname refuses, a VALUE not
# UTF-8. A NAME not known here (an unresolved specifier) may be any
# variable, unless what is known of it already makes no name (a
# character envname refuses, a leading digit); a VALUE not known here is
# so whether UTF-8 or not (what systemd makes of %i may join the bytes
# around it into a character).
function environment(v,   w, sep, n, j, eq, k, val, rest) {
	n = words(v, w, sep, 0)
	for (j = 1; j <= n; j++) {
		# The word's first "=" is its own: only %H could make one before
		# it, in a name with a host name, which no unit means.
		eq = index(w[j], "=")
		if (eq <= 1) continue
		k = specifiers(substr(w[j], 1, eq - 1))
		if (unres != "") {
			rest = k
			gsub(/%[A-Za-z0-9]/, "", rest)
			if (rest ~ /^[A-Za-z0-9_]*$/ && k !~ /^[0-9]/) anyvar("Environment= names a variable with " unres)
			continue
		}
		if (!envname(k)) continue
		val = specifiers(substr(w[j], eq + 1))
		if (unres != "") setenv(k, val, "Environment= sets " k " with " unres)
		else if (validutf8(k "=" val)) setenv(k, val, "")
	}
}
# setenv sets a variable of the agent's environment; why, when not "",
# says why its value is not known here.
function setenv(k, v, why) { env[k] = v; has[k] = 1; bad[k] = why; gen[k] = wild }
# anyvar records that any variable not set after this may have a value
# not known here, and why.
function anyvar(why) { wild++; wildwhy = why }
# unknown says why variable k's value is not known here, "" when it is.
function unknown(k) {
	if (has[k] && bad[k] != "") return bad[k]
	if (wild && (!has[k] || gen[k] < wild)) return wildwhy
	return ""
}
# execstart reads an ExecStart= value as systemd's config_parse_exec
# does, keeping its last command (a service runs one): its prefixes
# (@: the second word is argv[0]; :, no variable expansion), then its
# arguments, specifiers resolved. A line systemd cannot parse fails the
# unit: nothing started from it tells the agent's --state-dir.
function execstart(v,   w, sep, n, j, first, f, skip) {
	n = words(v, w, sep, 1)
	if (werr) { execbad = v; return }
	first = 1
	for (j = 1; j <= n; j++) {
		if (sep[j]) { first = 1; continue }
		if (first) {
			first = 0; nargs = 0; noexpand = 0; skip = 0; hasexec = 1
			f = w[j]
			while (f ~ /^[-@:+!]/) {
				if (substr(f, 1, 1) == "@") skip = 1
				if (substr(f, 1, 1) == ":") noexpand = 1
				f = substr(f, 2)
			}
			continue
		}
		if (skip) { skip = 0; continue }
		args[++nargs] = specifiers(w[j]); argunres[nargs] = unres
	}
}
# refuse says why the unit's files do not tell the agent's state
# directory, and fails.
function refuse(why) {
	print "underlay: cannot tell the agent's state directory from its unit: " why "; taking the default" | "cat 1>&2"
	close("cat 1>&2")
	exit 1
}
# known tells whether the unit's files set variable k (fails, saying so,
# when they do not: systemd's and the manager's own variables are not
# known here).
function known(k) {
	if (unknown(k) != "") refuse("ExecStart= uses $" k ", and " unknown(k) ", not resolved here")
	if (!has[k]) refuse("ExecStart= uses $" k ", which its files do not set")
	return 1
}
# expand replaces ${NAME} and $$ in a word of ExecStart= as systemd's
# replace_env does; $NAME within a word is kept as it is.
function expand(s,   out, i, c, rest, j, name) {
	out = ""
	while ((i = index(s, "$")) > 0) {
		out = out substr(s, 1, i - 1)
		c = substr(s, i + 1, 1)
		if (c == "$") { out = out "$"; s = substr(s, i + 2); continue }
		if (c != "{") { out = out "$"; s = substr(s, i + 1); continue }
		rest = substr(s, i + 2)
		j = match(rest, /[}:]/)
		if (j == 0) { out = out substr(s, i); s = ""; break }
		name = substr(rest, 1, j - 1)
		if (substr(rest, j, 1) == ":") { out = out "${" name ":"; s = substr(rest, j + 1); continue }
		known(name)
		out = out env[name]
		s = substr(rest, j + 1)
	}
	return out s
}
# splitenv splits a variable's value into w[1..n] as systemd does for a
# $NAME word of ExecStart= (quotes off, a backslash takes the next
# character as it is, an open quote or a last backslash tolerated).
function splitenv(v, w,   n, len, k, c, word, inword, quote) {
	len = length(v); n = 0; word = ""; inword = 0; quote = ""
	for (k = 1; k <= len; k++) {
		c = substr(v, k, 1)
		if (quote == "" && (c == " " || c == "\t" || c == "\n" || c == "\r")) {
			if (inword) w[++n] = word
			word = ""; inword = 0
			continue
		}
		inword = 1
		if (c == "\\") { k++; word = word substr(v, k, 1); continue }
		if (quote != "" && c == quote) { quote = ""; continue }
		if (quote == "" && (c == "\"" || c == sq)) { quote = c; continue }
		word = word c
	}
	if (inword) w[++n] = word
	return n
}
# flag prints the --state-dir the agent's command line gives it, its
# variables expanded as systemd does at its start, and exits; it returns
# when none is given. As the agent's flags: the last wins, none after --.
function flag(   argv, argu, n, j, k, m, parts, take, dir, dirwhy, found) {
	n = 0
	for (j = 1; j <= nargs; j++) {
		if (argunres[j] != "") { argv[++n] = args[j]; argu[n] = argunres[j]; continue }
		if (!noexpand && args[j] == "$") continue
		if (!noexpand && args[j] ~ /^\$[^{$]/) {
			k = substr(args[j], 2)
			known(k)
			m = splitenv(env[k], parts)
			for (k = 1; k <= m; k++) { argv[++n] = parts[k]; argu[n] = "" }
			continue
		}
		argv[++n] = noexpand ? args[j] : expand(args[j]); argu[n] = ""
	}
	take = 0; found = 0
	for (j = 1; j <= n; j++) {
		# A word with an unresolved specifier is no -- nor --state-dir;
		# as a --state-dir it is known only if a later one replaces it.
		if (take || substr(argv[j], 1, 12) == "--state-dir=") {
			dir = take ? argv[j] : substr(argv[j], 13); dirwhy = argu[j]; found = 1; take = 0
			continue
		}
		if (argu[j] != "") continue
		if (argv[j] == "--") break
		if (argv[j] == "--state-dir") take = 1
	}
	if (dirwhy != "") refuse("its ExecStart= gives --state-dir with " dirwhy ", not resolved here")
	if (found) { print dir; exit 0 }
}
# isdir tells whether f is a directory (or a link to one), asked of
# test(1), its name quoted: only its type is looked at.
function isdir(f,   q, i) {
	q = ""
	while ((i = index(f, sq)) > 0) { q = q substr(f, 1, i - 1) sq "\\" sq sq; f = substr(f, i + 1) }
	return system("test -d " sq q f sq) == 0
}
# envfile reads an EnvironmentFile= as systemd (env-file.c) does. A file
# it cannot read (a directory among them: read_full_stream fails with
# EISDIR), or with a key or value not UTF-8 (load_env_file_push: the
# whole file fails), named with "-" (optional) is left out; any other
# fails the agent's start (exec_context_load_environment), so that
# nothing of the unit tells its state directory. A directory is looked
# for first: mawk's getline stops the program on one ("read error").
function envfile(f, optional,   line, s, n, k, c, st, key, val, kws, vws, first, r) {
	if (isdir(f)) {
		if (!optional) refuse("systemd cannot load its EnvironmentFile=" f " (a directory), nor start the agent")
		return
	}
	s = ""; first = 1
	while ((r = getline line <f) > 0) { s = first ? line : s "\n" line; first = 0 }
	close(f)
	if (r < 0) {
		if (!optional) refuse("systemd cannot load its EnvironmentFile=" f " (not read), nor start the agent")
		return
	}
	n = length(s); st = "prekey"; key = ""; val = ""; npushed = 0; notutf8 = 0
	for (k = 1; k <= n; k++) {
		c = substr(s, k, 1)
		if (st == "prekey") {
			if (c == "#" || c == ";") st = "comment"
			else if (c !~ /[ \t\n\r]/) { st = "key"; key = c; kws = 0 }
		} else if (st == "key") {
			if (c == "\n" || c == "\r") st = "prekey"
			else if (c == "=") { st = "prevalue"; val = ""; vws = 0 }
			else {
				if (c !~ /[ \t]/) kws = 0
				else if (!kws) kws = length(key) + 1
				key = key c
			}
		} else if (st == "prevalue") {
			if (c == "\n" || c == "\r") { push(key, kws, val); st = "prekey" }
			else if (c == sq) st = "squote"
			else if (c == "\"") st = "dquote"
			else if (c == "\\") st = "escape"
			else if (c !~ /[ \t]/) { st = "value"; val = val c }
		} else if (st == "value") {
			if (c == "\n" || c == "\r") { push(key, kws, vws ? substr(val, 1, vws - 1) : val); st = "prekey" }
			else if (c == "\\") { st = "escape"; vws = 0 }
			else {
				if (c !~ /[ \t]/) vws = 0
				else if (!vws) vws = length(val) + 1
				val = val c
			}
		} else if (st == "escape") {
			st = "value"
			if (c != "\n" && c != "\r") val = val c
		} else if (st == "squote") {
			if (c == sq) st = "prevalue"
			else val = val c
		} else if (st == "dquote") {
			if (c == "\"") st = "prevalue"
			else if (c == "\\") st = "descape"
			else val = val c
		} else if (st == "descape") {
			st = "dquote"
			if (c == "\"" || c == "\\" || c == "`" || c == "$") val = val c
			else if (c != "\n") val = val "\\" c
		} else if (st == "comment") {
			if (c == "\\") st = "cescape"
			else if (c == "\n" || c == "\r") st = "prekey"
		} else if (st == "cescape") {
			st = (c == "\n" || c == "\r") && !comment_goes_on ? "prekey" : "comment"
		}
	}
	if (st == "value") push(key, kws, vws ? substr(val, 1, vws - 1) : val)
	else if (st != "prekey" && st != "key" && st != "comment" && st != "cescape") push(key, kws, val)
	if (notutf8 && !optional) refuse("systemd cannot load its EnvironmentFile=" f " (not UTF-8), nor start the agent")
	# As exec_context_load_environment (strv_env_clean_with_callback): an
	# assignment whose name envname refuses is ignored.
	for (k = 1; k <= npushed && !notutf8; k++) if (envname(pushedkey[k])) setenv(pushedkey[k], pushedval[k], "")
}
# push keeps an assignment of the file envfile reads, for it to set once
# the whole file is read; notutf8 is set when it is not UTF-8.
function push(key, kws, val) {
	if (kws) key = substr(key, 1, kws - 1)
	if (!validutf8(key) || !validutf8(val)) notutf8 = 1
	pushedkey[++npushed] = key; pushedval[npushed] = val
}
# A unit file, as systemd's conf-parser.c reads it: a comment line is
# skipped, in a continuation too; a line whose last character is a
# backslash not itself escaped (an odd run of them) goes on, that
# backslash made a blank, and the next is joined as it is, leading blanks
# kept (they count inside quotes); the joined line is then stripped.
# A continuation left at a file's end is parsed there. Settings of
# [Service] only.
{
	if (FNR == 1) {
		if (cont != "") setting(cont)
		section = ""; cont = ""
	}
	line = $0
	sub(/\r$/, "", line)
	if (line ~ /^[ \t]*[#;]/) next
	if (match(line, /\\+$/) && RLENGTH % 2 == 1) { cont = cont substr(line, 1, length(line) - 1) " "; next }
	line = cont line; cont = ""
	setting(line)
}
# setting reads one whole line of a unit file: a section's start, or a
# setting.
function setting(line,   k, v) {
	sub(/^[ \t]+/, "", line); sub(/[ \t]+$/, "", line)
	if (line == "") return
	if (line ~ /^\[/) { section = line; return }
	if (section != "[Service]" || index(line, "=") == 0) return
	k = substr(line, 1, index(line, "=") - 1); v = substr(line, index(line, "=") + 1)
	sub(/[ \t]+$/, "", k); sub(/^[ \t]+/, "", v)
	if (k == "Environment") {
		if (v == "") {
			for (k in has) { delete has[k]; delete env[k]; delete bad[k]; delete gen[k] }
			wild = 0
		} else environment(v)
	} else if (k == "ExecStart") {
		if (v == "") { nargs = 0; hasexec = 0 }
		else execstart(v)
	} else if (k == "EnvironmentFile") {
		if (v == "") nfiles = 0
		else { files[++nfiles] = specifiers(v); fileunres[nfiles] = unres }
	}
}
END {
	if (cont != "") setting(cont)
	# As the package's unit names it: optional.
	if (nounit == "") files[++nfiles] = "-" agentenv
	for (j = 1; j <= nfiles; j++) {
		f = files[j]
		optional = sub(/^-/, "", f)
		if (fileunres[j] != "") anyvar("EnvironmentFile=" f " has " fileunres[j])
		# Not absolute: systemd ignores the setting. A glob pattern:
		# systemd reads the files it matches, not looked for here.
		else if (f !~ /^\//) continue
		else if (f ~ /[*?[]/) anyvar("EnvironmentFile=" f " is a glob pattern")
		else envfile(f, optional)
	}
	if (execbad != "") refuse("systemd cannot parse its ExecStart=" execbad)
	if (hasexec) flag()
	if (unknown(name) != "") refuse(unknown(name) ", not resolved here")
	if (has[name]) { print env[name]; exit 0 }
	exit 1
}
