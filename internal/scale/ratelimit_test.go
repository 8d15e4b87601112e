package scale

import (
	"fmt"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/testclock"
)

func TestRateLimiter(t *testing.T) {
	clk := testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	l := newRateLimiter(2, 4, clk.Now)
	a, b := clientKey("192.0.2.1:5555"), clientKey("192.0.2.2:5555")
	for i := range 4 {
		if ok, _ := l.allow(a); !ok {
			t.Fatalf("request %d of a burst of 4 refused", i)
		}
	}
	ok, wait := l.allow(a)
	if ok || wait != 500*time.Millisecond {
		t.Errorf("fifth request: %v, retry after %s; want refused, 500ms", ok, wait)
	}
	if ok, _ := l.allow(b); !ok {
		t.Error("another client was refused")
	}
	clk.Add(500 * time.Millisecond)
	if ok, _ := l.allow(a); !ok {
		t.Error("refused after the wait it was told")
	}
	if ok, _ := l.allow(a); ok {
		t.Error("a second request within the same half second was allowed")
	}

	// Ports and IPv6 interface IDs do not make new clients.
	if clientKey("192.0.2.1:1") != clientKey("192.0.2.1:2") || clientKey("[2001:db8::1]:1") != clientKey("[2001:db8::2]:2") ||
		clientKey("[::ffff:192.0.2.1]:1") != clientKey("192.0.2.1:3") {
		t.Error("one client seen as several")
	}
	if clientKey("[2001:db8:0:1::1]:1") == clientKey("[2001:db8:0:2::1]:1") {
		t.Error("two /64s seen as one client")
	}

	// The table is bounded: full buckets are dropped, and clients beyond
	// room share one bucket.
	l = newRateLimiter(1, 1, clk.Now)
	l.max = 3
	for i := range 3 {
		l.allow(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 32))
	}
	if ok, _ := l.allow(clientKey("10.0.1.1:1")); !ok {
		t.Error("a client beyond the table was refused at once")
	}
	if ok, _ := l.allow(clientKey("10.0.1.2:1")); ok {
		t.Error("two clients beyond the table did not share a bucket")
	}
	clk.Add(time.Second) // every bucket is full again: the table empties
	if ok, _ := l.allow(clientKey("10.0.1.2:1")); !ok || len(l.clients) != 1 {
		t.Errorf("after a second: allowed %v, %d clients tracked; want allowed and 1", ok, len(l.clients))
	}
}

func TestNoncesExpire(t *testing.T) {
	n := &nonces{seen: map[string]time.Time{}}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if !n.add("a", now) || n.add("a", now.Add(time.Second)) {
		t.Fatal("a nonce accepted twice")
	}
	for i := range 100 {
		n.add(fmt.Sprint(i), now)
	}
	n.add("late", now.Add(3*PeerSkew))
	if len(n.seen) != 1 {
		t.Errorf("%d nonces remembered after they expired, want 1", len(n.seen))
	}
}

// TestNoncesAtTheBound: with maxNonces stored, nonces are refused until
// the oldest expire, and then exactly as many are accepted as expired,
// oldest first; one still in its time is never accepted again. (Expiry
// used to go through the whole map on every forwarded request at the
// bound; what it costs is BenchmarkNonceRefusedAtBound's to show.)
func TestNoncesAtTheBound(t *testing.T) {
	if testing.Short() {
		t.Skip("fills the nonce map to its bound")
	}
	n := &nonces{seen: map[string]time.Time{}}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range maxNonces {
		if !n.add(strconv.Itoa(i), now.Add(time.Duration(i)*time.Nanosecond)) {
			t.Fatalf("nonce %d refused below the bound", i)
		}
	}
	if n.add("more", now.Add(time.Second)) {
		t.Fatalf("a nonce accepted beyond the bound of %d", maxNonces)
	}
	// Nonces 0 to 999 are past 2*PeerSkew then, 1000 on are not.
	later := now.Add(2*PeerSkew + 1000*time.Nanosecond)
	if n.add("5000", later) {
		t.Error("nonce 5000, still in its time, accepted again")
	}
	accepted := 0
	for i := range 2000 {
		if n.add(fmt.Sprintf("fresh%d", i), later) {
			accepted++
		}
	}
	if accepted != 1000 {
		t.Errorf("%d nonces accepted once 1000 had expired, want 1000", accepted)
	}
	if len(n.seen) != maxNonces || len(n.order)-n.head != len(n.seen) {
		t.Errorf("%d nonces stored, %d queued; want %d of each", len(n.seen), len(n.order)-n.head, maxNonces)
	}
}

// BenchmarkNonceRefusedAtBound is one forwarded request's nonce check with
// maxNonces stored and none expired: the case that went through the whole
// map under its lock.
func BenchmarkNonceRefusedAtBound(b *testing.B) {
	n := &nonces{seen: map[string]time.Time{}}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range maxNonces {
		n.add(strconv.Itoa(i), now)
	}
	later := now.Add(time.Second)
	for b.Loop() {
		if n.add("more", later) {
			b.Fatal("a nonce accepted beyond the bound")
		}
	}
}

// TestRateLimiterTinyRate: --rate-limit 1e-12 (about one request in 30,000
// years after the burst) made the wait overflow time.Duration; converted
// from a float beyond its range it came out negative, read as no wait, and
// every request was allowed: the tightest limit was none.
func TestRateLimiterTinyRate(t *testing.T) {
	clk := testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	l := newRateLimiter(1e-12, 1, clk.Now)
	a := clientKey("192.0.2.1:5555")
	if ok, _ := l.allow(a); !ok {
		t.Fatal("the burst's one request refused")
	}
	for i := range 3 {
		if ok, wait := l.allow(a); ok || wait <= 0 {
			t.Fatalf("request %d after the burst at 1e-12 a second: allowed %v, wait %s; want refused with a positive wait", i+2, ok, wait)
		}
	}
}
