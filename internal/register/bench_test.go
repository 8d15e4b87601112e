package register_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/underlay/underlay/internal/testenv"
)

// Registration benchmarks (make bench).
//
// BenchmarkIntegrationRegistration measures how long a started container
// takes to appear in the Consul catalog, from dockerd's own start event (its
// timeNano) to the first answer of a blocking catalog query that holds it,
// and the registrar's own part of it, from the same event to its write to
// the local Consul agent. By default it runs N=50 three times and N=200
// once; UNDERLAY_BENCH_N=K runs K instead, UNDERLAY_BENCH_RUNS times.
//
// The floor (test/floorregistrar) runs the same load beside it: one Consul
// write per start event, built from the event alone — no registrar can
// do less, so its figures are the machine's own under that load.
//
// With REGISTRATOR_BIN naming a gliderlabs/registrator binary, registrator
// runs the same load on the same machine, its runs interleaved with
// underlay's, and BenchmarkIntegrationRegistrationFaults sets it beside
// underlay under faults. No registrator code is part of underlay; it was
// built beside the project from its repository with modules from the Go
// module proxy:
//
//	git clone https://github.com/gliderlabs/registrator && cd registrator
//	go build -ldflags "-X main.Version=$(cat VERSION)" -o registrator .
//	REGISTRATOR_BIN=$PWD/registrator make bench
func BenchmarkIntegrationRegistration(b *testing.B) {
	testenv.Require(b)
	plan := benchPlan(b, []benchSize{{50, 3}, {200, 1}})
	regs := registrars(b)
	d := testenv.Docker(b)
	for b.Loop() {
		net := testenv.MacvlanNetwork(b, d, testenv.Network{Name: "bench-" + testenv.ID(b), Subnet: benchSubnet(b)})
		for _, sz := range plan {
			results := map[string][]runResult{}
			for i := range sz.runs {
				// Interleaved, so that the registrars share whatever load
				// the machine has, and each round starting with the next
				// one: the first run of a round was measured slower,
				// whichever registrar it was (a base build of underlay
				// first: p50 12.6 ms, third: 7.6 ms; the new one first:
				// 10.8 ms, third: 7.7 ms; medians of 3 runs, N=50).
				for k := range regs {
					reg := regs[(i+k)%len(regs)]
					r := runRegistration(b, d, net.Name, reg, sz.n)
					fmt.Printf("\nregistration run %d/%d: %s, N=%d (under load: %s)\n%s", i+1, sz.runs, reg.Name(), sz.n, r.load, r)
					results[reg.Name()] = append(results[reg.Name()], r)
				}
			}
			summarise(b, d, regs, results, howRun, sz.n, sz.runs)
		}
	}
}

// BenchmarkIntegrationRegistrationSwarm is BenchmarkIntegrationRegistration
// with swarm starting the containers, the case underlay is for: one
// replicated service on a swarm macvlan network (config-only network and
// --config-from, as the guide makes it), scaled up 10 tasks at a time, each
// step once the last one's tasks started, then scaled to 0. The machine's
// dockerd becomes a one-node swarm manager (and stays one). By default N=50
// three times; UNDERLAY_BENCH_N and UNDERLAY_BENCH_RUNS as above.
func BenchmarkIntegrationRegistrationSwarm(b *testing.B) {
	testenv.Require(b)
	plan := benchPlan(b, []benchSize{{50, 3}})
	regs := registrars(b)
	d := testenv.Docker(b)
	testenv.Swarm(b, d)
	for b.Loop() {
		net := testenv.SwarmMacvlanNetwork(b, d, "bench-"+testenv.ID(b), benchSubnet(b))
		for _, sz := range plan {
			results := map[string][]runResult{}
			for i := range sz.runs {
				for k := range regs { // rotated, as in BenchmarkIntegrationRegistration
					reg := regs[(i+k)%len(regs)]
					r := runSwarmRegistration(b, d, net, reg, sz.n)
					fmt.Printf("\nswarm registration run %d/%d: %s, N=%d (under load: %s)\n%s", i+1, sz.runs, reg.Name(), sz.n, r.load, r)
					results[reg.Name()] = append(results[reg.Name()], r)
				}
			}
			summarise(b, d, regs, results, howSwarm, sz.n, sz.runs)
		}
	}
}

