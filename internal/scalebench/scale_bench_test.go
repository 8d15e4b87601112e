package scalebench_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/lab"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/scalebench"
	"github.com/underlay/underlay/internal/testenv"
)

// scaleConfig is the benchmark's grid and settings, from the environment.
type scaleConfig struct {
	nodes []int // BENCH_SCALE_NODES: lab sizes, one lab each
	tasks []int // BENCH_SCALE_TASKS: burst sizes on every lab
	// check is the tasks' Consul HTTP check interval (BENCH_SCALE_CHECK_INTERVAL_S).
	check time.Duration
	// rest is how long the agents are watched at rest (BENCH_SCALE_REST_S).
	rest time.Duration
	// reserve is memory (BENCH_SCALE_RESERVE_MIB) left to the rest of
	// this shared machine: a burst whose measured cost per task would
	// leave less is not started.
	reserve int64
	// timeout bounds one burst (BENCH_SCALE_TIMEOUT_S).
	timeout time.Duration
}

func scaleConfigFromEnv() (scaleConfig, error) {
	var c scaleConfig
	var err error
	// Without BENCH_SCALE_*, `make bench` runs the smallest point;
	// `make bench-scale` sets the grid.
	if c.nodes, err = scalebench.EnvInts("BENCH_SCALE_NODES", 3); err != nil {
		return c, err
	}
	if c.tasks, err = scalebench.EnvInts("BENCH_SCALE_TASKS", 100); err != nil {
		return c, err
	}
	var check, rest, reserve, timeout int
	for _, v := range []struct {
		name string
		to   *int
		def  int
	}{{"BENCH_SCALE_CHECK_INTERVAL_S", &check, 5}, {"BENCH_SCALE_REST_S", &rest, 10},
		{"BENCH_SCALE_RESERVE_MIB", &reserve, 4096}, {"BENCH_SCALE_TIMEOUT_S", &timeout, 1200}} {
		if *v.to, err = scalebench.EnvInt(v.name, v.def); err != nil {
			return c, err
		}
	}
	c.check, c.rest, c.reserve, c.timeout = time.Duration(check)*time.Second, time.Duration(rest)*time.Second, int64(reserve)<<20, time.Duration(timeout)*time.Second
	return c, nil
}

// BenchmarkIntegrationScale prints issue 14's scale table: for each lab
// size (BENCH_SCALE_NODES, namespace nodes, one manager, one Consul
// server) and burst (BENCH_SCALE_TASKS replicas of the test image on a
// cluster-IPAM network, each registered by the agents with an HTTP
// check), it measures lab up, the time from the service update until
// every task runs, is registered and passes in Consul, the agents'
// address requests per second, `underlay ips` and `underlay network
// inspect`, the agents' memory and CPU at rest and during the burst, the
// Consul server's raft entries per task, and the machine's memory per
// task. A burst that, by the memory a task took in the previous one,
// would leave less than BENCH_SCALE_RESERVE_MIB free is not run, and the
// table says so.
func BenchmarkIntegrationScale(b *testing.B) {
	testenv.Require(b)
	cfg, err := scaleConfigFromEnv()
	if err != nil {
		b.Fatal(err)
	}
	// One sub-benchmark per lab, so that each lab is down before the
	// next comes up; a benchmark with sub-benchmarks runs once.
	var rows []scaleRow
	var perTask int64 // machine memory a task took in the last burst, bytes
	for _, n := range cfg.nodes {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			rows = append(rows, runScaleLab(b, cfg, n, &perTask)...)
		})
	}
	printScale(cfg, rows, true)
}

