package lab

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
)

// exitingDockerd is a provider whose first dockerd exits before it
// answers (as one does when its containerd takes longer to start than it
// waits) and whose next one answers.
type exitingDockerd struct {
	provider // the methods ensureDockerd does not call
	host     string
	logs     string

	mu       sync.Mutex
	starts   int
	running  bool
	answered bool
}

func (f *exitingDockerd) Layout(*plan, *nodePlan) layout {
	return layout{DockerHost: f.host, LogDir: f.logs}
}

func (f *exitingDockerd) Start(context.Context, *plan, *nodePlan, daemon) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.starts++
	// The first exits at once; the second runs and answers.
	f.running, f.answered = f.starts > 1, f.starts > 1
	return nil
}

func (f *exitingDockerd) Running(context.Context, *plan, *nodePlan, string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.running
}

// TestDockerdStartedAgainAfterExit: a VM node's dockerd that gave up on
// its containerd ("timeout waiting for containerd to start") exited, and
// the lab waited its three minutes for it to answer, then failed `lab up`
// (TestIntegrationVMPackage under load). Before: "node node1: dockerd not
// answering after 1m0s", one start.
func TestDockerdStartedAgainAfterExit(t *testing.T) {
	f := &exitingDockerd{logs: t.TempDir()}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		ok := f.answered
		f.mu.Unlock()
		if !ok {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("API-Version", "1.41")
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	f.host = "tcp://" + srv.Listener.Addr().String()
	p, err := newPlan(t.TempDir(), Config{Name: "demo", Nodes: 1, UnderlayBin: "/usr/bin/underlay"}.withDefaults(), netip.MustParsePrefix("172.31.4.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	p.prov = f
	if err := p.ensureDockerd(context.Background(), &p.nodes[0]); err != nil {
		t.Fatalf("ensureDockerd: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.starts != 2 {
		t.Errorf("dockerd started %d times, want 2 (once more after it exited)", f.starts)
	}
}
