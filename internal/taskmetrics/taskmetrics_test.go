package taskmetrics

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/shellword"
	"github.com/underlay/underlay/internal/testmetrics"
)

func TestUsage(t *testing.T) {
	t0 := time.Unix(1000, 0)
	prev := map[string]Sample{
		"a": {ContainerID: "a", Service: "web", At: t0, CPUTotal: 1 * time.Second},
		"b": {ContainerID: "b", Service: "web", At: t0, CPUTotal: 5 * time.Second},
	}
	cur := []Sample{
		{ContainerID: "a", Service: "web", At: t0.Add(2 * time.Second), CPUTotal: 2 * time.Second, Memory: 100}, // 0.5 core
		{ContainerID: "b", Service: "web", At: t0.Add(2 * time.Second), CPUTotal: 7 * time.Second, Memory: 300}, // 1 core
		{ContainerID: "c", Service: "api", At: t0.Add(2 * time.Second), CPUTotal: 9 * time.Second, Memory: 50},  // new: no rate yet
		{ContainerID: "d", Service: "api", At: t0.Add(2 * time.Second), CPUTotal: 0, Memory: 10},                // new
	}
	got := Usage(prev, cur)
	want := map[string]ServiceUsage{"web": {Tasks: 2, CPU: 1.5, Memory: 400}, "api": {Tasks: 2, CPU: 0, Memory: 60}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("Usage (-want +got):\n%s", d)
	}
}

func TestPerReplica(t *testing.T) {
	now := time.Unix(5000, 0)
	reports := []Report{
		{Node: "n1", At: now.Add(-5 * time.Second), Services: map[string]ServiceUsage{"web": {Tasks: 2, CPU: 1.0, Memory: 200}}},
		{Node: "n2", At: now.Add(-1 * time.Second), Services: map[string]ServiceUsage{"web": {Tasks: 1, CPU: 0.5, Memory: 100}}},
		{Node: "n3", At: now.Add(-time.Hour), Services: map[string]ServiceUsage{"web": {Tasks: 9, CPU: 9, Memory: 9}}}, // stale
	}
	cpu, mem, ok := PerReplica(reports, "web", now, 30*time.Second)
	if !ok || cpu != 0.5 || mem != 100 {
		t.Errorf("PerReplica = %v, %v, %v; want 0.5 cores and 100 bytes per replica", cpu, mem, ok)
	}
	if _, _, ok := PerReplica(reports, "api", now, 30*time.Second); ok {
		t.Error("a service with no task reported a value")
	}
}