// scaleRow is one (nodes, tasks) point.
type scaleRow struct {
	nodes, tasks int
	labUp        time.Duration
	skipped      string // why the burst was not run
	failed       string // what did not happen within the timeout
	// From the service update until every task is running (Docker), and
	// registered and passing (Consul).
	running, registered, passing time.Duration
	requests                     float64 // agents' address requests answered ok
	blockWrites, conflicts       float64 // agents' IPAM block writes and lost check-and-sets
	ips, inspect                 time.Duration
	rest, burst                  agentUse
	raft                         uint64 // Consul server raft entries from the update to all passing
	memPerTask                   int64  // drop of the machine's MemAvailable per task, bytes
	teardown                     time.Duration
	// The nodes' dockerds together, and the Consul server, during the
	// burst, in cores.
	dockerdCPU, consulCPU float64
}

// agentUse is the agents' use of CPU (cores) and memory over a window,
// mean and max over the nodes.
type agentUse struct {
	cpuMean, cpuMax float64
	cpuTotal        time.Duration // CPU time of all agents together over the window
	rssMean, rssMax int64         // for a burst, each agent's peak
}

func runScaleLab(b *testing.B, cfg scaleConfig, n int, perTask *int64) []scaleRow {
	t0 := time.Now()
	l := testenv.StartLab(b, lab.Config{Nodes: n, UnderlaySubnet: "10.197.0.0/16"})
	labUp := time.Since(t0)
	ctx := testenv.Context(b, time.Duration(len(cfg.tasks)+1)*cfg.timeout)
	m := l.Nodes[0]
	const network = "scale"
	l.CreateNetwork(network, "--ipam", "cluster", "--subnet", "10.197.0.0/16", "--gateway", "10.197.0.1",
		"--ip-range", "10.197.16.0/20", "--parent", "eth1")
	st := netspec.NewStore(consul.NewKV(m.Consul))
	testenv.Eventually(b, 2*time.Minute, func() (bool, string) {
		states, err := st.NodeStates(ctx, network)
		ready := 0
		for _, s := range states {
			if s.State == netspec.StateReady {
				ready++
			}
		}
		return ready == n, fmt.Sprintf("%d of %d nodes realised %s (%v)", ready, n, network, err)
	})
	agents := daemonPIDs(b, ctx, l, "agent")
	others := append(daemonPIDs(b, ctx, l, "dockerd"), daemonPIDs(b, ctx, l, "consul")[0]) // node1's Consul is the server

	// At rest: the network realised, no task.
	rest := watchAgents(b, agents)
	time.Sleep(cfg.rest)
	restUse := rest.stop(b)

	var rows []scaleRow
	for _, tasks := range cfg.tasks {
		row := scaleRow{nodes: n, tasks: tasks, labUp: labUp, rest: restUse}
		avail, err := scalebench.MemAvailable()
		if err != nil {
			b.Fatal(err)
		}
		if need := int64(tasks) * *perTask; *perTask > 0 && avail-need < cfg.reserve {
			row.skipped = fmt.Sprintf("not run: %d tasks at %.1f MiB each (measured) need %.1f GiB, %.1f GiB available, %.1f GiB kept for the machine",
				tasks, mib(*perTask), gib(need), gib(avail), gib(cfg.reserve))
			rows = append(rows, row)
			continue
		}
		runBurst(b, ctx, cfg, l, agents, others, network, &row)
		if row.memPerTask > 0 {
			*perTask = row.memPerTask
		}
		rows = append(rows, row)
		// Each point as soon as it is measured; the whole table comes last.
		printScale(cfg, []scaleRow{row}, false)
	}
	return rows
}

// daemonPIDs finds every node's daemon (agent, dockerd, consul): the lab
// records the pid of the nsenter it runs under, whose only child it is.
func daemonPIDs(b *testing.B, ctx context.Context, l *testenv.Lab, daemon string) []int {
	st, err := lab.GetStatus(ctx, l.Name)
	if err != nil {
		b.Fatal(err)
	}
	var pids []int
	for _, nd := range st.Nodes {
		f := filepath.Join(st.StateDir, nd.Name, daemon+".wrapper.pid")
		raw, err := os.ReadFile(f)
		if err != nil {
			b.Fatalf("%s of %s: %v", daemon, nd.Name, err)
		}
		wrapper, err := strconv.Atoi(strings.TrimSpace(string(raw)))
		if err != nil {
			b.Fatalf("%s: %v", f, err)
		}
		pid := scalebench.ChildOf(wrapper)
		if pid == 0 {
			b.Fatalf("%s of %s: nsenter %d (from %s) has no child", daemon, nd.Name, wrapper, f)
		}
		pids = append(pids, pid)
	}
	return pids
}

