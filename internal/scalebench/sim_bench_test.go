package scalebench_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/scalebench"
	"github.com/underlay/underlay/internal/testenv"
)

// simConfig is the simulation's workload, from the environment.
type simConfig struct {
	nodes  []int // BENCH_IPAM_SIM_NODES: simulated node counts, one run each
	burst  int   // BENCH_IPAM_SIM_BURST: addresses each node asks for per burst
	rate   int   // BENCH_IPAM_SIM_RATE: requests per second per node (dockerd's start rate)
	rounds int   // BENCH_IPAM_SIM_ROUNDS: bursts up and down per run
	spares int   // BENCH_IPAM_SIM_SPARES: spares kept per node (the agent's --ipam-spares)
	block  int   // BENCH_IPAM_SIM_BLOCK: block prefix length
}

func simConfigFromEnv() (simConfig, error) {
	var c simConfig
	var err error
	if c.nodes, err = scalebench.EnvInts("BENCH_IPAM_SIM_NODES", 100); err != nil {
		return c, err
	}
	for _, v := range []struct {
		name string
		to   *int
		def  int
	}{{"BENCH_IPAM_SIM_BURST", &c.burst, 10}, {"BENCH_IPAM_SIM_RATE", &c.rate, 20}, {"BENCH_IPAM_SIM_ROUNDS", &c.rounds, 3},
		{"BENCH_IPAM_SIM_SPARES", &c.spares, 4}, {"BENCH_IPAM_SIM_BLOCK", &c.block, 28}} {
		if *v.to, err = scalebench.EnvInt(v.name, v.def); err != nil {
			return c, err
		}
	}
	if c.block < 20 || c.block > 30 {
		return c, fmt.Errorf("BENCH_IPAM_SIM_BLOCK=%d: want a prefix length from 20 to 30 (the pool is a /16)", c.block)
	}
	return c, nil
}

// BenchmarkIntegrationIPAMSim runs the cluster IPAM's in-process
// allocators of many simulated nodes (100, 300, 1000) against one real
// Consul server, a dev agent on loopback started for each run: every node
// takes its shim (a network created), then in bursts every node asks for
// BENCH_IPAM_SIM_BURST addresses at dockerd's start rate, all nodes at
// once (a service scaled up across the cluster), and releases them (scaled
// down). Each request is sent at its time whatever the earlier ones did
// (an open loop), so a slow Consul shows in the latency. It prints, per
// node count, allocation and release latency, the check-and-set writes
// and how many Consul rolled back, the server's raft entries and CPU.
func BenchmarkIntegrationIPAMSim(b *testing.B) {
	testenv.Require(b)
	cfg, err := simConfigFromEnv()
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		var results []simResult
		// Printed even when a run fails: the runs before it stand.
		defer func() { printSim(cfg, results) }()
		for _, n := range cfg.nodes {
			results = append(results, runSim(b, cfg, n))
		}
	}
}

// simResult is what one run measured.
type simResult struct {
	nodes int
	// The network created: every node takes its shim at once.
	shimWall     time.Duration
	shim         []time.Duration
	shimWrites   ipam.WriteStats
	shimRaft     uint64
	sparesReady  time.Duration // network created → every node holding its spares
	shimErrors   int
	shimFirstErr string
	// notSettled says when the keepers did not hold their spares again
	// within settleTimeout (after the shims, or after a burst).
	notSettled string
	// alloc and release are the latencies of those that succeeded.
	alloc, release []time.Duration
	requests       int // allocations and releases asked for, failed or not
	errors         int
	firstErr       string
	burstWall      time.Duration // every burst up: first request sent → last answered, summed
	window         time.Duration // the rounds, settling included
	writes         ipam.WriteStats
	raft           uint64
	consulCPU      float64 // cores, over window
	selfCPU        float64 // this process (the simulated nodes), cores, over window
	consulRSS      int64
	version        string // Consul's
}

// simNode is one simulated node: its allocator, on its own Consul client
// (its own connections, as each node's agent has).
type simNode struct {
	alloc *ipam.Allocator
}

