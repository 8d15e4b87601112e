package register_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"maps"
	"net"
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
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/testenv"
)

// This file is the machinery of the registration benchmarks: the
// registrars under test as processes of their own (underlay's agent, and
// gliderlabs/registrator when REGISTRATOR_BIN names a binary), dockerd's
// start events, the Consul catalog as a user sees it, and the machine's load.

// registrar is one registration agent under test.
type registrar interface {
	// Name labels its figures.
	Name() string
	// Start runs it against run's Consul and returns once it follows
	// Docker's events; extra are arguments added for this start.
	Start(run *benchRun, extra ...string) *process
	// WriteTimes returns when it finished writing each service to its
	// Consul agent, by service ID, from its log; nil when it logs none
	// precisely enough.
	WriteTimes(p *process) map[string]time.Time
}

// process is a registrar's running process.
type process struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	// metrics is the address of underlay's /metrics, empty for others.
	metrics string
}

// startProcess runs bin with args, its output appended to logPath; it is
// killed when the benchmark ends.
func startProcess(b *testing.B, logPath string, env []string, bin string, args ...string) *process {
	b.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start %s: %v", bin, err)
	}
	p := &process{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	b.Cleanup(p.Kill)
	return p
}

// Kill ends the process with SIGKILL (kill -9) and waits for it.
func (p *process) Kill() { p.signal(syscall.SIGKILL) }

// Stop ends the process with SIGTERM and waits for it.
func (p *process) Stop() { p.signal(syscall.SIGTERM) }

func (p *process) signal(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(sig)
	<-p.done
}