// How the containers of a registration benchmark were started, as its
// summary says it.
const (
	howRun   = "docker run on macvlan"
	howSwarm = "swarm tasks on a swarm macvlan network"
)

// metricPrefix tells the swarm benchmark's reported metrics apart.
func metricPrefix(how string) string {
	if how == howSwarm {
		return "swarm-"
	}
	return ""
}

type benchSize struct{ n, runs int }

// benchPlan is def, or UNDERLAY_BENCH_N containers UNDERLAY_BENCH_RUNS
// times (default once).
func benchPlan(b *testing.B, def []benchSize) []benchSize {
	v := os.Getenv("UNDERLAY_BENCH_N")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 250 {
		b.Fatalf("UNDERLAY_BENCH_N=%q: want 1 to 250 (one /24)", v)
	}
	runs := 1
	if v := os.Getenv("UNDERLAY_BENCH_RUNS"); v != "" {
		if runs, err = strconv.Atoi(v); err != nil || runs < 1 {
			b.Fatalf("UNDERLAY_BENCH_RUNS=%q: want a positive number", v)
		}
	}
	return []benchSize{{n, runs}}
}

// registrars are underlay's agent, the floor (test/floorregistrar: one
// Consul write per start event and nothing else, what any registrar pays at
// least) and, with REGISTRATOR_BIN, registrator; UNDERLAY_BENCH_BASELINE
// names another underlay binary (an earlier build) to run beside them as
// "underlay-base".
func registrars(b *testing.B) []registrar {
	regs := []registrar{underlayAgent{bin: testenv.UnderlayBinary(b), name: "underlay"}, floor{bin: testenv.BuildProgram(b, "./test/floorregistrar")}}
	if bin := os.Getenv("UNDERLAY_BENCH_BASELINE"); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			b.Fatalf("UNDERLAY_BENCH_BASELINE=%s: %v", bin, err)
		}
		regs = append(regs, underlayAgent{bin: bin, name: "underlay-base"})
	}
	if bin := os.Getenv("REGISTRATOR_BIN"); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			b.Fatalf("REGISTRATOR_BIN=%s: %v", bin, err)
		}
		regs = append(regs, registrator{bin: bin})
	}
	return regs
}

// runResult is what one run measured.
type runResult struct {
	n, started int
	startWall  time.Duration
	// delivered is start event → the event delivered to a subscriber
	// (the benchmark's own, beside the registrar's): dockerd's part;
	// catalog is start event → first sight in the catalog by a blocking
	// query; synced is start event → the Consul agent's sync of it to the
	// catalog (its log); write is start event → the registrar's write to
	// its Consul agent answered (nil: not known).
	delivered, catalog, synced, write latencies
	missing                           int
	deregWall                         time.Duration
	afterLast                         time.Duration
	stale                             int
	rssKiB                            int
	// resyncWrites are underlay's Consul writes over a restart and two
	// full resyncs of the unchanged containers; -1 for other registrars.
	resyncWrites, resyncs float64
	// prepared counts underlay's starts registered from what it read
	// before them (written), read instead (dropped), and corrected after
	// the check that follows them, and the start passes that needed no
	// read (skipped); nil for other registrars.
	prepared map[string]float64
	// cpu is the CPU time of the registrar, dockerd and Consul from the
	// first start to the last first sight in the catalog, by process.
	cpu    map[string]time.Duration
	load   string
	consul string
	// swarm: the containers were swarm tasks, stopped by a scale to 0
	// rather than removed.
	swarm bool
}

