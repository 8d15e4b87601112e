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
	"os"
	"strings"
)

// TokenSet is a set of bearer tokens that may change while the API serves
// (tokens kept in Consul KV).
type TokenSet interface {
	// Valid reports whether token belongs to the set now.
	Valid(token string) bool
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

// LoadTokens reads the token file at path.
func LoadTokens(path string) (*Tokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	defer f.Close()
	t, err := ParseTokens(f)
	if err != nil {
		return nil, fmt.Errorf("token file %s: %w", path, err)
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

// SignatureHeader carries a webhook's HMAC-SHA256 signature of its body:
// "sha256=<hex>", as GitHub's X-Hub-Signature-256, which is accepted too.
const SignatureHeader = "X-Underlay-Signature"

// ErrBadSignature is returned by VerifySignature.
var ErrBadSignature = errors.New("bad webhook signature")

// Sign is the SignatureHeader value of body under secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// VerifySignature checks a SignatureHeader value against body, in constant
// time.
func VerifySignature(secret, body []byte, header string) error {
	if header == "" {
		return fmt.Errorf("%w: missing %s header", ErrBadSignature, SignatureHeader)
	}
	hexSum, ok := strings.CutPrefix(strings.TrimSpace(header), "sha256=")
	if !ok {
		return fmt.Errorf("%w: want sha256=<hex>", ErrBadSignature)
	}
	got, err := hex.DecodeString(hexSum)
	if err != nil {
		return fmt.Errorf("%w: not hexadecimal", ErrBadSignature)
	}
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	if !hmac.Equal(got, m.Sum(nil)) {
		return fmt.Errorf("%w: it does not match the body", ErrBadSignature)
	}
	return nil
}

// LoadSecret reads a webhook secret from path: the file's content, blanks
// around it trimmed. An empty secret is an error.
func LoadSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("webhook secret: %w", err)
	}
	s := bytes.TrimSpace(b)
	if len(s) == 0 {
		return nil, fmt.Errorf("webhook secret %s is empty", path)
	}
	return s, nil
}