// waitLog waits until the process's log (which earlier processes may
// have written to) holds s more than n times.
func (p *process) waitLog(b *testing.B, s string, n int, timeout time.Duration) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		data, _ := os.ReadFile(p.logPath)
		if bytes.Count(data, []byte(s)) > n {
			return
		}
		select {
		case <-p.done:
			b.Fatalf("%s exited before logging %q:\n%s", p.cmd.Path, s, data)
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s did not log %q within %s:\n%s", p.cmd.Path, s, timeout, data)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitHealthy waits until underlay's /healthz answers that Docker and
// Consul are reachable and the first resync is done.
func (p *process) waitHealthy(b *testing.B, timeout time.Duration) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var st struct {
			LastResync time.Time `json:"last_resync"`
		}
		resp, err := http.Get("http://" + p.metrics + "/healthz")
		if err == nil {
			json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && !st.LastResync.IsZero() {
				return
			}
		}
		select {
		case <-p.done:
			data, _ := os.ReadFile(p.logPath)
			b.Fatalf("agent exited before it was ready:\n%s", data)
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("agent not ready within %s (%v)", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// underlayAgent runs `underlay agent` as its own process.
type underlayAgent struct {
	bin  string
	name string // "underlay", or "underlay-base" for a baseline binary
}

func (u underlayAgent) Name() string { return u.name }

func (u underlayAgent) Start(run *benchRun, extra ...string) *process {
	b := run.b
	metrics := freeAddr(b)
	args := []string{"agent", "--node", run.node(), "--consul-addr", run.consul.Addr(),
		"--label", "io.underlay.test=" + run.id, "--host-ip", "127.0.0.1", "--listen", metrics,
		"--networks=false", "--ipam=false", "--log-format", "json"}
	args = append(args, extra...)
	// UNDERLAY_BENCH_AGENT_ARGS adds flags for a closer look, such as
	// "--log-level debug --pprof 127.0.0.1:6060".
	args = append(args, strings.Fields(os.Getenv("UNDERLAY_BENCH_AGENT_ARGS"))...)
	p := startProcess(b, run.logPath(u.Name()), nil, u.bin, args...)
	p.metrics = metrics
	p.waitHealthy(b, 30*time.Second)
	return p
}

// consulSyncTimes reads when a Consul agent synced each service to the
// catalog, by container name, from its log's "Synced service" lines (1.8:
// INFO, millisecond resolution).
func consulSyncTimes(path string) map[string]time.Time {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	out := map[string]time.Time{}
	for _, line := range strings.Split(string(data), "\n") {
		ts, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
		_, id, ok := strings.Cut(rest, "agent: Synced service: service=")
		if !ok {
			continue
		}
		at, err := time.Parse("2006-01-02T15:04:05.000Z0700", ts)
		if err != nil {
			continue
		}
		if name := containerOf(strings.TrimSpace(id)); out[name].IsZero() {
			out[name] = at
		}
	}
	return out
}

// WriteTimes reads the agent's JSON log: each "registered" line is written
// once the Consul agent has answered the registration.
func (underlayAgent) WriteTimes(p *process) map[string]time.Time { return logWriteTimes(p) }

// floor runs test/floorregistrar: one Consul write per start event, built
// from the event alone, no read of Docker. It is no registrar (it knows no
// address); its figures are the least any start-event registrar pays on
// this machine under the same load.
type floor struct{ bin string }

func (floor) Name() string { return "floor" }

func (f floor) Start(run *benchRun, extra ...string) *process {
	const ready = "following docker events"
	logPath := run.logPath("floor")
	before, _ := os.ReadFile(logPath)
	args := append([]string{"-consul", run.consul.Addr(), "-label", "io.underlay.test=" + run.id, "-node", run.node()}, extra...)
	p := startProcess(run.b, logPath, nil, f.bin, args...)
	p.waitLog(run.b, ready, bytes.Count(before, []byte(ready)), 30*time.Second)
	return p
}

// WriteTimes reads its log, in underlay's format.
func (floor) WriteTimes(p *process) map[string]time.Time { return logWriteTimes(p) }

// logWriteTimes reads a JSON log whose "registered" lines each carry the
// time and service ID of a write the Consul agent answered.
func logWriteTimes(p *process) map[string]time.Time {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return nil
	}
	out := map[string]time.Time{}
	for _, line := range bytes.Split(data, []byte("\n")) {
		if !bytes.Contains(line, []byte(`"msg":"registered"`)) {
			continue
		}
		var rec struct {
			Time time.Time `json:"time"`
			ID   string    `json:"id"`
		}
		if json.Unmarshal(line, &rec) != nil || rec.ID == "" {
			continue
		}
		if _, seen := out[rec.ID]; !seen {
			out[rec.ID] = rec.Time
		}
	}
	return out
}

// registrator runs gliderlabs/registrator (REGISTRATOR_BIN) with
// -internal, which registers the container's own address and exposed port
// as underlay does for macvlan, and -explicit, which registers only
// containers naming a service: it sees every container of the machine's
// dockerd, other tests' among them, having no label filter.
type registrator struct {
	bin string
	// flags are added to -internal -explicit (-cleanup, -resync N).
	flags []string
}

func (r registrator) Name() string {
	if len(r.flags) == 0 {
		return "registrator"
	}
	return "registrator " + strings.Join(r.flags, " ")
}

func (r registrator) Start(run *benchRun, extra ...string) *process {
	host := os.Getenv("DOCKER_HOST")
	if host == "" {
		host = "unix:///var/run/docker.sock" // registrator's own default is /tmp/docker.sock
	}
	args := append([]string{"-internal", "-explicit"}, r.flags...)
	args = append(args, extra...)
	args = append(args, "consul://"+run.consul.Addr())
	const ready = "Listening for Docker events"
	logPath := run.logPath("registrator")
	before, _ := os.ReadFile(logPath) // a restart appends
	p := startProcess(run.b, logPath, []string{"DOCKER_HOST=" + host}, r.bin, args...)
	p.waitLog(run.b, ready, bytes.Count(before, []byte(ready)), 30*time.Second)
	return p
}

// WriteTimes is nil: registrator logs with a resolution of one second.
func (registrator) WriteTimes(*process) map[string]time.Time { return nil }

// benchRun is one registrar's run against a private Consul dev agent, on a
// macvlan network of the machine's dockerd.
type benchRun struct {
	b       *testing.B
	d       *client.Client
	consul  *testenv.Consul
	capi    *api.Client
	id      string // unique per run: label value, name prefix, service name
	net     string
	service string
	dir     string

	mu  sync.Mutex // guards all
	all []string   // every container started, for removeAll
}

func newBenchRun(b *testing.B, d *client.Client, netName string) *benchRun {
	// Its INFO log says when it synced each service to the catalog.
	cons := testenv.StartConsulArgs(b, "-log-level", "info")
	id := testenv.ID(b)
	return &benchRun{b: b, d: d, consul: cons, capi: cons.Client(), id: id, net: netName,
		service: "bench-" + id, dir: b.TempDir()}
}

// node is the --node of underlay's agent for this run.
func (r *benchRun) node() string { return "bench-" + r.id }

// logPath is where a registrar's log goes: $UNDERLAY_BENCH_LOG_DIR keeps
// them for a closer look.
func (r *benchRun) logPath(name string) string {
	dir := r.dir
	if d := os.Getenv("UNDERLAY_BENCH_LOG_DIR"); d != "" {
		dir = d
	}
	return filepath.Join(dir, name+"-"+r.id+".log")
}

func (r *benchRun) labels() map[string]string {
	return map[string]string{"io.underlay.test": r.id, "SERVICE_NAME": r.service}
}

// name is the container name of the i-th container of the run.
func (r *benchRun) name(i int) string { return fmt.Sprintf("%s-%03d", r.id, i) }

// startContainers starts count containers numbered from, 10 at a time, and
// returns their IDs by name.
func (r *benchRun) startContainers(from, count int, env ...string) map[string]string {
	ids := map[string]string{}
	var mu sync.Mutex
	for batch := from; batch < from+count; batch += 10 {
		var wg sync.WaitGroup
		for i := batch; i < min(batch+10, from+count); i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := r.name(i)
				cid, err := testenv.StartContainer(r.b, r.d, testenv.Container{Name: name, Networks: []string{r.net}, Labels: r.labels(), Env: env})
				if err != nil {
					r.b.Error(err)
					return
				}
				mu.Lock()
				ids[name] = cid
				mu.Unlock()
				r.mu.Lock()
				r.all = append(r.all, cid)
				r.mu.Unlock()
			}()
		}
		wg.Wait()
	}
	return ids
}

