package unregistered

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/testlog"
)

const (
	nodeID  = "n1n1n1n1n1n1n1n1n1n1n1n1n"
	otherID = "n2n2n2n2n2n2n2n2n2n2n2n2n"
)

func taskID(i int) string      { return fmt.Sprintf("t%024d", i) }
func containerOf(i int) string { return fmt.Sprintf("%064x", i) }

func task(i int, reason string) Task {
	return Task{TaskID: taskID(i), ContainerID: containerOf(i), Reason: reason, NodeID: nodeID}
}

func TestBuild(t *testing.T) {
	other := task(3, "no port to register")
	other.NodeID = otherID
	badID := task(4, "no port")
	badID.TaskID = "not/a/task"
	r, dropped := Build("n1", nodeID, []Task{task(2, "SERVICE_IGNORE is set"), other, task(1, "no port"), badID, task(5, ""), task(1, "no port")})
	want := Report{Node: "n1", NodeID: nodeID, Tasks: []Task{
		{TaskID: taskID(1), ContainerID: containerOf(1), Reason: "no port"},
		{TaskID: taskID(2), ContainerID: containerOf(2), Reason: "SERVICE_IGNORE is set"},
	}}
	if diff := cmp.Diff(want, r); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}
	if dropped != 4 {
		t.Errorf("%d dropped, want 4 (another node's, a bad ID, no reason, a repeat)", dropped)
	}
}

