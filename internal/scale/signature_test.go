package scale

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/testclock"
)

// signedAt is the headers of body signed under secret at ts, written out
// as the README documents them (not with Sign), so that the format a
// sender implements is what the test pins.
func signedAt(secret, body string, ts time.Time) []string {
	stamp := strconv.FormatInt(ts.Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(stamp + "." + body))
	return []string{"X-Underlay-Timestamp", stamp, "X-Underlay-Signature", "sha256=" + hex.EncodeToString(m.Sum(nil))}
}

// signed is the headers of body signed under secret at t, by Sign.
func signed(secret []byte, body string, t time.Time) []string {
	ts, sig := Sign(secret, []byte(body), t)
	return []string{TimestampHeader, ts, SignatureHeader, sig}
}

// TestWebhookSignatureReplayAndAge: a webhook signature covers the time it
// was signed (X-Underlay-Timestamp) with the body; one signed more than
// the window (5 minutes) before or after control's clock is refused, and
// one accepted once is refused again within the window, whatever the
// letter case of its hex. Before, the signature covered the body alone: a
// captured signed request replayed forever.
func TestWebhookSignatureReplayAndAge(t *testing.T) {
	const secret = "hush, webhook secret"
	clk := testclock.New(time.Now())
	e := newAPIEnvWith(t, Config{Now: clk.Now}, APIConfig{WebhookSecret: StaticSecret(secret)},
		svc("web", 1, "orbiter", "true", LabelMax, "100"))
	n := 0
	fresh := func() string { // a new firing each time, so that none is a duplicate
		n++
		return amBody(firing("f"+strconv.Itoa(n), "service", "web", "direction", "up"))
	}

	body := fresh()
	body0 := body
	hdr := signedAt(secret, body, clk.Now())
	if code, rs := e.webhookResults(t, "/alertmanager", body, hdr...); code != 200 || len(rs) != 1 || rs[0].Result != "scaled" {
		t.Fatalf("fresh signed request: %d %v, want 200 scaled", code, resultsOf(rs))
	}
	// The same request again, as one who captured it would send it: the
	// firing's alert log would call it a duplicate; the signature must
	// not get that far.
	code, b := e.send(t, "POST", "/alertmanager", body, append([]string{"Authorization", "Bearer " + testToken}, hdr...)...)
	if code != 503 || !strings.Contains(b, "accepted once already") {
		t.Errorf("replayed signed request: %d %s, want 503 saying it was accepted once already", code, b)
	}
	upper := append([]string(nil), hdr...)
	upper[3] = "sha256=" + strings.ToUpper(strings.TrimPrefix(hdr[3], "sha256="))
	if code, b := e.send(t, "POST", "/alertmanager", body, append([]string{"Authorization", "Bearer " + testToken}, upper...)...); code != 503 {
		t.Errorf("replayed signed request, hex in upper case: %d %s, want 503", code, b)
	}
	clk.Add(4 * time.Minute)
	if code, b := e.send(t, "POST", "/alertmanager", body, append([]string{"Authorization", "Bearer " + testToken}, hdr...)...); code != 503 {
		t.Errorf("replayed 4 minutes later: %d %s, want 503", code, b)
	}

	for _, c := range []struct {
		name string
		at   time.Duration
	}{{"6 minutes old", -6 * time.Minute}, {"6 minutes ahead", 6 * time.Minute}} {
		body := fresh()
		code, b := e.send(t, "POST", "/alertmanager", body, append([]string{"Authorization", "Bearer " + testToken}, signedAt(secret, body, clk.Now().Add(c.at))...)...)
		if code != 401 || !strings.Contains(b, "X-Underlay-Timestamp") {
			t.Errorf("signed %s: %d %s, want 401 naming X-Underlay-Timestamp", c.name, code, b)
		}
	}
	// The old scheme, the body alone signed, with no time: refused,
	// saying what to sign.
	body = fresh()
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(body))
	code, b = e.send(t, "POST", "/alertmanager", body, "Authorization", "Bearer "+testToken, "X-Underlay-Signature", "sha256="+hex.EncodeToString(m.Sum(nil)))
	if code != 401 || !strings.Contains(b, "X-Underlay-Timestamp") {
		t.Errorf("body alone signed, no time: %d %s, want 401 naming X-Underlay-Timestamp", code, b)
	}
	if got := e.swarm.replicas("web"); got != 2 {
		t.Errorf("web has %d replicas, want 2: only the fresh request scaled", got)
	}
	// Once its time is past the window, the captured request is stale.
	clk.Add(2 * time.Minute)
	if code, b := e.send(t, "POST", "/alertmanager", body0, append([]string{"Authorization", "Bearer " + testToken}, hdr...)...); code != 401 {
		t.Errorf("replayed 6 minutes later: %d %s, want 401", code, b)
	}
	// A fresh request after all that is accepted.
	body = fresh()
	if code, rs := e.webhookResults(t, "/alertmanager", body, signedAt(secret, body, clk.Now())...); code != 200 || len(rs) != 1 || rs[0].Result != "scaled" {
		t.Errorf("fresh signed request: %d %v, want 200 scaled", code, resultsOf(rs))
	}
}