func (r runResult) String() string {
	var s strings.Builder
	fmt.Fprintf(&s, "  containers started             %d (in %s)\n", r.started, r.startWall.Round(time.Millisecond))
	fmt.Fprintf(&s, "  registrations missing          %d\n", r.missing)
	fmt.Fprintf(&s, "  start event → delivered        %s (to a subscriber beside the registrar's: dockerd's part)\n", r.delivered)
	fmt.Fprintf(&s, "  start event → catalog          %s (first sight by a blocking catalog query)\n", r.catalog)
	fmt.Fprintf(&s, "  start event → catalog sync     %s (the Consul agent's \"Synced service\", from its log: 1 ms resolution)\n", r.synced)
	if r.write != nil {
		fmt.Fprintf(&s, "  start event → agent's write    %s (answered; Consul's agent syncs before it answers)\n", r.write)
	} else {
		fmt.Fprintf(&s, "  start event → agent's write    not measured (its log has a resolution of 1 s)\n")
	}
	if r.swarm {
		fmt.Fprintf(&s, "  all deregistered after         %s from the scale to 0, %s after the last task stopped\n", r.deregWall.Round(time.Millisecond), r.afterLast.Round(time.Millisecond))
	} else {
		fmt.Fprintf(&s, "  all deregistered after         %s from the first removal, %s after the last\n", r.deregWall.Round(time.Millisecond), r.afterLast.Round(time.Millisecond))
	}
	fmt.Fprintf(&s, "  entries left stale             %d\n", r.stale)
	fmt.Fprintf(&s, "  peak RSS                       %.1f MiB\n", float64(r.rssKiB)/1024)
	fmt.Fprintf(&s, "  CPU time during the starts     %s\n", cpuPerContainer(r.cpu, r.started))
	if r.prepared != nil {
		fmt.Fprintf(&s, "  starts from the prepared view  %.0f written at the start event without a read; %.0f read late (the create's read waited for the start), %.0f dropped; %.0f corrected\n",
			r.prepared["written"], r.prepared["late"], r.prepared["dropped"], r.prepared["corrected"])
		fmt.Fprintf(&s, "  start passes with no read      %.0f (a read had seen the container running)\n", r.prepared["skipped"])
	}
	if r.resyncWrites >= 0 {
		fmt.Fprintf(&s, "  writes of unchanged resyncs    %.0f (agent restarted, then %.0f full resyncs of %d containers, counting the restart's)\n", r.resyncWrites, r.resyncs, r.n)
	}
	return s.String()
}

// runRegistration starts reg against a new Consul dev agent, then n
// containers 10 at a time, and removes them all.
func runRegistration(b *testing.B, d *client.Client, netName string, reg registrar, n int) runResult {
	run := newBenchRun(b, d, netName)
	res := runResult{n: n, consul: consulVersion(b, run.capi), resyncWrites: -1}
	load := sampleLoad()
	p := reg.Start(run)
	starts := watchStarts(b, d, run.id)

	// One container registered and removed first, so that the registrar
	// is past its start-up (registrator's first sync holds its lock) and
	// has met the network.
	warmName := run.name(n)
	ww := watchCatalog(b, run.capi, run.service, containing(":"+warmName+":"))
	warm := run.startContainers(n, 1)
	if got := ww.waitFor(30*time.Second, func(c map[string]bool) bool { return c[warmName] }); !got[warmName] {
		b.Fatalf("%s: warm-up container %s not registered within 30s", reg.Name(), warmName)
	}
	run.removeContainers([]string{warm[warmName]})
	if got := ww.waitCount(0, 30*time.Second); got != 0 {
		b.Fatalf("%s: warm-up container %s not deregistered within 30s", reg.Name(), warmName)
	}
	ww.stop()

	// Each batch of ten is followed by its own watch, opened before the
	// batch starts.
	ids := map[string]string{}
	type batchWatch struct {
		w       *catalogWatch
		started map[string]string
	}
	var watches []batchWatch
	cpu := startCPUMeter(map[string]int{"registrar": p.cmd.Process.Pid, "dockerd": dockerdPID(), "Consul": run.consul.PID()})
	t0 := time.Now()
	for batch := 0; batch < n; batch += 10 {
		prefix := run.name(batch)
		prefix = prefix[:len(prefix)-1] // names batch..batch+9 share it
		names := map[string]bool{}
		for i := batch; i < min(batch+10, n); i++ {
			names[run.name(i)] = true
		}
		bw := batchWatch{w: watchCatalogUntil(b, run.capi, run.service, containing(":"+prefix), names)}
		bw.started = run.startContainers(batch, min(10, n-batch))
		maps.Copy(ids, bw.started)
		watches = append(watches, bw)
	}
	res.startWall = time.Since(t0)
	res.started = len(ids)
	seen := map[string]time.Time{}
	deadline := time.Now().Add(60 * time.Second)
	for _, bw := range watches {
		bw.w.waitFor(time.Until(deadline), func(map[string]bool) bool {
			seen := bw.w.firstSeen()
			for name := range bw.started {
				if _, ok := seen[name]; !ok {
					return false
				}
			}
			return true
		})
		maps.Copy(seen, bw.w.firstSeen())
		bw.w.stop()
	}
	res.cpu = cpu.done()
	evs := starts.wait(b, len(ids)+1, 10*time.Second)
	starts.save(b, run.id)
	delete(evs, warmName)
	res.measure(b, run, reg, p, evs, starts.deliveries(), seen)
	w := watchCatalog(b, run.capi, run.service, "")
	w.waitCount(len(ids)-res.missing, 10*time.Second) // its first answer

	if p.metrics != "" {
		// underlay: restart the agent with short resyncs and count the
		// writes they make over containers that did not change.
		p.Stop()
		p = reg.Start(run, "--resync", "2s")
		res.resyncs, res.resyncWrites = countResyncWrites(b, p.metrics, 3)
	}

	cids := make([]string, 0, len(ids))
	for _, id := range ids {
		cids = append(cids, id)
	}
	t1 := time.Now()
	run.removeContainers(cids)
	lastRemoved := time.Now()
	res.stale = w.waitCount(0, 60*time.Second)
	res.deregWall, res.afterLast = time.Since(t1), time.Since(lastRemoved)
	res.load = load.since()
	p.Stop()
	return res
}

