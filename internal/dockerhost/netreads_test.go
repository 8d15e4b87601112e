package dockerhost

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/register"
	"github.com/underlay/underlay/internal/testclock"
)

// fakeNetwork answers reads of one network, each held until released, and
// counts them.
type fakeNetwork struct {
	mu      sync.Mutex
	reads   int
	hold    bool
	started chan struct{}   // one value per read sent
	release chan struct{}   // one value lets one held read answer
	eps     map[string]bool // the containers on it, read at the read's answer
	err     error
	ctxs    []context.Context
}

func newFakeNetwork(hold bool, ids ...string) *fakeNetwork {
	f := &fakeNetwork{hold: hold, started: make(chan struct{}, 100), release: make(chan struct{}), eps: map[string]bool{}}
	for _, id := range ids {
		f.eps[id] = true
	}
	return f
}

func (f *fakeNetwork) read(ctx context.Context, networkID string) (networkRead, error) {
	f.mu.Lock()
	f.reads++
	f.ctxs = append(f.ctxs, ctx)
	f.mu.Unlock()
	f.started <- struct{}{}
	if f.hold {
		<-f.release
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return networkRead{}, f.err
	}
	out := networkRead{endpoints: map[string]register.Endpoint{}}
	for id := range f.eps {
		out.endpoints[id] = register.Endpoint{NetworkID: networkID, IPv4: "10.0.0." + id}
	}
	return out, nil
}

func (f *fakeNetwork) set(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.eps[id] = true
}

func (f *fakeNetwork) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

// readsOf shares f's reads, on a clock the test moves.
func readsOf(f *fakeNetwork) (*networkReads, *testclock.Clock) {
	clock := testclock.New(time.Unix(1000, 0))
	r := newNetworkReads(f.read)
	r.now = clock.Now
	return r, clock
}

type getResult struct {
	r   networkRead
	err error
}

func goGet(r *networkReads, ctx context.Context, after time.Time) <-chan getResult {
	ch := make(chan getResult, 1)
	go func() {
		res, err := r.get(ctx, "net1", after)
		ch <- getResult{res, err}
	}()
	return ch
}

// A connect event that came before the last read was sent is answered by
// that read; one that came after it gets a new read.
func TestNetworkReadsReuseOnlyReadsSentAfterTheEvent(t *testing.T) {
	f := newFakeNetwork(false, "1")
	r, clock := readsOf(f)

	ctx := context.Background()
	ev1 := clock.Now()
	if _, err := r.get(ctx, "net1", ev1); err != nil {
		t.Fatal(err)
	}
	f.set("2")
	// Received at the same instant as the first read was sent: it shows.
	got, err := r.get(ctx, "net1", ev1)
	if err != nil {
		t.Fatal(err)
	}
	if n := f.count(); n != 1 {
		t.Fatalf("reads = %d, want 1: the last read was sent after the event", n)
	}
	if _, ok := got.endpoints["2"]; ok {
		t.Fatal("the shared read shows a container connected after it was sent")
	}
	clock.Add(time.Millisecond)
	got, err = r.get(ctx, "net1", clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if n := f.count(); n != 2 {
		t.Fatalf("reads = %d, want 2: an event after the last read needs a new one", n)
	}
	if _, ok := got.endpoints["2"]; !ok {
		t.Fatal("a read sent after container 2's connect does not show it")
	}
}

// Connects that come while a read is in flight share one read after it;
// those that came before it was sent share it.
func TestNetworkReadsBurstSharesTwoReads(t *testing.T) {
	f := newFakeNetwork(true, "1")
	r, clock := readsOf(f)
	ctx := context.Background()

	before := clock.Now()
	first := goGet(r, ctx, before)
	<-f.started
	early := goGet(r, ctx, before) // came before the read was sent
	clock.Add(time.Millisecond)
	f.set("2")
	f.set("3")
	var late []<-chan getResult
	for range 5 {
		late = append(late, goGet(r, ctx, clock.Now()))
	}
	// Every late caller is waiting (the read count cannot show it): let
	// them reach get's wait before the first read ends.
	waitFor(t, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.nets["net1"].next != nil
	})
	clock.Add(time.Millisecond)
	f.release <- struct{}{}
	for _, ch := range []<-chan getResult{first, early} {
		res := <-ch
		if res.err != nil {
			t.Fatal(res.err)
		}
		if _, ok := res.r.endpoints["1"]; !ok {
			t.Fatal("first read lacks container 1")
		}
	}
	<-f.started // the second read, for the late ones
	f.release <- struct{}{}
	for _, ch := range late {
		res := <-ch
		if res.err != nil {
			t.Fatal(res.err)
		}
		for _, id := range []string{"1", "2", "3"} {
			if _, ok := res.r.endpoints[id]; !ok {
				t.Fatalf("late caller's read lacks container %s", id)
			}
		}
	}
	if n := f.count(); n != 2 {
		t.Fatalf("reads = %d for 7 connects, want 2 (one in flight, one after it)", n)
	}
}

