package register_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/dockerhost"
	"github.com/underlay/underlay/internal/register"
	"github.com/underlay/underlay/internal/testenv"
	"github.com/underlay/underlay/internal/testlog"
)

// harness is one integration scenario: the real dockerd, a private Consul
// dev agent and an in-process underlay agent that sees only the containers
// labelled for this test.
type harness struct {
	t      *testing.T
	docker *client.Client
	consul *testenv.Consul
	api    *api.Client
	id     string // test-unique label value and name prefix
	node   string
	label  map[string]string

	logs testlog.Buffer

	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	testenv.Require(t)
	h := &harness{t: t, docker: testenv.Docker(t), consul: testenv.StartConsul(t), id: testenv.ID(t)}
	h.api = h.consul.Client()
	h.node = "it-" + h.id
	h.label = map[string]string{"io.underlay.test": h.id}
	// What the agent said is the first thing to read when a test fails.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", h.logText())
		}
	})
	return h
}

// Write makes the harness the agent's log sink.
func (h *harness) Write(p []byte) (int, error) { return h.logs.Write(p) }

func (h *harness) logText() string { return h.logs.String() }

// startAgent runs the agent in-process until stopAgent or the test's end.
func (h *harness) startAgent(mutate func(*register.Config)) {
	h.t.Helper()
	cfg := register.Config{
		Policy:     register.Policy{Node: h.node, HostIP: "127.0.0.1", Labels: map[string]string{"io.underlay.test": h.id}},
		Resync:     time.Minute,
		DriftCheck: 500 * time.Millisecond,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	h.reg = prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(h, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cat := consul.NewCatalog(h.api)
	cat.Timeout = 2 * time.Second
	a, err := register.NewAgent(cfg, dockerhost.NewSource(h.docker), cat, log, h.reg)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- a.Run(ctx) }()
	h.t.Cleanup(h.stopAgent)
}

func (h *harness) stopAgent() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	if err := <-h.done; err != nil {
		h.t.Errorf("agent returned %v", err)
	}
	h.cancel = nil
}

// labels returns the test's selector label plus extra.
func (h *harness) labels(extra map[string]string) map[string]string {
	out := map[string]string{"io.underlay.test": h.id}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

// services returns the agent services carrying this test's node marker.
func (h *harness) services() map[string]*api.AgentService {
	h.t.Helper()
	svcs, err := h.api.Agent().ServicesWithFilter(fmt.Sprintf("Meta.underlay_node == %q", h.node))
	if err != nil {
		return nil
	}
	return svcs
}

// waitServices waits until exactly the given service IDs are registered.
func (h *harness) waitServices(timeout time.Duration, want ...string) map[string]*api.AgentService {
	h.t.Helper()
	want = slices.Sorted(slices.Values(want)) // not the caller's slice
	var got map[string]*api.AgentService
	testenv.Eventually(h.t, timeout, func() (bool, string) {
		got = h.services()
		ids := make([]string, 0, len(got))
		for id := range got {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		return strings.Join(ids, ",") == strings.Join(want, ","), fmt.Sprintf("services %v, want %v", ids, want)
	})
	return got
}

// writes is the agent's count of Consul writes so far.
// resyncs is how many full resyncs the agent finished.
func (h *harness) resyncs() uint64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "underlay_register_resync_duration_seconds" {
			var n uint64
			for _, m := range mf.GetMetric() {
				n += m.GetHistogram().GetSampleCount()
			}
			return n
		}
	}
	return 0
}

// waitResyncs waits until the agent finished n more full resyncs: what a
// negative assertion waits for, since a resync would have made the change.
func (h *harness) waitResyncs(n uint64, timeout time.Duration) {
	h.t.Helper()
	want := h.resyncs() + n
	testenv.Eventually(h.t, timeout, func() (bool, string) {
		got := h.resyncs()
		return got >= want, fmt.Sprintf("%d resyncs finished, want %d", got, want)
	})
}

func (h *harness) writes() float64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() == "underlay_register_consul_writes_total" {
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

// counter reads one series of a labelled counter of the agent's, by the
// value of its one label.
func (h *harness) counter(name, label string) float64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if lp := m.GetLabel(); len(lp) == 1 && lp[0].GetValue() == label {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
