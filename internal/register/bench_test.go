package register_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/testenv"
)

// BenchmarkIntegrationRegistration is issue 2's benchmark: with the agent
// running as its own process, start N containers on a macvlan network 10 at
// a time, then remove them all, and print what a user would ask of a
// registrator: missing and stale registrations, start-to-catalog latency,
// time to deregister, the agent's peak RSS, and the Consul writes of a
// resync over N unchanged containers. N is $UNDERLAY_BENCH_N (default 200).
func BenchmarkIntegrationRegistration(b *testing.B) {
	testenv.Require(b)
	n := 200
	if v := os.Getenv("UNDERLAY_BENCH_N"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > 250 {
			b.Fatalf("UNDERLAY_BENCH_N=%q: want 1 to 250 (one /24)", v)
		}
	}
	for b.Loop() {
		runRegistrationBench(b, n)
	}
}

func runRegistrationBench(b *testing.B, n int) {
	d := testenv.Docker(b)
	cons := testenv.StartConsul(b)
	capi := cons.Client()
	id := testenv.ID(b)
	v4, _, _ := testenv.Subnets(b)
	net := testenv.MacvlanNetwork(b, d, testenv.Network{Name: "bench-" + id, Subnet: v4})
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", 30000+int(id[0])*100+int(id[1]))
	logPath := filepath.Join(b.TempDir(), "agent.log")
	if p := os.Getenv("UNDERLAY_BENCH_AGENT_LOG"); p != "" {
		logPath = p // keep the agent's debug log for a closer look
	}
	logf, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	agent := exec.Command(testenv.UnderlayBinary(b), "agent", "--node", "bench-"+id, "--consul-addr", cons.Addr(),
		"--label", "io.underlay.test="+id, "--host-ip", "127.0.0.1", "--listen", metricsAddr, "--networks=false", "--ipam=false", "--resync", "3s", "--log-level", "debug")
	agent.Stdout, agent.Stderr = logf, logf
	agent.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := agent.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { agent.Process.Kill(); agent.Wait(); logf.Close() }()

	svcName := "bench-" + id
	w := watchCatalog(b, capi, svcName)
	labels := map[string]string{"io.underlay.test": id, "SERVICE_NAME": svcName}

	// Start N containers, 10 at a time.
	started := make(map[string]time.Time, n)
	var ids []string
	var mu sync.Mutex
	t0 := time.Now()
	for batch := 0; batch < n; batch += 10 {
		var wg sync.WaitGroup
		for i := batch; i < min(batch+10, n); i++ {
			name := fmt.Sprintf("%s-%03d", id, i)
			wg.Add(1)
			go func() {
				defer wg.Done()
				cid, err := testenv.StartContainer(b, d, testenv.Container{Name: name, Networks: []string{net.Name}, Labels: labels})
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					b.Error(err)
					return
				}
				started["bench-"+id+":"+name+":8080"] = time.Now()
				ids = append(ids, cid)
			}()
		}
		wg.Wait()
	}
	startWall := time.Since(t0)
	w.waitCount(len(started), 60*time.Second)
	seen := w.firstSeen()
	var lat []time.Duration
	missing := 0
	for sid, at := range started {
		s, ok := seen[sid]
		if !ok {
			missing++
			continue
		}
		lat = append(lat, max(0, s.Sub(at)))
	}
	slices.Sort(lat)
	// The agent logs each registration with its time: that splits the
	// latency into underlay's part and Consul's agent-to-catalog sync.
	registeredAt := registrationTimes(b, logPath)
	var agentLat []time.Duration
	for sid, at := range started {
		if r, ok := registeredAt[sid]; ok {
			agentLat = append(agentLat, max(0, r.Sub(at)))
		}
	}
	slices.Sort(agentLat)

	// Resync of N unchanged containers: count writes across two full resyncs.
	resyncs0, writes0 := agentMetrics(b, metricsAddr)
	deadline := time.Now().Add(20 * time.Second)
	resyncs, writes := resyncs0, writes0
	for resyncs < resyncs0+2 && time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		resyncs, writes = agentMetrics(b, metricsAddr)
	}
	time.Sleep(time.Second) // let the queued containers drain
	_, writes = agentMetrics(b, metricsAddr)

	// Remove them all, 10 at a time.
	t1 := time.Now()
	for batch := 0; batch < len(ids); batch += 10 {
		var wg sync.WaitGroup
		for _, cid := range ids[batch:min(batch+10, len(ids))] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := d.ContainerRemove(context.Background(), cid, container.RemoveOptions{Force: true}); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	lastRemoved := time.Now()
	stale := w.waitCount(0, 60*time.Second)
	deregWall, afterLast := time.Since(t1), time.Since(lastRemoved)
	rss := peakRSS(b, agent.Process.Pid)

	pct := func(p float64) time.Duration { return percentile(lat, p) }
	apct := func(p float64) time.Duration { return percentile(agentLat, p) }
	fmt.Printf("\nregistration benchmark (N=%d, macvlan, 10 at a time, real dockerd %s + Consul 1.8.7)\n", n, dockerVersion(d))
	fmt.Printf("  containers started           %d (in %s)\n", len(started), startWall.Round(time.Millisecond))
	fmt.Printf("  registrations missing        %d\n", missing)
	fmt.Printf("  start→catalog latency        p50 %s  p95 %s  max %s\n", pct(0.5).Round(time.Microsecond*100), pct(0.95).Round(time.Microsecond*100), pct(1).Round(time.Microsecond*100))
	fmt.Printf("   of which start→agent write  p50 %s  p95 %s  max %s (the rest is Consul's agent-to-catalog sync)\n", apct(0.5).Round(time.Microsecond*100), apct(0.95).Round(time.Microsecond*100), apct(1).Round(time.Microsecond*100))
	fmt.Printf("  all deregistered after       %s from the first removal, %s after the last\n", deregWall.Round(time.Millisecond), afterLast.Round(time.Millisecond))
	fmt.Printf("  entries left stale           %d\n", stale)
	fmt.Printf("  agent peak RSS               %.1f MB\n", float64(rss)/1024)
	fmt.Printf("  writes of unchanged resyncs  %.0f (over %.0f full resyncs of %d containers)\n", writes-writes0, resyncs-resyncs0, n)
	b.ReportMetric(float64(missing), "missing")
	b.ReportMetric(float64(stale), "stale")
	b.ReportMetric(float64(pct(0.95).Microseconds())/1000, "p95-ms")
	b.ReportMetric(float64(apct(0.95).Microseconds())/1000, "agent-p95-ms")
	b.ReportMetric(float64(rss)/1024, "peak-rss-MB")
	b.ReportMetric(writes-writes0, "resync-writes")
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p))]
}

