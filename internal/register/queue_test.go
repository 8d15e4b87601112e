package register

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// queueOp is one step of a single-goroutine queue script.
type queueOp struct {
	add   string // Add(add) when set
	addBg string // AddBackground(addBg) when set
	get   string // Get() must return get when set
	done  string // Done(done) when set
}

func TestQueueSequential(t *testing.T) {
	tests := []struct {
		name    string
		ops     []queueOp
		wantLen int
		// rest is what Get hands out afterwards, draining the queue.
		rest []string
	}{
		{
			name:    "FIFO",
			ops:     []queueOp{{add: "a"}, {add: "b"}, {add: "c"}},
			wantLen: 3,
			rest:    []string{"a", "b", "c"},
		},
		{
			name:    "waiting key is deduplicated",
			ops:     []queueOp{{add: "a"}, {add: "b"}, {add: "a"}, {add: "b"}, {add: "c"}},
			wantLen: 3,
			rest:    []string{"a", "b", "c"},
		},
		{
			name:    "key added while processing is held back",
			ops:     []queueOp{{add: "a"}, {get: "a"}, {add: "a"}, {add: "a"}},
			wantLen: 0,
		},
		{
			name:    "key added while processing is ready after Done",
			ops:     []queueOp{{add: "a"}, {get: "a"}, {add: "a"}, {add: "b"}, {done: "a"}},
			wantLen: 2,
			rest:    []string{"b", "a"},
		},
		{
			name:    "key not re-added is not handed out after Done",
			ops:     []queueOp{{add: "a"}, {add: "b"}, {get: "a"}, {done: "a"}},
			wantLen: 1,
			rest:    []string{"b"},
		},
		{
			name:    "key can be added again after its pass",
			ops:     []queueOp{{add: "a"}, {get: "a"}, {done: "a"}, {add: "a"}},
			wantLen: 1,
			rest:    []string{"a"},
		},
		{
			// A key added again while it waits keeps its place: it is not
			// queued twice, so, handed out and added back later, it goes
			// behind the keys added since, not ahead of them.
			name:    "key added again while waiting is queued once",
			ops:     []queueOp{{add: "a"}, {add: "b"}, {add: "a"}, {get: "a"}, {done: "a"}, {add: "c"}, {add: "a"}},
			wantLen: 3,
			rest:    []string{"b", "c", "a"},
		},
		{
			// A key promoted to urgent leaves its background entry behind;
			// added in the background again while processing, that entry
			// must not hand it to a second worker.
			name:    "key promoted then added in the background while processing is held back",
			ops:     []queueOp{{addBg: "a"}, {add: "a"}, {get: "a"}, {addBg: "a"}, {addBg: "b"}, {get: "b"}, {done: "a"}},
			wantLen: 1,
			rest:    []string{"a"},
		},
		{
			// Its pass over, a promoted key is not handed out again from
			// the background entry it left behind: nothing asked for it.
			name:    "key promoted to urgent is not handed out again from its background entry",
			ops:     []queueOp{{addBg: "a"}, {add: "a"}, {addBg: "b"}, {get: "a"}, {done: "a"}, {get: "b"}, {done: "b"}},
			wantLen: 0,
		},
		{
			name:    "other keys are handed out while one is processing",
			ops:     []queueOp{{add: "a"}, {add: "b"}, {get: "a"}, {add: "a"}, {get: "b"}, {add: "c"}},
			wantLen: 1,
			rest:    []string{"c"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := newQueue()
			for i, op := range tt.ops {
				switch {
				case op.add != "":
					q.Add(op.add)
				case op.addBg != "":
					q.AddBackground(op.addBg)
				case op.get != "":
					if got, ok := q.Get(); !ok || got != op.get {
						t.Fatalf("op %d: Get() = %q, %v; want %q, true", i, got, ok, op.get)
					}
				case op.done != "":
					q.Done(op.done)
				}
			}
			if got := q.Len(); got != tt.wantLen {
				t.Errorf("Len() = %d, want %d", got, tt.wantLen)
			}
			var rest []string
			for q.Len() > 0 {
				key, ok := q.Get()
				if !ok {
					t.Fatal("Get() returned false on an open queue")
				}
				rest = append(rest, key)
				q.Done(key)
			}
			if diff := cmp.Diff(tt.rest, rest); diff != "" {
				t.Errorf("keys handed out afterwards (-want +got):\n%s", diff)
			}
		})
	}
}

