// Package client is the client of `underlay control`'s API, as `underlay
// scale` uses it: bearer token, TLS, and the retry at the leader a
// follower names. It owns no decisions; it imports scale for the API's
// types, net/http for its calls and secretfile to read the token file.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/underlay/underlay/internal/scale"
	"github.com/underlay/underlay/internal/secretfile"
	"github.com/underlay/underlay/internal/termtext"
)

// Config says how to reach control. Its errors name the CLI's flags
// (--addr, --token-file, --cacert, --cert, --key, --follow-leader,
// --follow-leader-insecure).
type Config struct {
	// Addr is HOST:PORT, http://HOST:PORT or https://HOST:PORT.
	Addr string
	// TokenFile holds the bearer token (its first non-comment line); empty
	// means no token.
	TokenFile string
	// FollowLeader asks the leader a follower names once, over the same
	// scheme only: over https, its certificate verified as control's;
	// over http, only at a loopback address or on the host of Addr.
	FollowLeader bool
	// FollowLeaderInsecure, with or without FollowLeader, also follows
	// over http a leader on any other host, which gets the token in
	// clear.
	FollowLeaderInsecure bool
	// InsecureHTTP allows sending the token over plain http to a host
	// other than a loopback address, in clear (--insecure-http); without
	// it New refuses such an Addr when there is a token.
	InsecureHTTP bool
	// CACert verifies control's certificate (default: the system's); Cert
	// and Key are the client certificate of mutual TLS.
	CACert, Cert, Key string
	// Log receives warnings about the token file (readable by others);
	// nil discards them.
	Log *slog.Logger
}

// Client calls control's API.
type Client struct {
	base           string
	token          string
	followLeader   bool
	followInsecure bool // followLeader to any host over http
	http           *http.Client
}

// New checks cfg and reads its token.
func New(cfg Config) (*Client, error) {
	token, err := readToken(cfg.TokenFile, cfg.Log)
	if err != nil {
		return nil, err
	}
	hc, err := httpClient(cfg.CACert, cfg.Cert, cfg.Key)
	if err != nil {
		return nil, err
	}
	base, err := baseURL(cfg.Addr)
	if err != nil {
		return nil, err
	}
	if err := inClear(base, token != "", cfg.InsecureHTTP); err != nil {
		return nil, fmt.Errorf("--addr %q: %w", termtext.RedactAddr(cfg.Addr), err)
	}
	return &Client{base: base, token: token, followLeader: cfg.FollowLeader || cfg.FollowLeaderInsecure,
		followInsecure: cfg.FollowLeaderInsecure, http: hc}, nil
}

// Scale asks control to scale service one step (direction "up" or "down")
// or, with replicas >= 0, to that many replicas.
func (c *Client) Scale(ctx context.Context, service string, direction scale.Direction, replicas int) (scale.Record, error) {
	if err := checkService(service); err != nil {
		return scale.Record{}, err
	}
	body := map[string]any{}
	if replicas >= 0 {
		body["replicas"] = replicas
	} else {
		body["direction"] = string(direction)
	}
	var rec scale.Record
	err := c.Do(ctx, http.MethodPost, "/v1/underlay/services/"+url.PathEscape(service)+"/scale", body, &rec)
	return rec, err
}

// Services lists the autoscaled services.
func (c *Client) Services(ctx context.Context) ([]scale.ServiceInfo, error) {
	var ans struct {
		Data []scale.ServiceInfo `json:"data"`
	}
	err := c.Do(ctx, http.MethodGet, "/v1/underlay/services", nil, &ans)
	return ans.Data, err
}

// History returns a service's scaling decisions, oldest first.
func (c *Client) History(ctx context.Context, service string) (scale.HistoryAnswer, error) {
	if err := checkService(service); err != nil {
		return scale.HistoryAnswer{}, err
	}
	var ans scale.HistoryAnswer
	err := c.Do(ctx, http.MethodGet, "/v1/underlay/services/"+url.PathEscape(service)+"/history", nil, &ans)
	return ans, err
}

// checkService refuses, before any call, a service name that cannot be a
// path segment: "" (/services//scale), "." and ".." (/services/../scale),
// which control's HTTP server cleans and answers with a redirect naming
// neither; and blanks only ("  "), no swarm service's name either, which
// the CLI refuses as empty. The CLI refuses the others too.
func checkService(name string) error {
	switch {
	case strings.TrimSpace(name) == "":
		return fmt.Errorf("service %q: the service name is empty", name)
	case name == "." || name == "..":
		return fmt.Errorf("service %q: not a service name (a path's %q segment, which control's HTTP server redirects)", name, name)
	}
	return nil
}