// TestWebhookSignaturesBounded: the signatures remembered against replay
// are bounded: at the bound a fresh signed webhook is answered 503 (the
// sender retries), never let in unremembered; once the oldest are past
// twice the window they are dropped and fresh ones get in again.
func TestWebhookSignaturesBounded(t *testing.T) {
	const secret = "hush, webhook secret"
	clk := testclock.New(time.Now())
	e := newAPIEnvWith(t, Config{Now: clk.Now}, APIConfig{WebhookSecret: StaticSecret(secret), WebhookMaxAge: time.Minute},
		svc("web", 1, "orbiter", "true", LabelMax, "100"))
	e.api.signatures.max = 3
	n := 0
	post := func() (int, string) {
		n++
		body := amBody(firing("f"+strconv.Itoa(n), "service", "web", "direction", "up"))
		return e.send(t, "POST", "/alertmanager", body, append([]string{"Authorization", "Bearer " + testToken}, signedAt(secret, body, clk.Now())...)...)
	}
	for i := range 3 {
		if code, b := post(); code != 200 {
			t.Fatalf("signed webhook %d: %d %s, want 200", i+1, code, b)
		}
	}
	code, b := post()
	if code != 503 || !strings.Contains(b, "retry") {
		t.Errorf("a fourth signed webhook with 3 remembered, the bound: %d %s, want 503 asking for a retry", code, b)
	}
	if got := len(e.api.signatures.seen); got != 3 {
		t.Errorf("%d signatures remembered, want the bound, 3", got)
	}
	clk.Add(2*time.Minute + time.Second)
	if code, b := post(); code != 200 {
		t.Errorf("once the others expired: %d %s, want 200", code, b)
	}
	if got := len(e.api.signatures.seen); got != 1 {
		t.Errorf("%d signatures remembered after the others expired, want 1", got)
	}
	if got := e.swarm.replicas("web"); got != 5 {
		t.Errorf("web has %d replicas, want 5 (four webhooks let in)", got)
	}
}

// TestVerifySignatureTimestamp: the timestamp is Unix seconds in decimal
// digits, nothing else — a sign, a space, a fraction or an overflowing
// number is refused before any HMAC is worked out — and the window holds
// either way, its edges included.
func TestVerifySignatureTimestamp(t *testing.T) {
	secret, body := []byte("k"), []byte(`{"version":"4"}`)
	now := time.Unix(1_800_000_000, 0)
	sign := func(ts string) string { return "sha256=" + hex.EncodeToString(webhookMAC(secret, ts, body)) }
	for _, c := range []struct {
		name, ts string
		ok       bool
	}{
		{"now", "1800000000", true},
		{"the window's edge behind", "1799999700", true},
		{"the window's edge ahead", "1800000300", true},
		{"past the window behind", "1799999699", false},
		{"past the window ahead", "1800000301", false},
		{"plus sign", "+1800000000", false},
		{"minus sign", "-1800000000", false},
		{"fraction", "1800000000.5", false},
		{"space", " 1800000000", false},
		{"overflow", "9999999999999999999", false},
		{"too long", "01800000000000000000", false},
		{"zero", "0", false},
	} {
		_, err := VerifySignature(secret, body, c.ts, sign(c.ts), now, DefaultWebhookMaxAge)
		if (err == nil) != c.ok {
			t.Errorf("%s (%q): err = %v, want ok %v", c.name, c.ts, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: %v does not wrap ErrBadSignature", c.name, err)
		}
	}
}