// removeAll removes every container the run started.
func (r *benchRun) removeAll() {
	r.mu.Lock()
	all := r.all
	r.all = nil
	r.mu.Unlock()
	r.removeContainers(all)
}

// removeContainers force-removes containers, 10 at a time.
func (r *benchRun) removeContainers(ids []string) {
	for batch := 0; batch < len(ids); batch += 10 {
		var wg sync.WaitGroup
		for _, cid := range ids[batch:min(batch+10, len(ids))] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := r.d.ContainerRemove(context.Background(), cid, container.RemoveOptions{Force: true})
				if err != nil && !client.IsErrNotFound(err) {
					r.b.Error(err)
				}
			}()
		}
		wg.Wait()
	}
}

// consulVersion is the version the Consul agent reports of itself.
func consulVersion(b *testing.B, c *api.Client) string {
	self, err := c.Agent().Self()
	if err != nil {
		b.Fatalf("consul agent self: %v", err)
	}
	v, _ := self["Config"]["Version"].(string)
	if v == "" {
		return "(version not reported)"
	}
	return v
}

func dockerVersion(d *client.Client) string {
	v, err := d.ServerVersion(context.Background())
	if err != nil {
		return "(version unknown: " + err.Error() + ")"
	}
	return v.Version
}

// startEvents records dockerd's own time (timeNano) of each container
// start event of one run, by container name, and when the event reached
// this subscriber: dockerd delivers an event to every subscriber alike, so
// that is what a registrar following events waits for before it can do
// anything.
type startEvents struct {
	mu        sync.Mutex
	at        map[string]time.Time
	delivered map[string]time.Time
	id        map[string]string // container ID by name
}

