package soak_test

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/lab"
	"github.com/underlay/underlay/internal/netagent"
	"github.com/underlay/underlay/internal/soak"
	"github.com/underlay/underlay/internal/testenv"
)

// soakEnv is one run's settings. The defaults are CI's short run; `make
// soak` sets the long one through the environment.
type soakEnv struct {
	nodes, managers int
	// duration is how long faults keep being injected (at least one of
	// each kind is, whatever the duration).
	duration time.Duration
	seed     uint64
	faults   []soak.Fault
	// subnet is the lab's underlay (the cluster-IPAM network's parent,
	// eth1); pnSubnet the per-node network's, on a veth inside each node.
	subnet, pnSubnet netip.Prefix
	// maxReplicas is the largest service.
	maxReplicas int
	// converge bounds each fault's convergence, settle the final one.
	converge, settle time.Duration
	// nodeTimeout is the agents' --ipam-node-timeout.
	nodeTimeout time.Duration
}

// envConfig reads SOAK_NODES, SOAK_MANAGERS, SOAK_DURATION, SOAK_SEED,
// SOAK_FAULTS, SOAK_SUBNETS ("lab,per-node"), SOAK_MAX_REPLICAS,
// SOAK_CONVERGE and SOAK_SETTLE over CI's defaults.
func envConfig(t *testing.T) soakEnv {
	t.Helper()
	e := soakEnv{nodes: 3, managers: 1, duration: 2 * time.Minute, seed: 1, faults: soak.Faults,
		subnet: netip.MustParsePrefix("10.191.0.0/16"), pnSubnet: netip.MustParsePrefix("10.192.0.0/16"),
		maxReplicas: 4, converge: 2 * time.Minute, settle: 3 * time.Minute, nodeTimeout: 5 * time.Second}
	bad := func(k, v string, err error) { t.Fatalf("%s=%q: %v", k, v, err) }
	for k, p := range map[string]*int{"SOAK_NODES": &e.nodes, "SOAK_MANAGERS": &e.managers, "SOAK_MAX_REPLICAS": &e.maxReplicas} {
		if v := os.Getenv(k); v != "" {
			n, err := strconv.Atoi(v)
			if err == nil && n < 1 {
				err = fmt.Errorf("want at least 1")
			}
			if err != nil {
				bad(k, v, err)
			}
			*p = n
		}
	}
	for k, p := range map[string]*time.Duration{"SOAK_DURATION": &e.duration, "SOAK_CONVERGE": &e.converge, "SOAK_SETTLE": &e.settle} {
		if v := os.Getenv(k); v != "" {
			d, err := time.ParseDuration(v)
			if err == nil && d <= 0 {
				err = fmt.Errorf("want a positive duration")
			}
			if err != nil {
				bad(k, v, err)
			}
			*p = d
		}
	}
	if v := os.Getenv("SOAK_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			bad("SOAK_SEED", v, err)
		}
		e.seed = s
	}
	if v := os.Getenv("SOAK_FAULTS"); v != "" {
		fs, err := soak.ParseFaults(v)
		if err != nil {
			bad("SOAK_FAULTS", v, err)
		}
		e.faults = fs
	}
	if v := os.Getenv("SOAK_SUBNETS"); v != "" {
		a, b, ok := strings.Cut(v, ",")
		p1, err1 := netip.ParsePrefix(strings.TrimSpace(a))
		p2, err2 := netip.ParsePrefix(strings.TrimSpace(b))
		if !ok || err1 != nil || err2 != nil || p1.Bits() != 16 || p2.Bits() != 16 || p1.Overlaps(p2) {
			bad("SOAK_SUBNETS", v, fmt.Errorf("want two distinct /16s, the lab's and the per-node network's"))
		}
		e.subnet, e.pnSubnet = p1, p2
	}
	if e.nodes < 2 || e.nodes > lab.MaxNodes || e.managers > e.nodes {
		t.Fatalf("SOAK_NODES=%d SOAK_MANAGERS=%d: want 2 to %d nodes and no more managers than nodes", e.nodes, e.managers, lab.MaxNodes)
	}
	return e
}

