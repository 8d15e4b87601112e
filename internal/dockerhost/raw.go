package dockerhost

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/docker/docker/client"

	"github.com/underlay/underlay/internal/termtext"
)

// Raw sends requests to a Docker client's daemon with the bodies its
// caller gives, byte for byte, at the API version its caller names. The
// typed client cannot write back what it read unchanged: it sends what its
// own (v28) types hold, which lack fields of later APIs, at the version it
// negotiated, below which a newer daemon clears such fields; and it
// rewrites a service's image to its short form on every update. Either
// change to a service's task template restarts all its tasks.
type Raw struct {
	hc   *http.Client
	host string // the Host header: the daemon's TCP address, or Docker's dummy host for a socket
	base string // the daemon's base path (tcp://HOST/BASE)
}

// maxRawBody bounds what is read of an answer: a service's inspect is a
// few kilobytes.
const maxRawBody = 16 << 20

// NewRaw makes a Raw for api's daemon. It dials as api does (TLS
// included); wrap, when not nil, wraps its transport (a test's
// instrumentation).
func NewRaw(api *client.Client, wrap func(http.RoundTripper) http.RoundTripper) (*Raw, error) {
	u, err := client.ParseHostURL(api.DaemonHost())
	if err != nil {
		return nil, fmt.Errorf("docker host %q: %w", api.DaemonHost(), err)
	}
	dial := api.Dialer()
	var rt http.RoundTripper = &http.Transport{
		// The dialer speaks to the daemon whatever the URL says: a socket,
		// or TCP with the client's TLS settings.
		DialContext:     func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		MaxIdleConns:    2,
		IdleConnTimeout: 30 * time.Second,
	}
	if wrap != nil {
		rt = wrap(rt)
	}
	host := client.DummyHost
	if u.Scheme == "tcp" {
		host = u.Host
	}
	return &Raw{hc: &http.Client{Transport: rt}, host: host, base: u.Path}, nil
}

// apiVersion is the form of an API version Raw puts in a path.
var apiVersion = regexp.MustCompile(`^1\.[0-9]{1,3}$`)

// APIVersion is the newest API version the daemon speaks.
func (r *Raw) APIVersion(ctx context.Context) (string, error) {
	status, body, err := r.Do(ctx, http.MethodGet, "", "/version", nil, nil)
	if err != nil {
		return "", err
	}
	if status != http.StatusOK {
		return "", fmt.Errorf("docker version: %s", DaemonError(status, body))
	}
	var v struct{ APIVersion string }
	if err := json.Unmarshal(body, &v); err != nil {
		return "", fmt.Errorf("docker version: %w", err)
	}
	if !apiVersion.MatchString(v.APIVersion) {
		return "", fmt.Errorf("docker version: API version %s is not of the form 1.N", termtext.Q(v.APIVersion))
	}
	return v.APIVersion, nil
}

// Do sends one request at API version (empty: the daemon's unversioned
// path) and returns the answer's status and body, whatever the status.
func (r *Raw) Do(ctx context.Context, method, version, p string, query url.Values, body []byte) (int, []byte, error) {
	if version != "" && !apiVersion.MatchString(version) {
		return 0, nil, fmt.Errorf("docker %s %s: API version %q is not of the form 1.N", method, p, version)
	}
	full := r.base
	if version != "" {
		full = path.Join(full, "/v"+version)
	}
	full = path.Join(full, p)
	u := url.URL{Scheme: "http", Host: r.host, Path: full, RawQuery: query.Encode()}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return 0, nil, fmt.Errorf("docker %s %s: %w", method, full, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("docker %s %s: %w", method, full, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxRawBody+1))
	if err != nil {
		return 0, nil, fmt.Errorf("docker %s %s: read answer: %w", method, full, err)
	}
	if len(b) > maxRawBody {
		return 0, nil, fmt.Errorf("docker %s %s: answer over %d bytes", method, full, maxRawBody)
	}
	return resp.StatusCode, b, nil
}

// DaemonError is the daemon's message in an error answer ({"message": …}),
// or its status and body when it has none.
func DaemonError(status int, body []byte) string {
	var m struct{ Message string }
	if json.Unmarshal(body, &m) == nil && m.Message != "" {
		return m.Message
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return fmt.Sprintf("%d %s: %s", status, http.StatusText(status), s)
}

// Close lets go of the idle connections.
func (r *Raw) Close() { r.hc.CloseIdleConnections() }
