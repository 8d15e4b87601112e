package scale

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// rateLimiter is a token bucket per client: each client may make burst
// requests at once, then rate a second. Clients are told apart by address:
// an IPv4 address, or an IPv6 /64 (what one host commonly holds). Memory is
// bounded: a full bucket is the same as none and is dropped when the table
// is full; clients beyond the table share one bucket.
type rateLimiter struct {
	rate  float64 // tokens a second
	burst float64
	max   int // clients tracked
	now   func() time.Time

	mu      sync.Mutex // guards following fields
	clients map[netip.Prefix]*bucket
	// shared is the bucket of the clients the table had no room for.
	shared bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// defaultMaxClients bounds the clients a rateLimiter tracks.
const defaultMaxClients = 65536

func newRateLimiter(rate float64, burst int, now func() time.Time) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(max(burst, 1)), max: defaultMaxClients, now: now,
		clients: map[netip.Prefix]*bucket{}, shared: bucket{tokens: float64(max(burst, 1))}}
}

// clientKey is the client of a RemoteAddr ("ip:port").
func clientKey(remote string) netip.Prefix { return addrKey(remoteAddr(remote)) }

// addrKey is the client of an address: the address (IPv4), or its /64
// (IPv6); an invalid one is one shared client.
func addrKey(ip netip.Addr) netip.Prefix {
	if !ip.IsValid() {
		return netip.Prefix{} // unparsable: one shared client
	}
	ip = ip.Unmap()
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32)
	}
	p, _ := ip.WithZone("").Prefix(64)
	return p
}

// remoteAddr is the address of a RemoteAddr ("ip:port", or an address);
// invalid when it is neither.
func remoteAddr(remote string) netip.Addr {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip, _ := netip.ParseAddr(host)
	return ip.Unmap()
}

// ForwardedForHeader lists, left to right, the addresses each proxy a
// request went through got it from (a client may start it with anything).
const ForwardedForHeader = "X-Forwarded-For"

// clientAddr is the address of the client of a request that came from
// peer (its RemoteAddr) with the ForwardedForHeader lines xff: peer's,
// unless peer is in trusted; then the rightmost hop of xff that is not in
// trusted. Each trusted proxy appends the address it got the request
// from, so that hop is the one a trusted proxy saw connect; those left
// of it are whatever the client wrote. A hop that is not an address ends
// the walk at the trusted hop right of it (the proxy that wrote it), as
// does a header naming trusted proxies only.
func clientAddr(peer string, xff []string, trusted []netip.Prefix) netip.Addr {
	ip := remoteAddr(peer)
	if len(xff) == 0 || !inPrefixes(ip, trusted) {
		return ip
	}
	hops := strings.Split(strings.Join(xff, ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop := strings.TrimSpace(hops[i])
		next := remoteAddr(hop)
		if !next.IsValid() {
			next = remoteAddr(strings.Trim(hop, "[]")) // "[v6]", as some proxies write it
		}
		if !next.IsValid() {
			break
		}
		ip = next
		if !inPrefixes(ip, trusted) {
			break
		}
	}
	return ip
}

func inPrefixes(ip netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// ParseTrustedProxies parses --trusted-proxies: CIDR prefixes, or
// addresses (one host each).
func ParseTrustedProxies(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		v := strings.TrimSpace(s)
		p, err := netip.ParsePrefix(v)
		if err != nil {
			ip, ierr := netip.ParseAddr(v)
			if ierr != nil {
				return nil, fmt.Errorf("trusted proxy %q: want a CIDR prefix (10.0.0.0/24) or an address: %w", s, err)
			}
			ip = ip.Unmap()
			p = netip.PrefixFrom(ip, ip.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// allow takes one token of client's bucket: true when there was one, else
// false and how long until there is.
func (l *rateLimiter) allow(client netip.Prefix) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, wait := l.bucketLocked(client)
	if wait > 0 {
		return false, wait
	}
	b.tokens--
	return true, 0
}

// empty reports whether client's bucket has no token left, and how long
// until it has one, taking none.
func (l *rateLimiter) empty(client netip.Prefix) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, wait := l.bucketLocked(client)
	return wait > 0, wait
}

// bucketLocked is client's bucket, refilled, and how long until it holds a
// token (0: it does). l.mu is held.
func (l *rateLimiter) bucketLocked(client netip.Prefix) (*bucket, time.Duration) {
	now := l.now()
	b := l.clients[client]
	if b == nil {
		if len(l.clients) >= l.max {
			l.sweepLocked(now)
		}
		if len(l.clients) >= l.max {
			b = &l.shared
		} else {
			b = &bucket{tokens: l.burst, last: now}
			l.clients[client] = b
		}
	}
	l.refill(b, now)
	if b.tokens >= 1 {
		return b, 0
	}
	// Bounded while a float: beyond time.Duration's range the conversion
	// gives a negative wait (on amd64), which reads as none.
	wait := math.Ceil((1 - b.tokens) / l.rate * float64(time.Second))
	if !(wait < math.MaxInt64) {
		return b, time.Duration(math.MaxInt64)
	}
	return b, time.Duration(wait)
}

func (l *rateLimiter) refill(b *bucket, now time.Time) {
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(l.burst, b.tokens+el.Seconds()*l.rate)
	}
	b.last = now
}

// sweepLocked drops the buckets that are full again. l.mu is held.
func (l *rateLimiter) sweepLocked(now time.Time) {
	for k, b := range l.clients {
		l.refill(b, now)
		if b.tokens >= l.burst {
			delete(l.clients, k)
		}
	}
}
