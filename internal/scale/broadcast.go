package scale

import "sync"

// DefaultSubscriberBuffer is how many records a subscriber may fall behind
// before it is dropped.
const DefaultSubscriberBuffer = 256

// Broadcaster hands every published Record to every subscriber, in order.
//
// Each subscriber has its own buffered channel, so one reader never delays
// another or the publisher. A subscriber whose buffer is full when a record
// is published is dropped rather than silently skipped: its channel is
// closed and Overflowed reports true, so a reader either sees every record
// or knows it missed some (the events endpoint ends the stream with an
// "overflow" event, and the client reconnects and reads the history).
type Broadcaster struct {
	buffer int

	mu   sync.Mutex // guards following fields
	seq  uint64
	subs map[*Subscription]struct{}
	// dropped counts subscribers dropped for being slow.
	dropped uint64
}

// NewBroadcaster returns a broadcaster whose subscribers buffer buffer
// records (DefaultSubscriberBuffer when buffer ≤ 0).
func NewBroadcaster(buffer int) *Broadcaster {
	if buffer <= 0 {
		buffer = DefaultSubscriberBuffer
	}
	return &Broadcaster{buffer: buffer, subs: map[*Subscription]struct{}{}}
}

// Subscription is one reader's feed.
type Subscription struct {
	// C delivers the records; it is closed by Unsubscribe or when the reader
	// fell behind (then Overflowed is true).
	C <-chan Record
	c chan Record

	mu         sync.Mutex // guards overflowed
	overflowed bool
}

// Overflowed reports whether the subscription was dropped because its
// reader fell more than the buffer behind.
func (s *Subscription) Overflowed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.overflowed
}

// Subscribe starts a feed of every record published from now on.
func (b *Broadcaster) Subscribe() *Subscription {
	c := make(chan Record, b.buffer)
	s := &Subscription{C: c, c: c}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.subs[s] = struct{}{}
	return s
}

// Unsubscribe ends s; ending it twice, or after an overflow, is harmless.
func (b *Broadcaster) Unsubscribe(s *Subscription) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.subs[s]; ok {
		delete(b.subs, s)
		close(s.c)
	}
}

// Publish numbers r (Seq, from 1) and hands it to every subscriber without
// waiting; it returns r as numbered.
func (b *Broadcaster) Publish(r Record) Record {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	r.Seq = b.seq
	for s := range b.subs {
		select {
		case s.c <- r:
		default:
			s.mu.Lock()
			s.overflowed = true
			s.mu.Unlock()
			delete(b.subs, s)
			close(s.c)
			b.dropped++
		}
	}
	return r
}

// Subscribers is the number of current subscribers.
func (b *Broadcaster) Subscribers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// Dropped is the number of subscribers dropped for falling behind.
func (b *Broadcaster) Dropped() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dropped
}
