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
	// Load returns what was saved; nothing, with no error, when nothing
	// was.
	Load() (Freed, error)
	// Save replaces what is saved with freed.
	Save(freed Freed) error
}

// Freed is what a node freed lately, by pool ID and address, with when
// each address was freed.
type Freed struct {
	// At are those not handed out again since.
	At map[string]map[netip.Addr]time.Time
	// Again are those handed out again since, by the agent that saved
	// them or one before it: the next agent holds back a release of one,
	// which may be Docker's resend of the release that freed it (see
	// Allocator.Release).
	Again map[string]map[netip.Addr]time.Time
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
	// again are those of earlier handed out again by this agent, and
	// those an earlier agent saved as handed out again (Freed.Again), by
	// pool ID, with when they were freed; forgotten reuseAfter after, as
	// at's are. A release of one may be Docker's resend of the release
	// that freed it (see Allocator.Release).
	again map[string]map[netip.Addr]time.Time
	// mine are the addresses this agent freed and handed out again, by
	// pool ID, with when they were freed: a release of one this agent
	// gets is no resend (the agent that freed it is alive, so Docker had
	// the answer), but one the next agent gets may be, so they are saved
	// as Freed.Again. Forgotten reuseAfter after, as at's are.
	mine map[string]map[netip.Addr]time.Time
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
		delete(f.mine[p.ID()], a)
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
// that holds it now (see Allocator.handedOut). It is noted as handed out
// again (see again and mine), to be saved before the request is
// answered: the agent may be killed before it answers the release that
// freed it.
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
	by := &f.mine
	if f.earlier[p.ID()][a] {
		delete(f.earlier[p.ID()], a)
		by = &f.again
	}
	addTo(by, p.ID(), a, at)
	return true
}

// addTo sets (*by)[id][a] to at, making the maps it needs.
func addTo(by *map[string]map[netip.Addr]time.Time, id string, a netip.Addr, at time.Time) {
	if *by == nil {
		*by = map[string]map[netip.Addr]time.Time{}
	}
	if (*by)[id] == nil {
		(*by)[id] = map[netip.Addr]time.Time{}
	}
	(*by)[id][a] = at
}

// suspect says whether a release of a, of p, now may be Docker's resend of
// a release an earlier agent of the node served, its answer cut off by
// the agent's death, while a container may hold a since: a was handed
// out again by this agent after an earlier one freed it, or by an
// earlier agent after it freed it (saved as Freed.Again), within
// reuseAfter of now and not freed since; or an earlier agent freed it and
// this one did not hand it out (a handout by the earlier agent whose
// record was not saved: the save failed, or the agent was killed before
// it).
func (f *freedAddrs) suspect(p Pool, a netip.Addr, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgetLocked(now)
	_, again := f.again[p.ID()][a]
	return again || f.earlier[p.ID()][a]
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

// all returns what was freed within reuseAfter of now, as saved for the
// next agent: a copy, which the caller may keep.
func (f *freedAddrs) all(now time.Time) Freed {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgetLocked(now)
	out := Freed{At: make(map[string]map[netip.Addr]time.Time, len(f.at))}
	for id, m := range f.at {
		out.At[id] = maps.Clone(m)
	}
	for _, by := range []map[string]map[netip.Addr]time.Time{f.again, f.mine} {
		for id, m := range by {
			for a, at := range m {
				addTo(&out.Again, id, a, at)
			}
		}
	}
	return out
}

// restore adds what an earlier agent of this node saved and returns how
// many addresses it kept: those freed reuseAfter or longer before now are
// dropped, and those dated after now (the clock was set back since) are
// taken as freed now, so that none is passed over, nor its release held
// back, for longer than reuseAfter from here.
func (f *freedAddrs) restore(saved Freed, now time.Time) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.earlier == nil {
		f.earlier = map[string]map[netip.Addr]bool{}
	}
	for id, addrs := range saved.At {
		for a, at := range addrs {
			at = notAfter(at, now)
			if prev, ok := f.at[id][a]; !ok || at.After(prev) {
				addTo(&f.at, id, a, at)
				if f.earlier[id] == nil {
					f.earlier[id] = map[netip.Addr]bool{}
				}
				f.earlier[id][a] = true
			}
		}
	}
	for id, addrs := range saved.Again {
		for a, at := range addrs {
			if _, freed := f.at[id][a]; !freed {
				addTo(&f.again, id, a, notAfter(at, now))
			}
		}
	}
	f.forgetLocked(now)
	n := 0
	for _, by := range []map[string]map[netip.Addr]time.Time{f.at, f.again} {
		for _, m := range by {
			n += len(m)
		}
	}
	return n
}

// notAfter is t, or now if t is after it.
func notAfter(t, now time.Time) time.Time {
	if t.After(now) {
		return now
	}
	return t
}

// forgetLocked drops what was freed reuseAfter or longer before now, in
// every pool, so that a pool no longer served keeps nothing for long.
func (f *freedAddrs) forgetLocked(now time.Time) {
	for _, by := range []map[string]map[netip.Addr]time.Time{f.at, f.again, f.mine} {
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