func TestDecode(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	good := `{"node":"n1","at":"2026-12-03T11:59:58Z","services":{"web":{"tasks":2,"cpu":1.5,"memory":400}}}`
	r, err := Decode(KVPrefix+"n1", []byte(good))
	want := Report{Node: "n1", At: now.Add(-2 * time.Second), Services: map[string]ServiceUsage{"web": {Tasks: 2, CPU: 1.5, Memory: 400}}, Key: KVPrefix + "n1"}
	if err != nil {
		t.Fatalf("Decode of a good report: %v", err)
	}
	if d := cmp.Diff(want, r); d != "" {
		t.Errorf("Decode (-want +got):\n%s", d)
	}
	for _, tc := range []struct {
		name, key, value, want string
	}{
		{"ahead", KVPrefix + "n1", `{"node":"n1","at":"2026-12-03T12:00:59Z"}`, ""},
		{"no services", KVPrefix + "n1", `{"node":"n1","at":"2026-12-03T11:00:00Z","services":null}`, ""},
		{"garbage", KVPrefix + "n1", `{"node":`, "not a task metrics report"},
		{"wrong type", KVPrefix + "n1", `{"node":"n1","at":"2026-12-03T12:00:00Z","services":{"web":{"memory":-1}}}`, "not a task metrics report"},
		{"key of another node", KVPrefix + "n2", good, `names node "n1", its key node "n2"`},
		{"no node", KVPrefix + "n1", `{"at":"2026-12-03T12:00:00Z"}`, `names node "", its key node "n1"`},
		{"nested key", KVPrefix + "n1/x", good, `is not a node's key`},
		// The key's name is the node's, shown and matched to node facts
		// by it, as a name under an ID is checked.
		{"a name with a space", KVPrefix + "a b", `{"node":"a b","at":"2026-12-03T11:59:58Z"}`, `"underlay/metrics/a b" is not a node's key`},
		{"a name with a newline", KVPrefix + "n1\nn2", `{"node":"n1\nn2","at":"2026-12-03T11:59:58Z"}`, `"underlay/metrics/n1\nn2" is not a node's key`},
		{"the name ..", KVPrefix + "..", `{"node":"..","at":"2026-12-03T11:59:58Z"}`, `"underlay/metrics/.." is not a node's key`},
		{"by swarm node ID", IDPrefix + "id10000000000000000000000", `{"node":"n1","node_id":"id10000000000000000000000","at":"2026-12-03T11:59:58Z"}`, ""},
		{"an older agent's naming no ID", KVPrefix + "n1", `{"node":"n1","at":"2026-12-03T11:59:58Z"}`, ""},
		{"under another swarm node ID", IDPrefix + "id20000000000000000000000", `{"node":"n1","node_id":"id10000000000000000000000","at":"2026-12-03T11:59:58Z"}`,
			`the report under underlay/metrics/id/id20000000000000000000000 names swarm node "id10000000000000000000000", its key swarm node "id20000000000000000000000"`},
		{"under an ID, naming none", IDPrefix + "id20000000000000000000000", good, `names swarm node "", its key swarm node "id20000000000000000000000"`},
		{"under an ID, no node", IDPrefix + "id10000000000000000000000", `{"node_id":"id10000000000000000000000","at":"2026-12-03T11:59:58Z"}`, "the report of swarm node id10000000000000000000000 names no node"},
		// The name is shown with the report, and its ID report shadows
		// the name's (Load) by it.
		{"under an ID, a name with a '/'", IDPrefix + "id10000000000000000000000", `{"node":"a/b","node_id":"id10000000000000000000000","at":"2026-12-03T11:59:58Z"}`,
			`the report under underlay/metrics/id/id10000000000000000000000 names node "a/b": not a node's name`},
		{"under an ID, a name with a newline", IDPrefix + "id10000000000000000000000", `{"node":"n1\nn2","node_id":"id10000000000000000000000","at":"2026-12-03T11:59:58Z"}`,
			`the report under underlay/metrics/id/id10000000000000000000000 names node "n1\nn2": not a node's name`},
		{"nested ID key", IDPrefix + "id10000000000000000000000/x", `{"node":"n1","node_id":"id10000000000000000000000/x","at":"2026-12-03T11:59:58Z"}`, `is not a node's key`},
		{"the ID prefix itself", IDPrefix, `{"node":"n1","at":"2026-12-03T11:59:58Z"}`, `is not a node's key`},
		// Swarm node IDs are 25 lowercase letters and digits: these keys
		// were read as those of swarm nodes.
		{"an ID with a space", IDPrefix + "a b", `{"node":"n1","node_id":"a b","at":"2026-12-03T11:59:58Z"}`, `"underlay/metrics/id/a b" is not a node's key: "a b" is not a swarm node ID`},
		{"an ID in capitals", IDPrefix + "ID10000000000000000000000", `{"node":"n1","node_id":"ID10000000000000000000000","at":"2026-12-03T11:59:58Z"}`, `is not a swarm node ID`},
		{"a short ID", IDPrefix + "id1", `{"node":"n1","node_id":"id1","at":"2026-12-03T11:59:58Z"}`, `is not a swarm node ID: 3 bytes, want 25`},
		{"an ID with a newline", IDPrefix + "id1000000000000000000000\n", `{"node":"n1","node_id":"id1000000000000000000000\n","at":"2026-12-03T11:59:58Z"}`, `is not a swarm node ID`},
		{"the prefix itself", KVPrefix, good, `is not a node's key`},
		{"no time", KVPrefix + "n1", `{"node":"n1"}`, "has no time"},
		// Readers date reports by their own clock (Hear): a stamp ahead
		// counts only while it changes.
		{"a year ahead", KVPrefix + "n1", `{"node":"n1","at":"2027-12-03T12:00:00Z"}`, ""},
		{"no tasks", KVPrefix + "n1", `{"node":"n1","at":"2026-12-03T12:00:00Z","services":{"web":{"tasks":0,"cpu":5}}}`, `service "web" 0 tasks`},
		{"negative tasks", KVPrefix + "n1", `{"node":"n1","at":"2026-12-03T12:00:00Z","services":{"web":{"tasks":-3,"cpu":1}}}`, `service "web" -3 tasks`},
		{"negative CPU", KVPrefix + "n1", `{"node":"n1","at":"2026-12-03T12:00:00Z","services":{"web":{"tasks":1,"cpu":-0.5}}}`, `service "web" a CPU of -0.5 cores`},
		{"unnamed service", KVPrefix + "n1", `{"node":"n1","at":"2026-12-03T12:00:00Z","services":{"":{"tasks":1}}}`, "a service with no name"},
		// Figures no node reaches: a billion idle tasks held a service's
		// CPU per replica near 0 (no scale-up), and a CPU near the
		// float maximum made the sum +Inf (a missing metric).
		{"most tasks", KVPrefix + "n1", `{"node":"n1","at":"2026-12-03T12:00:00Z","services":{"web":{"tasks":10000,"cpu":8192,"memory":70368744177664}}}`, ""},
		{"a billion tasks", KVPrefix + "n1", `{"node":"n1","at":"2026-12-03T12:00:00Z","services":{"web":{"tasks":1000000000,"cpu":0}}}`, `service "web" 1000000000 tasks: want 1 to 10000`},
		{"one task too many", KVPrefix + "n1", `{"node":"n1","at":"2026-12-03T12:00:00Z","services":{"web":{"tasks":10001,"cpu":0}}}`, `service "web" 10001 tasks: want 1 to 10000`},
		{"CPU near the float maximum", KVPrefix + "n1", `{"node":"n1","at":"2026-12-03T12:00:00Z","services":{"web":{"tasks":1,"cpu":1e308}}}`, `service "web" a CPU of 1e+308 cores: want 0 to 8192`},
		{"one core too many", KVPrefix + "n1", `{"node":"n1","at":"2026-12-03T12:00:00Z","services":{"web":{"tasks":1,"cpu":8193}}}`, `service "web" a CPU of 8193 cores: want 0 to 8192`},
		{"memory above 64 TiB", KVPrefix + "n1", `{"node":"n1","at":"2026-12-03T12:00:00Z","services":{"web":{"tasks":1,"memory":70368744177665}}}`, `service "web" 70368744177665 bytes of memory: want at most 70368744177664`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.key, []byte(tc.value))
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Decode: %v; want it counted", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Decode: %v; want an error with %q", err, tc.want)
			}
		})
	}
}