// replay is the environment that replays this run's schedule: the seed
// and what else the schedule is drawn from.
func (e soakEnv) replay() string {
	s := fmt.Sprintf("SOAK_SEED=%d SOAK_NODES=%d SOAK_MANAGERS=%d SOAK_DURATION=%s", e.seed, e.nodes, e.managers, e.duration)
	if !slices.Equal(e.faults, soak.Faults) {
		fs := make([]string, len(e.faults))
		for i, f := range e.faults {
			fs[i] = string(f)
		}
		s += " SOAK_FAULTS=" + strings.Join(fs, ",")
	}
	return s
}

// departure is how long a node must be silent before the swarm leader
// reclaims its addresses: its agent's facts go stale (the agent counts
// them fresh for max(node timeout, netagent.StaleAfter)), then the node
// timeout runs. A freeze lasts longer than this, so the reclaim is tempted.
func (e soakEnv) departure() time.Duration {
	return max(e.nodeTimeout, netagent.StaleAfter) + e.nodeTimeout
}

// TestIntegrationSoak is issue 14's chaos run: a lab whose services scale
// at random through `underlay control` while plain containers come and go
// and a service rolls, with faults injected from a seeded schedule; no two
// running containers may ever share an IP on a network, and after each
// fault clears every invariant of soak.Check must hold again within a
// bound. It prints the report, with the seed and the summary line last.
func TestIntegrationSoak(t *testing.T) {
	testenv.Require(t)
	e := envConfig(t)
	started := time.Now()
	ctx := testenv.Context(t, e.duration+30*time.Minute)
	l := testenv.StartLab(t, lab.Config{Nodes: e.nodes, Managers: e.managers, UnderlaySubnet: e.subnet.String(),
		AgentArgs: []string{"--ipam-test-timers", "--ipam-leak-grace", "10s", "--ipam-sweep", "1s", "--ipam-node-timeout", e.nodeTimeout.String(),
			"--network-sync", "5s", "--resync", "20s", "--doctor-interval", "0", "--task-metrics", "0"}})
	t.Logf("lab up in %s", time.Since(started).Round(time.Second))
	c := newCluster(ctx, t, l, e)
	w := newWorkload(t, c, e)
	w.createServices(ctx)
	t.Logf("lab, networks and services ready in %s", time.Since(started).Round(time.Second))

	r := &runner{t: t, e: e, c: c, w: w, log: c.log, report: &soak.Report{Seed: e.seed, Nodes: e.nodes}}
	r.run(ctx)

	var b bytes.Buffer
	r.report.Write(&b, c.log)
	fmt.Fprint(os.Stdout, b.String())
	t.Logf("test time %s", time.Since(started).Round(time.Second))
	if n := len(r.report.Violations); n > 0 {
		t.Errorf("%d violations; replay with %s:\n%s", n, e.replay(), b.String())
	}
	if err := r.report.Unsampled(); err != nil {
		t.Errorf("%v: the run did not check that no two containers share an address; replay with %s", err, e.replay())
	}
}

// runner injects the faults, waits for each to converge and records it.
type runner struct {
	t      *testing.T
	e      soakEnv
	c      *cluster
	w      *workload
	log    *soak.Log
	report *soak.Report

	mu sync.Mutex // guards report.Violations, report.Samples and report.Listed
}

// violation records v, seen now.
func (r *runner) violation(v soak.Violation) {
	ev := r.c.event("VIOLATION %s", v)
	r.mu.Lock()
	r.report.Violations = append(r.report.Violations, soak.Found{At: ev.At, Violation: v})
	r.mu.Unlock()
}

