package termtext

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzRedactAddr: whatever the address, RedactAddr's output never holds
// the password net/url reads in it (as written, or unescaped); and an
// address written as [scheme://]user:password@rest shows no part of that
// password, whatever / ? # @ it holds (it is user:xxxxx@ and the end of
// rest), but where RedactAddr takes another reading: what comes before
// the first / ? # is a host with no port (fe80::1/x@y, [::1]:8500/x@y);
// an @ comes before it and the password holds a / ? # (p@ss/x reads as
// the password p and the host ss, as net/url reads it); or, with no
// scheme, the password starts with // (ops://pw@host reads as the scheme
// ops). A password of net/url's found elsewhere in the redacted form (in
// the host, a path, xxxxx) proves nothing, and is not asked about.
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
	} {
		f.Add(seed.addr, seed.user, seed.password, seed.rest, seed.scheme)
	}
	f.Fuzz(func(t *testing.T, addr, user, password, rest string, scheme bool) {
		checkNetURLPassword(t, addr)
		if password == "" || strings.ContainsAny(user, ":/?#[") {
			return
		}
		prefix := ""
		if scheme {
			prefix = "https://"
		} else if strings.HasPrefix(password, "//") || strings.HasPrefix(user, "//") {
			return
		}
		in := prefix + user + ":" + password + "@" + rest
		head := user + ":" + password + "@" + rest
		if i := strings.IndexAny(head, "/?#"); i >= 0 {
			head = head[:i]
		}
		if strings.Contains(head, "@") && strings.ContainsAny(password, "/?#") || !strings.Contains(head, "@") && isHost(head) {
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
