package taskmetrics

import (
	"math"
	"strings"
	"testing"
	"time"
)

// FuzzDecode holds that any key and document either are refused or give a
// report every reader may count: its node is its key's, it has a time,
// every service has a name, 1 to MaxTasks tasks, a CPU of 0 to MaxCPU
// cores and at most MaxMemory bytes; and that the averages PerReplica takes over it
// are finite and not negative.
func FuzzDecode(f *testing.F) {
	for _, seed := range []struct{ key, value string }{
		{KVPrefix + "n1", `{"node":"n1","at":"2026-12-03T11:59:58Z","services":{"web":{"tasks":2,"cpu":1.5,"memory":400}}}`},
		{KVPrefix + "n1", `{"node":"n1","at":"2027-12-03T12:00:00Z","services":{"web":{"tasks":100,"cpu":0}}}`},
		{KVPrefix + "n2", `{"node":"n1","at":"2026-12-03T12:00:00Z"}`},
		{KVPrefix + "n1", `{"node":"n1","at":"2026-12-03T12:00:00Z","services":{"web":{"tasks":-3,"cpu":-1e308}}}`},
		{KVPrefix + "n1", `{"node":"n1","at":"2026-12-03T12:00:00Z","services":{"web":{"tasks":1000000000,"cpu":1e308,"memory":18446744073709551615}}}`},
		{KVPrefix + "n1/x", `{"node":"n1/x","at":"2026-12-03T12:00:00Z"}`},
		{KVPrefix + "n1", `{`},
	} {
		f.Add(seed.key, seed.value)
	}
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, key, value string) {
		r, err := Decode(key, []byte(value))
		if err != nil {
			return
		}
		if KVPrefix+r.Node != key || r.Node == "" || strings.Contains(r.Node, "/") {
			t.Fatalf("report of %q counted under key %q", r.Node, key)
		}
		if r.At.IsZero() {
			t.Fatalf("report with no time counted")
		}
		for name, u := range r.Services {
			if name == "" || u.Tasks < 1 || u.Tasks > MaxTasks || u.CPU < 0 || u.CPU > MaxCPU || math.IsNaN(u.CPU) || u.Memory > MaxMemory {
				t.Fatalf("service %q with %+v counted", name, u)
			}
			cpu, mem, ok := PerReplica([]Report{r}, name, now, time.Duration(math.MaxInt64))
			if !ok || cpu < 0 || math.IsNaN(cpu) || math.IsInf(cpu, 0) || mem < 0 || math.IsNaN(mem) || math.IsInf(mem, 0) {
				t.Fatalf("service %q with %+v averages to %v cores and %v bytes (%v)", name, u, cpu, mem, ok)
			}
		}
	})
}