// watchStarts subscribes to the start events of containers labelled
// io.underlay.test=id; it returns once dockerd has accepted the
// subscription, so no start that follows is missed.
func watchStarts(b *testing.B, d *client.Client, id string) *startEvents {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	f := filters.NewArgs(filters.Arg("type", string(events.ContainerEventType)), filters.Arg("event", "start"),
		filters.Arg("label", "io.underlay.test="+id))
	// The client subscribes in the background: asking for events since
	// now makes dockerd replay any that came before it got there.
	now := time.Now()
	since := fmt.Sprintf("%d.%09d", now.Unix(), now.Nanosecond())
	msgs, errs := d.Events(ctx, events.ListOptions{Filters: f, Since: since})
	w := &startEvents{at: map[string]time.Time{}, delivered: map[string]time.Time{}, id: map[string]string{}}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case err := <-errs:
				if ctx.Err() == nil {
					b.Errorf("docker start events: %v", err)
				}
				return
			case m := <-msgs:
				now := time.Now()
				w.mu.Lock()
				w.at[m.Actor.Attributes["name"]] = time.Unix(0, m.TimeNano)
				w.delivered[m.Actor.Attributes["name"]] = now
				w.id[m.Actor.Attributes["name"]] = m.Actor.ID
				w.mu.Unlock()
			}
		}
	}()
	return w
}

// wait waits until n start events arrived, and returns them.
func (w *startEvents) wait(b *testing.B, n int, timeout time.Duration) map[string]time.Time {
	deadline := time.Now().Add(timeout)
	for {
		w.mu.Lock()
		out := maps.Clone(w.at)
		got := len(out)
		w.mu.Unlock()
		if got >= n || time.Now().After(deadline) {
			if got < n {
				b.Errorf("%d start events of %d arrived within %s", got, n, timeout)
			}
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// deliveries returns when each start event reached this subscriber.
func (w *startEvents) deliveries() map[string]time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.delivered)
}

// save writes the start events to $UNDERLAY_BENCH_LOG_DIR, beside the
// registrars' logs, one "NAME CONTAINER-ID TIME" line each.
func (w *startEvents) save(b *testing.B, runID string) {
	dir := os.Getenv("UNDERLAY_BENCH_LOG_DIR")
	if dir == "" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var buf bytes.Buffer
	for name, at := range w.at {
		fmt.Fprintf(&buf, "%s %s %s\n", name, w.id[name], at.Format(time.RFC3339Nano))
	}
	if err := os.WriteFile(filepath.Join(dir, "starts-"+runID+".txt"), buf.Bytes(), 0o644); err != nil {
		b.Error(err)
	}
}

// catalogWatch follows one service in the Consul catalog with blocking
// queries, as a user of the catalog would, recording when each instance
// was first seen; instances are keyed by container name, read from the
// service ID (both registrars write HOST:CONTAINER:PORT).
type catalogWatch struct {
	stop context.CancelFunc
	// until, when set, ends the watch once every one of these was seen.
	until map[string]bool

	mu      sync.Mutex
	seen    map[string]time.Time
	current map[string]bool
	changed chan struct{}
}

// watchCatalog follows the instances of service name that filter (a Consul
// filter expression; empty: all) selects, until stop or the benchmark's end.
//
// Each answer to a blocking query carries every instance selected, so
// following 200 instances at once costs about 14 ms of Consul's and this
// process's time per change on this 2-core machine, and that delay would be
// counted as the registrar's: the latency runs follow ten at a time.
func watchCatalog(b *testing.B, c *api.Client, name, filter string) *catalogWatch {
	return watchCatalogUntil(b, c, name, filter, nil)
}

// watchCatalogUntil is watchCatalog ending once every instance in until
// was seen: every open blocking query on a service is answered again at
// each change of it, so watches left open would slow Consul for the rest.
func watchCatalogUntil(b *testing.B, c *api.Client, name, filter string, until map[string]bool) *catalogWatch {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	w := &catalogWatch{stop: cancel, until: until, seen: map[string]time.Time{}, current: map[string]bool{}, changed: make(chan struct{}, 1)}
	go func() {
		var index uint64
		for ctx.Err() == nil {
			q := (&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Second, Filter: filter}).WithContext(ctx)
			entries, meta, err := c.Catalog().Service(name, "", q)
			now := time.Now()
			if err != nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			index = meta.LastIndex
			if index < 1 {
				index = 1 // a restarted Consul starts its indexes again
			}
			w.mu.Lock()
			w.current = map[string]bool{}
			for _, e := range entries {
				n := containerOf(e.ServiceID)
				w.current[n] = true
				if _, ok := w.seen[n]; !ok {
					w.seen[n] = now
				}
			}
			done := w.until != nil
			for n := range w.until {
				if _, ok := w.seen[n]; !ok {
					done = false
				}
			}
			w.mu.Unlock()
			select {
			case w.changed <- struct{}{}:
			default:
			}
			if done {
				cancel()
			}
		}
	}()
	return w
}