func runSim(b *testing.B, cfg simConfig, n int) simResult {
	// One connection per node and its blocking watch, all from 127.0.0.1:
	// above Consul's default of 200 per client address.
	c := testenv.StartConsulHCL(b, `limits { http_max_conns_per_client = 10000 }`)
	defer c.Stop()
	ctx := testenv.Context(b, 20*time.Minute)
	server := c.Client()
	pool := ipam.Pool{Network: fmt.Sprintf("sim%d", n), Prefix: netip.MustParsePrefix("10.196.0.0/16"),
		Reserved: map[netip.Addr]bool{netip.MustParseAddr("10.196.0.1"): true}, BlockBits: cfg.block}
	nodes := make([]simNode, n)
	keepCtx, stopKeeping := context.WithCancel(ctx)
	var keepers sync.WaitGroup
	defer func() { stopKeeping(); keepers.Wait() }()
	for i := range nodes {
		cl, err := consul.NewClient(consul.Options{Addr: c.Addr()})
		if err != nil {
			b.Fatal(err)
		}
		nodes[i].alloc = ipam.NewAllocator(consul.NewKV(cl), fmt.Sprintf("sim-%04d", i), nil)
		keepers.Add(1)
		go func() {
			defer keepers.Done()
			nodes[i].alloc.KeepSpares(keepCtx, cfg.spares, slog.New(slog.DiscardHandler))
		}()
	}
	writes := func() ipam.WriteStats {
		var w ipam.WriteStats
		for _, nd := range nodes {
			s := nd.alloc.WriteStats()
			w.Sent += s.Sent
			w.Conflicts += s.Conflicts
		}
		return w
	}
	raft := func() uint64 {
		i, err := scalebench.RaftCommitIndex(server)
		if err != nil {
			b.Fatal(err)
		}
		return i
	}
	r := simResult{nodes: n, version: consulVersion(b, server)}

	// The network created: every node takes its shim, and the first
	// address of a task (which makes its keeper claim spares of the pool).
	raft0 := raft()
	t0 := time.Now()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, nd := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.Now()
			_, err := nd.alloc.Shim(ctx, pool)
			d := time.Since(t)
			if err == nil {
				var a netip.Addr
				if a, err = nd.alloc.Allocate(ctx, pool, netip.Addr{}, ipam.KindTask); err == nil {
					err = nd.alloc.Release(ctx, pool, a)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			r.shim = append(r.shim, d)
			if err != nil {
				if r.shimErrors++; r.shimErrors == 1 {
					r.shimFirstErr = err.Error()
				}
			}
		}()
	}
	wg.Wait()
	r.shimWall = time.Since(t0)
	r.shimWrites, r.shimRaft = writes(), raft()-raft0
	if msg := waitSpares(ctx, server, pool, n*cfg.spares); msg != "" {
		r.notSettled = "after the shims: " + msg
	}
	r.sparesReady = time.Since(t0)

	// The bursts.
	rng := rand.New(rand.NewPCG(uint64(n), 14))
	w0, raftStart := writes(), raft()
	cpu0, err := scalebench.ReadProc(c.PID())
	if err != nil {
		b.Fatal(err)
	}
	self0, err := scalebench.ReadProc(os.Getpid())
	if err != nil {
		b.Fatal(err)
	}
	var errs atomic.Int64
	for range cfg.rounds {
		// Swarm hands the tasks out over a moment: each node starts within
		// one request interval of the others.
		offsets := make([]time.Duration, n)
		for i := range offsets {
			offsets[i] = time.Duration(rng.Int64N(int64(time.Second / time.Duration(cfg.rate))))
		}
		got := make([][]netip.Addr, n)
		start := time.Now()
		var last atomic.Int64 // when the last request was answered, ns since start
		// fire runs op for every node's every request at its time; the
		// latency of those that succeeded goes to lat (op returns false
		// for one with nothing to do: the release of a failed allocation).
		fire := func(op func(i, j int) (bool, error), lat *[]time.Duration) {
			for i := range nodes {
				for j := range cfg.burst {
					wg.Add(1)
					go func() {
						defer wg.Done()
						time.Sleep(time.Until(start.Add(offsets[i] + time.Duration(j)*time.Second/time.Duration(cfg.rate))))
						t := time.Now()
						did, err := op(i, j)
						d := time.Since(t)
						for {
							l := last.Load()
							if now := int64(time.Since(start)); now <= l || last.CompareAndSwap(l, now) {
								break
							}
						}
						mu.Lock()
						defer mu.Unlock()
						r.requests++
						switch {
						case err != nil:
							if errs.Add(1) == 1 {
								r.firstErr = err.Error()
							}
						case did:
							*lat = append(*lat, d)
						}
					}()
				}
			}
			wg.Wait()
		}
		for i := range got {
			got[i] = make([]netip.Addr, cfg.burst)
		}
		fire(func(i, j int) (bool, error) {
			reqCtx, cancel := context.WithTimeout(ctx, 30*time.Second) // Docker's plugin timeout is of this order
			defer cancel()
			a, err := nodes[i].alloc.Allocate(reqCtx, pool, netip.Addr{}, ipam.KindTask)
			got[i][j] = a
			return true, err
		}, &r.alloc)
		r.burstWall += time.Duration(last.Load())
		start = time.Now()
		last.Store(0)
		fire(func(i, j int) (bool, error) {
			if !got[i][j].IsValid() {
				return false, nil
			}
			return true, nodes[i].alloc.Release(ctx, pool, got[i][j])
		}, &r.release)
		// Settled: the keepers hold their spares again.
		if msg := waitSpares(ctx, server, pool, n*cfg.spares); msg != "" && r.notSettled == "" {
			r.notSettled = "after a burst: " + msg
		}
	}
	w1, raftEnd := writes(), raft()
	cpu1, err := scalebench.ReadProc(c.PID())
	if err != nil {
		b.Fatal(err)
	}
	self1, _ := scalebench.ReadProc(os.Getpid())
	r.writes = ipam.WriteStats{Sent: w1.Sent - w0.Sent, Conflicts: w1.Conflicts - w0.Conflicts}
	r.raft = raftEnd - raftStart
	r.window = cpu1.At.Sub(cpu0.At)
	r.consulCPU = scalebench.CPUShare(cpu0, cpu1)
	r.selfCPU = scalebench.CPUShare(self0, self1)
	r.consulRSS = cpu1.RSS
	r.errors = int(errs.Load())
	return r
}

