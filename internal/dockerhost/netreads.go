package dockerhost

import (
	"context"
	"sync"
	"time"

	"github.com/underlay/underlay/internal/register"
)

// networkReads shares network reads among the connect events of a burst.
// Docker has no call for one endpoint: a network's read lists every
// container on it, so a read per connect event made a burst of starts on
// a node cost the square of the network's size there. A connect asks for
// a read begun after its event came, which shows its endpoint: the last
// read, or the one in flight, if begun late enough, or else the next one.
// At most one read per network is in flight: those who came too late for
// it share the one that follows it.
type networkReads struct {
	read func(ctx context.Context, networkID string) (networkRead, error)
	now  func() time.Time

	mu   sync.Mutex
	nets map[string]*networkReadState
}

// networkRead is what a read of a network gives.
type networkRead struct {
	endpoints map[string]register.Endpoint // by container ID
}

// readCall is one read of a network, shared by all who wait for it.
type readCall struct {
	began time.Time     // set when the read is sent
	done  chan struct{} // closed with res and err set
	res   networkRead
	err   error
}

type networkReadState struct {
	last    *readCall // the newest read that succeeded
	running *readCall // the read in flight
	next    *readCall // to be sent once running ends
}

// keepRead bounds how long a network's last read is kept: a connect event
// older than that read's age could use it, but reads are for events just
// come, so an old one only holds memory (a network's every endpoint).
const keepRead = time.Minute

// readTimeout bounds a shared read, which no one caller's context ends.
const readTimeout = time.Minute

func newNetworkReads(read func(ctx context.Context, networkID string) (networkRead, error)) *networkReads {
	return &networkReads{read: read, now: time.Now, nets: map[string]*networkReadState{}}
}

// get returns a read of networkID sent at or after after, the time the
// caller's connect event was received (or any time after it).
func (r *networkReads) get(ctx context.Context, networkID string, after time.Time) (networkRead, error) {
	r.mu.Lock()
	st := r.nets[networkID]
	if st == nil {
		st = &networkReadState{}
		r.nets[networkID] = st
	}
	var c *readCall
	switch {
	case st.last != nil && !st.last.began.Before(after):
		res := st.last.res
		r.mu.Unlock()
		return res, nil
	case st.running != nil && !st.running.began.Before(after):
		c = st.running
	case st.running != nil:
		if st.next == nil {
			st.next = &readCall{done: make(chan struct{})}
		}
		c = st.next
	default:
		c = &readCall{began: r.now(), done: make(chan struct{})}
		st.running = c
		go r.run(context.WithoutCancel(ctx), networkID, c)
	}
	r.mu.Unlock()
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		return networkRead{}, ctx.Err()
	}
}

// run sends one read, then the next if some came too late for it. ctx
// carries the first caller's values, not its end: others wait too.
func (r *networkReads) run(ctx context.Context, networkID string, c *readCall) {
	for c != nil {
		rctx, cancel := context.WithTimeout(ctx, readTimeout)
		res, err := r.read(rctx, networkID)
		cancel()
		r.mu.Lock()
		c.res, c.err = res, err
		close(c.done)
		st := r.nets[networkID]
		if err == nil {
			st.last = c
		}
		st.running, c = nil, nil
		if st.next != nil {
			c, st.next = st.next, nil
			c.began = r.now()
			st.running = c
		}
		r.forgetOld()
		r.mu.Unlock()
	}
}

// forgetOld drops the reads of networks not read for keepRead; r.mu held.
func (r *networkReads) forgetOld() {
	now := r.now()
	for id, st := range r.nets {
		if st.running == nil && st.next == nil && (st.last == nil || now.Sub(st.last.began) > keepRead) {
			delete(r.nets, id)
		}
	}
}