// TestLoadSetsApartWhatItCannotCount: a stray report under a key of its
// own naming n1 (a forged key) claiming 100 idle tasks of web would hold
// web's CPU per replica near 0, so that the autoscaler never scaled it up;
// it is set apart and the nodes' own reports give the average.
func TestLoadSetsApartWhatItCannotCount(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	ctx := context.Background()
	kv := kvtest.New()
	for k, v := range map[string]string{
		KVPrefix + "n1":    `{"node":"n1","at":"2026-12-03T11:59:59Z","services":{"web":{"tasks":2,"cpu":1.6,"memory":200}}}`,
		KVPrefix + "n2":    `{"node":"n2","at":"2026-12-03T11:59:58Z","services":{"web":{"tasks":2,"cpu":0.4,"memory":200}}}`,
		KVPrefix + "ghost": `{"node":"n1","at":"2026-12-03T12:00:00Z","services":{"web":{"tasks":100,"cpu":0,"memory":0}}}`,
		KVPrefix + "junk":  `not json`,
	} {
		kv.Put(ctx, k, []byte(v))
	}
	reports, bad, err := Load(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if len(reports) != 2 || reports[0].Node != "n1" || reports[1].Node != "n2" {
		t.Errorf("counted reports %+v, want n1's and n2's", reports)
	}
	if len(bad) != 2 || bad[0].Key != KVPrefix+"ghost" || bad[1].Key != KVPrefix+"junk" {
		t.Fatalf("bad reports %+v, want ghost and junk", bad)
	}
	if want := "consul kv delete " + KVPrefix + "ghost"; !strings.HasPrefix(bad[0].Fix, want) || !strings.Contains(bad[0].Problem, `names node "n1", its key node "ghost"`) {
		t.Errorf("bad report %+v, want the problem named and the fix %q", bad[0], want)
	}
	cpu, _, ok := PerReplica(reports, "web", now, time.Minute)
	if !ok || cpu != 0.5 {
		t.Errorf("web's CPU per replica %v (%v), want 0.5 from n1 and n2", cpu, ok)
	}
}

// TestUsageLeavesOutUnnamedServices: a container labelled with an empty
// swarm service name (not a task swarm made, but one Docker lists with the
// label) names no service. Counted under "", it made readers refuse the
// node's whole report, so every service's tasks on the node went
// uncounted.
func TestUsageLeavesOutUnnamedServices(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	cur := []Sample{
		{ContainerID: "a", Service: "web", At: now, Memory: 100},
		{ContainerID: "b", Service: "", At: now, Memory: 7},
	}
	r := Report{Node: "n1", At: now, Services: Usage(nil, cur)}
	if d := cmp.Diff(map[string]ServiceUsage{"web": {Tasks: 1, Memory: 100}}, r.Services); d != "" {
		t.Errorf("Usage (-want +got):\n%s", d)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(KVPrefix+"n1", b); err != nil {
		t.Errorf("the node's report is not counted: %v", err)
	}
}

// TestPerReplicaSumsTasksWithoutOverflow: Decode took any task count of
// 1 or more, and PerReplica summed the counts of every node as an int, so
// a report claiming math.MaxInt64 tasks beside n1's 2 wrapped the sum
// negative and gave web a negative CPU and memory per replica. Decode now
// refuses such a count, and PerReplica leaves out a report it is given
// that Decode would refuse.
func TestPerReplicaSumsTasksWithoutOverflow(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	ghost := `{"node":"ghost","at":"2026-12-03T11:59:59Z","services":{"web":{"tasks":9223372036854775807,"cpu":0,"memory":0}}}`
	if _, err := Decode(KVPrefix+"ghost", []byte(ghost)); err == nil || !strings.Contains(err.Error(), "9223372036854775807 tasks") {
		t.Errorf("Decode of the ghost: %v; want it refused, naming its count", err)
	}
	reports := []Report{
		{Node: "n1", At: now.Add(-time.Second), Services: map[string]ServiceUsage{"web": {Tasks: 2, CPU: 1, Memory: 200}}},
		{Node: "ghost", At: now.Add(-time.Second), Services: map[string]ServiceUsage{"web": {Tasks: math.MaxInt64}}},
	}
	cpu, mem, ok := PerReplica(reports, "web", now, time.Minute)
	if !ok || cpu != 0.5 || mem != 100 {
		t.Errorf("web per replica: %v cores, %v bytes (%v); want n1's 0.5 cores and 100 bytes", cpu, mem, ok)
	}
}

// TestPerReplicaStaysFinite: two fresh reports each claiming a CPU near
// the float maximum summed to +Inf, which the autoscaler takes for a
// missing metric, so web was never scaled up however busy n1 was.
// PerReplica now leaves out a report Decode would refuse.
func TestPerReplicaStaysFinite(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	reports := []Report{
		{Node: "n1", At: now.Add(-time.Second), Services: map[string]ServiceUsage{"web": {Tasks: 2, CPU: 1.8, Memory: 200}}},
		{Node: "g1", At: now.Add(-time.Second), Services: map[string]ServiceUsage{"web": {Tasks: 1, CPU: 1e308}}},
		{Node: "g2", At: now.Add(-time.Second), Services: map[string]ServiceUsage{"web": {Tasks: 1, CPU: 1e308}}},
	}
	cpu, mem, ok := PerReplica(reports, "web", now, time.Minute)
	if !ok || cpu != 0.9 || mem != 100 {
		t.Errorf("web per replica: %v cores, %v bytes (%v); want n1's 0.9 cores and 100 bytes", cpu, mem, ok)
	}
}

// TestRunLeavesOutRefusedServices: one service whose sums fall outside
// Decode's bounds (here a working set above 64 TiB, as a bogus stats
// answer gives) made the agent publish a report every reader refuses
// whole, so every service's tasks on the node vanished from the
// autoscaler. The agent now leaves that service out, logging it once
// with its figure, and logs when it is published again.
func TestRunLeavesOutRefusedServices(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	huge := uint64(MaxMemory) + 1
	rounds := [][]Sample{
		{{ContainerID: "a", Service: "web", At: t0, Memory: 100}, {ContainerID: "h", Service: "hog", At: t0, Memory: huge}},
		{{ContainerID: "a", Service: "web", At: t0.Add(time.Second), Memory: 100}, {ContainerID: "h", Service: "hog", At: t0.Add(time.Second), Memory: huge}},
		{{ContainerID: "a", Service: "web", At: t0.Add(2 * time.Second), Memory: 100}, {ContainerID: "h", Service: "hog", At: t0.Add(2 * time.Second), Memory: 7}},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := &scriptedSource{rounds: rounds}
	kv := &recordingKV{}
	kv.put = func() {
		if len(kv.values) == len(rounds) {
			cancel()
		}
	}
	var logs bytes.Buffer
	Run(ctx, src, kv, "n1", "id10000000000000000000000", time.Millisecond, slog.New(slog.NewTextHandler(&logs, nil)), nil, nil)

	if len(kv.values) != len(rounds) {
		t.Fatalf("%d reports published, want %d", len(kv.values), len(rounds))
	}
	for i, v := range kv.values {
		r, err := Decode(IDPrefix+"id10000000000000000000000", v)
		if err != nil {
			t.Fatalf("report %d is refused: %v", i, err)
		}
		_, hog := r.Services["hog"]
		if _, web := r.Services["web"]; !web || hog != (i == 2) {
			t.Errorf("report %d has services %v; want web, and hog in the last only", i, slices.Sorted(maps.Keys(r.Services)))
		}
	}
	var warned, again int
	for _, line := range strings.Split(logs.String(), "\n") {
		switch {
		case strings.Contains(line, "level=WARN") && strings.Contains(line, "service=hog") && strings.Contains(line, fmt.Sprint(huge)+" bytes of memory"):
			warned++
		case strings.Contains(line, "level=INFO") && strings.Contains(line, "service=hog"):
			again++
		}
	}
	if warned != 1 || again != 1 {
		t.Errorf("hog left out logged %d times, published again %d times; want once each:\n%s", warned, again, logs.String())
	}
}

// TestRunFitsAReportOverConsulsLimit: a node's report above Consul's value
// limit (512 KiB: thousands of services, or a plain container's huge
// com.docker.swarm.service.name label) was refused by Consul at every
// period, so the node published nothing at all. The services dropOrder
// puts first are now left out, as few as make it fit: the name no swarm
// service can have, then services with one task on the node; the rest is
// published, the ones left out are logged once, by count and the first
// few names, and counted in underlay_task_metrics_services_left_out.
func TestRunFitsAReportOverConsulsLimit(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	huge := strings.Repeat("x", 10<<10)
	var round []Sample
	task := func(service string, n int) {
		for i := range n {
			round = append(round, Sample{ContainerID: fmt.Sprint(service, ".", i), Service: service, At: t0, Memory: 1 << 20})
		}
	}
	task("web", 5)
	task(huge, 1)
	// 63 characters each, the longest a swarm service's name may be.
	name := func(tasks, i int) string { return fmt.Sprintf("svc%d-%058d", tasks, i) }
	for i := range 2700 {
		task(name(1, i), 1)
		task(name(2, i), 2)
	}
	kv := kvtest.New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	const id = "id10000000000000000000000"
	Run(ctx, &scriptedSource{rounds: [][]Sample{round}}, cancelOnPut{kv, cancel}, "n1", id, time.Hour, slog.New(slog.NewTextHandler(&logs, nil)), NewMetrics(reg), nil)

	p, ok, err := kv.Get(context.Background(), IDPrefix+id)
	if err != nil || !ok {
		t.Fatalf("no report stored (%v); logs:\n%.2000s", err, logs.String())
	}
	r, err := Decode(p.Key, p.Value)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Value) > kvstore.MaxValueSize {
		t.Errorf("report of %d bytes, above %d", len(p.Value), kvstore.MaxValueSize)
	}
	var dropped []string
	for _, n := range []string{"web", huge} {
		if _, kept := r.Services[n]; kept != (n == "web") {
			t.Errorf("service %.20s… kept: %v, want %v", n, kept, n == "web")
		}
	}
	for i := range 2700 {
		if _, ok := r.Services[name(2, i)]; !ok {
			t.Errorf("%s, of 2 tasks, left out while services of 1 task were kept", name(2, i))
		}
		if _, ok := r.Services[name(1, i)]; !ok {
			dropped = append(dropped, name(1, i))
		}
	}
	if len(dropped) == 0 {
		t.Fatalf("no service of 1 task left out: the report without %.20s… would not fit", huge)
	}
	// As few as make it fit: the last one left out did not fit.
	last := dropped[len(dropped)-1]
	r.Services[last] = ServiceUsage{Tasks: 1, Memory: 1 << 20}
	if b, _ := json.Marshal(r); len(b) <= kvstore.MaxValueSize {
		t.Errorf("%s left out, though the report fits with it (%d bytes)", last, len(b))
	}
	if got, want := gaugeVec(t, reg, "underlay_task_metrics_services_left_out", "size"), float64(len(dropped)+1); got != want {
		t.Errorf("underlay_task_metrics_services_left_out{reason=\"size\"} = %v, want %v", got, want)
	}
	var warns []string
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "level=WARN") {
			warns = append(warns, line)
		}
	}
	// The huge name shortened: quoted whole, it would fill the journal.
	want := fmt.Sprintf("left_out=%d services=\"%s… (%d bytes),%s\"", len(dropped)+1, huge[:64], len(huge), strings.Join(dropped[:9], ","))
	if len(warns) != 1 || !strings.Contains(warns[0], want) || !strings.Contains(warns[0], fmt.Sprintf("unnamed=%d", len(dropped)-9)) {
		t.Errorf("warnings %.3000q, want one with %.200q…", warns, want)
	}
	if len(warns) == 1 && len(warns[0]) > 2000 {
		t.Errorf("warning of %d bytes, want the names shortened: %.300q…", len(warns[0]), warns[0])
	}
}

