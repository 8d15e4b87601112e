package httpserve

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// AllowedHosts are the names a server answers to in the Host header,
// besides IP literals and localhost, which it always answers to. A page
// of another site whose name an attacker pointed at the server's address
// (DNS rebinding) is same-origin with it for the browser, but its requests
// carry the attacker's name: refusing unknown names keeps such a page from
// the server's open reads. Requests with no Host (HTTP/1.0) are refused
// too: what they reach cannot be told from what a rebound name reaches.
type AllowedHosts struct {
	// names are lower-case, without a trailing dot.
	names map[string]bool
	// any is "*" given: every Host passes.
	any bool
}

// NewAllowedHosts returns the hosts names: host names without a port, or
// "*" for any; an empty name, or one with a port, a scheme or a path, is
// an error naming it.
func NewAllowedHosts(names ...string) (AllowedHosts, error) {
	a := AllowedHosts{names: map[string]bool{}}
	for _, n := range names {
		if n == "*" {
			a.any = true
			continue
		}
		if err := CheckHostName(n); err != nil {
			return AllowedHosts{}, err
		}
		a.names[normalHost(n)] = true
	}
	return a, nil
}

// CheckHostName refuses what cannot be a Host header's name alone, naming
// it.
func CheckHostName(n string) error {
	if strings.Trim(n, ".") == "" {
		return fmt.Errorf("allowed host %q: want a host name such as control.example", n)
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return fmt.Errorf("allowed host %q: want a host name alone (letters, digits, '-', '.'), without scheme, port or path", n)
		}
	}
	return nil
}

// normalHost is a name as compared: lower-case, without a trailing dot
// (a fully qualified "localhost." is localhost).
func normalHost(n string) string {
	return strings.ToLower(strings.TrimSuffix(n, "."))
}

// Allows reports whether a request with Host header host (name, IP
// literal, [IPv6], with or without a port) is answered; an empty host
// (none sent) is only with "*".
func (a AllowedHosts) Allows(host string) bool {
	if a.any {
		return true
	}
	if host == "" {
		return false
	}
	name := hostName(host)
	if _, err := netip.ParseAddr(name); err == nil {
		return true // no site's name: a page reaching it is on that address itself
	}
	name = normalHost(name)
	return name == "localhost" || a.names[name]
}

// hostName is the name of a Host header: without port nor brackets.
func hostName(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
}

// Handler answers 421 Misdirected Request, with a JSON body naming the
// host, to requests whose Host is not allowed, and passes the others to
// next. flag names how the operator allows a name, for the answer ("":
// no name can be allowed).
func (a AllowedHosts) Handler(flag string, next http.Handler) http.Handler {
	return a.WithToken(flag, next, nil)
}

// WithToken is Handler, but a request with an Authorization header and a
// Host it refuses goes to tokenChecked (next behind a token check; nil:
// refused as by Handler): a rebinding page cannot send the operator's
// token, while webhooks and CLIs reaching the server by a DNS name do. A
// header alone must not pass: the page may send one of its own, and open
// routes look at none.
func (a AllowedHosts) WithToken(flag string, next, tokenChecked http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.Allows(r.Host) {
			next.ServeHTTP(w, r)
			return
		}
		if tokenChecked != nil && r.Header.Get("Authorization") != "" {
			tokenChecked.ServeHTTP(w, r)
			return
		}
		msg := fmt.Sprintf("host %q is not one this server answers to: use its IP address or localhost", hostName(r.Host))
		if r.Host == "" {
			msg = "the request has no Host header: send one naming this server by its IP address or localhost"
		} else if flag != "" {
			msg += ", or allow the name with " + flag
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusMisdirectedRequest)
		json.NewEncoder(w).Encode(struct {
			Error string `json:"error"`
		}{msg})
	})
}
