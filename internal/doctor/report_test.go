package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/shellword"
	"github.com/underlay/underlay/internal/testlog"
)

type memKV struct {
	mu   sync.Mutex
	m    map[string][]byte
	puts int
}

func (k *memKV) List(_ context.Context, prefix string) ([]kvstore.Pair, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []kvstore.Pair
	for key, v := range k.m {
		if strings.HasPrefix(key, prefix) {
			out = append(out, kvstore.Pair{Key: key, Value: v})
		}
	}
	return out, nil
}

func (k *memKV) Put(_ context.Context, key string, v []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.m[key] = v
	k.puts++
	return nil
}

func (k *memKV) count() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.puts
}

type fixedCheck struct{ rs []Result }

func (fixedCheck) Name() string                         { return "fixed" }
func (c fixedCheck) Run(context.Context, Logf) []Result { return c.rs }

func TestReportsRoundTrip(t *testing.T) {
	kv := &memKV{m: map[string][]byte{}}
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, node := range []string{"node2", "node1"} {
		if err := Publish(context.Background(), kv, Report{Node: node, NodeID: node + strings.Repeat("0", netspec.NodeIDLen-len(node)), At: at, Every: time.Minute, Version: "v1",
			Results: []Result{{Node: node, Check: "docker/daemon", Status: Fail, Message: "down", Fix: "systemctl start docker"}}}); err != nil {
			t.Fatal(err)
		}
	}
	kv.m[KVPrefix+"node3"] = []byte(`{"at":"2026-03-01T12:00:00Z","results":[]}`) // no node field: the key names it
	rs, err := LoadReports(context.Background(), kv)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 3 || rs[0].Node != "node1" || rs[2].Node != "node3" || rs[0].Every != time.Minute || rs[0].Results[0].Fix != "systemctl start docker" {
		t.Errorf("reports %+v", rs)
	}
	// A corrupt report is that node's failed check, naming its key and
	// the fix; it hides no other node's report.
	kv.m[KVPrefix+"bad one"] = []byte("{")
	rs, err = LoadReports(context.Background(), kv)
	if err != nil || len(rs) != 4 || rs[0].Node != "bad one" || rs[1].Node != "node1" {
		t.Fatalf("with a corrupt report: %+v, %v; want it beside the 3 others", rs, err)
	}
	if res := rs[0].Results; len(res) != 1 || res[0].Status != Fail || res[0].Check != "doctor/report" ||
		!strings.Contains(res[0].Message, KVPrefix+"bad one") || !strings.HasPrefix(res[0].Fix, "consul kv delete '"+KVPrefix+"bad one' ") {
		t.Errorf("corrupt report read as %+v: want a failed doctor/report check naming its key and the fix", res)
	}
}

func TestRunPeriodicallyPublishes(t *testing.T) {
	kv := &memKV{m: map[string][]byte{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	checks := []Check{fixedCheck{[]Result{{Check: "x", Status: Fail, Message: "broken"}}}}
	go func() {
		RunPeriodically(ctx, kv, "node1", "id10000000000000000000000", "v9", checks, 10*time.Millisecond, slog.New(slog.DiscardHandler), nil)
		close(done)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for kv.count() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d reports published in 5s, want a report every period", kv.count())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	rs, _ := LoadReports(context.Background(), kv)
	if len(rs) != 1 || rs[0].Node != "node1" || rs[0].Version != "v9" || rs[0].Every != 10*time.Millisecond ||
		len(rs[0].Results) != 1 || rs[0].Results[0].Node != "node1" || rs[0].Results[0].Status != Fail {
		t.Errorf("report %+v", rs)
	}
}

// TestLoadReportsKeepsEachNodeUnderItsKey: a report under another node's
// key (written by hand, or a cloned agent's) that names node1 was returned
// as node1's, and the dashboard, which takes the reports by node, showed
// it in place of node1's own. It is now the failed doctor/report check of
// the key it is under, naming both, and node1's report stays node1's.
func TestLoadReportsKeepsEachNodeUnderItsKey(t *testing.T) {
	kv := &memKV{m: map[string][]byte{
		KVPrefix + "node1": []byte(`{"node":"node1","at":"2026-03-01T12:00:00Z","results":[{"node":"node1","check":"docker/daemon","status":"fail","message":"down"}]}`),
		KVPrefix + "stray": []byte(`{"node":"node1","at":"2026-03-01T12:00:00Z","results":[{"node":"node1","check":"docker/daemon","status":"ok"}]}`),
	}}
	rs, err := LoadReports(context.Background(), kv)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].Node != "node1" || rs[1].Node != "stray" {
		t.Fatalf("reports of %v; want node1's and stray's", nodesOf(rs))
	}
	if res := rs[0].Results; len(res) != 1 || res[0].Status != Fail || res[0].Message != "down" {
		t.Errorf("node1's report read as %+v: want its own failed docker/daemon", res)
	}
	if res := rs[1].Results; len(res) != 1 || res[0].Status != Fail || res[0].Check != "doctor/report" ||
		!strings.Contains(res[0].Message, KVPrefix+"stray") || !strings.Contains(res[0].Message, `"node1"`) ||
		!strings.HasPrefix(res[0].Fix, "consul kv delete "+KVPrefix+"stray ") {
		t.Errorf("the stray report read as %+v: want a failed doctor/report check naming its key, the node it names and the fix", res)
	}
}

func nodesOf(rs []Report) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Node
	}
	return out
}