// gaugeVec reads the value of a registered gauge's series of one label
// value (-1 when it is not there).
func gaugeVec(t *testing.T, reg *prometheus.Registry, name, value string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			if f.GetName() == name && len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == value {
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

// scriptedSource gives its rounds in turn, then the last one again.
type scriptedSource struct {
	rounds [][]Sample
	n      int
}

func (s *scriptedSource) Samples(context.Context) ([]Sample, error) {
	r := s.rounds[min(s.n, len(s.rounds)-1)]
	s.n++
	return r, nil
}

// recordingKV keeps every value put, then calls put.
type recordingKV struct {
	values [][]byte
	put    func()
}

func (kv *recordingKV) Put(_ context.Context, _ string, value []byte) error {
	kv.values = append(kv.values, value)
	kv.put()
	return nil
}

// TestTwoNodesOfOneNameKeepTheirReports: two swarm nodes of one host name
// (a cloned VM, a node that joined again) published under one key, the
// name's, so that the last to publish hid the other's tasks from the
// autoscaler. Each report is now under its node's swarm node ID.
func TestTwoNodesOfOneNameKeepTheirReports(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	kv := kvtest.New()
	for _, n := range []struct {
		id    string
		tasks int
	}{{"ida0000000000000000000000", 1}, {"idb0000000000000000000000", 2}} {
		var round []Sample
		for i := range n.tasks {
			round = append(round, Sample{ContainerID: fmt.Sprint(n.id, i), Service: "web", At: t0, Memory: 100})
		}
		ctx, cancel := context.WithCancel(context.Background())
		Run(ctx, &scriptedSource{rounds: [][]Sample{round}}, cancelOnPut{kv, cancel}, "n1", n.id, time.Hour, slog.New(slog.DiscardHandler), nil, nil)
	}
	reports, bad, err := Load(context.Background(), kv)
	if err != nil || len(bad) != 0 {
		t.Fatalf("Load: %v, bad %+v", err, bad)
	}
	tasks := 0
	for _, r := range reports {
		tasks += r.Services["web"].Tasks
	}
	if len(reports) != 2 || tasks != 3 {
		t.Errorf("%d reports with %d tasks of web, want 2 with 3 (1 of ida0000000000000000000000, 2 of idb0000000000000000000000): %+v", len(reports), tasks, reports)
	}
}

// cancelOnPut is a KV that ends its Run once it stored a report.
type cancelOnPut struct {
	*kvtest.KV
	cancel context.CancelFunc
}

func (k cancelOnPut) Put(ctx context.Context, key string, value []byte) error {
	defer k.cancel()
	return k.KV.Put(ctx, key, value)
}

// TestLoadReadsBothLayouts: reports are under swarm node IDs, older
// agents' under names. A report under a name is left out when the same
// node's is under its ID (it names that ID, or names none and the node's
// name): the node's tasks would count twice. One under an ID naming
// another swarm node is refused with its key and the ID it names.
func TestLoadReadsBothLayouts(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	report := func(node, id string, tasks int) string {
		return fmt.Sprintf(`{"node":%q,"node_id":%q,"at":"2026-12-03T11:59:59Z","services":{"web":{"tasks":%d}}}`, node, id, tasks)
	}
	for k, v := range map[string]string{
		IDPrefix + "ida0000000000000000000000": report("n1", "ida0000000000000000000000", 1),
		IDPrefix + "idb0000000000000000000000": report("n1", "idb0000000000000000000000", 2),
		KVPrefix + "n1":                        report("n1", "", 100), // n1's before its upgrade
		IDPrefix + "idc0000000000000000000000": report("n3", "idc0000000000000000000000", 4),
		KVPrefix + "n3":                        report("n3", "idc0000000000000000000000", 100), // idc0000000000000000000000's, with its ID
		KVPrefix + "n4":                        report("n4", "", 8),                            // an older agent's
		KVPrefix + "n5":                        report("n5", "idx0000000000000000000000", 16),  // of a node with no report under its ID
		IDPrefix + "idf0000000000000000000000": report("n6", "ide0000000000000000000000", 100),
		IDPrefix + "id/x":                      report("n7", "id/x", 100),
	} {
		kv.Put(ctx, k, []byte(v))
	}
	reports, bad, err := Load(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, r := range reports {
		got[r.Key] = r.Services["web"].Tasks
	}
	want := map[string]int{IDPrefix + "ida0000000000000000000000": 1, IDPrefix + "idb0000000000000000000000": 2, IDPrefix + "idc0000000000000000000000": 4, KVPrefix + "n4": 8, KVPrefix + "n5": 16}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("reports counted, tasks by key (-want +got):\n%s", d)
	}
	problems := map[string]string{}
	for _, b := range bad {
		problems[b.Key] = b.Problem
	}
	for key, want := range map[string]string{
		IDPrefix + "idf0000000000000000000000": `the report under underlay/metrics/id/idf0000000000000000000000 names swarm node "ide0000000000000000000000", its key swarm node "idf0000000000000000000000"`,
		IDPrefix + "id/x":                      `is not a node's key`,
	} {
		if !strings.Contains(problems[key], want) {
			t.Errorf("%s: problem %q, want it to say %q", key, problems[key], want)
		}
	}
	if len(bad) != 2 {
		t.Errorf("%d bad reports, want 2: %+v", len(bad), bad)
	}
}

// TestHearTellsApartNodesOfOneName: two nodes' reports naming one node
// are heard each by its key: by name, one's stamp would be taken for the
// other's change.
func TestHearTellsApartNodesOfOneName(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	t1, t2 := now.Add(-time.Hour), now.Add(-time.Minute)
	reports := []Report{{Node: "n1", NodeID: "ida0000000000000000000000", Key: IDPrefix + "ida0000000000000000000000", At: t1}, {Node: "n1", NodeID: "idb0000000000000000000000", Key: IDPrefix + "idb0000000000000000000000", At: t2}}
	heard := Hear(reports, nil, now)
	if len(heard) != 2 {
		t.Fatalf("heard %v, want 2 reports", heard)
	}
	// Unchanged a minute later: each keeps the time it was heard at.
	again := []Report{{Node: "n1", NodeID: "ida0000000000000000000000", Key: IDPrefix + "ida0000000000000000000000", At: t1}, {Node: "n1", NodeID: "idb0000000000000000000000", Key: IDPrefix + "idb0000000000000000000000", At: t2}}
	Hear(again, heard, now.Add(time.Minute))
	if !again[0].At.Equal(reports[0].At) || !again[1].At.Equal(reports[1].At) {
		t.Errorf("unchanged reports heard at %v and %v, want %v and %v", again[0].At, again[1].At, reports[0].At, reports[1].At)
	}
}

// TestRunCallsPublishedOnce: the callback the agent retires its report
// under the node's name with runs once, after the first report under the
// swarm node ID is stored, not at every period.
func TestRunCallsPublishedOnce(t *testing.T) {
	kv := kvtest.New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls, puts := 0, 0
	published := func(ctx context.Context) {
		calls++
		if _, ok, _ := kv.Get(ctx, IDPrefix+"id10000000000000000000000"); !ok {
			t.Errorf("published called before %s was stored", IDPrefix+"id10000000000000000000000")
		}
	}
	src := &scriptedSource{rounds: [][]Sample{{{ContainerID: "a", Service: "web", At: time.Now(), Memory: 1}}}}
	Run(ctx, src, countingKV{kv, func() {
		if puts++; puts == 3 {
			cancel()
		}
	}}, "n1", "id10000000000000000000000", time.Millisecond, slog.New(slog.DiscardHandler), nil, published)
	if calls != 1 {
		t.Errorf("published called %d times over %d reports, want once", calls, puts)
	}
}

// countingKV calls put after each Put.
type countingKV struct {
	*kvtest.KV
	put func()
}

func (k countingKV) Put(ctx context.Context, key string, value []byte) error {
	defer k.put()
	return k.KV.Put(ctx, key, value)
}

// TestLoadCountsAnOlderAgentOfANameAnUpgradedOneHas: two swarm nodes of
// name n1, ida's agent upgraded (its report under its ID), idb's older
// (its report under the name, naming no ID). The name's report was left
// out as ida's from before its upgrade, and idb's tasks counted nowhere
// until idb's agent was upgraded. By the node facts, a node of the name
// publishes nothing under its ID: the name's report may be its, and
// counts. Once every node of the name publishes under its ID, it is left
// out again (n2, whose facts name only idc).
func TestLoadCountsAnOlderAgentOfANameAnUpgradedOneHas(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	report := func(node, id string, tasks int) string {
		return fmt.Sprintf(`{"node":%q,"node_id":%q,"at":"2026-12-03T11:59:59Z","services":{"web":{"tasks":%d}}}`, node, id, tasks)
	}
	for k, v := range map[string]string{
		netspec.NodesKVPrefix + "ida0000000000000000000000": `{"id":"ida0000000000000000000000","node":"n1"}`,
		netspec.NodesKVPrefix + "idb0000000000000000000000": `{"id":"idb0000000000000000000000","node":"n1"}`,
		netspec.NodesKVPrefix + "idc0000000000000000000000": `{"id":"idc0000000000000000000000","node":"n2"}`,
		IDPrefix + "ida0000000000000000000000":              report("n1", "ida0000000000000000000000", 1),
		KVPrefix + "n1":                                     report("n1", "", 2), // idb0000000000000000000000's
		IDPrefix + "idc0000000000000000000000":              report("n2", "idc0000000000000000000000", 4),
		KVPrefix + "n2":                                     report("n2", "", 100), // idc0000000000000000000000's before its upgrade
	} {
		kv.Put(ctx, k, []byte(v))
	}
	reports, bad, err := Load(ctx, kv)
	if err != nil || len(bad) > 0 {
		t.Fatalf("Load: %v, bad %+v", err, bad)
	}
	got := map[string]int{}
	for _, r := range reports {
		got[r.Key] = r.Services["web"].Tasks
	}
	want := map[string]int{IDPrefix + "ida0000000000000000000000": 1, KVPrefix + "n1": 2, IDPrefix + "idc0000000000000000000000": 4}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("reports counted, tasks by key (-want +got):\n%s", d)
	}
}

// TestLoadGivesNoDeleteConsulRedirects: a report set apart under a key
// with an empty, "." or ".." segment had `consul kv delete KEY` as its
// fix, whose path Consul's HTTP API redirects to another key: the delete
// misses it. It has no command, and its problem says how it goes.
func TestLoadGivesNoDeleteConsulRedirects(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	for _, k := range []string{IDPrefix + "..", KVPrefix + "..", IDPrefix + "a//b"} {
		kv.Put(ctx, k, []byte(`not json`))
	}
	_, bad, err := Load(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) != 3 {
		t.Fatalf("bad reports %+v, want 3", bad)
	}
	for _, b := range bad {
		if b.Fix != "" || !strings.Contains(b.Problem, "PUT /v1/txn") {
			t.Errorf("bad report %+v: want no fix, and its problem saying to delete it by a transaction", b)
		}
	}
}

// TestLoadRefusesANameReportNoNodeIsGiven: the node facts name n1 only
// swarm node ida, whose report under its ID names node n2 (its agent's
// --node changed since it wrote its facts, or the report is forged); an
// older agent's report under n1 names no ID. The name's report may not be
// ida's from before its upgrade, and no node of the name publishes under
// its name: it is refused, with its key and why, as the doctor's
// LoadReports refuses its like (commit cca0774). With idb's report naming
// n1 too, it was left out without a word (shadowed); without, counted.
func TestLoadRefusesANameReportNoNodeIsGiven(t *testing.T) {
	const ida, idb = "ida0000000000000000000000", "idb0000000000000000000000"
	report := func(node, id string, tasks int) string {
		return fmt.Sprintf(`{"node":%q,"node_id":%q,"at":"2026-12-03T11:59:59Z","services":{"web":{"tasks":%d}}}`, node, id, tasks)
	}
	for _, tt := range []struct {
		name string
		kvs  map[string]string
		want map[string]int // tasks counted, by key
	}{
		{"another ID report names the name", map[string]string{
			netspec.NodesKVPrefix + idb: `{"id":"` + idb + `","node":"n3"}`,
			IDPrefix + idb:              report("n1", idb, 4),
		}, map[string]int{IDPrefix + ida: 1, IDPrefix + idb: 4}},
		{"no ID report names the name", nil, map[string]int{IDPrefix + ida: 1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			kv := kvtest.New()
			kvs := map[string]string{
				netspec.NodesKVPrefix + ida: `{"id":"` + ida + `","node":"n1"}`,
				IDPrefix + ida:              report("n2", ida, 1),
				KVPrefix + "n1":             report("n1", "", 100),
			}
			maps.Copy(kvs, tt.kvs)
			for k, v := range kvs {
				kv.Put(ctx, k, []byte(v))
			}
			reports, bad, err := Load(ctx, kv)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]int{}
			for _, r := range reports {
				got[r.Key] = r.Services["web"].Tasks
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("reports counted, tasks by key (-want +got):\n%s", d)
			}
			if len(bad) != 1 || bad[0].Key != KVPrefix+"n1" ||
				!strings.Contains(bad[0].Problem, IDPrefix+ida+` names node "n2", not n1`) ||
				!strings.HasPrefix(bad[0].Fix, shellword.KVDelete(KVPrefix+"n1")) {
				t.Errorf("bad reports %+v; want only %sn1's, saying %s names node \"n2\", with its consul kv delete", bad, KVPrefix, IDPrefix+ida)
			}
		})
	}
}

