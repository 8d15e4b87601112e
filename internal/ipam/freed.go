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

// FreedStore keeps what a node freed lately (see freedAddrs) across its
// agent's restarts: a restarted agent that forgot would hand such an
// address out at once, and a late release of it would then free a new
// container's address.
type FreedStore interface {
	// Load returns what was saved: by pool ID, when each address was
	// freed; nothing, with no error, when nothing was.
	Load() (map[string]map[netip.Addr]time.Time, error)
	// Save replaces what is saved with freed.
	Save(freed map[string]map[netip.Addr]time.Time) error
}

// freedAddrs remembers when this node freed each address it freed within
// reuseAfter, by pool. It is kept in memory, and in the Allocator's
// FreedStore if it has one, never in Consul: Consul's documents stay as
// older agents read them.
type freedAddrs struct {
	mu sync.Mutex // guards following fields
	// at is when each address was freed, by pool ID; nil until one is.
	at map[string]map[netip.Addr]time.Time
	// earlier are those of at an earlier agent of the node freed (see
	// restore), by pool ID: Docker may not have had the answer to their
	// release, and send it again (it resends a call only when its
	// connection failed: the agent that served it died).
	earlier map[string]map[netip.Addr]bool
	// again are those of earlier handed out again by this agent, by pool
	// ID, with when they were freed; forgotten reuseAfter after, as at's
	// are. A release of one may be Docker's resend of the release that
	// freed it (see Allocator.Release); kept in memory only.
	again map[string]map[netip.Addr]time.Time
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
		delete(f.earlier[p.ID()], a)
		delete(f.again[p.ID()], a)
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

// unfree forgets that a, of p, was freed, and says whether it was freed
// lately: handed out again, its release speaks no more for the container
// that holds it now (see Allocator.handedOut). One an earlier agent
// freed is noted as handed out again (see again).
func (f *freedAddrs) unfree(p Pool, a netip.Addr) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.at[p.ID()]
	at, ok := m[a]
	if !ok {
		return false
	}
	delete(m, a)
	if len(m) == 0 {
		delete(f.at, p.ID())
	}
	if !f.earlier[p.ID()][a] {
		return true
	}
	delete(f.earlier[p.ID()], a)
	if f.again == nil {
		f.again = map[string]map[netip.Addr]time.Time{}
	}
	if f.again[p.ID()] == nil {
		f.again[p.ID()] = map[netip.Addr]time.Time{}
	}
	f.again[p.ID()][a] = at
	return true
}

// handedAgain says whether a, of p, was handed out again by this agent
// within reuseAfter of now after an earlier agent of the node freed it,
// and not freed since: a release of it now may be Docker's resend of the
// one that freed it.
func (f *freedAddrs) handedAgain(p Pool, a netip.Addr, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgetLocked(now)
	_, ok := f.again[p.ID()][a]
	return ok
}

// lately says whether a, of p, was freed within reuseAfter of now,
// without copying recent's map.
func (f *freedAddrs) lately(p Pool, a netip.Addr, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgetLocked(now)
	_, ok := f.at[p.ID()][a]
	return ok
}

// all returns, by pool, when the addresses freed within reuseAfter of now
// were freed: a copy, which the caller may keep.
func (f *freedAddrs) all(now time.Time) map[string]map[netip.Addr]time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgetLocked(now)
	out := make(map[string]map[netip.Addr]time.Time, len(f.at))
	for id, m := range f.at {
		out[id] = maps.Clone(m)
	}
	return out
}

// restore adds what an earlier agent of this node saved and returns how
// many addresses it kept: those freed reuseAfter or longer before now are
// dropped, and those dated after now (the clock was set back since) are
// taken as freed now, so that none is passed over for longer than
// reuseAfter from here.
func (f *freedAddrs) restore(saved map[string]map[netip.Addr]time.Time, now time.Time) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.at == nil {
		f.at = map[string]map[netip.Addr]time.Time{}
	}
	if f.earlier == nil {
		f.earlier = map[string]map[netip.Addr]bool{}
	}
	for id, addrs := range saved {
		m := f.at[id]
		if m == nil {
			m = map[netip.Addr]time.Time{}
			f.at[id] = m
		}
		if f.earlier[id] == nil {
			f.earlier[id] = map[netip.Addr]bool{}
		}
		for a, at := range addrs {
			if at.After(now) {
				at = now
			}
			if prev, ok := m[a]; !ok || at.After(prev) {
				m[a] = at
				f.earlier[id][a] = true
			}
		}
	}
	f.forgetLocked(now)
	n := 0
	for _, m := range f.at {
		n += len(m)
	}
	return n
}

// forgetLocked drops what was freed reuseAfter or longer before now, in
// every pool, so that a pool no longer served keeps nothing for long.
func (f *freedAddrs) forgetLocked(now time.Time) {
	for _, by := range []map[string]map[netip.Addr]time.Time{f.at, f.again} {
		for id, m := range by {
			maps.DeleteFunc(m, func(_ netip.Addr, at time.Time) bool { return now.Sub(at) >= reuseAfter })
			if len(m) == 0 {
				delete(by, id)
			}
		}
	}
	for id, m := range f.earlier {
		maps.DeleteFunc(m, func(a netip.Addr, _ bool) bool { _, ok := f.at[id][a]; return !ok })
		if len(m) == 0 {
			delete(f.earlier, id)
		}
	}
}
