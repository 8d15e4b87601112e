package ipam

import (
	"maps"
	"net/netip"
	"sync"
	"time"
)

// reuseAfter is how long an address this node freed is passed over while
// any other is free (see reuse). Docker's plugin client resends a call
// whose answer it did not get for up to 30s after the first try; this
// leaves room for that and for a release waiting its turn in a batch.
const reuseAfter = 2 * time.Minute

// freedAddrs remembers when this node freed each address it freed within
// reuseAfter, by pool. It is kept in memory only: Consul's documents stay
// as older agents read them, and a restarted agent starts with none.
type freedAddrs struct {
	mu sync.Mutex // guards following fields
	// at is when each address was freed, by pool ID; nil until one is.
	at map[string]map[netip.Addr]time.Time
}

// add notes that addrs of p were freed at now.
func (f *freedAddrs) add(p Pool, addrs []netip.Addr, now time.Time) {
	if len(addrs) == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgetLocked(now)
	if f.at == nil {
		f.at = map[string]map[netip.Addr]time.Time{}
	}
	m := f.at[p.ID()]
	if m == nil {
		m = map[netip.Addr]time.Time{}
		f.at[p.ID()] = m
	}
	for _, a := range addrs {
		m[a] = now
	}
}

// recent returns, by address, when the addresses of p freed within
// reuseAfter of now were freed: a copy, which the caller may keep.
func (f *freedAddrs) recent(p Pool, now time.Time) map[netip.Addr]time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgetLocked(now)
	return maps.Clone(f.at[p.ID()])
}

// forgetLocked drops what was freed reuseAfter or longer before now, in
// every pool, so that a pool no longer served keeps nothing for long.
func (f *freedAddrs) forgetLocked(now time.Time) {
	for id, m := range f.at {
		maps.DeleteFunc(m, func(_ netip.Addr, at time.Time) bool { return now.Sub(at) >= reuseAfter })
		if len(m) == 0 {
			delete(f.at, id)
		}
	}
}