// Do sends one request to control, at path (starting with "/"), and
// decodes the answer into out. A follower's 503 naming the leader is
// retried once at the leader with FollowLeader, over the same scheme only
// (mayFollow): the token never goes from https to http, nor in clear to
// another host unless the user allowed it, nor further than that one
// leader.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	// Appended to control's address: a path not starting with "/"
	// ("@host:port/…") would make that address a user name, and another
	// host the one called, token and all.
	if !strings.HasPrefix(path, "/") {
		return fmt.Errorf("path %q: want one starting with / (it follows control's address)", path)
	}
	base := c.base
	for attempt := 0; ; attempt++ {
		code, hdr, b, err := c.do(ctx, method, base, path, body)
		if err != nil {
			return err
		}
		if leader := hdr.Get(scale.LeaderHeader); code == http.StatusServiceUnavailable && leader != "" && attempt == 0 {
			next, err := leaderBase(base, leader)
			switch {
			case err != nil:
				return fmt.Errorf("control at %s: not the leader, and %w", base, err)
			case !c.followLeader:
				flag := "--follow-leader"
				if mayFollow(base, next, false) != nil {
					flag = "--follow-leader-insecure, which sends the token in clear"
				}
				return fmt.Errorf("control at %s: %d: not the leader; the leader is at %s (ask it with --addr %s, or add %s)", base, code, leader, next, flag)
			case next != base:
				if err := mayFollow(base, next, c.followInsecure); err != nil {
					return fmt.Errorf("control at %s: %d: not the leader, and %w", base, code, err)
				}
				base = next
				continue
			}
		}
		if code/100 != 2 {
			var e struct {
				Error string `json:"error"`
			}
			// Cut, as a body that is not JSON is: whatever answers at
			// --addr writes it, up to the read's 16 MiB. Control's own
			// errors (a chain of Docker's or Consul's) fit whole.
			if json.Unmarshal(b, &e) == nil && e.Error != "" {
				// control wants a token on reads too, unless it was
				// started with --auth-reads=false.
				hint := ""
				if code == http.StatusUnauthorized && c.token == "" {
					hint = " (reads want a token too: give --token-file)"
				}
				return fmt.Errorf("control at %s: %d: %s%s", base, code, clip(e.Error, maxErrorAnswer), hint)
			}
			return fmt.Errorf("control at %s: %d: %.200s", base, code, b)
		}
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("control at %s: decode answer: %w", base, err)
		}
		return nil
	}
}

// maxErrorAnswer bounds, in bytes, the error control's answer names that
// goes into an error.
const maxErrorAnswer = 4 << 10

// clip is s cut to at most n bytes as termtext.Head cuts, marked "…"
// when cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return fmt.Sprintf("%s… (%d bytes in all)", termtext.Head(s, n), len(s))
}

// httpClient is the HTTP client of the calls: TLS from the CA, certificate
// and key files; the environment's proxy for https only; redirects never
// followed, so that the token goes nowhere else.
func httpClient(caCert, cert, key string) (*http.Client, error) {
	tlsCfg, err := scale.ClientTLS(caCert, cert, key)
	if err != nil {
		return nil, fmt.Errorf("--cacert, --cert, --key: %w", err)
	}
	return &http.Client{
		Transport:     &http.Transport{TLSClientConfig: tlsCfg, TLSHandshakeTimeout: 10 * time.Second, Proxy: httpsProxyOnly(http.ProxyFromEnvironment)},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}

// httpsProxyOnly passes env's proxy for https requests and none for http:
// an http proxy is sent the whole request, bearer token included, while
// https goes through it in a CONNECT tunnel it cannot read. A shell's
// http_proxy, set for the Internet, would otherwise get control's token.
func httpsProxyOnly(env func(*http.Request) (*url.URL, error)) func(*http.Request) (*url.URL, error) {
	return func(r *http.Request) (*url.URL, error) {
		if r.URL.Scheme != "https" {
			return nil, nil
		}
		return env(r)
	}
}

// baseURL is addr as scheme://host:port (http when it names none). Its
// error quotes addr as given, a password in it hidden (RedactAddr).
func baseURL(addr string) (string, error) {
	full := addr
	if !strings.Contains(addr, "://") {
		full = "http://" + addr
	}
	u, err := url.Parse(full)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return "", fmt.Errorf("--addr %q: want HOST:PORT, http://HOST:PORT or https://HOST:PORT", termtext.RedactAddr(addr))
	}
	return u.Scheme + "://" + u.Host, nil
}

