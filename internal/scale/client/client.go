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
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/underlay/underlay/internal/scale"
	"github.com/underlay/underlay/internal/secretfile"
)

// Config says how to reach control. Its errors name the CLI's flags
// (--addr, --token-file, --cacert, --cert, --key, --follow-leader).
type Config struct {
	// Addr is HOST:PORT, http://HOST:PORT or https://HOST:PORT.
	Addr string
	// TokenFile holds the bearer token (its first non-comment line); empty
	// means no token.
	TokenFile string
	// FollowLeader asks the leader a follower names once, over the same
	// scheme only.
	FollowLeader bool
	// CACert verifies control's certificate (default: the system's); Cert
	// and Key are the client certificate of mutual TLS.
	CACert, Cert, Key string
	// Log receives warnings about the token file (readable by others);
	// nil discards them.
	Log *slog.Logger
}

// Client calls control's API.
type Client struct {
	base         string
	token        string
	followLeader bool
	http         *http.Client
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
	return &Client{base: base, token: token, followLeader: cfg.FollowLeader, http: hc}, nil
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

// Do sends one request to control and decodes the answer into out. A
// follower's 503 naming the leader is retried once at the leader with
// FollowLeader, over the same scheme only: the token never goes from
// https to http, nor anywhere the user did not allow.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
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
				return fmt.Errorf("control at %s: %d: not the leader; the leader is at %s (ask it with --addr %s, or add --follow-leader)", base, code, leader, next)
			case next != base:
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
				return fmt.Errorf("control at %s: %d: %s", base, code, clip(e.Error, maxErrorAnswer))
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

// clip is s cut to at most n bytes, on a character's boundary, marked "…"
// when cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return fmt.Sprintf("%s… (%d bytes in all)", s[:n], len(s))
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

// baseURL is addr as scheme://host:port (http when it names none).
func baseURL(addr string) (string, error) {
	full := addr
	if !strings.Contains(addr, "://") {
		full = "http://" + addr
	}
	u, err := url.Parse(full)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return "", fmt.Errorf("--addr %q: want HOST:PORT, http://HOST:PORT or https://HOST:PORT", addr)
	}
	return u.Scheme + "://" + u.Host, nil
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