// TestQueueCloseUnblocksGet: Gets waiting on an empty queue return
// false once it closes. Each is waiting before Close, so Close's wake-up
// is what is tested, not a Get that came late and found it closed.
func TestQueueCloseUnblocksGet(t *testing.T) {
	q := newQueue()
	const waiters = 3
	waiting := make(chan struct{}, waiters)
	q.waitHook = func() { waiting <- struct{}{} }
	results := make(chan bool, waiters)
	for range waiters {
		go func() {
			_, ok := q.Get()
			results <- ok
		}()
	}
	for range waiters {
		select {
		case ok := <-results:
			t.Fatalf("Get returned (ok=%v) before anything was added or the queue closed", ok)
		case <-waiting:
		}
	}
	q.Close()
	for i := range waiters {
		select {
		case ok := <-results:
			if ok {
				t.Errorf("Get after Close returned ok=true")
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Get %d still blocked 5s after Close", i)
		}
	}
}

func TestQueueClosed(t *testing.T) {
	q := newQueue()
	q.Add("a")
	q.Add("b")
	key, ok := q.Get()
	if !ok || key != "a" {
		t.Fatalf("Get() = %q, %v; want a, true", key, ok)
	}
	q.Add("a")
	q.Close()
	if key, ok := q.Get(); ok {
		t.Errorf("Get on closed queue = %q, true; want false", key)
	}
	q.Add("c")
	q.Done("a")
	if key, ok := q.Get(); ok {
		t.Errorf("Get on closed queue after Add and Done = %q, true; want false", key)
	}
}

// TestQueueAddAfterCloseIgnored: once closed, the queue takes no key, so
// the depth it reports (status, underlay_register_queue_depth) does not
// grow with the events that arrive while the agent stops.
func TestQueueAddAfterCloseIgnored(t *testing.T) {
	q := newQueue()
	q.Close()
	q.Add("a")
	q.AddBackground("b")
	if got := q.Len(); got != 0 {
		t.Errorf("Len() = %d after Add on a closed queue, want 0", got)
	}
}

// TestQueueGetWaitsForAdd: a Get waiting on an empty queue gets the key
// added next. The Add comes once the Get waits, so the wake-up is what
// is tested, not a Get that came late and found the key there.
func TestQueueGetWaitsForAdd(t *testing.T) {
	q := newQueue()
	defer q.Close()
	waiting := make(chan struct{}, 1)
	q.waitHook = func() { waiting <- struct{}{} }
	got := make(chan string, 1)
	go func() {
		key, _ := q.Get()
		got <- key
	}()
	select {
	case key := <-got:
		t.Fatalf("Get returned %q before anything was added", key)
	case <-waiting:
	}
	q.Add("late")
	select {
	case key := <-got:
		if key != "late" {
			t.Errorf("Get() = %q, want late", key)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Get still blocked 5s after Add")
	}
}

func TestQueueRetryBackoff(t *testing.T) {
	q := newQueue()
	defer q.Close()
	tests := []struct {
		name   string
		forget bool
		max    time.Duration
		want   time.Duration
	}{
		{name: "first failure", max: time.Hour, want: 100 * time.Millisecond},
		{name: "second failure doubles", max: time.Hour, want: 200 * time.Millisecond},
		{name: "third failure doubles", max: time.Hour, want: 400 * time.Millisecond},
		{name: "capped at max", max: 300 * time.Millisecond, want: 300 * time.Millisecond},
		{name: "after Forget starts again", forget: true, max: time.Hour, want: 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.forget {
				q.Forget("k")
			}
			if got := q.Retry("k", tt.max); got != tt.want {
				t.Errorf("Retry() = %v, want %v", got, tt.want)
			}
		})
	}
	// The doubling stops growing; a long run of failures is capped at max.
	for range 40 {
		q.Retry("many", time.Minute)
	}
	if got := q.Retry("many", time.Minute); got != time.Minute {
		t.Errorf("Retry after 40 failures = %v, want %v", got, time.Minute)
	}
}

func TestQueueRetryAddsKeyAgain(t *testing.T) {
	q := newQueue()
	defer q.Close()
	q.Add("k")
	key, _ := q.Get()
	q.Retry(key, time.Millisecond)
	q.Done(key)
	got := make(chan string, 1)
	go func() {
		key, _ := q.Get()
		got <- key
	}()
	select {
	case key := <-got:
		if key != "k" {
			t.Errorf("Get() = %q, want k", key)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("retried key not handed out within 5s")
	}
}

// TestQueueConcurrent runs workers and adders together and checks that no
// key is ever processed by two workers at once, and that every Add is
// followed by a pass over its key that started after it.
func TestQueueConcurrent(t *testing.T) {
	const (
		workers = 8
		adders  = 4
		keys    = 10
		adds    = 500
	)
	q := newQueue()

	var mu sync.Mutex // guards following fields
	inFlight := map[string]int{}
	// dirty is set before each Add and cleared when a pass starts, so a key
	// still dirty once all work is over lost an Add.
	dirty := map[string]bool{}
	passes := 0

	var workersWG sync.WaitGroup
	for range workers {
		workersWG.Add(1)
		go func() {
			defer workersWG.Done()
			for {
				key, ok := q.Get()
				if !ok {
					return
				}
				mu.Lock()
				inFlight[key]++
				if inFlight[key] > 1 {
					t.Errorf("key %s processed by %d workers at once", key, inFlight[key])
				}
				dirty[key] = false
				passes++
				mu.Unlock()

				time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)

				mu.Lock()
				inFlight[key]--
				mu.Unlock()
				q.Done(key)
			}
		}()
	}

	var addersWG sync.WaitGroup
	for a := range adders {
		addersWG.Add(1)
		go func() {
			defer addersWG.Done()
			for i := range adds {
				key := fmt.Sprintf("k%d", (a*7+i)%keys)
				mu.Lock()
				dirty[key] = true
				mu.Unlock()
				q.Add(key)
				if i%50 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	addersWG.Wait()

	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		var pending []string
		for k, d := range dirty {
			if d {
				pending = append(pending, k)
			}
		}
		mu.Unlock()
		if len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("keys added but never processed afterwards: %v (queue Len %d)", pending, q.Len())
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	q.Close()
	workersWG.Wait()

	mu.Lock()
	defer mu.Unlock()
	if passes == 0 || passes > adders*adds {
		t.Errorf("%d passes for %d adds", passes, adders*adds)
	}
	for k, n := range inFlight {
		if n != 0 {
			t.Errorf("key %s left with %d workers in flight", k, n)
		}
	}
}

func TestQueuePriority(t *testing.T) {
	q := newQueue()
	for _, k := range []string{"r1", "r2", "r3"} {
		q.AddBackground(k)
	}
	q.Add("ev1")
	q.AddBackground("ev1") // already urgent: stays urgent
	q.Add("r3")            // promoted by an event
	var got []string
	for q.Len() > 0 {
		k, _ := q.Get()
		got = append(got, k)
		q.Done(k)
	}
	if diff := cmp.Diff([]string{"ev1", "r3", "r1", "r2"}, got); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
}