// waitFor polls cond, which an event in another goroutine makes true.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met")
		}
		time.Sleep(time.Millisecond)
	}
}

// A failed read fails its waiters and is not kept: the next connect reads
// again, and ErrNotFound comes through as itself.
func TestNetworkReadsErrorNotKept(t *testing.T) {
	f := newFakeNetwork(false, "1")
	f.err = register.ErrNotFound
	r, clock := readsOf(f)
	ctx := context.Background()
	if _, err := r.get(ctx, "net1", clock.Now()); !errors.Is(err, register.ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	f.mu.Lock()
	f.err = nil
	f.mu.Unlock()
	got, err := r.get(ctx, "net1", time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if n := f.count(); n != 2 || len(got.endpoints) != 1 {
		t.Fatalf("reads = %d, endpoints %v; want a second read after the failed one", n, got.endpoints)
	}
}

// A caller whose context ends stops waiting; the read goes on for the
// others, with a context that the first caller's end does not end.
func TestNetworkReadsCallerCancelled(t *testing.T) {
	f := newFakeNetwork(true, "1")
	r := newNetworkReads(f.read)
	ctx, cancel := context.WithCancel(context.Background())
	after := time.Now()
	first := goGet(r, ctx, after)
	<-f.started
	other := goGet(r, context.Background(), after)
	cancel()
	if res := <-first; !errors.Is(res.err, context.Canceled) {
		t.Fatalf("cancelled caller: err = %v, want context.Canceled", res.err)
	}
	f.mu.Lock()
	readCtx := f.ctxs[0]
	f.mu.Unlock()
	if readCtx.Err() != nil {
		t.Fatalf("the shared read's context ended with its first caller: %v", readCtx.Err())
	}
	f.release <- struct{}{}
	if res := <-other; res.err != nil || len(res.r.endpoints) != 1 {
		t.Fatalf("other caller: %v, %v", res.r.endpoints, res.err)
	}
}

// A network not read for keepRead is forgotten at the next read.
func TestNetworkReadsForgetOld(t *testing.T) {
	f := newFakeNetwork(false, "1")
	r, clock := readsOf(f)
	ctx := context.Background()
	if _, err := r.get(ctx, "old", clock.Now()); err != nil {
		t.Fatal(err)
	}
	clock.Add(keepRead + time.Second)
	if _, err := r.get(ctx, "net1", clock.Now()); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.nets["old"]; ok {
		t.Fatal("a network not read for longer than keepRead is still kept")
	}
	if _, ok := r.nets["net1"]; !ok {
		t.Fatal("the network just read was forgotten")
	}
}

// BenchmarkNetworkReadsBurst is a burst of connects to one network of n
// containers, 32 at a time (the agent's default workers), each asking for
// a read sent after its event, against a read that costs what building
// the network's endpoints costs. It reports the reads made per connect.
func BenchmarkNetworkReadsBurst(b *testing.B) {
	const n, workers = 500, 32
	for b.Loop() {
		var reads int
		var mu sync.Mutex
		read := func(ctx context.Context, id string) (networkRead, error) {
			mu.Lock()
			reads++
			mu.Unlock()
			eps := make(map[string]register.Endpoint, n)
			for i := range n {
				eps[strconv.Itoa(i)] = register.Endpoint{NetworkID: id}
			}
			return networkRead{endpoints: eps}, nil
		}
		r := newNetworkReads(read)
		var wg sync.WaitGroup
		sem := make(chan struct{}, workers)
		for range n {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				if _, err := r.get(context.Background(), "net1", time.Now()); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
		b.ReportMetric(float64(reads)/n, "reads/connect")
	}
}
