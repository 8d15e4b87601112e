package scale

import (
	"sync"
	"testing"
)

func TestBroadcasterEveryReaderGetsEverything(t *testing.T) {
	b := NewBroadcaster(1000)
	const readers, records = 8, 500
	var wg sync.WaitGroup
	got := make([][]uint64, readers)
	for i := range readers {
		s := b.Subscribe()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range s.C {
				got[i] = append(got[i], r.Seq)
			}
		}()
		defer b.Unsubscribe(s)
	}
	var pub sync.WaitGroup
	for range 4 {
		pub.Add(1)
		go func() {
			defer pub.Done()
			for range records / 4 {
				b.Publish(Record{Service: "s"})
			}
		}()
	}
	pub.Wait()
	for _, s := range b.subsSnapshot() {
		b.Unsubscribe(s)
	}
	wg.Wait()
	for i, seqs := range got {
		if len(seqs) != records {
			t.Fatalf("reader %d got %d records, want %d", i, len(seqs), records)
		}
		for j, s := range seqs {
			if s != uint64(j+1) {
				t.Fatalf("reader %d: record %d has seq %d: out of order or lost", i, j, s)
			}
		}
	}
}

func TestBroadcasterDropsSlowReader(t *testing.T) {
	b := NewBroadcaster(2)
	slow, fast := b.Subscribe(), b.Subscribe()
	var fastGot int
	for range 3 {
		b.Publish(Record{})
		<-fast.C
		fastGot++
	}
	if !slow.Overflowed() {
		t.Fatal("slow reader not marked overflowed")
	}
	n := 0
	for range slow.C {
		n++
	}
	if n != 2 {
		t.Errorf("slow reader drained %d records, want the 2 buffered", n)
	}
	if fast.Overflowed() || fastGot != 3 {
		t.Errorf("fast reader: overflowed %v, got %d", fast.Overflowed(), fastGot)
	}
	if b.Subscribers() != 1 || b.Dropped() != 1 {
		t.Errorf("subscribers %d dropped %d, want 1 and 1", b.Subscribers(), b.Dropped())
	}
	b.Unsubscribe(slow) // harmless after an overflow
	b.Unsubscribe(fast)
	b.Unsubscribe(fast)
}

// subsSnapshot lists the current subscriptions.
func (b *Broadcaster) subsSnapshot() []*Subscription {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*Subscription, 0, len(b.subs))
	for s := range b.subs {
		out = append(out, s)
	}
	return out
}