// inClear refuses a token sent over plain http to base (scheme://host:port
// from baseURL) when it is not a loopback address: anyone on the path
// reads it, and may scale with it. A name, localhost included, is not a
// loopback address (isLoopback). insecure allows it.
func inClear(base string, token, insecure bool) error {
	u, err := url.Parse(base)
	if err != nil {
		return err
	}
	if !token || insecure || u.Scheme != "http" || isLoopback(u.Hostname()) {
		return nil
	}
	return fmt.Errorf("plain http to %s, not a loopback address, would send the token in clear: use https://, or allow it with --insecure-http", u.Host)
}

// leaderBase is the leader a follower named, reached over base's scheme; a
// leader named with another scheme is refused.
func leaderBase(base, leader string) (string, error) {
	scheme, _, _ := strings.Cut(base, "://")
	if s, _, ok := strings.Cut(leader, "://"); ok && s != scheme {
		return "", fmt.Errorf("the leader it names, %s, is not reached over %s: not followed", leader, scheme)
	}
	next, err := baseURL(scheme + "://" + strings.TrimPrefix(strings.TrimPrefix(leader, "https://"), "http://"))
	if err != nil {
		return "", fmt.Errorf("the leader it names, %q, is not an address", leader)
	}
	return next, nil
}

// mayFollow says whether the token may go to the leader at to, named by
// the follower at from (both scheme://host:port from baseURL). Over https
// it may: the leader's certificate is verified as from's was. Over http
// the leader key the follower read — which anyone with write access to it
// can change — would have the token cross the network in clear to a host
// of its choice; it goes only to a loopback address or to from's host (on
// another port), or anywhere with insecure. Never to another scheme, so
// never from https to http, whatever insecure says.
func mayFollow(from, to string, insecure bool) error {
	f, err := url.Parse(from)
	if err != nil {
		return fmt.Errorf("the follower's address %q: %w", from, err)
	}
	t, err := url.Parse(to)
	if err != nil {
		return fmt.Errorf("the leader it names, %q, is not an address", to)
	}
	switch {
	case f.Scheme != t.Scheme:
		return fmt.Errorf("the leader it names, %s, is not reached over %s: not followed", to, f.Scheme)
	case t.Scheme == "https", insecure, isLoopback(t.Hostname()), sameHost(f.Hostname(), t.Hostname()):
		return nil
	}
	return fmt.Errorf("the leader it names, %s, is another host, reached over plain http, which would get the token in clear: not followed "+
		"(reach control over https, or allow it with --follow-leader-insecure)", t.Host)
}

// isLoopback says whether host is a loopback IP address (127.0.0.0/8,
// ::1). A name is not, whatever it resolves to: the resolver may be
// anyone's.
func isLoopback(host string) bool {
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// sameHost says whether a and b name one host: equal IP addresses, or
// names equal but for case and a final dot.
func sameHost(a, b string) bool {
	ia, errA := netip.ParseAddr(a)
	ib, errB := netip.ParseAddr(b)
	if errA == nil || errB == nil {
		return errA == nil && errB == nil && ia.Unmap() == ib.Unmap()
	}
	return a != "" && strings.EqualFold(strings.TrimSuffix(a, "."), strings.TrimSuffix(b, "."))
}

func (c *Client) do(ctx context.Context, method, base, path string, body any) (int, http.Header, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("--addr %s: %w", base, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("reach control at %s: %w", base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("read control's answer: %w", err)
	}
	return resp.StatusCode, resp.Header, b, nil
}

// readToken reads the first token of a token file (the format of
// control's --token-file); no file means no token. It is read as control
// reads its secrets (secretfile): a regular file of at most 1 MiB, never
// blocking on a FIFO, a file group or others may read warned of on log.
func readToken(path string, log *slog.Logger) (string, error) {
	if path == "" {
		return "", nil
	}
	f, err := secretfile.Open(path, "control bearer token", log)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	for _, line := range strings.Split(string(f.Value()), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			return line, nil
		}
	}
	return "", fmt.Errorf("--token-file %s: no token found", path)
}
