package scale

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

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
	if token == "" {
		return false
	}
	sum := sha256.Sum256([]byte(token))
	ok := 0
	for _, s := range t.sums {
		ok |= subtle.ConstantTimeCompare(s[:], sum[:])
	}
	return ok == 1
}
