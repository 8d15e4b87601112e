# unit-env.awk prints UNDERLAY_STATE_DIR as underlay-agent.service would
# get it at its next start, read from its unit files (the arguments: the
# unit file, then its drop-ins, in systemd's order) as systemd reads them.
# The files are read as data, never run. Used by the package's prerm when
# no agent runs; installed as /usr/share/underlay/unit-env.awk, apart from
# the prerm so that the maintainer script holds shell only.
#
# Variables (awk -v): name, the variable; host, the host name (%H); unit,
# the unit's name (%n, %N, %p); nounit, empty when no unit file was found
# (then agentenv alone is read); systemd, systemd's version ("" unknown);
# agentenv, the package's EnvironmentFile (/etc/underlay/agent.env).
BEGIN {
	comment_goes_on = systemd != "" && systemd + 0 < 254
	sq = sprintf("%c", 39)
	esc["a"] = sprintf("%c", 7); esc["b"] = sprintf("%c", 8); esc["f"] = sprintf("%c", 12)
	esc["n"] = "\n"; esc["r"] = "\r"; esc["t"] = "\t"; esc["v"] = sprintf("%c", 11)
	esc["\\"] = "\\"; esc["\""] = "\""; esc[sq] = sq; esc["s"] = " "
	hex = "0123456789abcdef"
	# The directories of the system manager, as its specifiers name them
	# (strings only: nothing there is read or written).
	dirs["S"] = "/var/lib"; dirs["t"] = "/run"; dirs["C"] = "/var/cache"
	dirs["L"] = "/var/log"; dirs["E"] = "/etc"; dirs["T"] = "/tmp"; dirs["V"] = "/var/tmp"
}
function specifiers(s,   out, c, i) {
	out = ""
	while ((i = index(s, "%")) > 0) {
		out = out substr(s, 1, i - 1)
		c = substr(s, i + 1, 1)
		if (c == "%") out = out "%"
		else if (c == "H") out = out host
		else if (c == "n") out = out unit
		else if (c == "N" || c == "p") out = out substr(unit, 1, length(unit) - 8)
		else if (c in dirs) out = out dirs[c]
		else out = out "%" c
		s = substr(s, i + 2)
	}
	return out s
}
# environment reads an Environment= value: words split by blanks,
# quotes off, C escapes; a bad escape ends it, as in systemd.
function environment(v,   n, c, word, inword, quote, e, k, j) {
	n = length(v)
	word = ""; inword = 0; quote = ""
	for (k = 1; k <= n + 1; k++) {
		c = k <= n ? substr(v, k, 1) : ""
		if (c == "" || (quote == "" && (c == " " || c == "\t"))) {
			if (quote != "") return
			if (inword) assign(specifiers(word))
			word = ""; inword = 0
			if (c == "") return
			continue
		}
		inword = 1
		if (c == "\\") {
			k++
			c = substr(v, k, 1)
			if (c in esc) { word = word esc[c]; continue }
			if (c == "x" && substr(v, k + 1, 2) ~ /^[0-9a-fA-F][0-9a-fA-F]$/) {
				e = tolower(substr(v, k + 1, 2))
				word = word sprintf("%c", (index(hex, substr(e, 1, 1)) - 1) * 16 + index(hex, substr(e, 2, 1)) - 1)
				k += 2
				continue
			}
			if (substr(v, k, 3) ~ /^[0-3][0-7][0-7]$/) {
				word = word sprintf("%c", substr(v, k, 1) * 64 + substr(v, k + 1, 1) * 8 + substr(v, k + 2, 1))
				k += 2
				continue
			}
			return
		}
		if (quote != "" && c == quote) { quote = ""; continue }
		if (quote == "" && (c == "\"" || c == sq)) { quote = c; continue }
		word = word c
	}
}
function assign(w) {
	if (substr(w, 1, length(name) + 1) == name "=") { value = substr(w, length(name) + 2); set = 1 }
}
# envfile reads an EnvironmentFile= as systemd (env-file.c) does.
function envfile(f,   line, s, n, k, c, st, key, val, kws, vws, first) {
	s = ""; first = 1
	while ((getline line <f) > 0) { s = first ? line : s "\n" line; first = 0 }
	close(f)
	n = length(s); st = "prekey"; key = ""; val = ""
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
}
function push(key, kws, val) {
	if (kws) key = substr(key, 1, kws - 1)
	if (key == name) { value = val; set = 1 }
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
		if (v == "") set = 0
		else environment(v)
	} else if (k == "EnvironmentFile") {
		if (v == "") nfiles = 0
		else files[++nfiles] = specifiers(v)
	}
}
END {
	if (cont != "") setting(cont)
	if (nounit == "") files[++nfiles] = agentenv
	for (j = 1; j <= nfiles; j++) {
		f = files[j]
		sub(/^-/, "", f)
		envfile(f)
	}
	if (set) { print value; exit 0 }
	exit 1
}