// TestLoadReportsCapsTheClaimedPeriod: nothing bounded a report's period,
// and the dashboard calls an agent stale only after twice it, so a report
// claiming a period of ten years (forged, or an agent's bug) kept a dead
// agent shown as up for twenty. The period is now read as at most the
// agents' maximum, an hour, and the report carries a warning naming what
// it claimed.
func TestLoadReportsCapsTheClaimedPeriod(t *testing.T) {
	kv := &memKV{m: map[string][]byte{
		KVPrefix + "node1": []byte(`{"node":"node1","at":"2026-03-01T12:00:00Z","every":315360000000000000,"results":[{"node":"node1","check":"docker/daemon","status":"ok"}]}`),
		KVPrefix + "node2": []byte(`{"node":"node2","at":"2026-03-01T12:00:00Z","every":3600000000000,"results":[{"node":"node2","check":"docker/daemon","status":"ok"}]}`),
	}}
	rs, err := LoadReports(context.Background(), kv)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 {
		t.Fatalf("reports of %v; want node1's and node2's", nodesOf(rs))
	}
	if rs[0].Every != time.Hour {
		t.Errorf("node1's period read as %v; want it capped at 1h0m0s", rs[0].Every)
	}
	if res := rs[0].Results; len(res) != 2 || res[0].Check != "docker/daemon" || res[1].Check != "doctor/report" || res[1].Status != Warn ||
		!strings.Contains(res[1].Message, "87600h0m0s") || !strings.Contains(res[1].Message, KVPrefix+"node1") {
		t.Errorf("node1's results %+v: want its own check and a doctor/report warning naming the key and the claimed 87600h0m0s", res)
	}
	// The maximum itself is an agent's period like any other.
	if rs[1].Every != time.Hour || len(rs[1].Results) != 1 {
		t.Errorf("node2's report read as every %v with %+v; want 1h0m0s and its one result", rs[1].Every, rs[1].Results)
	}
}

// consulKV is memKV refusing values above Consul's limit, as Consul does.
type consulKV struct{ memKV }

// consulMaxValue is Consul's default kv_max_value_size.
const consulMaxValue = 512 << 10

func (k *consulKV) Put(ctx context.Context, key string, v []byte) error {
	if len(v) > consulMaxValue {
		return fmt.Errorf("Unexpected response code: 413 (Value exceeds %d byte limit (%d))", consulMaxValue, len(v))
	}
	return k.memKV.Put(ctx, key, v)
}

// TestPublishBoundsLargeReport: with hundreds of networks (about 8 rows
// each) a node's report grew past Consul's 512 KiB, Consul refused it at
// every period, and the node looked dead on the dashboard. The report is
// now cut below the limit, failures and warnings kept first, with counts
// of the rows left out, so that the counts read from it stay true.
func TestPublishBoundsLargeReport(t *testing.T) {
	var rs []Result
	want := map[Status]int{}
	for n := range 700 {
		for a := range 8 {
			st := OK
			msg := fmt.Sprintf("network net-%04d aspect %d: the shim ul-%04d holds 10.%d.%d.1/32 and routes its range through it", n, a, n, n/256, n%256)
			switch {
			case n%50 == 7 && a == 3:
				st, msg = Fail, strings.Repeat("f", 4096)
			case n%20 == 1 && a == 5:
				st, msg = Warn, strings.Repeat("w", 2048)
			}
			rs = append(rs, Result{Node: "node1", Check: fmt.Sprintf("network/net-%04d/aspect-%d", n, a), Status: st, Message: msg, Fix: "ip link set ul-x up"})
			want[st]++
		}
	}
	if full, _ := json.Marshal(Report{Node: "node1", Results: rs}); len(full) <= consulMaxValue {
		t.Fatalf("the synthetic report is %d bytes: make it larger than %d", len(full), consulMaxValue)
	}
	kv := &consulKV{memKV{m: map[string][]byte{}}}
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	if err := Publish(context.Background(), kv, Report{Node: "node1", NodeID: "id10000000000000000000000", At: at, Every: time.Minute, Results: rs}); err != nil {
		t.Fatalf("publish %d results: %v", len(rs), err)
	}
	v := kv.m[IDPrefix+"id10000000000000000000000"]
	if len(v) > MaxReportBytes {
		t.Errorf("published %d bytes, above %d", len(v), MaxReportBytes)
	}
	var doc struct {
		Node    string
		At      time.Time
		Results []Result
		Omitted struct{ OK, Warn, Fail int }
	}
	if err := json.Unmarshal(v, &doc); err != nil {
		t.Fatalf("decode the published report: %v", err)
	}
	got := map[Status]int{}
	for _, r := range doc.Results {
		got[r.Status]++
	}
	if got[Fail] != want[Fail] || got[Warn] != want[Warn] {
		t.Errorf("published %d failures and %d warnings, want all %d and %d", got[Fail], got[Warn], want[Fail], want[Warn])
	}
	if got[OK] == 0 || got[OK]+doc.Omitted.OK != want[OK] || doc.Omitted.Warn != 0 || doc.Omitted.Fail != 0 {
		t.Errorf("published %d ok rows, omitted %+v; want some, and with the omitted %d ok in all", got[OK], doc.Omitted, want[OK])
	}
	// What is kept is in the order checks gave it.
	idx := map[string]int{}
	for i, r := range rs {
		idx[r.Check] = i
	}
	for i := 1; i < len(doc.Results); i++ {
		if idx[doc.Results[i-1].Check] >= idx[doc.Results[i].Check] {
			t.Fatalf("results out of order at %d: %s after %s", i, doc.Results[i].Check, doc.Results[i-1].Check)
		}
	}
	back, err := LoadReports(context.Background(), kv)
	if err != nil || len(back) != 1 || back[0].Node != "node1" || !back[0].At.Equal(at) {
		t.Errorf("read back %+v, %v", back, err)
	}
}