// settleTimeout bounds the wait for the keepers' spares: past it, the
// run goes on and says so.
const settleTimeout = time.Minute

// waitSpares waits until the pool holds at least want spares: every
// keeper has claimed its own again after a burst. It returns what it saw
// when that did not happen within settleTimeout, else "".
func waitSpares(ctx context.Context, c *api.Client, pool ipam.Pool, want int) string {
	kv := consul.NewKV(c)
	// Each look lists the whole pool: not more often than twice a second.
	return poll(settleTimeout, 500*time.Millisecond, func() (bool, string) {
		all, err := ipam.Allocations(ctx, kv, pool)
		spares := 0
		for _, al := range all {
			if al.Kind == ipam.KindSpare {
				spares++
			}
		}
		return spares >= want, fmt.Sprintf("%d spares held, want %d (%v)", spares, want, err)
	})
}

func printSim(cfg simConfig, rs []simResult) {
	if len(rs) == 0 {
		return
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }
	fmt.Printf("\ncluster IPAM simulation: in-process allocators of N simulated nodes against one Consul %s dev server on loopback\n", rs[0].version)
	fmt.Printf("  (in-memory raft, no disk; every node on its own HTTP connections to it; /%d blocks in a /16; %d spares per node)\n", cfg.block, cfg.spares)
	fmt.Printf("  network created: every node takes its shim and a first address at once\n")
	var t scalebench.Table
	t.Header = []string{"nodes", "shims: wall s", "shim p50 ms", "shim p99 ms", "failed", "block writes", "lost CAS", "raft entries", "spares held after s"}
	for _, r := range rs {
		t.Add(fmt.Sprint(r.nodes), fmt.Sprintf("%.2f", r.shimWall.Seconds()), ms(scalebench.Percentile(r.shim, 50)), ms(scalebench.Percentile(r.shim, 99)), fmt.Sprint(r.shimErrors),
			fmt.Sprint(r.shimWrites.Sent), fmt.Sprintf("%d (%.0f%%)", r.shimWrites.Conflicts, pct(r.shimWrites.Conflicts, r.shimWrites.Sent)),
			fmt.Sprint(r.shimRaft), fmt.Sprintf("%.2f", r.sparesReady.Seconds()))
	}
	t.Write(os.Stdout)
	fmt.Printf("  %d bursts: every node asks for %d addresses at %d/s (open loop, nodes started within %s of each other), then releases them\n",
		cfg.rounds, cfg.burst, cfg.rate, time.Second/time.Duration(cfg.rate))
	t = scalebench.Table{Header: []string{"nodes", "requests", "allocated", "alloc/s", "alloc p50 ms", "p99 ms", "max ms", "release p50 ms", "p99 ms", "failed",
		"block writes", "lost CAS", "writes/s", "raft entries", "raft/s", "raft/alloc", "consul CPU", "sim CPU", "consul RSS MiB"}}
	for _, r := range rs {
		allocs := len(r.alloc)
		t.Add(fmt.Sprint(r.nodes), fmt.Sprint(r.requests), fmt.Sprint(allocs), fmt.Sprintf("%.0f", float64(allocs)/r.burstWall.Seconds()),
			ms(scalebench.Percentile(r.alloc, 50)), ms(scalebench.Percentile(r.alloc, 99)), ms(scalebench.Percentile(r.alloc, 100)),
			ms(scalebench.Percentile(r.release, 50)), ms(scalebench.Percentile(r.release, 99)), fmt.Sprint(r.errors),
			fmt.Sprint(r.writes.Sent), fmt.Sprintf("%d (%.1f%%)", r.writes.Conflicts, pct(r.writes.Conflicts, r.writes.Sent)),
			fmt.Sprintf("%.0f", float64(r.writes.Sent)/r.window.Seconds()), fmt.Sprint(r.raft), fmt.Sprintf("%.0f", float64(r.raft)/r.window.Seconds()),
			fmt.Sprintf("%.2f", float64(r.raft)/float64(max(allocs, 1))),
			fmt.Sprintf("%.2f", r.consulCPU), fmt.Sprintf("%.2f", r.selfCPU), fmt.Sprintf("%.0f", float64(r.consulRSS)/(1<<20)))
	}
	t.Write(os.Stdout)
	fmt.Printf("  requests: allocations and releases asked for; allocated: allocations that succeeded, whose latency is shown (and releases')\n")
	fmt.Printf("  failed: requests that returned an error (a 30 s timeout for allocations, as Docker's plugin calls have)\n")
	fmt.Printf("  alloc/s: successful allocations over the bursts' wall time (first request sent → last answered); writes/s, raft/s and CPU (cores)\n")
	fmt.Printf("  over all rounds including the keepers' refills after each; lost CAS: block writes Consul rolled back (another node wrote first);\n")
	fmt.Printf("  raft entries: growth of the server's raft commit index (every KV write, lost CAS included, and the keepers' pressure keys)\n")
	for _, r := range rs {
		if r.shimErrors > 0 {
			fmt.Printf("  %d nodes: %d of %d nodes failed to take their shim or first address; the first: %s\n", r.nodes, r.shimErrors, r.nodes, r.shimFirstErr)
		}
		if r.errors > 0 {
			fmt.Printf("  %d nodes: %d requests failed; the first: %s\n", r.nodes, r.errors, r.firstErr)
		}
		if r.notSettled != "" {
			fmt.Printf("  %d nodes: spares %s\n", r.nodes, r.notSettled)
		}
	}
}

// waitFor calls cond every interval until it returns true, failing b
// with cond's last message after timeout.
func waitFor(b testing.TB, timeout, every time.Duration, cond func() (bool, string)) {
	b.Helper()
	if msg := poll(timeout, every, cond); msg != "" {
		b.Fatal(msg)
	}
}

// poll calls cond every interval until it returns true (then it returns
// ""), or timeout passes (then it says so, with cond's last message).
func poll(timeout, every time.Duration, cond func() (bool, string)) string {
	deadline := time.Now().Add(timeout)
	for {
		ok, msg := cond()
		if ok {
			return ""
		}
		if time.Now().After(deadline) {
			return fmt.Sprintf("not true after %s: %s", timeout, msg)
		}
		time.Sleep(every)
	}
}

// consulVersion is the version of the Consul agent c talks to.
func consulVersion(b testing.TB, c *api.Client) string {
	self, err := c.Agent().Self()
	if err != nil {
		b.Fatal(err)
	}
	v, _ := self["Config"]["Version"].(string)
	return v
}

func pct(part, whole uint64) float64 {
	if whole == 0 {
		return 0
	}
	return 100 * float64(part) / float64(whole)
}
