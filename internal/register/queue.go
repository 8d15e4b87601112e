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
//
// Keys added by events go before keys added in the background by resyncs,
// so a resync of many unchanged containers never delays a new one.
type queue struct {
	mu   sync.Mutex // guards following fields
	cond *sync.Cond
	// urgent and background hold keys in arrival order; an entry whose
	// key is no longer queued at that priority is stale and skipped.
	urgent     []string
	background []string
	queued     map[string]priority
	processing map[string]bool
	// failures counts consecutive failed passes per key, for backoff.
	failures map[string]int
	closed   bool
	// waitHook, when set, is called with mu held as a Get starts to wait
	// (tests): once it has run, the Get is waiting for a signal.
	waitHook func()
}

type priority int

const (
	urgent priority = iota + 1
	background
)

func newQueue() *queue {
	q := &queue{queued: map[string]priority{}, processing: map[string]bool{}, failures: map[string]int{}}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// Add schedules key ahead of background work; it is a no-op when key is
// already waiting at that priority.
func (q *queue) Add(key string) { q.add(key, urgent) }

// AddBackground schedules key behind every urgent key.
func (q *queue) AddBackground(key string) { q.add(key, background) }

func (q *queue) add(key string, p priority) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	if have, ok := q.queued[key]; ok && have <= p {
		return
	}
	q.queued[key] = p
	if !q.processing[key] {
		q.pushLocked(key, p)
	}
}

func (q *queue) pushLocked(key string, p priority) {
	if p == urgent {
		q.urgent = append(q.urgent, key)
	} else {
		q.background = append(q.background, key)
	}
	q.cond.Signal()
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
	for {
		if q.closed {
			return "", false
		}
		if key, ok := q.popLocked(&q.urgent, urgent); ok {
			return key, true
		}
		if key, ok := q.popLocked(&q.background, background); ok {
			return key, true
		}
		if q.waitHook != nil {
			q.waitHook()
		}
		q.cond.Wait()
	}
}

func (q *queue) popLocked(list *[]string, p priority) (string, bool) {
	for len(*list) > 0 {
		key := (*list)[0]
		*list = (*list)[1:]
		if q.queued[key] != p || q.processing[key] {
			continue // stale: promoted to urgent, or already handed out
		}
		delete(q.queued, key)
		q.processing[key] = true
		return key, true
	}
	return "", false
}

// Done ends a pass over key; a key added during the pass becomes ready again.
func (q *queue) Done(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.processing, key)
	if p, ok := q.queued[key]; ok && !q.closed {
		q.pushLocked(key, p)
	}
}

// Len is the number of keys waiting.
func (q *queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for key := range q.queued {
		if !q.processing[key] {
			n++
		}
	}
	return n
}

// Close wakes every Get, which then returns false.
func (q *queue) Close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.cond.Broadcast()
}
