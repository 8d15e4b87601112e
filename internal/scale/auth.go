package scale

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/underlay/underlay/internal/secretfile"
)

// TokenSet is a set of bearer tokens that may change while the API serves
// (a token file read again when it changes, tokens kept in Consul KV).
type TokenSet interface {
	// Valid reports whether token belongs to the set now.
	Valid(token string) bool
}

// AnyToken accepts a token any of its sets accepts.
type AnyToken []TokenSet

// Valid implements TokenSet.
func (a AnyToken) Valid(token string) bool {
	ok := false
	for _, s := range a {
		ok = s.Valid(token) || ok // every set, so that time says nothing of which
	}
	return ok
}

// Errors of CheckToken.
var (
	ErrNoToken  = errors.New("missing bearer token")
	ErrBadToken = errors.New("invalid bearer token")
	// ErrManyAuthorizations refuses a request with more than one
	// Authorization header, whatever they hold.
	ErrManyAuthorizations = errors.New("more than one Authorization header: which one counts would be a guess; send one")
)

// BearerToken is the token of r's "Authorization: Bearer <token>" header,
// and whether r has one. The scheme is matched in any letter case, as
// HTTP's schemes are (RFC 9110, 11.1): Alertmanager sends its http_config's
// authorization type as written ("bearer"), and a right token sent so must
// not read as none. A request with more than one Authorization header
// has none (CheckToken says why).
func BearerToken(r *http.Request) (string, bool) {
	if len(r.Header.Values("Authorization")) > 1 {
		return "", false
	}
	h := r.Header.Get("Authorization")
	i := strings.IndexAny(h, " \t")
	if i < 0 || !asciiEqualFold(h[:i], "bearer") {
		return "", false
	}
	token := strings.TrimSpace(h[i+1:])
	return token, token != ""
}

// CheckToken is the one token check of every authenticated route: nil when
// r carries a bearer token of tokens, else ErrNoToken, ErrBadToken or
// ErrManyAuthorizations: net/http reads the first of several, a proxy or
// a log in front may read another, so none is taken.
func CheckToken(tokens TokenSet, r *http.Request) error {
	token, ok := BearerToken(r)
	switch {
	case len(r.Header.Values("Authorization")) > 1:
		return ErrManyAuthorizations
	case !ok:
		return ErrNoToken
	case !tokens.Valid(token):
		return ErrBadToken
	}
	return nil
}