// TestLoadIgnoresFactsNoAgentWrites: facts under a key naming no swarm
// node ID (underlay/nodes/X, naming node n1: no agent writes one) made X
// one of n1's swarm nodes, one with no report under its ID, so n1's
// report under its name, ida's from before its upgrade, was counted
// beside ida's own: ida's tasks twice. Such facts give a name no node.
func TestLoadIgnoresFactsNoAgentWrites(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	const ida = "ida0000000000000000000000"
	report := func(node, id string, tasks int) string {
		return fmt.Sprintf(`{"node":%q,"node_id":%q,"at":"2026-12-03T11:59:59Z","services":{"web":{"tasks":%d}}}`, node, id, tasks)
	}
	for k, v := range map[string]string{
		netspec.NodesKVPrefix + ida:   `{"id":"` + ida + `","node":"n1"}`,
		netspec.NodesKVPrefix + "X":   `{"id":"X","node":"n1"}`,
		netspec.NodesKVPrefix + "a b": `{"node":"n1"}`,
		IDPrefix + ida:                report("n1", ida, 1),
		KVPrefix + "n1":               report("n1", "", 100), // ida's before its upgrade
	} {
		kv.Put(ctx, k, []byte(v))
	}
	reports, bad, err := Load(ctx, kv)
	if err != nil || len(bad) > 0 {
		t.Fatalf("Load: %v, bad %+v", err, bad)
	}
	got := map[string]int{}
	for _, r := range reports {
		got[r.Key] = r.Services["web"].Tasks
	}
	if d := cmp.Diff(map[string]int{IDPrefix + ida: 1}, got); d != "" {
		t.Errorf("reports counted, tasks by key (-want +got):\n%s", d)
	}
}