// TestPublishBoundsFailures: failures alone above the bound keep as many
// as fit, in order, and count the rest.
func TestPublishBoundsFailures(t *testing.T) {
	var rs []Result
	for n := range 300 {
		rs = append(rs, Result{Node: "node1", Check: fmt.Sprintf("network/net-%03d/shim", n), Status: Fail, Message: strings.Repeat("x", 4096)})
	}
	rs = append(rs, Result{Node: "node1", Check: "docker/daemon", Status: OK, Message: "answers"})
	kv := &consulKV{memKV{m: map[string][]byte{}}}
	if err := Publish(context.Background(), kv, Report{Node: "node1", NodeID: "id10000000000000000000000", Results: rs}); err != nil {
		t.Fatal(err)
	}
	v := kv.m[IDPrefix+"id10000000000000000000000"]
	var r Report
	if err := json.Unmarshal(v, &r); err != nil {
		t.Fatal(err)
	}
	if len(v) > MaxReportBytes || r.Omitted == nil || len(r.Results) == 0 ||
		len(r.Results)+r.Omitted.Fail != 300 || r.Omitted.OK != 1 || r.Omitted.Warn != 0 {
		t.Fatalf("%d bytes, %d results kept, omitted %+v; want at most %d bytes, and 300 failures and 1 ok counted", len(v), len(r.Results), r.Omitted, MaxReportBytes)
	}
	for i, res := range r.Results {
		if res.Check != rs[i].Check {
			t.Fatalf("kept result %d is %s, want %s: the first failures, in order", i, res.Check, rs[i].Check)
		}
	}
	// One more result would not have fit.
	if e, _ := json.Marshal(rs[len(r.Results)]); len(v)+len(e)+1 <= MaxReportBytes {
		t.Errorf("%d bytes with %d kept: the next, of %d bytes, fits", len(v), len(r.Results), len(e))
	}
}

