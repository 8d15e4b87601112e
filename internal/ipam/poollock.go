package ipam

import (
	"context"
	"sync"
)

// poolLocks serialises an operation per pool (by Pool.ID), a waiter
// giving up when its context ends. A pool's entry lives only while the
// lock is held or awaited: pools come and go with networks.
type poolLocks struct {
	mu sync.Mutex // guards following field
	// held is, by pool, a channel holding one value while the lock is
	// held, with how many hold or await it.
	held map[string]*poolLock
}

type poolLock struct {
	ch    chan struct{}
	users int
}

// lock takes id's lock, or returns ctx's error; unlock gives it back.
func (l *poolLocks) lock(ctx context.Context, id string) (unlock func(), err error) {
	l.mu.Lock()
	if l.held == nil {
		l.held = map[string]*poolLock{}
	}
	pl := l.held[id]
	if pl == nil {
		pl = &poolLock{ch: make(chan struct{}, 1)}
		l.held[id] = pl
	}
	pl.users++
	l.mu.Unlock()
	done := func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if pl.users--; pl.users == 0 {
			delete(l.held, id)
		}
	}
	select {
	case pl.ch <- struct{}{}:
		return func() { <-pl.ch; done() }, nil
	case <-ctx.Done():
		done()
		return nil, ctx.Err()
	}
}
