package lab_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/lab"
	"github.com/underlay/underlay/internal/testenv"
)

// BenchmarkIntegrationLab prints issue 3's figures: wall time of `lab up`
// and `lab down` for 3 nodes (agents included) and the whole lab's resident
// memory at rest.
func BenchmarkIntegrationLab(b *testing.B) {
	testenv.Require(b)
	bin := testenv.UnderlayBinary(b)
	for b.Loop() {
		name := "b" + testenv.ID(b)[:6]
		cfg := lab.Config{Name: name, Nodes: 3, UnderlaySubnet: "10.203.0.0/16", UnderlayBin: bin}
		// At rest: agents synced, Consul settled.
		up, down, mem := measureLab(b, cfg, 5*time.Minute, 10*time.Second)
		fmt.Printf("\nlab benchmark (3 nodes, 1 manager, 1 Consul server, agents on every node)\n")
		fmt.Printf("  lab up                 %s\n", up.Round(10*time.Millisecond))
		fmt.Printf("  lab down               %s\n", down.Round(10*time.Millisecond))
		fmt.Printf("  memory at rest (RSS)   %.0f MiB (every process of the nodes, containers' included; the lab runs none at rest)\n", float64(mem)/(1<<20))
		b.ReportMetric(up.Seconds(), "up-s")
		b.ReportMetric(down.Seconds(), "down-s")
		b.ReportMetric(float64(mem)/(1<<20), "rest-MiB")
	}
}

// BenchmarkIntegrationVMLab prints issue 16's figures: wall time of `lab
// up --vm` and `lab down` for 3 VM nodes (agents included) and the
// resident memory of the lab's QEMU processes at rest.
func BenchmarkIntegrationVMLab(b *testing.B) {
	testenv.Require(b)
	bin := testenv.UnderlayBinary(b)
	for b.Loop() {
		name := "v" + testenv.ID(b)[:6]
		cfg := lab.Config{Name: name, Nodes: 3, VM: true, UnderlaySubnet: "10.181.0.0/16", UnderlayBin: bin}
		up, down, mem := measureLab(b, cfg, 10*time.Minute, 0)
		fmt.Printf("\nVM lab benchmark (3 QEMU VM nodes, TCG, 1 vCPU and %d MiB each; 1 manager, 1 Consul server, agents on every node)\n", lab.VMMemoryMiB)
		fmt.Printf("  lab up --vm            %s\n", up.Round(10*time.Millisecond))
		fmt.Printf("  lab down               %s\n", down.Round(10*time.Millisecond))
		fmt.Printf("  memory after up (RSS)  %.0f MiB\n", float64(mem)/(1<<20))
		b.ReportMetric(up.Seconds(), "up-s")
		b.ReportMetric(down.Seconds(), "down-s")
		b.ReportMetric(float64(mem)/(1<<20), "MiB")
	}
}

// measureLab brings cfg's lab up, lets it rest, reads its memory and takes
// it down, timing up and down.
func measureLab(b *testing.B, cfg lab.Config, timeout, rest time.Duration) (up, down time.Duration, mem int64) {
	b.Helper()
	log := testenv.TestLogger(b)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	t0 := time.Now()
	if err := lab.Up(ctx, cfg, log); err != nil {
		lab.Down(context.Background(), cfg.Name, log)
		b.Fatal(err)
	}
	up = time.Since(t0)
	time.Sleep(rest)
	mem, err := lab.Memory(cfg.Name)
	if err != nil {
		b.Error(err)
	}
	t1 := time.Now()
	if err := lab.Down(ctx, cfg.Name, log); err != nil {
		b.Error(err)
	}
	return up, time.Since(t1), mem
}