// containing is the filter selecting the service IDs that hold s.
func containing(s string) string { return fmt.Sprintf("ServiceID contains %q", s) }

// containerOf is the container name in a HOST:CONTAINER:PORT service ID.
func containerOf(serviceID string) string {
	parts := strings.Split(serviceID, ":")
	if len(parts) < 3 {
		return serviceID
	}
	return parts[len(parts)-2]
}

// waitFor waits until the catalog holds exactly the instances want says,
// or timeout passes, and returns what it holds then.
func (w *catalogWatch) waitFor(timeout time.Duration, want func(current map[string]bool) bool) map[string]bool {
	deadline := time.After(timeout)
	for {
		w.mu.Lock()
		cur := w.current
		w.mu.Unlock()
		if want(cur) {
			return cur
		}
		select {
		case <-w.changed:
		case <-deadline:
			return cur
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitCount waits until the catalog holds n instances or timeout passes,
// and returns how many it holds.
func (w *catalogWatch) waitCount(n int, timeout time.Duration) int {
	return len(w.waitFor(timeout, func(cur map[string]bool) bool { return len(cur) == n }))
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

// latencies are durations from one event to another, negative ones kept:
// they mean the two clocks disagree, and clamping them would hide it.
type latencies []time.Duration

func between(from, to map[string]time.Time, key func(string) string) (l latencies, missing int) {
	for k, at := range from {
		t, ok := to[key(k)]
		if !ok {
			missing++
			continue
		}
		l = append(l, t.Sub(at))
	}
	slices.Sort(l)
	return l, missing
}

func (l latencies) pct(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	return l[min(len(l)-1, int(float64(len(l))*p))]
}

func (l latencies) negative() int {
	n := 0
	for _, d := range l {
		if d < 0 {
			n++
		}
	}
	return n
}

func (l latencies) String() string {
	if len(l) == 0 {
		return "no samples"
	}
	r := func(d time.Duration) string { return d.Round(100 * time.Microsecond).String() }
	s := fmt.Sprintf("p50 %s  p95 %s  max %s", r(l.pct(0.5)), r(l.pct(0.95)), r(l.pct(1)))
	if n := l.negative(); n > 0 {
		s += fmt.Sprintf("  (%d of %d NEGATIVE: seen before dockerd's start event, clocks disagree)", n, len(l))
	}
	return s
}

// machineLoad samples what else the machine is doing, so each figure says
// under what load it was taken.
type machineLoad struct {
	load1       string
	busy, total uint64
}

func sampleLoad() machineLoad {
	var m machineLoad
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.load1, _, _ = strings.Cut(string(b), " ")
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		for i, f := range strings.Fields(line)[1:] {
			v, _ := strconv.ParseUint(f, 10, 64)
			m.total += v
			if i != 3 && i != 4 { // idle, iowait
				m.busy += v
			}
		}
	}
	return m
}

// since describes the load between m and now: the CPU busy fraction of the
// whole machine and the 1-minute load average at both ends.
func (m machineLoad) since() string {
	now := sampleLoad()
	busy := 0.0
	if now.total > m.total {
		busy = 100 * float64(now.busy-m.busy) / float64(now.total-m.total)
	}
	cpus, _ := strconv.Atoi(strings.TrimSpace(nproc()))
	return fmt.Sprintf("CPU %.0f%% busy of %d cores, load average %s → %s", busy, cpus, m.load1, now.load1)
}

func nproc() string {
	out, err := exec.Command("nproc").Output()
	if err != nil {
		return "?"
	}
	return string(out)
}

// benchSubnet is a random IPv4 /24 in 10.130.0.0/16–10.139.0.0/16, the
// benchmarks' own range.
func benchSubnet(b *testing.B) string {
	var r [2]byte
	if _, err := rand.Read(r[:]); err != nil {
		b.Fatal(err)
	}
	return fmt.Sprintf("10.%d.%d.0/24", 130+int(r[0])%10, r[1])
}

// freeAddr is a loopback address with a port free at the time of asking.
func freeAddr(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// agentMetrics reads underlay's resync count and Consul write count.
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
func peakRSS(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return kb
		}
	}
	return 0
}

// cpuTime is the CPU time a process's threads have run, summed from each
// thread's schedstat (nanoseconds, where /proc/PID/stat counts ticks of
// 10 ms); threads that ended are not counted, which Go programs rarely
// do. ok is false when the process cannot be read.
func cpuTime(pid int) (d time.Duration, ok bool) {
	if pid <= 0 {
		return 0, false
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, false
	}
	for _, t := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue // the thread ended
		}
		first, _, _ := strings.Cut(string(data), " ")
		ns, err := strconv.ParseInt(first, 10, 64)
		if err != nil {
			return 0, false
		}
		d += time.Duration(ns)
	}
	return d, true
}