// agentWatch samples the agents every half second: CPU from the first
// to the last sample, peak memory.
type agentWatch struct {
	pids  []int
	first []scalebench.ProcSample
	done  chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex // guards following fields
	last  []scalebench.ProcSample
	peak  []int64
	// minAvail is the lowest MemAvailable seen.
	minAvail int64
	err      error
}

func watchAgents(b *testing.B, pids []int) *agentWatch {
	w := &agentWatch{pids: pids, done: make(chan struct{}), peak: make([]int64, len(pids)), minAvail: -1}
	w.first = w.sample()
	if w.err != nil {
		b.Fatal(w.err)
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.done:
				return
			case <-tick.C:
				w.sample()
			}
		}
	}()
	return w
}

func (w *agentWatch) sample() []scalebench.ProcSample {
	s := make([]scalebench.ProcSample, len(w.pids))
	var err error
	for i, pid := range w.pids {
		if s[i], err = scalebench.ReadProc(pid); err != nil {
			break
		}
	}
	avail, aerr := scalebench.MemAvailable()
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil || aerr != nil {
		w.err = fmt.Errorf("agent gone or /proc unreadable: %v %v", err, aerr)
		return s
	}
	w.last = s
	for i := range s {
		w.peak[i] = max(w.peak[i], s[i].RSS)
	}
	if w.minAvail < 0 || avail < w.minAvail {
		w.minAvail = avail
	}
	return s
}

// stop takes a last sample and sums up; an agent that died meanwhile
// fails b (its figures would mean nothing).
func (w *agentWatch) stop(b *testing.B) agentUse {
	close(w.done)
	w.wg.Wait()
	last := w.sample()
	var u agentUse
	for i := range w.pids {
		c := scalebench.CPUShare(w.first[i], last[i])
		u.cpuTotal += last[i].CPU - w.first[i].CPU
		u.cpuMean += c / float64(len(w.pids))
		u.cpuMax = max(u.cpuMax, c)
		u.rssMean += w.peak[i] / int64(len(w.pids))
		u.rssMax = max(u.rssMax, w.peak[i])
	}
	if w.err != nil {
		b.Error(w.err)
	}
	return u
}