func (r *runner) run(ctx context.Context) {
	sched, err := soak.NewScheduler(r.e.seed, r.e.faults, r.e.nodes, r.e.departure(), 2*time.Second, 6*time.Second)
	if err != nil {
		r.t.Fatal(err)
	}
	start := time.Now()
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var bg sync.WaitGroup
	bg.Add(2)
	go func() { defer bg.Done(); r.sample(sampleCtx) }()
	go func() { defer bg.Done(); r.w.run(sampleCtx) }()

	// The cluster must be sound before the first fault.
	if d, vs, ok := r.converge(ctx, r.e.settle, nil); !ok {
		for _, v := range vs {
			r.violation(soak.Violation{Invariant: "before_faults/" + v.Invariant, Detail: v.Detail})
		}
	} else {
		r.c.event("sound before any fault (%s)", d.Round(time.Millisecond))
	}
	for ctx.Err() == nil && (time.Since(start) < r.e.duration || len(r.report.Injected) < len(r.e.faults)) {
		in := sched.Next()
		if err := sleep(ctx, in.Gap); err != nil {
			break
		}
		r.report.Injected = append(r.report.Injected, in)
		r.c.event("inject %s", in)
		extra, err := r.inject(ctx, in)
		if err != nil {
			r.violation(soak.Violation{Invariant: "inject", Detail: fmt.Sprintf("%s: %v", in, err)})
			continue
		}
		r.c.event("cleared #%d %s", in.Seq, in.Fault)
		// Convergence is judged with the workload quiet: scaling in flight
		// would never let the cluster be still.
		r.w.pause()
		d, vs, ok := r.converge(ctx, r.e.converge, extra)
		r.w.resume()
		if ok {
			r.report.Converged(in.Fault, d)
			r.c.event("converged #%d %s in %s", in.Seq, in.Fault, d.Round(time.Millisecond))
			continue
		}
		for _, v := range vs {
			r.violation(soak.Violation{Invariant: v.Invariant, Detail: fmt.Sprintf("%s (not converged %s after #%d %s)", v.Detail, r.e.converge, in.Seq, in.Fault)})
		}
	}
	r.w.pause() // for good: the final settle
	r.c.event("faults over after %s; settling", time.Since(start).Round(time.Second))
	d, vs, ok := r.converge(ctx, r.e.settle, nil)
	if ok {
		r.c.event("settled in %s", d.Round(time.Millisecond))
	}
	for _, v := range vs {
		r.violation(soak.Violation{Invariant: v.Invariant, Detail: v.Detail + " (final settle)"})
	}
	stopSampling()
	r.w.resume()
	bg.Wait()
	r.report.Duration = time.Since(start)
}

// converge observes the cluster until soak.Check finds nothing and extra
// (when set) holds, or bound passes; it returns how long that took, or the
// last violations.
func (r *runner) converge(ctx context.Context, bound time.Duration, extra func(context.Context) error) (time.Duration, []soak.Violation, bool) {
	start := time.Now()
	said := start
	for {
		s, err := r.c.observe(ctx)
		var vs []soak.Violation
		if err != nil {
			vs = []soak.Violation{{Invariant: "unobservable", Detail: err.Error()}}
		} else {
			vs = soak.Check(s)
		}
		if len(vs) == 0 && extra != nil {
			if err := extra(ctx); err != nil {
				vs = []soak.Violation{{Invariant: "recovery", Detail: err.Error()}}
			}
		}
		if len(vs) == 0 {
			return time.Since(start), nil, true
		}
		if time.Since(start) > bound || ctx.Err() != nil {
			return 0, vs, false
		}
		if time.Since(said) >= 10*time.Second {
			// What it waits for, to read in the log around a slow one.
			said = time.Now()
			r.c.event("waiting (%d): %s", len(vs), vs[0])
		}
		if sleep(ctx, time.Second) != nil {
			return 0, vs, false
		}
	}
}

// sample lists the running containers every second and records every
// duplicate address that a second look confirms, and which nodes each
// sample could list: a node frozen or without dockerd cannot be, and a
// run in which a node never was has not checked it.
func (r *runner) sample(ctx context.Context) {
	seen := map[string]bool{}
	for ctx.Err() == nil {
		cs, listed, _ := r.c.listContainers(ctx)
		if ctx.Err() != nil {
			return
		}
		for _, v := range r.c.confirmDuplicates(ctx, cs) {
			if !seen[v.Detail] {
				seen[v.Detail] = true
				r.violation(v)
			}
		}
		r.mu.Lock()
		r.report.Sampled(r.c.hosts, listed)
		r.mu.Unlock()
		sleep(ctx, time.Second)
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// nodeName names the lab node of index i.
func nodeName(i int) string { return "node" + strconv.Itoa(i+1) }
