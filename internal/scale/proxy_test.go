package scale

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestRateLimitBehindProxy: the rate limit told clients apart by the
// connection's address only, so behind a reverse proxy every user shared
// the proxy's bucket: one client guessing tokens at the dashboard's login
// locked everyone out. With Limits.TrustedProxies (--trusted-proxies) a
// request from one of them is the client's that X-Forwarded-For names
// (its rightmost hop that is not a trusted proxy); from any other peer,
// X-Forwarded-For is ignored, as it is by default.
func TestRateLimitBehindProxy(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	frozen := func() time.Time { return at } // no refill: a bucket used up stays so
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	limited := func(trusted ...string) http.Handler {
		var ps []netip.Prefix
		for _, p := range trusted {
			ps = append(ps, netip.MustParsePrefix(p))
		}
		e := newAPIEnvWith(t, Config{Now: frozen}, APIConfig{Limits: Limits{RateLimit: 1, RateBurst: 2, TrustedProxies: ps}})
		return e.api.RateLimit(ok)
	}
	send := func(h http.Handler, peer string, xff ...string) int {
		req := httptest.NewRequest("POST", "/ui/login", strings.NewReader("{}"))
		req.RemoteAddr = peer
		for _, v := range xff {
			req.Header.Add("X-Forwarded-For", v)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	t.Run("spoofed from an untrusted peer", func(t *testing.T) {
		h := limited("10.0.0.0/8")
		for i, xff := range []string{"198.51.100.1", "198.51.100.2", "10.0.0.5, 198.51.100.3"} {
			want := http.StatusNoContent
			if i == 2 {
				want = http.StatusTooManyRequests
			}
			if code := send(h, "203.0.113.5:4000", xff); code != want {
				t.Errorf("request %d from 203.0.113.5 claiming to be %s: %d, want %d (its own bucket, burst 2)", i+1, xff, code, want)
			}
		}
	})
	t.Run("no trusted proxies", func(t *testing.T) {
		h := limited()
		for i, xff := range []string{"198.51.100.1", "198.51.100.2", "198.51.100.3"} {
			want := http.StatusNoContent
			if i == 2 {
				want = http.StatusTooManyRequests
			}
			if code := send(h, "10.0.0.2:4000", xff); code != want {
				t.Errorf("request %d from 10.0.0.2 naming %s, no proxy trusted: %d, want %d", i+1, xff, code, want)
			}
		}
	})
	t.Run("trusted proxy", func(t *testing.T) {
		h := limited("10.0.0.0/8", "fd00::/64")
		steps := []struct {
			peer string
			xff  []string
			want int
		}{
			{"10.0.0.2:4000", []string{"198.51.100.1"}, 204},
			{"10.0.0.3:4000", []string{"198.51.100.1"}, 204}, // another proxy of the set: the same client
			// The client wrote an address of its own; the proxy appended
			// the one it saw: the rightmost untrusted hop is the client.
			{"10.0.0.2:4000", []string{"192.0.2.77, 198.51.100.1"}, 429},
			// Another client behind the proxy has a bucket of its own,
			// through a chain of trusted proxies, header lines or not.
			{"10.0.0.2:4000", []string{"198.51.100.2, 10.0.0.9"}, 204},
			{"[fd00::1]:4000", []string{"198.51.100.2", "10.1.2.3"}, 204},
			{"10.0.0.2:4000", []string{"198.51.100.2"}, 429},
			// No header: the proxy itself, a client of its own.
			{"10.0.0.2:4000", nil, 204},
			// A hop that is not an address: the trusted hop right of it.
			{"10.0.0.2:4000", []string{"nonsense, 10.0.0.2"}, 204},
			{"10.0.0.2:4000", []string{"nonsense"}, 429},
		}
		for i, st := range steps {
			if code := send(h, st.peer, st.xff...); code != st.want {
				t.Errorf("step %d: from %s with X-Forwarded-For %q: %d, want %d", i+1, st.peer, st.xff, code, st.want)
			}
		}
	})
}

// TestParseTrustedProxies: --trusted-proxies takes CIDR prefixes and
// addresses (one host); a bad one is named.
func TestParseTrustedProxies(t *testing.T) {
	got, err := ParseTrustedProxies([]string{"10.0.0.0/8", " 192.0.2.7 ", "fd00::1/64"})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("fd00::/64")}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("got %v, want %v", got, want)
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "proxy.example", ""} {
		if _, err := ParseTrustedProxies([]string{"10.0.0.0/8", bad}); err == nil || !strings.Contains(err.Error(), `"`+bad+`"`) {
			t.Errorf("%q: error %v, want one naming it", bad, err)
		}
	}
}