// TestRunLeavesOutATaskThatIsNeverMeasured: a task container whose stats
// read fails at every round (not a 404: a dockerd that answers 500 for
// it, a stats read that times out) failed every round, so the node
// published nothing for good: its report went stale, and the autoscaler
// averaged every service over the other nodes only. Now a container that
// failed LeaveOutAfter rounds in a row is left out, warned of once and
// counted in underlay_task_metrics_tasks_left_out, and the rest is
// published; a failure of one round (here b's) still fails that round.
// Measured again, the container counts from the round after, once it
// has a previous sample to take its CPU from.
func TestRunLeavesOutATaskThatIsNeverMeasured(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	smp := func(id, service string, round int) Sample {
		return Sample{ContainerID: id, Service: service, At: t0.Add(time.Duration(round) * time.Second), CPUTotal: time.Duration(round) * 500 * time.Millisecond, Memory: 100}
	}
	fail := func(id, service string) Unmeasured {
		return Unmeasured{ContainerID: id, Service: service, Err: errors.New("stats of " + id + ": 500 Internal Server Error")}
	}
	type round struct {
		samples []Sample
		failed  []Unmeasured
	}
	var rounds []round
	for i := range LeaveOutAfter + 1 { // s fails; the last two rounds publish without it
		rounds = append(rounds, round{[]Sample{smp("a", "web", i), smp("b", "web", i)}, []Unmeasured{fail("s", "api")}})
	}
	n := len(rounds)
	rounds = append(rounds,
		round{[]Sample{smp("a", "web", n)}, []Unmeasured{fail("b", "web"), fail("s", "api")}},  // b's one failure fails the round
		round{[]Sample{smp("a", "web", n+1), smp("b", "web", n+1), smp("s", "api", n+1)}, nil}, // s measured again: no CPU yet
		round{[]Sample{smp("a", "web", n+2), smp("b", "web", n+2), smp("s", "api", n+2)}, nil})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := prometheus.NewRegistry()
	var leftOut []float64
	kv := &recordingKV{}
	kv.put = func() {
		leftOut = append(leftOut, testmetrics.Gauge(t, reg, "underlay_task_metrics_tasks_left_out"))
		if len(kv.values) == 4 {
			cancel()
		}
	}
	src := &funcSource{f: func(i int) ([]Sample, error) {
		if i >= len(rounds) {
			t.Fatalf("round %d sampled, %d reports published; want 4 by then", i, len(kv.values))
		}
		r := rounds[i]
		if r.failed == nil {
			return r.samples, nil
		}
		return r.samples, &NotSampledError{Unmeasured: r.failed, Listed: len(r.samples) + len(r.failed)}
	}}
	var logs bytes.Buffer
	Run(ctx, src, kv, "n1", "id10000000000000000000000", time.Millisecond, slog.New(slog.NewTextHandler(&logs, nil)), NewMetrics(reg), nil)

	var got []map[string]ServiceUsage
	for i, v := range kv.values {
		r, err := Decode(IDPrefix+"id10000000000000000000000", v)
		if err != nil {
			t.Fatalf("report %d is refused: %v", i, err)
		}
		got = append(got, r.Services)
	}
	web := ServiceUsage{Tasks: 2, CPU: 1, Memory: 200}
	want := []map[string]ServiceUsage{
		{"web": {Tasks: 2, Memory: 200}}, // s left out; the first report, with no CPU yet
		{"web": web},                     // s left out
		{"web": web},                     // s measured again, not counted yet
		{"web": web, "api": {Tasks: 1, CPU: 0.5, Memory: 100}}, // s counted, with its CPU
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("reports' services (-want +got):\n%s\nlogs:\n%s", d, logs.String())
	}
	if d := cmp.Diff([]float64{1, 1, 0, 0}, leftOut); d != "" {
		t.Errorf("underlay_task_metrics_tasks_left_out at each report (-want +got):\n%s", d)
	}
	var warned, again int
	for _, line := range strings.Split(logs.String(), "\n") {
		switch {
		case strings.Contains(line, "level=WARN") && strings.Contains(line, "container=s ") && strings.Contains(line, "service=api") && strings.Contains(line, "500 Internal Server Error"):
			warned++
		case strings.Contains(line, "level=INFO") && strings.Contains(line, "container=s "):
			again++
		}
	}
	if warned != 1 || again != 1 {
		t.Errorf("s left out logged %d times, measured again %d times; want once each:\n%s", warned, again, logs.String())
	}
}

