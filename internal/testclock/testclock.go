// Package testclock is a clock for unit tests of what takes a
// func() time.Time (a throttle, a cooldown): the test moves it on instead
// of sleeping. It imports only the standard library.
package testclock

import (
	"sync"
	"time"
)

// Clock is a settable clock, safe for concurrent use.
type Clock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

// New is a clock that reads start until moved on.
func New(start time.Time) *Clock {
	return &Clock{now: start}
}

// Now is the clock's time, for a func() time.Time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Add moves the clock on by d.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