// RequireToken is CheckToken as middleware, for the API's routes and any
// other handler that shares its tokens (the dashboard): a request without a
// valid token is answered 401 with "WWW-Authenticate: Bearer" and a JSON
// error, and refused (when not nil) is called with the reason, for metrics
// and logs. Tokens nil lets every request through (--insecure-no-auth).
func RequireToken(tokens TokenSet, refused func(r *http.Request, err error), next http.Handler) http.Handler {
	if tokens == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := CheckToken(tokens, r); err != nil {
			if refused != nil {
				refused(r, err)
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="underlay"`)
			writeJSON(w, http.StatusUnauthorized, errorBody{Error: err.Error()})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// FileTokens are the tokens of a token file, read again when the file
// changes (at most once a second): a token is added or revoked without a
// restart. A file left without any token — emptied, comments only,
// removed, unreadable — accepts none (every request is refused, logged
// once) until it holds one again: emptying it revokes every token, and a
// token whose file is gone stays nobody's to withdraw.
type FileTokens struct {
	file *secretfile.File
	log  *slog.Logger

	mu sync.Mutex // guards following fields
	// raw is the content tokens were parsed from.
	raw    []byte
	tokens *Tokens
}

// OpenTokenFile reads the token file at path; it must hold a token.
func OpenTokenFile(path string, log *slog.Logger, opts ...secretfile.Option) (*FileTokens, error) {
	f, err := secretfile.Open(path, "bearer token", log, append(slices.Clone(opts), secretfile.FailClosed())...)
	if err != nil {
		return nil, err
	}
	raw := f.Value()
	t, err := ParseTokens(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("token file %s: %w", path, err)
	}
	return &FileTokens{file: f, log: log, raw: raw, tokens: t}, nil
}

// Valid implements TokenSet.
func (f *FileTokens) Valid(token string) bool {
	raw := f.file.Value()
	f.mu.Lock()
	defer f.mu.Unlock()
	if !bytes.Equal(raw, f.raw) {
		f.raw = raw
		t, err := ParseTokens(bytes.NewReader(raw))
		if err != nil && f.tokens != nil {
			f.log.Warn("token file holds no token (emptied, removed or unreadable): every request is refused until it holds one", "file", f.file.Path(), "err", err)
		}
		f.tokens = t // nil: none valid
	}
	return f.tokens.Valid(token)
}

// Tokens are the bearer tokens accepted on mutating routes.
type Tokens struct {
	// sums are SHA-256 sums, so that comparisons take the same time
	// whatever the token's length.
	sums [][sha256.Size]byte
}

// ParseTokens reads one token a line; blank lines and lines starting with
// # are skipped. No token at all is an error: an empty file would
// otherwise lock every client out without saying why.
func ParseTokens(r io.Reader) (*Tokens, error) {
	t := &Tokens{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		t.sums = append(t.sums, sha256.Sum256([]byte(line)))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read tokens: %w", err)
	}
	if len(t.sums) == 0 {
		return nil, errors.New("no token found (one token a line)")
	}
	return t, nil
}

// Valid reports whether token is one of t, comparing every token in
// constant time.
func (t *Tokens) Valid(token string) bool {
	if t == nil || token == "" {
		return false
	}
	sum := sha256.Sum256([]byte(token))
	ok := 0
	for _, s := range t.sums {
		ok |= subtle.ConstantTimeCompare(s[:], sum[:])
	}
	return ok == 1
}

// Secret is a key that may change while the API serves: a
// secretfile.File is one, read again when its file changes. Each request
// reads it once, so a rotation applies from one request to the next.
type Secret interface {
	// Value is the key now; empty means none.
	Value() []byte
}

// StaticSecret is a Secret that never changes.
type StaticSecret []byte

// Value implements Secret.
func (s StaticSecret) Value() []byte { return s }

// valueOf is s's value; nil for a nil s.
func valueOf(s Secret) []byte {
	if s == nil {
		return nil
	}
	return s.Value()
}

// Headers of a signed webhook (--webhook-secret-file). The sender puts
// the time it signs at in TimestampHeader, in Unix seconds (decimal
// digits), and in SignatureHeader "sha256=<hex>": the HMAC-SHA256 under
// the secret of that timestamp, a dot, and the body — as Stripe's and
// Slack's webhooks sign, so that a captured request cannot be sent again
// later: its time is refused outside a window around the receiver's
// clock, and within it, its signature once accepted.
const (
	SignatureHeader = "X-Underlay-Signature"
	TimestampHeader = "X-Underlay-Timestamp"
)

// DefaultWebhookMaxAge is how far a signed webhook's time may be from
// the receiver's clock, either way (--webhook-max-age).
const DefaultWebhookMaxAge = 5 * time.Minute

// ErrBadSignature is returned by VerifySignature.
var ErrBadSignature = errors.New("bad webhook signature")

// Sign is the TimestampHeader and SignatureHeader values of body signed
// under secret at t.
func Sign(secret, body []byte, t time.Time) (timestamp, signature string) {
	timestamp = strconv.FormatInt(t.Unix(), 10)
	return timestamp, "sha256=" + hex.EncodeToString(webhookMAC(secret, timestamp, body))
}

// webhookMAC is the HMAC-SHA256 under secret of "<timestamp>.<body>".
func webhookMAC(secret []byte, timestamp string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte("."))
	m.Write(body)
	return m.Sum(nil)
}

// maxTimestampDigits bounds TimestampHeader: Unix seconds fit in 19
// digits until long after anything here matters.
const maxTimestampDigits = 19

// VerifySignature checks the TimestampHeader value timestamp and the
// SignatureHeader value header of body, the signature in constant time,
// then the time: more than maxAge from now either way is refused. It
// returns the signature's MAC, which names the request whatever the
// letter case of its hex, so that the caller refuses it a second time.
func VerifySignature(secret, body []byte, timestamp, header string, now time.Time, maxAge time.Duration) ([]byte, error) {
	const how = `: sign "<` + TimestampHeader + `>.<body>"`
	if header == "" {
		return nil, fmt.Errorf("%w: missing %s header", ErrBadSignature, SignatureHeader)
	}
	if timestamp == "" {
		return nil, fmt.Errorf("%w: missing %s header (Unix seconds when signed)%s", ErrBadSignature, TimestampHeader, how)
	}
	if len(timestamp) > maxTimestampDigits || strings.Trim(timestamp, "0123456789") != "" {
		return nil, fmt.Errorf("%w: %s is not Unix seconds (decimal digits)", ErrBadSignature, TimestampHeader)
	}
	hexSum, ok := strings.CutPrefix(strings.TrimSpace(header), "sha256=")
	if !ok {
		return nil, fmt.Errorf("%w: want %s: sha256=<hex>", ErrBadSignature, SignatureHeader)
	}
	got, err := hex.DecodeString(hexSum)
	if err != nil {
		return nil, fmt.Errorf("%w: not hexadecimal", ErrBadSignature)
	}
	mac := webhookMAC(secret, timestamp, body)
	if !hmac.Equal(got, mac) {
		return nil, fmt.Errorf("%w: it does not match the %s and the body%s", ErrBadSignature, TimestampHeader, how)
	}
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not Unix seconds", ErrBadSignature, TimestampHeader)
	}
	if off := now.Sub(time.Unix(sec, 0)); off.Abs() > maxAge {
		return nil, fmt.Errorf("%w: %s %s is %s from this instance's clock, more than %s (--webhook-max-age): sign each request when it is sent, and keep the clocks in time",
			ErrBadSignature, TimestampHeader, timestamp, describeOffset(off), maxAge)
	}
	return mac, nil
}

// describeOffset says how far a time is from now: "3m0s behind" or
// "3m0s ahead".
func describeOffset(off time.Duration) string {
	if off < 0 {
		return off.Abs().Round(time.Second).String() + " ahead"
	}
	return off.Round(time.Second).String() + " behind"
}