// TestRunPublishesNoEmptyReportForADaemonThatMeasuresNothing: when no
// task container's stats can be read, round after round (dockerd's stats
// broken for all), no container is left out: a report of no service
// would say the node runs none, where a stale one says its figures are
// unknown.
func TestRunPublishesNoEmptyReportForADaemonThatMeasuresNothing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := &funcSource{f: func(i int) ([]Sample, error) {
		if i == 2*LeaveOutAfter {
			cancel()
		}
		return nil, &NotSampledError{Unmeasured: []Unmeasured{{ContainerID: "a", Service: "web", Err: errors.New("500")}}, Listed: 1}
	}}
	kv := &recordingKV{put: func() {}}
	Run(ctx, src, kv, "n1", "id10000000000000000000000", time.Millisecond, slog.New(slog.DiscardHandler), nil, nil)
	if len(kv.values) != 0 {
		t.Errorf("%d reports published, want none: %s", len(kv.values), kv.values[0])
	}
}

// funcSource answers each round i with f(i).
type funcSource struct {
	f func(i int) ([]Sample, error)
	n int
}

func (s *funcSource) Samples(context.Context) ([]Sample, error) {
	s.n++
	return s.f(s.n - 1)
}

// TestDecodeQuotesToShow: Decode's errors quote the key, node, swarm node
// and service names a report or its key holds, which any token that may
// write reports chooses, with what would not show escaped (U+3164 reads
// as nothing, and %q left it as it is).
func TestDecodeQuotesToShow(t *testing.T) {
	const id = "id10000000000000000000000"
	for _, tc := range []struct{ name, key, value, want string }{
		{"key", KVPrefix + "n1\u3164", `{"node":"n1","at":"2026-12-03T11:59:58Z"}`, `"underlay/metrics/n1\u3164" is not a node's key`},
		{"ID key", IDPrefix + "id1\u3164", `{"node":"n1","at":"2026-12-03T11:59:58Z"}`, `"underlay/metrics/id/id1\u3164" is not a node's key: "id1\u3164" is not`},
		{"swarm node", IDPrefix + id, `{"node":"n1","node_id":"id1\u3164","at":"2026-12-03T11:59:58Z"}`, `names swarm node "id1\u3164", its key`},
		{"node under an ID", IDPrefix + id, `{"node":"n1\u3164","node_id":"` + id + `","at":"2026-12-03T11:59:58Z"}`, `names node "n1\u3164": not a node's name`},
		{"node", KVPrefix + "n1", `{"node":"n1\u3164","at":"2026-12-03T11:59:58Z"}`, `names node "n1\u3164", its key node "n1"`},
		{"service", KVPrefix + "n1", `{"node":"n1","at":"2026-12-03T11:59:58Z","services":{"web\u3164":{"tasks":0}}}`, `gives service "web\u3164" `},
	} {
		_, err := Decode(tc.key, []byte(tc.value))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Decode error %v, want it to hold %s", tc.name, err, tc.want)
		}
	}
}