// runBurst scales a new service from 0 to row.tasks and measures until
// every task runs, is registered and passes; then it times the read
// commands, and removes the service, waiting until its containers and
// registrations are gone.
func runBurst(b *testing.B, ctx context.Context, cfg scaleConfig, l *testenv.Lab, agents, others []int, network string, row *scaleRow) {
	m := l.Nodes[0]
	name := fmt.Sprintf("scale%d", row.tasks)
	zero := uint64(0)
	spec := swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: name},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{Image: testenv.TestImage, Env: []string{
				"SERVICE_NAME=" + name, "SERVICE_CHECK_HTTP=/health", "SERVICE_CHECK_INTERVAL=" + cfg.check.String(),
			}},
			Networks: []swarm.NetworkAttachmentConfig{{Target: network}},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &zero}},
	}
	id := testenv.CreateService(b, m.Docker, spec)
	metrics0 := agentMetrics(b, ctx, l)
	raft0, err := scalebench.RaftCommitIndex(m.Consul)
	if err != nil {
		b.Fatal(err)
	}
	availBefore, err := scalebench.MemAvailable()
	if err != nil {
		b.Fatal(err)
	}
	watch := watchAgents(b, agents)
	daemons := make([]scalebench.ProcSample, len(others))
	for i, pid := range others {
		if daemons[i], err = scalebench.ReadProc(pid); err != nil {
			b.Fatal(err)
		}
	}
	svc, _, err := m.Docker.ServiceInspectWithRaw(ctx, id, swarm.ServiceInspectOptions{})
	if err != nil {
		b.Fatal(err)
	}
	replicas := uint64(row.tasks)
	svc.Spec.Mode.Replicated.Replicas = &replicas
	t0 := time.Now()
	if _, err := m.Docker.ServiceUpdate(ctx, id, svc.Version, svc.Spec, swarm.ServiceUpdateOptions{}); err != nil {
		b.Fatal(err)
	}
	deadline := t0.Add(cfg.timeout)
	var running, registered, passing int
	// A burst the machine cannot carry (6 nodes, 500 tasks on 2 cores:
	// dockerd stopped answering) stops when nothing moved for stallAfter,
	// and its row says how far it got.
	progress, lastMove := -1, time.Now()
	for (row.running == 0 || row.registered == 0 || row.passing == 0) && time.Now().Before(deadline) {
		if p := running + registered + passing; p != progress {
			progress, lastMove = p, time.Now()
		} else if time.Since(lastMove) > stallAfter {
			break
		}
		time.Sleep(time.Second) // each look lists up to TASKS tasks and catalog entries: not more often
		if row.running == 0 {
			if running = runningTasks(ctx, l, name); running == row.tasks {
				row.running = time.Since(t0)
			}
		}
		if row.registered == 0 {
			if es, _, err := m.Consul.Health().Service(name, "", false, nil); err == nil {
				if registered = len(es); registered == row.tasks {
					row.registered = time.Since(t0)
				}
			}
		}
		if row.passing == 0 {
			if es, _, err := m.Consul.Health().Service(name, "", true, nil); err == nil {
				if passing = len(es); passing == row.tasks {
					row.passing = time.Since(t0)
				}
			}
		}
	}
	row.burst = watch.stop(b)
	for i, pid := range others {
		now, err := scalebench.ReadProc(pid)
		if err != nil {
			b.Fatal(err)
		}
		if i < len(others)-1 {
			row.dockerdCPU += scalebench.CPUShare(daemons[i], now)
		} else {
			row.consulCPU = scalebench.CPUShare(daemons[i], now)
		}
	}
	raft1, err := scalebench.RaftCommitIndex(m.Consul)
	if err != nil {
		b.Fatal(err)
	}
	row.raft = raft1 - raft0
	metrics1 := agentMetrics(b, ctx, l)
	row.requests = metrics1[reqOK] - metrics0[reqOK]
	row.blockWrites = metrics1[blockWrites] - metrics0[blockWrites]
	row.conflicts = metrics1[casConflicts] - metrics0[casConflicts]
	if watch.minAvail > 0 {
		row.memPerTask = (availBefore - watch.minAvail) / int64(row.tasks)
	}
	if row.passing == 0 {
		row.failed = fmt.Sprintf("after %s (%s with no progress, or the timeout): %d running (-1: the manager did not answer), %d registered, %d passing of %d",
			time.Since(t0).Round(time.Second), stallAfter, running, registered, passing, row.tasks)
		b.Errorf("%d nodes, %d tasks: %s", row.nodes, row.tasks, row.failed)
	} else {
		row.ips = timeCommand(b, ctx, l, "ips")
		row.inspect = timeCommand(b, ctx, l, "network", "inspect", network)
	}

	t1 := time.Now()
	if err := m.Docker.ServiceRemove(ctx, id); err != nil {
		b.Fatal(err)
	}
	waitFor(b, cfg.timeout, time.Second, func() (bool, string) {
		left := 0
		for _, nd := range l.Nodes {
			cs, err := nd.Docker.ContainerList(ctx, container.ListOptions{All: true,
				Filters: filters.NewArgs(filters.Arg("label", "com.docker.swarm.service.name="+name))})
			if err != nil {
				return false, err.Error()
			}
			left += len(cs)
		}
		es, _, err := m.Consul.Catalog().Service(name, "", nil)
		return left == 0 && err == nil && len(es) == 0, fmt.Sprintf("%d containers and %d registrations of %s left (%v)", left, len(es), name, err)
	})
	row.teardown = time.Since(t1)
}