// TestBuildBounded: past MaxTasks the rest are counted, and the largest
// report fits Consul's value limit and reads back.
func TestBuildBounded(t *testing.T) {
	var tasks []Task
	for i := range MaxTasks + 3 {
		tasks = append(tasks, task(i, strings.Repeat("r", MaxReason+50)))
	}
	r, _ := Build("n1", nodeID, tasks)
	if len(r.Tasks) != MaxTasks || r.Omitted != 3 {
		t.Errorf("%d tasks, %d omitted; want %d and 3", len(r.Tasks), r.Omitted, MaxTasks)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := kvstore.CheckValue(KVPrefix+nodeID, b); err != nil {
		t.Error(err)
	}
	got, err := Decode(KVPrefix+nodeID, b)
	if err != nil {
		t.Fatalf("Decode refuses what Build makes: %v", err)
	}
	if len(got.Tasks) != MaxTasks || got.Key != KVPrefix+nodeID {
		t.Errorf("read back %d tasks under %q", len(got.Tasks), got.Key)
	}
}

func TestDecodeRefuses(t *testing.T) {
	good := func(mod func(*Report)) []byte {
		r := Report{Node: "n1", NodeID: nodeID, Tasks: []Task{task(1, "no port")}}
		r.Tasks[0].NodeID = ""
		if mod != nil {
			mod(&r)
		}
		b, _ := json.Marshal(r)
		return b
	}
	key := KVPrefix + nodeID
	if _, err := Decode(key, good(nil)); err != nil {
		t.Fatalf("a good report refused: %v", err)
	}
	for _, tc := range []struct {
		name, key string
		value     []byte
		want      string
	}{
		{"key of no node", KVPrefix + "n1", good(nil), `"n1" is not a swarm node ID`},
		{"key outside the prefix", "underlay/other/" + nodeID, good(nil), "is not a node's key"},
		{"not JSON", key, []byte("{"), "not a report of unregistered tasks"},
		{"another node's", key, good(func(r *Report) { r.NodeID = otherID }), `names swarm node "` + otherID + `": it would speak for another node's tasks`},
		{"no node name", key, good(func(r *Report) { r.Node = "" }), `names node "": not a node's name`},
		{"too many tasks", key, good(func(r *Report) {
			for i := range MaxTasks {
				r.Tasks = append(r.Tasks, Task{TaskID: taskID(i + 10), ContainerID: containerOf(i), Reason: "x"})
			}
		}), fmt.Sprintf("lists %d tasks, want at most %d", MaxTasks+1, MaxTasks)},
		{"negative omitted", key, good(func(r *Report) { r.Omitted = -1 }), "omits -1 tasks"},
		{"bad task ID", key, good(func(r *Report) { r.Tasks[0].TaskID = "web.1" }), `task ID "web.1" is not a swarm ID`},
		{"bad container ID", key, good(func(r *Report) { r.Tasks[0].ContainerID = "abc" }), `container ID "abc" is not 64 lowercase hex digits`},
		{"no reason", key, good(func(r *Report) { r.Tasks[0].Reason = "" }), "has no reason"},
		{"long reason", key, good(func(r *Report) { r.Tasks[0].Reason = strings.Repeat("r", MaxReason+1) }), fmt.Sprintf("reason of %d bytes", MaxReason+1)},
		{"unreadable reason", key, good(func(r *Report) { r.Tasks[0].Reason = "ok\u202eevil" }), `reason "ok\u202eevil"`},
		{"task twice", key, good(func(r *Report) { r.Tasks = append(r.Tasks, r.Tasks[0]) }), "lists task " + taskID(1) + " twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.key, tc.value)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestLoadSetsApartBadReports(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	r, _ := Build("n1", nodeID, []Task{task(1, "no port")})
	b, _ := json.Marshal(r)
	if err := kv.Put(ctx, KVPrefix+nodeID, b); err != nil {
		t.Fatal(err)
	}
	if err := kv.Put(ctx, KVPrefix+otherID, b); err != nil { // names n1's ID
		t.Fatal(err)
	}
	got, bad, err := Load(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Key != KVPrefix+nodeID {
		t.Errorf("read %+v, want n1's report alone", got)
	}
	if len(bad) != 1 || bad[0].Key != KVPrefix+otherID || !strings.Contains(bad[0].Fix, KVPrefix+otherID) {
		t.Errorf("set apart %+v, want the report under %s with its removal", bad, otherID)
	}
}

// countingKV records each put, and fails while fail is set.
type countingKV struct {
	kv   *kvtest.KV
	puts chan []byte
	mu   sync.Mutex
	fail error
}

func (c *countingKV) Put(ctx context.Context, key string, value []byte) error {
	c.mu.Lock()
	err := c.fail
	c.fail = nil // once
	c.mu.Unlock()
	if err != nil {
		c.puts <- nil
		return err
	}
	if err := c.kv.Put(ctx, key, value); err != nil {
		return err
	}
	c.puts <- value
	return nil
}

// startPublisher runs a Publisher whose List takes each set it returns
// from sets, one per round.
func startPublisher(t *testing.T, kv KV, sets <-chan []Task, initial time.Duration) chan<- struct{} {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	changed := make(chan struct{})
	p := &Publisher{KV: kv, Node: "n1", NodeID: nodeID, Changed: changed, List: func() []Task { return <-sets }, Retry: time.Millisecond, Initial: initial, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return changed
}

func awaitPut(t *testing.T, puts <-chan []byte) Report {
	t.Helper()
	select {
	case b := <-puts:
		if b == nil {
			return Report{}
		}
		r, err := Decode(KVPrefix+nodeID, b)
		if err != nil {
			t.Fatalf("published a report readers refuse: %v", err)
		}
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no report published")
	}
	return Report{}
}

// TestPublisherWritesOnChangeOnly: the report is written at the start,
// not again for a change signal that leaves the set as it was, and again
// when the set changes.
func TestPublisherWritesOnChangeOnly(t *testing.T) {
	kv := &countingKV{kv: kvtest.New(), puts: make(chan []byte, 10)}
	sets := make(chan []Task)
	changed := startPublisher(t, kv, sets, 0)
	sets <- []Task{task(1, "no port")}
	if r := awaitPut(t, kv.puts); len(r.Tasks) != 1 {
		t.Fatalf("first report lists %d tasks, want 1", len(r.Tasks))
	}
	changed <- struct{}{}
	sets <- []Task{task(1, "no port")} // the same set: no write
	changed <- struct{}{}              // taken once that round is over
	sets <- []Task{task(1, "no port"), task(2, "SERVICE_IGNORE is set")}
	if r := awaitPut(t, kv.puts); len(r.Tasks) != 2 {
		t.Errorf("report after the change lists %d tasks, want 2: the unchanged set was written again", len(r.Tasks))
	}
	changed <- struct{}{}
	sets <- nil
	if r := awaitPut(t, kv.puts); len(r.Tasks) != 0 {
		t.Errorf("report after every task left lists %d, want none", len(r.Tasks))
	}
}

// TestPublisherRetries: a failed write is tried again without a change.
func TestPublisherRetries(t *testing.T) {
	kv := &countingKV{kv: kvtest.New(), puts: make(chan []byte, 10), fail: errors.New("consul unreachable")}
	sets := make(chan []Task, 2)
	sets <- []Task{task(1, "no port")}
	sets <- []Task{task(1, "no port")}
	startPublisher(t, kv, sets, 0)
	if b := <-kv.puts; b != nil {
		t.Fatal("first write did not fail")
	}
	if r := awaitPut(t, kv.puts); len(r.Tasks) != 1 {
		t.Errorf("retried report lists %d tasks, want 1", len(r.Tasks))
	}
}

// TestPublisherWaitsInitial: the first report is written once Initial
// has passed, with the set as it is then, and change signals before it
// are covered by that write: until then an earlier agent's report stands,
// rather than one listing none of the node's tasks yet.
func TestPublisherWaitsInitial(t *testing.T) {
	const initial = 200 * time.Millisecond
	kv := &countingKV{kv: kvtest.New(), puts: make(chan []byte, 10)}
	ctx, cancel := context.WithCancel(context.Background())
	changed := make(chan struct{}, 1)
	p := &Publisher{KV: kv, Node: "n1", NodeID: nodeID, Changed: changed, Initial: initial, Retry: time.Millisecond,
		List: func() []Task { return []Task{task(1, "no port")} }, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	began := time.Now()
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	changed <- struct{}{} // taken during the wait: no write of its own
	r := awaitPut(t, kv.puts)
	if waited := time.Since(began); waited < initial {
		t.Errorf("first report written after %v, before Initial (%v)", waited, initial)
	}
	if len(r.Tasks) != 1 {
		t.Errorf("first report lists %d tasks, want 1", len(r.Tasks))
	}
}

// refusingKV refuses the first refusals puts, as Consul does a write an
// ACL policy lacks, then takes them; each attempt is sent on tries.
type refusingKV struct {
	kv        *kvtest.KV
	tries     chan bool // false: refused
	mu        sync.Mutex
	refusals  int
	refusedBy error
}

func (r *refusingKV) Put(ctx context.Context, key string, value []byte) error {
	r.mu.Lock()
	refuse := r.refusals > 0
	r.refusals--
	r.mu.Unlock()
	r.tries <- !refuse
	if refuse {
		return r.refusedBy
	}
	return r.kv.Put(ctx, key, value)
}

// TestPublisherWarnsOnceWhileRefused: a write refused again and again
// (an agent.hcl from before the report's prefix) is warned of once, not at
// every try, and the report published after it is logged.
func TestPublisherWarnsOnceWhileRefused(t *testing.T) {
	kv := &refusingKV{kv: kvtest.New(), tries: make(chan bool, 10), refusals: 5,
		refusedBy: errors.New(`put underlay/unregistered/x: Unexpected response code: 403 (Permission denied)`)}
	logs := testlog.NewRecords(100)
	ctx, cancel := context.WithCancel(context.Background())
	p := &Publisher{KV: kv, Node: "n1", NodeID: nodeID, Changed: make(chan struct{}),
		List: func() []Task { return []Task{task(1, "no port")} }, Retry: time.Millisecond, MaxRetry: 4 * time.Millisecond, Log: slog.New(logs)}
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for i := 0; i < 6; i++ {
		select {
		case ok := <-kv.tries:
			if ok != (i == 5) {
				t.Fatalf("try %d taken %v", i+1, ok)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("try %d never made", i+1)
		}
	}
	warned := 0
	for published := false; !published; {
		select {
		case r := <-logs.C:
			warned += map[bool]int{true: 1}[r.Level == slog.LevelWarn]
			published = r.Message == "report of unregistered tasks published again"
		case <-time.After(10 * time.Second):
			t.Fatal("the report published after the refusals was not logged")
		}
	}
	if warned != 1 {
		t.Errorf("5 refusals in a row warned of %d times, want once", warned)
	}
}
