package taskmetrics

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
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
