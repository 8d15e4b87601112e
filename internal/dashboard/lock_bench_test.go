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
			defer runtime.SetMutexProfileFraction(runtime.SetMutexProfileFraction(1))
			before := publishLockWait(b)
			var stop atomic.Bool
			var wg sync.WaitGroup
			wg.Go(func() {
				for !stop.Load() {
					s.currentVersion()
				}
			})
			for b.Loop() {
				snap.GeneratedAt = snap.GeneratedAt.Add(1)
				snap.Control.Leading = !snap.Control.Leading // a change: published
				s.publish(snap)
			}
			stop.Store(true)
			wg.Wait()
			b.ReportMetric((publishLockWait(b)-before)/float64(b.N), "publish-lock-wait-ns/op")
			if body := s.Snapshot(); len(body) > MaxSnapshotBytes {
				b.Fatalf("snapshot of %d bytes", len(body))
			}
		})
	}
}

// publishLockWait is the time, in ns, the process's mutex profile says
// goroutines waited for locks that (*Server).publish released.
func publishLockWait(b *testing.B) float64 {
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
		if strings.HasPrefix(line, "#") && strings.Contains(line, "(*Server).publish+") {
			sum += cycles
			cycles = 0 // counted once
		}
	}
	if perSecond == 0 {
		b.Fatal("the mutex profile gives no cycles/second")
	}
	return sum / perSecond * 1e9
}
