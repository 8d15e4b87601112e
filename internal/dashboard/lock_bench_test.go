package dashboard

import (
	"bufio"
	"bytes"
	"log/slog"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkPublishLockHeld publishes a changed snapshot of a big cluster
// (BenchmarkSnapshotSize's, and one whose cards are so large that fit
// halves the caps) per iteration while another goroutine takes and
// releases the server's lock in a loop, as pages reading the snapshot and
// streams sending frames do. It reports, from the runtime's mutex
// profile, how long that goroutine waited for publish to release the lock,
// per publish (publish-lock-wait-ns/op): the time a rebuild keeps pages
// out. The profile charges a wait to the goroutine that released the
// lock, at its release, so the reader's own delays in being scheduled
// are not counted; the time publish held it is wall-clock time, longer
// on a busy machine.
func BenchmarkPublishLockHeld(b *testing.B) {
	long := func(s string) string { return s + strings.Repeat("~", 400) }
	for _, c := range []struct {
		name string
		in   func() Inputs
	}{
		{"services=100", func() Inputs { return synthetic(50, 100*50, t0, nil) }},
		{"services=1000", func() Inputs { return synthetic(50, 1000*50, t0, nil) }},
		{"services=100,fit", func() Inputs { return synthetic(50, 100*50, t0, long) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			snap := Build(c.in())
			s, err := New(Config{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
			if err != nil {
				b.Fatal(err)
			}
			s.publish(snap)
			contended(b, s, "publish", func() {
				snap.GeneratedAt = snap.GeneratedAt.Add(1)
				snap.Control.Leading = !snap.Control.Leading // a change: published
				s.publish(snap)
			})
			if body := s.Snapshot(); len(body) > MaxSnapshotBytes {
				b.Fatalf("snapshot of %d bytes", len(body))
			}
		})
	}
}

// BenchmarkSubscribeLockHeld opens a stream per iteration while the
// server keeps a full backlog of events (EventBacklog, messages of
// MaxEventMessage bytes), each the first since the events changed, which
// makes their frame, while another goroutine takes and releases the
// server's lock in a loop, as pages and streams do. It reports how long
// that goroutine waited for subscribe to release the lock, per
// subscribe (subscribe-lock-wait-ns/op), as BenchmarkPublishLockHeld
// does for publish.
func BenchmarkSubscribeLockHeld(b *testing.B) {
	s, err := New(Config{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	s.publish(Build(synthetic(3, 10, t0, nil)))
	msg := strings.Repeat("m", MaxEventMessage)
	for i := range EventBacklog {
		s.events = append(s.events, Event{Seq: uint64(i + 1), Kind: EventTask, Node: "node1", Service: "svc", Message: msg})
	}
	contended(b, s, "subscribe", func() {
		s.mu.Lock()
		s.backlog = nil // new events: their frame is made anew
		s.mu.Unlock()
		sub, first := s.subscribe()
		if len(first) != 2 {
			b.Fatalf("%d first frames, want the snapshot and the events", len(first))
		}
		s.unsubscribe(sub)
	})
}

// contended runs op once per iteration while another goroutine takes and
// releases s's lock in a loop, as pages and streams do, and reports how
// long that goroutine waited for s's method to release the lock, per op
// (METHOD-lock-wait-ns/op, see lockWait).
func contended(b *testing.B, s *Server, method string, op func()) {
	defer runtime.SetMutexProfileFraction(runtime.SetMutexProfileFraction(1))
	before := lockWait(b, method)
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		for !stop.Load() {
			s.currentVersion()
		}
	})
	for b.Loop() {
		op()
	}
	stop.Store(true)
	wg.Wait()
	b.ReportMetric((lockWait(b, method)-before)/float64(b.N), method+"-lock-wait-ns/op")
}

// lockWait is the time, in ns, the process's mutex profile says
// goroutines waited for locks that the Server's method released.
func lockWait(b *testing.B, method string) float64 {
	var buf bytes.Buffer
	if err := pprof.Lookup("mutex").WriteTo(&buf, 1); err != nil {
		b.Fatal(err)
	}
	var perSecond, cycles, sum float64
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "cycles/second="); ok {
			perSecond, _ = strconv.ParseFloat(v, 64)
		}
		if f := strings.Fields(line); len(f) > 2 && f[2] == "@" {
			cycles, _ = strconv.ParseFloat(f[0], 64) // a new record
		}
		if strings.HasPrefix(line, "#") && strings.Contains(line, "(*Server)."+method+"+") {
			sum += cycles
			cycles = 0 // counted once
		}
	}
	if perSecond == 0 {
		b.Fatal("the mutex profile gives no cycles/second")
	}
	return sum / perSecond * 1e9
}
