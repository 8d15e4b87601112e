package termtext

import (
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

// FuzzRedactAddr: whatever the address, RedactAddr's output never holds
// the password net/url reads in it (as written, or unescaped), nor any
// part of the password read as the user information running to the
// address's last @ (checkLastAtPassword); and an address written as
// [scheme://]user:password@rest shows no part of that password, whatever
// / ? # @ it holds (it is user:xxxxx@ and the end of rest), but where
// RedactAddr takes another reading: what comes before the first / ? # is
// an IPv6 address without brackets (fe80::1/x@y); or, with no scheme, the
// user is http, https, unix or tcp and the password starts with //
// (http://pw@host reads as the scheme http), where checkSchemeUser tells
// which forms may show a part of it. A password found elsewhere in the
// redacted form (in the host, a path, xxxxx) proves nothing, and is not
// asked about.
func FuzzRedactAddr(f *testing.F) {
	for _, seed := range []struct {
		addr, user, password, rest string
		scheme                     bool
	}{
		{"https://ops:s3cret@consul.example:8501", "ops", "ab/cd@ef", "host:8501", true},
		{"http://ops:p@ss@prom:9090/api?q=a@b", "ops", "a?b#c", "consul.example:8500/x@y", false},
		{"ops:ab/cd@ef@[::1]:8500", "", "1234/x", "[::1]:8500", false},
		{"//ops:pw@prom:9090", "ops", "a://b", "prom:9090/x://y", true},
		{"http://ops:p%2Fss@[fe80::1%25eth0]:9090/", "ops", "p@ss", "[fe80::1%25eth0]:9090/", true},
		{"unix:///run/consul@x/consul.sock", "ops", "12:34", "consul.example", false},
		{"http://prom:9090/x@y", "a@b", "s3cret", "prom:9090?to=a@b", true},
		{"ops:p@ss/x@y@host", "ops", "p@ss/x@y", "host", false},
		{"ops://pw@host", "ops", "//pw", "host:8500", false},
		{"http://ops@prom:9090/x@y", "ops@prom", "9090/x", "y", true},
		{"http://prom/x@y", "http", "//prom/x", "y", false},
		{"unix:///run/a@b", "HTTPS", "//ops:pw/x", "host:8501", false},
		{"tcp://ops@host:2375", "unix", "///run/docker", "x/docker.sock", false},
	} {
		f.Add(seed.addr, seed.user, seed.password, seed.rest, seed.scheme)
	}
	f.Fuzz(func(t *testing.T, addr, user, password, rest string, scheme bool) {
		checkNetURLPassword(t, addr)
		checkLastAtPassword(t, addr)
		if password == "" || strings.ContainsAny(user, ":/?#[") {
			return
		}
		prefix := ""
		if scheme {
			prefix = "https://"
		} else if strings.HasPrefix(password, "//") && takenForScheme(user) {
			checkSchemeUser(t, user, password, rest)
			return
		}
		in := prefix + user + ":" + password + "@" + rest
		head := user + ":" + password + "@" + rest
		if i := strings.IndexAny(head, "/?#"); i >= 0 {
			head = head[:i]
		}
		if _, err := netip.ParseAddr(head); err == nil {
			return
		}
		// No part of the password is shown: all of it is replaced, and
		// what follows is the end of rest.
		got := RedactAddr(in)
		if tail, ok := strings.CutPrefix(got, prefix+user+":xxxxx@"); !ok || !strings.HasSuffix(rest, tail) {
			t.Errorf("RedactAddr(%q) = %q: want %q followed by the end of %q, the password %q hidden whole", in, got, prefix+user+":xxxxx@", rest, password)
		}
	})
}

// checkSchemeUser checks RedactAddr on user:password@rest where user is
// http, https, unix or tcp (any case) and password starts with //, which
// reads as that scheme: it shows no part of the password (it is
// user:xxxxx@ and the end of rest) but in the forms the scheme's reading
// keeps, those of every address of that scheme: its own user and
// password (user://u:p@host, u shown), a user with no password
// (user://u@host, no / ? # before its last @), a unix socket's path
// (unix:///path).
func checkSchemeUser(t *testing.T, user, password, rest string) {
	t.Helper()
	in := user + ":" + password + "@" + rest
	got := RedactAddr(in)
	if tail, ok := strings.CutPrefix(got, user+":xxxxx@"); ok && strings.HasSuffix(rest, tail) {
		return
	}
	after := in[len(user)+3:] // past user://
	at := strings.LastIndex(after, "@")
	end := len(after)
	if i := strings.IndexAny(after, "/?#"); i >= 0 {
		end = i
	}
	colon := strings.Index(after, ":")
	switch {
	case strings.EqualFold(user, "unix") && strings.HasPrefix(after, "/") && got == in:
		return
	case at < end && (colon < 0 || colon > at) && got == in:
		return
	case colon >= 0 && colon < end && colon < at:
		if tail, ok := strings.CutPrefix(got, user+"://"+after[:colon]+":xxxxx@"); ok && strings.HasSuffix(rest, tail) {
			return
		}
	}
	t.Errorf("RedactAddr(%q) = %q: want %q followed by the end of %q, the password %q hidden whole, or a form of the scheme %s's kept", in, got, user+":xxxxx@", rest, password, user)
}

// takenForScheme tells whether s is http, https, unix or tcp, in any
// case: the schemes the readings of checkLastAtPassword take for schemes.
func takenForScheme(s string) bool {
	return strings.EqualFold(s, "http") || strings.EqualFold(s, "https") || strings.EqualFold(s, "unix") || strings.EqualFold(s, "tcp")
}

// checkNetURLPassword checks that RedactAddr(addr) holds the password
// net/url reads in addr, as written or unescaped, nowhere but where addr
// with that password replaced by xxxxx holds it.
func checkNetURLPassword(t *testing.T, addr string) {
	t.Helper()
	u, err := url.Parse(addr)
	if err != nil || u.User == nil {
		return
	}
	password, ok := u.User.Password()
	if !ok {
		return
	}
	// As net/url: the authority follows the first //, up to the first
	// / ? #; the user information is up to its last @, its password
	// after its first colon.
	start := strings.Index(addr, "//") + 2
	auth := addr[start:]
	if i := strings.IndexAny(auth, "/?#"); i >= 0 {
		auth = auth[:i]
	}
	at := start + strings.LastIndex(auth, "@")
	colon := start + strings.Index(auth, ":")
	raw := addr[colon+1 : at]
	safe := addr[:colon+1] + "xxxxx" + addr[at:]
	got := RedactAddr(addr)
	for _, p := range []string{raw, password} {
		if p != "" && strings.Contains(got, p) && !strings.Contains(safe, p) {
			t.Errorf("RedactAddr(%q) = %q: shows net/url's password %q", addr, got, p)
			return
		}
	}
}

// minLeak is the length of the shortest part of a password
// checkLastAtPassword looks for in RedactAddr's output (a whole password
// when shorter).
const minLeak = 3

// checkLastAtPassword checks that RedactAddr(addr) shows no part of the
// password read under the widest reading: after an http://, https://,
// unix://, tcp:// or a leading //, the user information runs to the last @ of
// the address, its user up to its first colon (holding no / ? # or [),
// its password after it. Every reading that ends the user information at
// an earlier @ has a part of that password for its own. A part of at
// least minLeak bytes found in the output is a leak unless addr with that
// password replaced by xxxxx and nothing else shown ("safe") holds it
// too. Not asked about: with no @ before the first / ? #, what comes
// before it is an IPv6 address without brackets (fe80::1/x@y: a host,
// the address kept).
func checkLastAtPassword(t *testing.T, addr string) {
	t.Helper()
	prefix, rest := "", addr
	if scheme, r, ok := strings.Cut(addr, "://"); ok && takenForScheme(scheme) {
		prefix, rest = scheme+"://", r
	} else if r, ok := strings.CutPrefix(addr, "//"); ok {
		prefix, rest = "//", r
	}
	at := strings.LastIndex(rest, "@")
	colon := strings.Index(rest, ":")
	if at < 0 || colon < 0 || colon > at || strings.ContainsAny(rest[:colon], "/?#[") {
		return
	}
	head := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		head = rest[:i]
	}
	if _, err := netip.ParseAddr(head); err == nil {
		return
	}
	password := rest[colon+1 : at]
	safe := prefix + rest[:colon] + ":xxxxx@" + rest[at+1:]
	got := RedactAddr(addr)
	n := min(minLeak, len(password))
	for i := 0; n > 0 && i+n <= len(password); i++ {
		if p := password[i : i+n]; strings.Contains(got, p) && !strings.Contains(safe, p) {
			t.Errorf("RedactAddr(%q) = %q: shows %q of the password %q (user information to the last @)", addr, got, p, password)
			return
		}
	}
}