// cpuPerContainer prints each process's CPU time per container started,
// in a fixed order, "not measured" for a process it could not read.
func cpuPerContainer(cpu map[string]time.Duration, started int) string {
	var parts []string
	for _, name := range []string{"registrar", "dockerd", "Consul"} {
		d, ok := cpu[name]
		if !ok || started == 0 {
			parts = append(parts, name+" not measured")
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.2f ms", name, float64(d.Microseconds())/1000/float64(started)))
	}
	return strings.Join(parts, ", ") + " per container started"
}

// runSwarmRegistration starts reg against a new Consul dev agent, then
// scales a new service on the swarm network netName to n tasks, 10 at a
// time, and back to 0. The service is named as the registrars register
// it (underlay: the swarm service's name; the others: SERVICE_NAME).
func runSwarmRegistration(b *testing.B, d *client.Client, netName string, reg registrar, n int) runResult {
	run := newBenchRun(b, d, netName)
	res := runResult{n: n, consul: consulVersion(b, run.capi), resyncWrites: -1, swarm: true}
	load := sampleLoad()
	p := reg.Start(run)
	starts := watchStarts(b, d, run.id)
	w := watchCatalog(b, run.capi, run.service, "")
	svc := testenv.SwarmService(b, d, run.service, netName, 0, run.labels())

	// One task registered and removed first, as in runRegistration.
	testenv.ScaleService(b, d, svc, 1)
	if got := w.waitCount(1, 60*time.Second); got != 1 {
		b.Fatalf("%s: warm-up task not registered within 60s", reg.Name())
	}
	warm := starts.wait(b, 1, 10*time.Second)
	testenv.ScaleService(b, d, svc, 0)
	if got := w.waitCount(0, 60*time.Second); got != 0 {
		b.Fatalf("%s: warm-up task not deregistered within 60s", reg.Name())
	}

	cpu := startCPUMeter(map[string]int{"registrar": p.cmd.Process.Pid, "dockerd": dockerdPID(), "Consul": run.consul.PID()})
	t0 := time.Now()
	for replicas := 10; replicas < n+10; replicas += 10 {
		testenv.ScaleService(b, d, svc, uint64(min(replicas, n)))
		starts.wait(b, len(warm)+min(replicas, n), 2*time.Minute)
	}
	res.startWall = time.Since(t0)
	w.waitCount(n, 60*time.Second)
	res.cpu = cpu.done()
	evs := starts.wait(b, len(warm)+n, 10*time.Second)
	starts.save(b, run.id)
	seen := w.firstSeen()
	for name := range warm {
		delete(evs, name)
		delete(seen, name)
	}
	res.started = len(evs)
	res.measure(b, run, reg, p, evs, starts.deliveries(), seen)

	t1 := time.Now()
	testenv.ScaleService(b, d, svc, 0)
	testenv.Eventually(b, 2*time.Minute, func() (bool, string) {
		cs, err := d.ContainerList(context.Background(), container.ListOptions{All: true,
			Filters: filters.NewArgs(filters.Arg("label", "com.docker.swarm.service.id="+svc), filters.Arg("status", "running"))})
		return err == nil && len(cs) == 0, fmt.Sprintf("%d tasks still running (%v)", len(cs), err)
	})
	lastRemoved := time.Now()
	res.stale = w.waitCount(0, 60*time.Second)
	res.deregWall, res.afterLast = time.Since(t1), time.Since(lastRemoved)
	res.load = load.since()
	w.stop()
	testenv.RemoveService(b, d, run.service)
	p.Stop()
	return res
}

// measure records what a run measured once its containers started: from
// their start events (evs, by container name) to their delivery to a
// subscriber (delivered), to their first sight in the catalog (seen), to
// the Consul agent's syncs and to the registrar's writes, its peak RSS
// and, for underlay, how its starts were registered.
func (res *runResult) measure(b *testing.B, run *benchRun, reg registrar, p *process, evs, delivered, seen map[string]time.Time) {
	res.delivered, _ = between(evs, delivered, func(k string) string { return k })
	res.catalog, res.missing = between(evs, seen, func(k string) string { return k })
	synced := consulSyncTimes(run.consul.LogPath())
	res.synced, _ = between(evs, synced, func(k string) string { return k })
	var wt map[string]time.Time
	if byID := reg.WriteTimes(p); byID != nil {
		wt = make(map[string]time.Time, len(byID))
		for id, at := range byID {
			wt[containerOf(id)] = at
		}
		res.write, _ = between(evs, wt, func(k string) string { return k })
	}
	res.rssKiB = peakRSS(p.cmd.Process.Pid)
	saveTimeline(b, run.id+"-"+reg.Name(), evs, delivered, wt, synced, seen)
	if p.metrics != "" {
		res.prepared = map[string]float64{}
		for _, result := range []string{"written", "late", "dropped", "corrected"} {
			res.prepared[result] = metricValue(b, p.metrics, `underlay_register_prepared_starts_total{result="`+result+`"}`)
		}
		res.prepared["skipped"] = metricValue(b, p.metrics, "underlay_register_start_events_skipped_total")
	}
}

// saveTimeline writes, with $UNDERLAY_BENCH_LOG_DIR set, each container's
// times from its start event, in ms, one line per container in the order
// of the start events: where one registration's time went, which the
// percentiles of each step alone cannot tell.
func saveTimeline(b *testing.B, name string, evs, delivered, write, synced, seen map[string]time.Time) {
	dir := os.Getenv("UNDERLAY_BENCH_LOG_DIR")
	if dir == "" {
		return
	}
	names := slices.SortedFunc(maps.Keys(evs), func(x, y string) int { return evs[x].Compare(evs[y]) })
	var buf bytes.Buffer
	buf.WriteString("# container\tstart event (UTC)\tdelivered\tagent's write\tcatalog sync\tcatalog (ms after the start event; - not known)\n")
	for _, n := range names {
		fmt.Fprintf(&buf, "%s\t%s", n, evs[n].UTC().Format("15:04:05.000000"))
		for _, m := range []map[string]time.Time{delivered, write, synced, seen} {
			if at, ok := m[n]; ok {
				fmt.Fprintf(&buf, "\t%.1f", float64(at.Sub(evs[n]).Microseconds())/1000)
			} else {
				buf.WriteString("\t-")
			}
		}
		buf.WriteString("\n")
	}
	if err := os.WriteFile(filepath.Join(dir, "timeline-"+name+".tsv"), buf.Bytes(), 0o644); err != nil {
		b.Error(err)
	}
}

// countResyncWrites waits until the agent has done `resyncs` full resyncs
// and reconciled what they queued, and returns the resyncs and the Consul
// writes counted then.
func countResyncWrites(b *testing.B, addr string, resyncs float64) (float64, float64) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		done, writes := agentMetrics(b, addr)
		if done >= resyncs && queueDepth(b, addr) == 0 {
			return done, writes
		}
		if time.Now().After(deadline) {
			b.Fatalf("agent did %.0f resyncs in 60s, want %.0f", done, resyncs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func queueDepth(b *testing.B, addr string) float64 {
	return metricValue(b, addr, "underlay_register_queue_depth")
}

// summarise prints the medians over the runs of each registrar.
func summarise(b *testing.B, d *client.Client, regs []registrar, results map[string][]runResult, how string, n, runs int) {
	first := results[regs[0].Name()][0]
	what := "one run"
	if runs > 1 {
		what = fmt.Sprintf("medians of %d runs", runs)
	}
	fmt.Printf("\nregistration benchmark, N=%d (%s, 10 at a time, dockerd %s, one Consul %s dev agent per run): %s\n",
		n, how, dockerVersion(d), first.consul, what)
	fmt.Printf("  %-14s %-30s %-30s %-30s %-30s %7s %5s %9s\n", "", "start event → delivered", "start event → catalog", "start event → catalog sync", "start event → agent's write", "missing", "stale", "peak RSS")
	for _, reg := range regs {
		rs := results[reg.Name()]
		med := func(f func(runResult) float64) float64 {
			v := make([]float64, len(rs))
			for i, r := range rs {
				v[i] = f(r)
			}
			slices.Sort(v)
			return v[len(v)/2]
		}
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		// pcts is the medians of one latency's p50 and p95 over the runs;
		// "no samples" when a run has none, never a 0 made up.
		pcts := func(get func(runResult) latencies) string {
			for _, r := range rs {
				if len(get(r)) == 0 {
					return "no samples"
				}
			}
			return fmt.Sprintf("p50 %.1f ms  p95 %.1f ms", med(func(r runResult) float64 { return ms(get(r).pct(0.5)) }), med(func(r runResult) float64 { return ms(get(r).pct(0.95)) }))
		}
		delivered := pcts(func(r runResult) latencies { return r.delivered })
		cat := pcts(func(r runResult) latencies { return r.catalog })
		synced := pcts(func(r runResult) latencies { return r.synced })
		write := "not measured"
		if rs[0].write != nil {
			write = pcts(func(r runResult) latencies { return r.write })
		}
		var missing, stale, negative int
		for _, r := range rs {
			missing += r.missing
			stale += r.stale
			negative += r.delivered.negative() + r.catalog.negative() + r.synced.negative() + r.write.negative()
		}
		rss := med(func(r runResult) float64 { return float64(r.rssKiB) / 1024 })
		fmt.Printf("  %-14s %-30s %-30s %-30s %-30s %7d %5d %5.1f MiB\n", reg.Name(), delivered, cat, synced, write, missing, stale, rss)
		if negative > 0 {
			fmt.Printf("  %-14s %d NEGATIVE latencies in these runs (clocks disagree); they are included above, not clamped\n", "", negative)
		}
		if reg.Name() == regs[0].Name() {
			prefix := fmt.Sprintf("%sN%d-", metricPrefix(how), n)
			if cat != "no samples" {
				b.ReportMetric(med(func(r runResult) float64 { return ms(r.catalog.pct(0.5)) }), prefix+"catalog-p50-ms")
				b.ReportMetric(med(func(r runResult) float64 { return ms(r.catalog.pct(0.95)) }), prefix+"catalog-p95-ms")
			}
			b.ReportMetric(float64(missing), prefix+"missing")
			b.ReportMetric(float64(stale), prefix+"stale")
		}
	}
	fmt.Printf("  CPU time during the starts (first start to last first sight in the catalog), medians:\n")
	for _, reg := range regs {
		cpu := map[string]time.Duration{}
		rs := results[reg.Name()]
		for _, name := range []string{"registrar", "dockerd", "Consul"} {
			var v []time.Duration
			for _, r := range rs {
				if d, ok := r.cpu[name]; ok && r.started > 0 {
					v = append(v, d/time.Duration(r.started))
				}
			}
			if len(v) == len(rs) { // measured in every run
				slices.Sort(v)
				cpu[name] = v[len(v)/2]
			}
		}
		fmt.Printf("  %-14s %s\n", reg.Name(), cpuPerContainer(cpu, 1))
	}
	gone := "removal"
	if how == howSwarm {
		gone = "its task stopped"
	}
	fmt.Printf("  (missing and stale are totals over the runs; missing: started but never seen in the catalog, stale: still there 60 s after %s)\n", gone)
}

// BenchmarkIntegrationRegistrationFaults sets underlay beside registrator
// (when REGISTRATOR_BIN is set; underlay alone otherwise) under faults that
// lose or strand registrations, and prints what each left in the catalog
// once it had time to settle: registrations missing (a running container
// not in the catalog) and stale (a container gone, still in the catalog).
func BenchmarkIntegrationRegistrationFaults(b *testing.B) {
	testenv.Require(b)
	regs := registrars(b)
	for _, r := range regs {
		if r, ok := r.(registrator); ok {
			// Registrator at its most careful too: -cleanup removes
			// services of gone containers and -resync N registers
			// everything again every N seconds.
			regs = append(regs, registrator{bin: r.bin, flags: []string{"-cleanup", "-resync", "5"}})
			break
		}
	}
	d := testenv.Docker(b)
	for b.Loop() {
		net := testenv.MacvlanNetwork(b, d, testenv.Network{Name: "faults-" + testenv.ID(b), Subnet: benchSubnet(b)})
		fmt.Printf("\nregistration under faults (10 containers each, dockerd %s, a Consul dev agent each; after the fault, up to %s for the catalog to match the running containers)\n", dockerVersion(d), settleTime)
		for _, sc := range faultScenarios {
			fmt.Printf("  %s\n", sc.name)
			for _, reg := range regs {
				run := newBenchRun(b, d, net.Name)
				r := sc.run(run, reg)
				run.removeAll()
				fmt.Printf("    %-34s %s\n", reg.Name(), r)
			}
		}
	}
}

// settleTime is how long a fault scenario waits for the catalog to match.
const settleTime = 20 * time.Second

type faultScenario struct {
	name string
	run  func(run *benchRun, reg registrar) faultResult
}

// faultResult is the catalog compared with the running containers.
type faultResult struct {
	missing, stale int
	settled        time.Duration // -1: never within settleTime
}

func (f faultResult) String() string {
	s := fmt.Sprintf("missing %d  stale %d  ", f.missing, f.stale)
	if f.settled < 0 {
		return s + fmt.Sprintf("(not settled after %s)", settleTime)
	}
	return s + fmt.Sprintf("(settled %s after the fault ended)", f.settled.Round(10*time.Millisecond))
}

// settle waits until the catalog holds exactly the running containers and
// reports the difference then.
func settle(w *catalogWatch, running map[string]string, from time.Time) faultResult {
	cur := w.waitFor(settleTime, func(cur map[string]bool) bool {
		if len(cur) != len(running) {
			return false
		}
		for name := range running {
			if !cur[name] {
				return false
			}
		}
		return true
	})
	var f faultResult
	for name := range running {
		if !cur[name] {
			f.missing++
		}
	}
	for name := range cur {
		if _, ok := running[name]; !ok {
			f.stale++
		}
	}
	f.settled = time.Since(from)
	if f.missing+f.stale > 0 {
		f.settled = -1
	}
	return f
}

var faultScenarios = []faultScenario{
	{"registrar killed -9; while it is down 5 of 10 containers removed and 5 started; restarted", func(run *benchRun, reg registrar) faultResult {
		p := reg.Start(run)
		w := watchCatalog(run.b, run.capi, run.service, "")
		running := run.startContainers(0, 10)
		w.waitCount(10, 30*time.Second)
		p.Kill()
		var gone []string
		for i := range 5 {
			gone = append(gone, running[run.name(i)])
			delete(running, run.name(i))
		}
		run.removeContainers(gone)
		for name, id := range run.startContainers(10, 5) {
			running[name] = id
		}
		t0 := time.Now()
		p = reg.Start(run)
		defer p.Stop()
		return settle(w, running, t0)
	}},
	{"Consul agent restarted with no state (a dev agent) under 10 registered containers", func(run *benchRun, reg registrar) faultResult {
		p := reg.Start(run)
		defer p.Stop()
		w := watchCatalog(run.b, run.capi, run.service, "")
		running := run.startContainers(0, 10)
		w.waitCount(10, 30*time.Second)
		run.consul.Restart(time.Second)
		w.stop()
		// A new watch, so that nothing seen before the restart counts.
		return settle(watchCatalog(run.b, run.capi, run.service, ""), running, time.Now())
	}},
	{"10 containers that exit at once (start and die back to back), then one that runs", func(run *benchRun, reg registrar) faultResult {
		p := reg.Start(run)
		defer p.Stop()
		w := watchCatalog(run.b, run.capi, run.service, "")
		// The test server exits at once when it cannot listen.
		run.startContainers(0, 10, "LISTEN=no-such-address")
		// The registrar has seen those events once it registers the
		// container started after them.
		running := run.startContainers(10, 1)
		w.waitFor(30*time.Second, func(c map[string]bool) bool { return c[run.name(10)] })
		return settle(w, running, time.Now())
	}},
}

// metricValue reads one unlabelled series of underlay's /metrics.
func metricValue(b *testing.B, addr, name string) float64 {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		b.Fatalf("agent metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}