// stallAfter is how long a burst may make no progress before it is
// given up.
const stallAfter = 3 * time.Minute

// runningTasks counts the service's tasks in state running, from the
// manager; -1 when the manager does not answer within 30 s.
func runningTasks(ctx context.Context, l *testenv.Lab, service string) int {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ts, err := l.Nodes[0].Docker.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(
		filters.Arg("service", service), filters.Arg("desired-state", "running"))})
	if err != nil {
		return -1
	}
	n := 0
	for _, t := range ts {
		if t.Status.State == swarm.TaskStateRunning {
			n++
		}
	}
	return n
}

// The agents' series the benchmark sums over nodes.
const (
	reqOK        = `underlay_ipam_request_duration_seconds_count{op="request",result="ok"}`
	blockWrites  = `underlay_ipam_block_writes_total`
	casConflicts = `underlay_ipam_cas_conflicts_total`
)

// agentMetrics reads every node's agent's /metrics (on the node's
// loopback, fetched with curl inside the node) and sums the series above.
func agentMetrics(b *testing.B, ctx context.Context, l *testenv.Lab) map[string]float64 {
	sum := map[string]float64{}
	for _, nd := range l.Nodes {
		out, err := l.Exec(ctx, nd.Name, "curl", "-sSf", "http://"+lab.AgentListen+"/metrics")
		if err != nil {
			b.Fatalf("metrics of %s's agent: %v\n%s", nd.Name, err, out)
		}
		sc := bufio.NewScanner(bytes.NewReader(out))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			name, value, ok := strings.Cut(sc.Text(), " ")
			if !ok {
				continue
			}
			switch name {
			case reqOK, blockWrites, casConflicts:
				v, err := strconv.ParseFloat(value, 64)
				if err != nil {
					b.Fatalf("%s's agent: %s: %v", nd.Name, sc.Text(), err)
				}
				sum[name] += v
			}
		}
	}
	return sum
}

