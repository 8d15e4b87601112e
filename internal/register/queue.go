package register

import (
	"sync"
	"time"
)

// queue hands out container IDs to workers so that one container is never
// processed by two workers at once, and an ID added while it is being
// processed is processed again afterwards. Events for one container are thus
// applied in order, and a burst of events for it collapses into one pass
// that reads its latest state.
type queue struct {
	mu         sync.Mutex // guards following fields
	cond       *sync.Cond
	order      []string
	queued     map[string]bool
	processing map[string]bool
	// failures counts consecutive failed passes per key, for backoff.
	failures map[string]int
	closed   bool
}

func newQueue() *queue {
	q := &queue{queued: map[string]bool{}, processing: map[string]bool{}, failures: map[string]int{}}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// Add schedules key; it is a no-op when key is already waiting.
func (q *queue) Add(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || q.queued[key] {
		return
	}
	q.queued[key] = true
	if !q.processing[key] {
		q.order = append(q.order, key)
		q.cond.Signal()
	}
}

// Retry schedules key again after a backoff that doubles with each
// consecutive failure, from 100ms up to max.
func (q *queue) Retry(key string, max time.Duration) time.Duration {
	q.mu.Lock()
	n := q.failures[key]
	q.failures[key] = n + 1
	q.mu.Unlock()
	d := 100 * time.Millisecond << min(n, 10)
	d = min(d, max)
	time.AfterFunc(d, func() { q.Add(key) })
	return d
}

// Forget resets key's backoff after a successful pass.
func (q *queue) Forget(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.failures, key)
}

// Get blocks until a key is ready or the queue is closed.
func (q *queue) Get() (string, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.order) == 0 && !q.closed {
		q.cond.Wait()
	}
	if q.closed {
		return "", false
	}
	key := q.order[0]
	q.order = q.order[1:]
	delete(q.queued, key)
	q.processing[key] = true
	return key, true
}

// Done ends a pass over key; a key added during the pass becomes ready again.
func (q *queue) Done(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.processing, key)
	if q.queued[key] && !q.closed {
		q.order = append(q.order, key)
		q.cond.Signal()
	}
}

// Len is the number of keys waiting.
func (q *queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.order)
}

// Close wakes every Get, which then returns false.
func (q *queue) Close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.cond.Broadcast()
}