// dockerdPID is the PID in dockerd's pid file, 0 when there is none.
func dockerdPID() int {
	data, err := os.ReadFile("/var/run/docker.pid")
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}

// cpuMeter measures the CPU time of named processes between its start and
// done.
type cpuMeter struct {
	pids   map[string]int
	before map[string]time.Duration
}

func startCPUMeter(pids map[string]int) *cpuMeter {
	m := &cpuMeter{pids: pids, before: map[string]time.Duration{}}
	for name, pid := range pids {
		if d, ok := cpuTime(pid); ok {
			m.before[name] = d
		}
	}
	return m
}

// done returns each process's CPU time since start, leaving out those it
// could not read at both ends.
func (m *cpuMeter) done() map[string]time.Duration {
	out := map[string]time.Duration{}
	for name, pid := range m.pids {
		before, ok := m.before[name]
		if !ok {
			continue
		}
		if d, ok := cpuTime(pid); ok {
			out[name] = d - before
		}
	}
	return out
}

// TestConsulSyncTimes reads Consul 1.8.7's own log lines (one of each kind
// near a sync), keeping each container's first sync.
func TestConsulSyncTimes(t *testing.T) {
	log := `    2026-12-02T07:25:50.851Z [INFO]  agent: Synced service: service=bench-6d971221:bench-6d971221.1.a69aweigobtrxwiyvxtq3vkj3:8080
    2026-12-02T07:25:50.860Z [DEBUG] agent: Service in sync: service=bench-6d971221:bench-6d971221.1.a69aweigobtrxwiyvxtq3vkj3:8080
    2026-12-02T07:25:59.132Z [INFO]  agent: Synced service: service=bench-6d971221:bench-6d971221.10.i7yzfmdevl3vo1qex1hdq62sy:8080
    2026-12-02T07:26:01.000Z [INFO]  agent: Synced service: service=bench-6d971221:bench-6d971221.1.a69aweigobtrxwiyvxtq3vkj3:8080
    2026-12-02T07:26:40.002Z [INFO]  agent: Deregistered service: service=bench-6d971221:bench-6d971221.10.i7yzfmdevl3vo1qex1hdq62sy:8080
`
	path := filepath.Join(t.TempDir(), "consul.log")
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	got := consulSyncTimes(path)
	want := map[string]time.Time{
		"bench-6d971221.1.a69aweigobtrxwiyvxtq3vkj3":  time.Date(2026, 12, 2, 7, 25, 50, 851e6, time.UTC),
		"bench-6d971221.10.i7yzfmdevl3vo1qex1hdq62sy": time.Date(2026, 12, 2, 7, 25, 59, 132e6, time.UTC),
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, w := range want {
		if !got[k].Equal(w) {
			t.Errorf("%s synced at %v, want %v", k, got[k], w)
		}
	}
}