// TestCappedRowsCounted: a check shows MaxRows rows and one more standing
// for the rest with their worst status; counted as one row, 20 hidden
// failures were one failure on the dashboard, and, left out of a report
// cut to fit Consul, one result omitted. The row carries the counts of
// the rows it stands for, and a report left without it counts those.
func TestCappedRowsCounted(t *testing.T) {
	var rows []Result
	for i := range 60 {
		st := Fail // the first 20, shown, and the last 20
		switch {
		case i >= 20 && i < 30:
			st = OK
		case i >= 30 && i < 40:
			st = Warn
		}
		rows = append(rows, Result{Node: "node1", Check: "containers/reach", Status: st, Message: fmt.Sprintf("address %d", i)})
	}
	rs := append(capRows(rows, "addresses"), Result{Node: "node1", Check: "docker/daemon", Status: OK, Message: "answers"})
	if len(rs) != MaxRows+2 || rs[MaxRows].Status != Fail {
		t.Fatalf("capped to %d rows, the last %+v; want %d, the last failing", len(rs)-1, rs[MaxRows], MaxRows+1)
	}
	// Room for the first MaxRows rows only: the one standing for the rest
	// is left out.
	kept, _ := json.Marshal(Report{Node: "node1", Results: rs[:MaxRows]})
	b, _, err := bound(Report{Node: "node1", Results: rs}, len(kept)+len(`,"omitted":{"ok":99,"warn":99,"fail":99}`))
	if err != nil {
		t.Fatal(err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Results) != MaxRows || r.Omitted == nil {
		t.Fatalf("kept %d results, omitted %+v; want the first %d kept and the rest counted", len(r.Results), r.Omitted, MaxRows)
	}
	all := *r.Omitted
	for _, res := range r.Results {
		switch res.Status {
		case OK:
			all.OK++
		case Warn:
			all.Warn++
		default:
			all.Fail++
		}
	}
	if want := (Omitted{OK: 11, Warn: 10, Fail: 40}); all != want {
		t.Errorf("the report counts %+v (%d kept, omitted %+v), want %+v: every row", all, len(r.Results), *r.Omitted, want)
	}
}

// TestRunPeriodicallyLogsCutReport: a report cut to fit Consul's value
// limit left results out without a word in the agent's log; the page
// counts them but lists none. It is now said once, with how many, not
// at every period.
func TestRunPeriodicallyLogsCutReport(t *testing.T) {
	var rs []Result
	for n := range 300 {
		rs = append(rs, Result{Check: fmt.Sprintf("network/net-%03d/shim", n), Status: Fail, Message: strings.Repeat("x", 4096)})
	}
	kv := &memKV{m: map[string][]byte{}}
	var logs testlog.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		RunPeriodically(ctx, kv, "node1", "id10000000000000000000000", "v9", []Check{fixedCheck{rs}}, 10*time.Millisecond, slog.New(slog.NewTextHandler(&logs, nil)), nil)
		close(done)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for kv.count() < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("%d reports published in 5s, want a report every period", kv.count())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	var r Report
	if err := json.Unmarshal(kv.m[IDPrefix+"id10000000000000000000000"], &r); err != nil || r.Omitted == nil {
		t.Fatalf("published report: %v, omitted %+v; want it cut", err, r.Omitted)
	}
	left := fmt.Sprintf("left_out=%d", r.Omitted.Fail)
	if got := strings.Count(logs.String(), "level=WARN msg=\"doctor report cut"); got != 1 || !strings.Contains(logs.String(), left) {
		t.Errorf("%d warnings of a cut report over %d periods, want one saying %s; log:\n%s", got, kv.count(), left, logs.String())
	}
}

// TestRunPeriodicallyBoundsFailingLog: the agent's "checks failing"
// warning joined the name of every failed row into one line: a node with
// a thousand broken networks (or as many unreachable containers, each a
// row of the same check) logged a line of tens of kilobytes at every
// change. It now names each failed check once, the first
// MaxLoggedChecks of them, and counts the rest.
func TestRunPeriodicallyBoundsFailingLog(t *testing.T) {
	var rs []Result
	for range 30 {
		rs = append(rs, Result{Check: "containers/reachable", Status: Fail, Message: "unreachable"})
	}
	for n := range 1000 {
		rs = append(rs, Result{Check: fmt.Sprintf("network/net-%04d/shim", n), Status: Fail, Message: "no shim"})
	}
	logs := testlog.NewRecords(64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		RunPeriodically(ctx, &memKV{m: map[string][]byte{}}, "node1", "id10000000000000000000000", "v9", []Check{fixedCheck{rs}}, time.Hour, slog.New(logs), nil)
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	r := logs.Await(t, 10*time.Second, func(r slog.Record) bool { return r.Message == "doctor: checks failing" })
	names := strings.Split(testlog.Attr(r, "checks"), ",")
	if len(names) != MaxLoggedChecks || names[0] != "containers/reachable" || names[1] != "network/net-0000/shim" {
		t.Errorf("checks=%.200q… (%d names); want the first %d failed checks, each once", testlog.Attr(r, "checks"), len(names), MaxLoggedChecks)
	}
	if got, want := testlog.Attr(r, "more"), fmt.Sprint(1001-MaxLoggedChecks); got != want {
		t.Errorf("more=%q, want %s: the failed checks not named", got, want)
	}
}

// TestLoadReportsRefusesNegativeCounts: a report's counts of results it
// left out (its own, or a row's standing for others) were taken as
// written: one negative count ("fail":-1000, which no agent writes) was
// subtracted from the dashboard's cluster-wide failures, hiding other
// nodes' failures. Such a report is now its key's failed doctor/report
// check, naming the key, and counts nothing else.
func TestLoadReportsRefusesNegativeCounts(t *testing.T) {
	kv := &memKV{m: map[string][]byte{
		KVPrefix + "node1": []byte(`{"node":"node1","at":"2026-03-01T12:00:00Z","results":[{"check":"x","status":"fail"}],"omitted":{"ok":0,"warn":0,"fail":-1000}}`),
		KVPrefix + "node2": []byte(`{"node":"node2","at":"2026-03-01T12:00:00Z","results":[{"check":"y","status":"fail","omitted":{"ok":-5,"warn":0,"fail":3}}]}`),
		KVPrefix + "node3": []byte(`{"node":"node3","at":"2026-03-01T12:00:00Z","results":[{"check":"z","status":"fail","omitted":{"ok":1,"warn":2,"fail":3}}],"omitted":{"ok":4,"warn":0,"fail":1}}`),
	}}
	rs, err := LoadReports(context.Background(), kv)
	if err != nil || len(rs) != 3 {
		t.Fatalf("LoadReports: %v, %v; want 3 reports", nodesOf(rs), err)
	}
	for _, r := range rs[:2] {
		if res := r.Results; len(res) != 1 || res[0].Check != "doctor/report" || res[0].Status != Fail || r.Omitted != nil ||
			!strings.Contains(res[0].Message, KVPrefix+r.Node) || !strings.Contains(res[0].Message, "negative") {
			t.Errorf("%s's report read as %+v (omitted %+v); want its failed doctor/report check naming its key and the negative count", r.Node, res, r.Omitted)
		}
	}
	if c := Counts(rs[2].Results); rs[2].Omitted == nil || c != (Omitted{OK: 1, Warn: 2, Fail: 3}) {
		t.Errorf("node3's report read as %+v, counting %+v; want it as written", rs[2], c)
	}
}

// TestLoadReportsRefusesImpossibleCounts: counts past any node's results
// (two rows each standing for 2^62 failures) were taken as written, and
// their sum overflowed to a negative count, as the dashboard's and
// Counts' totals did: the same hiding of other nodes' failures as a
// negative count. A count above MaxOmitted is now refused as a negative
// one is.
func TestLoadReportsRefusesImpossibleCounts(t *testing.T) {
	kv := &memKV{m: map[string][]byte{
		KVPrefix + "node1": []byte(`{"node":"node1","at":"2026-03-01T12:00:00Z","results":[` +
			`{"check":"x","status":"fail","omitted":{"ok":0,"warn":0,"fail":4611686018427387904}},` +
			`{"check":"y","status":"fail","omitted":{"ok":0,"warn":0,"fail":4611686018427387904}}]}`),
	}}
	rs, err := LoadReports(context.Background(), kv)
	if err != nil || len(rs) != 1 {
		t.Fatalf("LoadReports: %v, %v; want 1 report", nodesOf(rs), err)
	}
	if res := rs[0].Results; len(res) != 1 || res[0].Check != "doctor/report" || res[0].Status != Fail || !strings.Contains(res[0].Message, KVPrefix+"node1") {
		t.Errorf("node1's report read as %+v, counting %+v; want its failed doctor/report check naming its key", res, Counts(res))
	}
}

// TestLoadReportsBoundsText: the agents bound each result they publish
// (a message to MaxText, a check name to MaxCheckName), but a report in
// Consul may hold anything up to Consul's 512 KiB, and LoadReports
// passed a 300 KiB message or check name to the dashboard as one row.
// Each result read back is now bounded as Run bounds them.
func TestLoadReportsBoundsText(t *testing.T) {
	long := strings.Repeat("x", 300<<10)
	b, err := json.Marshal(Report{Node: "node1", Results: []Result{{Check: "network/" + long + "/spec", Status: Fail, Message: long, Fix: "rm " + long}}})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := LoadReports(context.Background(), &memKV{m: map[string][]byte{KVPrefix + "node1": b}})
	if err != nil || len(rs) != 1 || len(rs[0].Results) != 1 {
		t.Fatalf("LoadReports: %+v, %v", rs, err)
	}
	if r := rs[0].Results[0]; len(r.Check) > MaxCheckName || len(r.Message) > MaxText+100 || r.Fix != "" || r.Status != Fail {
		t.Errorf("result read back with a check name of %d bytes, a message of %d and a fix of %d (status %s); want them bounded as Run bounds them",
			len(r.Check), len(r.Message), len(r.Fix), r.Status)
	}
}

// TestLoadReportsRefusesBadVersion: a report's version went to the
// dashboard as written, any agent's token writing it: 300 KiB of it, or
// an escape sequence, a newline or a right-to-left override, shown as
// the node's agent version. Such a version is now left out, with a
// doctor/report warning naming the key; an agent's own is kept.
func TestLoadReportsRefusesBadVersion(t *testing.T) {
	for _, tc := range []struct {
		version string
		keep    bool
	}{
		{"0.1.0", true},
		{"0.1.0-3-gabcdef0-dirty", true},
		{strings.Repeat("1", 300<<10), false},
		{"0.1.0\x1b[2J", false},
		{"0.1.0\nnode2 ok", false},
		{"0.1.0\u202e", false},
	} {
		b, err := json.Marshal(Report{Node: "node1", Version: tc.version, Results: []Result{{Node: "node1", Check: "docker/daemon", Status: OK}}})
		if err != nil {
			t.Fatal(err)
		}
		rs, err := LoadReports(context.Background(), &memKV{m: map[string][]byte{KVPrefix + "node1": b}})
		if err != nil || len(rs) != 1 {
			t.Fatalf("LoadReports: %+v, %v", rs, err)
		}
		r := rs[0]
		if tc.keep {
			if r.Version != tc.version || len(r.Results) != 1 {
				t.Errorf("version %q read back as %q with %+v; want it kept, with no warning", tc.version, r.Version, r.Results)
			}
			continue
		}
		if r.Version != "" || len(r.Results) != 2 || r.Results[1].Check != "doctor/report" || r.Results[1].Status != Warn ||
			!strings.Contains(r.Results[1].Message, KVPrefix+"node1") || len(r.Results[1].Message) > 400 {
			t.Errorf("version %.40q read back as %.40q with %.400v; want it left out, and a short doctor/report warning naming the key", tc.version, r.Version, r.Results)
		}
	}
}

// TestTwoNodesOfOneNameKeepTheirReports: two swarm nodes of one host name
// (a cloned VM, a node that joined the swarm again) published their
// doctor reports under one key, the name's: the last to publish hid the
// other's failures from the dashboard. Each report is now under its
// node's swarm node ID.
func TestTwoNodesOfOneNameKeepTheirReports(t *testing.T) {
	kv := &memKV{m: map[string][]byte{}}
	for _, id := range []string{"ida0000000000000000000000", "idb0000000000000000000000"} {
		r := Report{Node: "n1", NodeID: id, At: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), Every: time.Minute,
			Results: []Result{{Node: "n1", Check: "docker/daemon", Status: Fail, Message: "down on " + id}}}
		if err := Publish(context.Background(), kv, r); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := LoadReports(context.Background(), kv)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rs {
		for _, res := range r.Results {
			got = append(got, r.NodeID+": "+res.Message)
		}
	}
	if want := []string{"ida0000000000000000000000: down on ida0000000000000000000000", "idb0000000000000000000000: down on idb0000000000000000000000"}; !slices.Equal(got, want) {
		t.Errorf("reports read back %q, want %q", got, want)
	}
}

// TestLoadReportsRefusesKeysNamingNoSwarmNodeID: the ID layout's keys
// took any segment without a '/' as a swarm node ID, so a report under
// underlay/doctor/id/a b, or an ID in capitals, of another length or
// with a control character, naming that ID as its own, was read as that
// identity's report (and, when forged facts named the ID too, as a
// node's). Swarm node IDs are 25 lowercase letters and digits: any other
// key is now refused, naming the key, on no node (its failure is among
// the cluster's problems).
func TestLoadReportsRefusesKeysNamingNoSwarmNodeID(t *testing.T) {
	for _, id := range []string{
		"a b", "ID10000000000000000000000", "id1", "id100000000000000000000000", "id1000000000000000000000\n",
		"id100000000000000000000\u00e9", "id1000000000000000000000-", "id1000000000000000000000.",
	} {
		t.Run(id, func(t *testing.T) {
			key := IDPrefix + id
			kv := &memKV{m: map[string][]byte{
				key:                        fmt.Appendf(nil, `{"node":"n1","node_id":%q,"at":"2026-03-01T12:00:00Z","every":60000000000,"results":[{"check":"x","status":"ok"}]}`, id),
				netspec.NodesKVPrefix + id: fmt.Appendf(nil, `{"id":%q,"node":"n1","interfaces":["eth0"],"updated_at":"2026-03-01T12:00:00Z"}`, id),
			}}
			rs, err := LoadReports(context.Background(), kv)
			if err != nil {
				t.Fatal(err)
			}
			if len(rs) != 1 || rs[0].Key != key || rs[0].Node != "" || len(rs[0].Results) != 1 {
				t.Fatalf("reports %+v; want only the refused report of %q, on no node", rs, key)
			}
			res := rs[0].Results[0]
			if res.Check != "doctor/report" || res.Status != Fail || !strings.Contains(res.Message, fmt.Sprintf("report %q is under no swarm node's key", key)) ||
				!strings.Contains(res.Message, "is not a swarm node ID") {
				t.Errorf("%q read as %+v; want a failed doctor/report check naming the key, not a swarm node ID", key, res)
			}
		})
	}
}

// TestLoadReportsReadsBothLayouts: reports are under swarm node IDs,
// older agents' under names, and both are read. A report under a name is
// left out when the same node's is under its ID (it names that ID, or
// names none and the node's name): the agent was upgraded since. One
// under an ID that names another swarm node, or no node name, is its
// key's failed doctor/report check, naming the key and what it names;
// it shadows nothing.
func TestLoadReportsReadsBothLayouts(t *testing.T) {
	report := func(node, id, msg string) []byte {
		return fmt.Appendf(nil, `{"node":%q,"node_id":%q,"at":"2026-03-01T12:00:00Z","results":[{"check":"x","status":"warn","message":%q}]}`, node, id, msg)
	}
	kv := &memKV{m: map[string][]byte{
		IDPrefix + "ida0000000000000000000000": report("n1", "ida0000000000000000000000", "ida0000000000000000000000's"),
		IDPrefix + "idb0000000000000000000000": report("n1", "idb0000000000000000000000", "idb0000000000000000000000's"),
		KVPrefix + "n1":                        report("n1", "", "n1's before its upgrade"),
		IDPrefix + "idc0000000000000000000000": report("n3", "idc0000000000000000000000", "idc0000000000000000000000's"),
		KVPrefix + "n3":                        report("n3", "idc0000000000000000000000", "idc0000000000000000000000's before its upgrade"),
		KVPrefix + "n4":                        report("n4", "", "an older agent's"),
		KVPrefix + "n5":                        report("n5", "idx0000000000000000000000", "idx0000000000000000000000's, with no report under its ID"),
		IDPrefix + "idf0000000000000000000000": report("n6", "ide0000000000000000000000", "forged"),
		KVPrefix + "n6":                        report("n6", "", "n6's"),
		IDPrefix + "idg0000000000000000000000": report("a/b", "idg0000000000000000000000", "a name no node has"),
	}}
	rs, err := LoadReports(context.Background(), kv)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range rs {
		if len(r.Results) != 1 {
			t.Fatalf("%s read with results %+v", r.Key, r.Results)
		}
		got[r.Key] = fmt.Sprintf("%s %s %s %s", r.Node, r.NodeID, r.Results[0].Status, r.Results[0].Message)
	}
	want := map[string]string{
		IDPrefix + "ida0000000000000000000000": "n1 ida0000000000000000000000 warn ida0000000000000000000000's",
		IDPrefix + "idb0000000000000000000000": "n1 idb0000000000000000000000 warn idb0000000000000000000000's",
		IDPrefix + "idc0000000000000000000000": "n3 idc0000000000000000000000 warn idc0000000000000000000000's",
		KVPrefix + "n4":                        "n4  warn an older agent's",
		KVPrefix + "n5":                        "n5 idx0000000000000000000000 warn idx0000000000000000000000's, with no report under its ID",
		IDPrefix + "idf0000000000000000000000": `n6 idf0000000000000000000000 fail report underlay/doctor/id/idf0000000000000000000000 names swarm node "ide0000000000000000000000": an agent publishes its own node's report under its swarm node ID`,
		KVPrefix + "n6":                        "n6  warn n6's",
		IDPrefix + "idg0000000000000000000000": ` idg0000000000000000000000 fail report underlay/doctor/id/idg0000000000000000000000 names node "a/b": not a node's name: '/' is not allowed: want letters, digits, '_', '.' or '-' (the name is part of Consul KV keys and service IDs)`,
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("reports by key (-want +got):\n%s", d)
	}
	for _, r := range rs {
		if r.Results[0].Status == Fail && !strings.HasPrefix(r.Results[0].Fix, "consul kv delete "+r.Key+" ") {
			t.Errorf("%s's fix %q, want its deletion", r.Key, r.Results[0].Fix)
		}
	}
}

// TestRunPeriodicallyCallsPublishedOnce: the callback the agent retires
// its report under the node's name with runs once, after the first
// report under the swarm node ID is stored.
func TestRunPeriodicallyCallsPublishedOnce(t *testing.T) {
	kv := &memKV{m: map[string][]byte{}}
	ctx, cancel := context.WithCancel(context.Background())
	calls := make(chan int, 10)
	n := 0
	published := func(context.Context) {
		n++
		if _, ok := kv.m[IDPrefix+"id10000000000000000000000"]; !ok {
			t.Errorf("published called before %s was stored", IDPrefix+"id10000000000000000000000")
		}
		calls <- n
	}
	done := make(chan struct{})
	go func() {
		RunPeriodically(ctx, kv, "node1", "id10000000000000000000000", "v9", []Check{fixedCheck{[]Result{{Check: "x", Status: Fail}}}}, time.Millisecond, slog.New(slog.DiscardHandler), published)
		close(done)
	}()
	<-calls
	for kv.count() < 3 {
		runtime.Gosched()
	}
	cancel()
	<-done
	if n != 1 {
		t.Errorf("published called %d times over %d reports, want once", n, kv.count())
	}
}

// TestLoadReportsKeepsAnOlderAgentOfANameAnUpgradedOneHas: two swarm
// nodes of name n1, ida's agent upgraded (its report under its ID),
// idb's older (its report under the name, naming no ID). The name's
// report was left out as ida's from before its upgrade, so idb's
// failures showed nowhere until its agent was upgraded. By the node
// facts, a node of the name publishes nothing under its ID: the name's
// report may be its, and is read. Once every node of the name publishes
// under its ID, it is left out again (n2, whose facts name only idc).
func TestLoadReportsKeepsAnOlderAgentOfANameAnUpgradedOneHas(t *testing.T) {
	report := func(node, id, msg string) []byte {
		return fmt.Appendf(nil, `{"node":%q,"node_id":%q,"at":"2026-03-01T12:00:00Z","results":[{"check":"x","status":"fail","message":%q}]}`, node, id, msg)
	}
	kv := &memKV{m: map[string][]byte{
		netspec.NodesKVPrefix + "ida0000000000000000000000": []byte(`{"id":"ida0000000000000000000000","node":"n1"}`),
		netspec.NodesKVPrefix + "idb0000000000000000000000": []byte(`{"id":"idb0000000000000000000000","node":"n1"}`),
		netspec.NodesKVPrefix + "idc0000000000000000000000": []byte(`{"id":"idc0000000000000000000000","node":"n2"}`),
		IDPrefix + "ida0000000000000000000000":              report("n1", "ida0000000000000000000000", "ida0000000000000000000000's"),
		KVPrefix + "n1":                                     report("n1", "", "idb0000000000000000000000's"),
		IDPrefix + "idc0000000000000000000000":              report("n2", "idc0000000000000000000000", "idc0000000000000000000000's"),
		KVPrefix + "n2":                                     report("n2", "", "idc0000000000000000000000's before its upgrade"),
	}}
	rs, err := LoadReports(context.Background(), kv)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range rs {
		got[r.Key] = r.Results[0].Message
	}
	want := map[string]string{IDPrefix + "ida0000000000000000000000": "ida0000000000000000000000's", KVPrefix + "n1": "idb0000000000000000000000's", IDPrefix + "idc0000000000000000000000": "idc0000000000000000000000's"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("reports by key (-want +got):\n%s", d)
	}
}

// TestLoadReportsShowsANameReportNoNodeIsGiven: the node facts name n1
// only ida, which publishes under its ID a report naming n2, and idb's
// report names n1 while its facts name n2 (ida's and idb's agents
// swapped --node since they wrote their facts, or a report is forged).
// An older agent's report under the name n1 was left out as ida's from
// before its upgrade (a report under an ID named n1, and every node of
// the name publishes under its ID): it showed nowhere, though it need
// not be ida's. It is now refused, its key's failed doctor/report check
// saying why no node shows it. n3's, whose only node's report names n3,
// is still left out as that node's from before its upgrade.
func TestLoadReportsShowsANameReportNoNodeIsGiven(t *testing.T) {
	const ida, idb, idc = "ida0000000000000000000000", "idb0000000000000000000000", "idc0000000000000000000000"
	report := func(node, id string) []byte {
		return fmt.Appendf(nil, `{"node":%q,"node_id":%q,"at":"2026-03-01T12:00:00Z","results":[{"check":"x","status":"ok"}]}`, node, id)
	}
	kv := &memKV{m: map[string][]byte{
		netspec.NodesKVPrefix + ida: fmt.Appendf(nil, `{"id":%q,"node":"n1"}`, ida),
		netspec.NodesKVPrefix + idb: fmt.Appendf(nil, `{"id":%q,"node":"n2"}`, idb),
		netspec.NodesKVPrefix + idc: fmt.Appendf(nil, `{"id":%q,"node":"n3"}`, idc),
		IDPrefix + ida:              report("n2", ida),
		IDPrefix + idb:              report("n1", idb),
		IDPrefix + idc:              report("n3", idc),
		KVPrefix + "n1":             report("n1", ""),
		KVPrefix + "n3":             report("n3", ""),
	}}
	rs, err := LoadReports(context.Background(), kv)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range rs {
		got[r.Key] = r.Node + " " + string(r.Results[0].Status) + " " + r.Results[0].Message
	}
	want := map[string]string{
		IDPrefix + ida: "n2 ok ", IDPrefix + idb: "n1 ok ", IDPrefix + idc: "n3 ok ",
		KVPrefix + "n1": "n1 fail report underlay/doctor/n1, an older agent's under node n1's name, is shown on no node: every swarm node the node facts name n1 publishes its report under its ID, and underlay/doctor/id/" + ida +
			` names node "n2", not n1 (its agent's --node changed since its facts were written, or the report is forged), so it may not be theirs from before an upgrade`,
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("reports by key (-want +got):\n%s", d)
	}
}

// TestLoadReportsRefusesKeysNamingNoNode: a report under the name layout
// is its key's node's, by the key's name. A key whose name no node can
// have (a space, a newline, "..", a nested key, none) was read as that
// name's report, shown with it, and matched to node facts by it, while
// the ID layout refuses bad IDs. Each is its key's failed doctor/report
// check, naming the key, with the command that deletes it.
func TestLoadReportsRefusesKeysNamingNoNode(t *testing.T) {
	kv := &memKV{m: map[string][]byte{}}
	for _, name := range []string{"a b", "n1\nn2", "..", "a/b", "", "-n1"} {
		kv.m[KVPrefix+name] = fmt.Appendf(nil, `{"node":%q,"at":"2026-03-01T12:00:00Z","results":[{"check":"x","status":"ok"}]}`, name)
	}
	kv.m[KVPrefix+"n1"] = []byte(`{"node":"n1","at":"2026-03-01T12:00:00Z","results":[{"check":"x","status":"ok"}]}`)
	rs, err := LoadReports(context.Background(), kv)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		name := strings.TrimPrefix(r.Key, KVPrefix)
		if name == "n1" {
			if r.Node != "n1" || len(r.Results) != 1 || r.Results[0].Status != OK {
				t.Errorf("n1's report read as %+v, want it as written", r)
			}
			continue
		}
		if len(r.Results) != 1 || r.Results[0].Check != "doctor/report" || r.Results[0].Status != Fail ||
			!strings.Contains(r.Results[0].Message, fmt.Sprintf("report %q is under no node's name", r.Key)) ||
			!strings.HasPrefix(r.Results[0].Fix, shellword.KVDelete(r.Key)+" ") && !(kvstore.PathRedirected(r.Key) && r.Results[0].Fix == "") {
			t.Errorf("%q read as %+v; want its key's failed doctor/report check, with its deletion (none for a key Consul's paths redirect: TestLoadReportsGivesNoDeleteConsulRedirects)", r.Key, r.Results)
		}
	}
	if len(rs) != 7 {
		t.Errorf("%d reports read, want 7 (each key's)", len(rs))
	}
}

// TestLoadReportsRefusesANameReportNamingAnotherIdentity: a report under
// a name naming a swarm node ID no facts of that name name (n1's naming
// idz; only a forged one can: older agents name none) was read as that
// swarm node's, which no node of the name is: the dashboard showed it
// nowhere. It is its key's failed doctor/report check. One naming an
// identity of the name (n2's, idc's, with no report under its ID) is read
// as written; with no facts for the name (n3), the rule is as before.
func TestLoadReportsRefusesANameReportNamingAnotherIdentity(t *testing.T) {
	report := func(node, id, msg string) []byte {
		return fmt.Appendf(nil, `{"node":%q,"node_id":%q,"at":"2026-03-01T12:00:00Z","results":[{"check":"x","status":"warn","message":%q}]}`, node, id, msg)
	}
	kv := &memKV{m: map[string][]byte{
		netspec.NodesKVPrefix + "ida0000000000000000000000": []byte(`{"id":"ida0000000000000000000000","node":"n1"}`),
		netspec.NodesKVPrefix + "idc0000000000000000000000": []byte(`{"id":"idc0000000000000000000000","node":"n2"}`),
		netspec.NodesKVPrefix + "idz0000000000000000000000": []byte(`{"id":"idz0000000000000000000000","node":"n9"}`),
		KVPrefix + "n1": report("n1", "idz0000000000000000000000", "forged"),
		KVPrefix + "n2": report("n2", "idc0000000000000000000000", "idc0000000000000000000000's"),
		KVPrefix + "n3": report("n3", "idx0000000000000000000000", "idx0000000000000000000000's"),
	}}
	rs, err := LoadReports(context.Background(), kv)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range rs {
		got[r.Key] = fmt.Sprintf("%s %s %s", r.Node, r.Results[0].Status, r.Results[0].Message)
		if r.Results[0].Status == Fail && !strings.HasPrefix(r.Results[0].Fix, shellword.KVDelete(r.Key)+" ") {
			t.Errorf("%s's fix %q, want its deletion", r.Key, r.Results[0].Fix)
		}
	}
	want := map[string]string{
		KVPrefix + "n1": `n1 fail report underlay/doctor/n1 names swarm node "idz0000000000000000000000", which no node facts of node n1 name: an older agent names none`,
		KVPrefix + "n2": "n2 warn idc0000000000000000000000's",
		KVPrefix + "n3": "n3 warn idx0000000000000000000000's",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("reports by key (-want +got):\n%s", d)
	}
}

// TestLoadReportsGivesNoDeleteConsulRedirects: the fix of a refused
// report was `consul kv delete KEY` whatever the key. For a key with an
// empty, "." or ".." segment, Consul's HTTP API redirects the path of
// that command to another key: the delete misses the report (the CLI's
// redirected request is a read), which stays. Such a report's fix is no
// command, and its message says how it goes: by a transaction naming it.
func TestLoadReportsGivesNoDeleteConsulRedirects(t *testing.T) {
	kv := &memKV{m: map[string][]byte{}}
	redirected := []string{KVPrefix + "..", IDPrefix + "..", IDPrefix + ".", IDPrefix + "a/../b", IDPrefix + "a//b"}
	for _, k := range redirected {
		kv.m[k] = []byte(`garbage`)
	}
	kv.m[IDPrefix+"id10000000000000000000000"] = []byte(`garbage`)
	rs, err := LoadReports(context.Background(), kv)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if len(r.Results) != 1 {
			t.Fatalf("%q read with results %+v", r.Key, r.Results)
		}
		res := r.Results[0]
		if !slices.Contains(redirected, r.Key) {
			if !strings.HasPrefix(res.Fix, shellword.KVDelete(r.Key)+" ") {
				t.Errorf("%q's fix %q, want its deletion", r.Key, res.Fix)
			}
			continue
		}
		if res.Status != Fail || res.Fix != "" || !strings.Contains(res.Message, "PUT /v1/txn") {
			t.Errorf("%q refused as %+v; want no fix, and the message saying to delete it by a transaction", r.Key, res)
		}
	}
}