// registrationTimes reads the agent's text log for when it registered each
// service ID (the first time).
func registrationTimes(b *testing.B, logPath string) map[string]time.Time {
	data, err := os.ReadFile(logPath)
	if err != nil {
		b.Fatal(err)
	}
	out := map[string]time.Time{}
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.Contains(line, "msg=registered ") {
			continue
		}
		var at time.Time
		var id string
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "time="); ok {
				at, _ = time.Parse(time.RFC3339Nano, v)
			}
			if v, ok := strings.CutPrefix(f, "id="); ok {
				id = v
			}
		}
		if _, seen := out[id]; !seen && id != "" {
			out[id] = at
		}
	}
	return out
}

// catalogWatch follows one service in the Consul catalog with blocking
// queries, recording when each instance first appeared.
type catalogWatch struct {
	mu      sync.Mutex
	seen    map[string]time.Time
	current map[string]bool
	changed chan struct{}
}

func watchCatalog(b *testing.B, c *api.Client, name string) *catalogWatch {
	w := &catalogWatch{seen: map[string]time.Time{}, current: map[string]bool{}, changed: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	go func() {
		var index uint64
		for ctx.Err() == nil {
			q := (&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Second}).WithContext(ctx)
			entries, meta, err := c.Catalog().Service(name, "", q)
			now := time.Now()
			if err != nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			index = meta.LastIndex
			w.mu.Lock()
			w.current = map[string]bool{}
			for _, e := range entries {
				w.current[e.ServiceID] = true
				if _, ok := w.seen[e.ServiceID]; !ok {
					w.seen[e.ServiceID] = now
				}
			}
			w.mu.Unlock()
			select {
			case w.changed <- struct{}{}:
			default:
			}
		}
	}()
	return w
}

// waitCount waits until the catalog holds n instances or timeout passes,
// and returns how many it holds.
func (w *catalogWatch) waitCount(n int, timeout time.Duration) int {
	deadline := time.After(timeout)
	for {
		w.mu.Lock()
		got := len(w.current)
		w.mu.Unlock()
		if got == n {
			return got
		}
		select {
		case <-w.changed:
		case <-deadline:
			return got
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (w *catalogWatch) firstSeen() map[string]time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]time.Time, len(w.seen))
	for k, v := range w.seen {
		out[k] = v
	}
	return out
}

// agentMetrics reads the agent's resync count and Consul write count.
func agentMetrics(b *testing.B, addr string) (resyncs, writes float64) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		b.Fatalf("agent metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(fields[1], 64)
		switch {
		case strings.HasPrefix(line, "underlay_register_resync_duration_seconds_count"):
			resyncs = v
		case strings.HasPrefix(line, "underlay_register_consul_writes_total"):
			writes += v
		}
	}
	return resyncs, writes
}

// peakRSS is a process's high-water resident set size in KiB.
func peakRSS(b *testing.B, pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return kb
		}
	}
	return 0
}

func dockerVersion(d *client.Client) string {
	v, err := d.ServerVersion(context.Background())
	if err != nil {
		return "?"
	}
	return v.Version
}
