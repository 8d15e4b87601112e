package kvstore

import (
	"context"
	"time"
)

// BlockingWait is the longest a blocking read waits (Consul's wait
// parameter; Consul adds up to a sixteenth to spread the answers): how
// late a loop may see that Consul restarted empty between two of its
// reads (see BlockingIndex). An idle loop reads once per BlockingWait.
const BlockingWait = time.Minute

// BlockingContext is ctx bounded for one blocking read that asks Consul to
// wait at most wait: that wait is a parameter Consul honours, not a
// deadline of the client's own, so a Consul agent that accepts the read
// and never answers would hold the loop for good. The bound is the wait,
// the sixteenth Consul may add to it, and time for the answer to arrive
// (WriteWait, a quarter of the wait when that is less): 73.75 s for
// BlockingWait.
func BlockingContext(ctx context.Context, wait time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, wait+wait/16+min(WriteWait, wait/4))
}

// BlockingIndex is the index a loop of blocking reads waits on next
// (Consul's blocking queries: a KV read or listing, a catalog or health
// listing), kept by Consul's rules for them ("Blocking Queries",
// implementation details):
//   - an index that went backwards (Consul restarted empty, a snapshot
//     restored, the key with the highest index under a prefix deleted and
//     its tombstone reaped) restarts the loop: the next read waits on 0,
//     which Consul answers at once, and the loop waits on what that read
//     answered;
//   - an index of 0 is waited on as 1: a wait on 0 returns at once, and a
//     loop answered 0 each time would spin;
//   - and underlay's own: after a failed read the next one waits on 0,
//     since Consul may have restarted empty meanwhile, and a wait on an
//     index it has not reached is answered only at the wait's end.
//
// Consul holds a read waiting on an index above its own as on one it has
// reached, so a restart between two reads (which fails no read) is seen
// only when the second one's wait ends; it is then read again at once.
// Every read therefore waits BlockingWait at most (Wait), not Consul's
// default of five minutes: a restart between two reads is seen within
// it. A read without waiting before each blocking one would double the
// reads and still miss a restart between the two.
//
// The zero value waits on 0 first. Every blocking loop keeps one.
type BlockingIndex struct {
	last uint64 // the index of the last answer; 0 before any
	next uint64 // the index the next read waits on
}

// Next is the index the next read waits on.
func (b *BlockingIndex) Next() uint64 { return b.next }

// Wait is how long the next read may wait: BlockingWait.
func (b *BlockingIndex) Wait() time.Duration { return BlockingWait }

// Failed records that a read failed: the next one waits on 0.
func (b *BlockingIndex) Failed() { b.next = 0 }

// Answered records the index a read was answered with and reports
// whether it moved since the last answer, which is all a blocking read
// tells of a change (an answer at the wait's end carries the same index).
// The first answer moved from 0.
func (b *BlockingIndex) Answered(index uint64) (changed bool) {
	changed = index != b.last
	if index < b.last {
		b.next = 0 // went backwards: a new history, read afresh
	} else {
		b.next = max(index, 1)
	}
	b.last = index
	return changed
}