// TestLoadReportsQuoteToShow: the problems of reports refused for the
// key, node or swarm node they name, which any token that may write
// reports chooses, quote them with what would not show escaped (U+3164
// reads as nothing, and %q left it as it is).
func TestLoadReportsQuoteToShow(t *testing.T) {
	report := func(node, id string) []byte {
		return fmt.Appendf(nil, `{"node":%q,"node_id":%q,"at":"2026-03-01T12:00:00Z","results":[{"check":"x","status":"warn","message":"m"}]}`, node, id)
	}
	const f = "\u3164"
	kv := &memKV{m: map[string][]byte{
		KVPrefix + "n" + f:                     report("n"+f, ""),
		KVPrefix + "n7":                        report("n8"+f, ""),
		IDPrefix + "bad" + f:                   report("n1", "bad"+f),
		IDPrefix + "idh0000000000000000000000": report("n1", "idh000000000000000000000"+f),
		IDPrefix + "idi0000000000000000000000": report("n"+f, "idi0000000000000000000000"),
	}}
	rs, err := LoadReports(context.Background(), kv)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		KVPrefix + "n" + f:                     `report "underlay/doctor/n\u3164" is under no node's name: '\u3164' is not allowed`,
		KVPrefix + "n7":                        `names node "n8\u3164": an agent publishes`,
		IDPrefix + "bad" + f:                   `report "underlay/doctor/id/bad\u3164" is under no swarm node's key: "bad\u3164" is not a swarm node ID`,
		IDPrefix + "idh0000000000000000000000": `names swarm node "idh000000000000000000000\u3164": `,
		IDPrefix + "idi0000000000000000000000": `names node "n\u3164": not a node's name: '\u3164' is not allowed`,
	}
	for _, r := range rs {
		if len(r.Results) != 1 || !strings.Contains(r.Results[0].Message, want[r.Key]) {
			t.Errorf("%q read with %+v, want a result holding %s", r.Key, r.Results, want[r.Key])
		}
		delete(want, r.Key)
	}
	for k := range want {
		t.Errorf("no report %q", k)
	}
}