// timeCommand runs `underlay ARGS…` against node1's Consul three times,
// as a user would, and returns the median wall time.
func timeCommand(b *testing.B, ctx context.Context, l *testenv.Lab, args ...string) time.Duration {
	var ds []time.Duration
	for range 3 {
		cmd := exec.CommandContext(ctx, testenv.UnderlayBinary(b), append(args, "--consul-addr", l.Nodes[0].ConsulAddr)...)
		t0 := time.Now()
		out, err := cmd.CombinedOutput()
		ds = append(ds, time.Since(t0))
		if err != nil {
			b.Fatalf("underlay %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	slices.Sort(ds)
	return ds[1]
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
func gib(n int64) float64 { return float64(n) / (1 << 30) }

// printScale prints the tables of rows, and with legend what each column is.
func printScale(cfg scaleConfig, rows []scaleRow, legend bool) {
	s := func(d time.Duration) string {
		if d == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f", d.Seconds())
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d)/float64(time.Millisecond)) }
	fmt.Printf("\nscale benchmark: namespace labs (1 manager, 1 Consul server on node1, agents on every node), a cluster-IPAM network,\n")
	fmt.Printf("a service of the test image scaled from 0 to TASKS, each task registered with an HTTP check every %s\n", cfg.check)
	var t scalebench.Table
	t.Header = []string{"nodes", "tasks", "lab up s", "running s", "registered s", "passing s", "addr req/s", "ips ms", "inspect ms",
		"raft/task", "IPAM writes/task", "lost CAS", "teardown s"}
	for _, r := range rows {
		if r.skipped != "" {
			t.Add(fmt.Sprint(r.nodes), fmt.Sprint(r.tasks), s(r.labUp), r.skipped)
			continue
		}
		rate := "-"
		if r.running > 0 {
			rate = fmt.Sprintf("%.1f", r.requests/r.running.Seconds())
		}
		ips, inspect := "-", "-"
		if r.ips > 0 {
			ips, inspect = ms(r.ips), ms(r.inspect)
		}
		t.Add(fmt.Sprint(r.nodes), fmt.Sprint(r.tasks), s(r.labUp), s(r.running), s(r.registered), s(r.passing), rate, ips, inspect,
			fmt.Sprintf("%.1f", float64(r.raft)/float64(r.tasks)), fmt.Sprintf("%.2f", r.blockWrites/float64(r.tasks)), fmt.Sprintf("%.0f", r.conflicts), s(r.teardown))
	}
	t.Write(os.Stdout)
	fmt.Printf("\nagents' resources per node (mean / max over nodes; CPU in cores, RSS in MiB, burst RSS the peak) and the machine's memory per task\n")
	t = scalebench.Table{Header: []string{"nodes", "tasks", "CPU rest", "CPU burst", "agents' CPU ms/task", "RSS rest", "RSS burst peak", "dockerds CPU", "consul server CPU", "machine MiB/task"}}
	for _, r := range rows {
		if r.skipped != "" {
			continue
		}
		t.Add(fmt.Sprint(r.nodes), fmt.Sprint(r.tasks),
			fmt.Sprintf("%.3f / %.3f", r.rest.cpuMean, r.rest.cpuMax), fmt.Sprintf("%.3f / %.3f", r.burst.cpuMean, r.burst.cpuMax),
			fmt.Sprintf("%.1f", float64(r.burst.cpuTotal)/float64(time.Millisecond)/float64(r.tasks)),
			fmt.Sprintf("%.0f / %.0f", mib(r.rest.rssMean), mib(r.rest.rssMax)), fmt.Sprintf("%.0f / %.0f", mib(r.burst.rssMean), mib(r.burst.rssMax)),
			fmt.Sprintf("%.2f", r.dockerdCPU), fmt.Sprintf("%.2f", r.consulCPU),
			fmt.Sprintf("%.1f", mib(r.memPerTask)))
	}
	t.Write(os.Stdout)
	if !legend {
		return
	}
	fmt.Printf("running/registered/passing: from the service update until all TASKS are running (Docker), in the catalog, and passing (Consul)\n")
	fmt.Printf("addr req/s: the agents' answered address requests (underlay_ipam_request_duration_seconds_count, ok) over the time to all running\n")
	fmt.Printf("raft/task: growth of the Consul server's raft commit index from the update to all passing, per task (every Consul write:\n")
	fmt.Printf("  KV — IPAM blocks, inventories —, catalog registrations, check status changes); IPAM writes/task: the agents' block\n")
	fmt.Printf("  check-and-sets (underlay_ipam_block_writes_total); lost CAS: of those, rolled back (underlay_ipam_cas_conflicts_total)\n")
	fmt.Printf("ips, inspect: `underlay ips` and `underlay network inspect` against node1's Consul, median of 3; teardown: service removed until\n")
	fmt.Printf("  no container and no registration is left; agents' CPU ms/task: all agents' CPU time over the burst (update → all passing) per task;\n")
	fmt.Printf("  dockerds CPU: every node's dockerd process together (not containerd, shims), cores, over the burst; consul server CPU: node1's Consul, the only server;\n")
	fmt.Printf("  machine MiB/task: drop of MemAvailable from before the burst to its lowest, per task\n")
	for _, r := range rows {
		if r.failed != "" {
			fmt.Printf("%d nodes, %d tasks: %s\n", r.nodes, r.tasks, r.failed)
		}
	}
}
