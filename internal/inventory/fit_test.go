package inventory

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/testmetrics"
)

// TestRunFitsAnInventoryOverConsulsLimit: a node's inventory above
// Consul's value limit (512 KiB: a plain container's huge
// com.docker.swarm.service.name label, or a couple of thousand
// endpoints) was refused at every period, so the node's rows in
// `underlay ips` and on the dashboard stayed stale, or were never there.
// Now names above maxNameBytes are shortened first, losing no address;
// then, while it is still too large, entries are left out in fitOrder's
// order (those of no swarm task, the longest, then by network and
// address, the last first), as few as make it fit, each listed by its
// address only (left_out). The change is logged once and counted in
// underlay_inventory_entries_left_out and
// underlay_inventory_entries_shortened.
func TestRunFitsAnInventoryOverConsulsLimit(t *testing.T) {
	ip := func(net, i int) string { return fmt.Sprintf("10.%d.%d.%d", net, 100+i/100, 100+i%100) }
	plain := func(n int) endpointsOnce {
		var es endpointsOnce
		for i := range n {
			es = append(es, Entry{IP: ip(2, i), Node: "n1", Network: "lan", Container: fmt.Sprintf("plain%04d", i), ID: fmt.Sprintf("p%063d", i)})
		}
		return es
	}
	t.Run("a huge label", func(t *testing.T) {
		huge := strings.Repeat("x", 600<<10)
		src := append(plain(200), Entry{IP: ip(3, 0), Node: "n1", Network: "lan", Container: "labelled", ID: fmt.Sprintf("h%063d", 0), Service: huge})
		_, es, reg, warns := runFitted(t, src)
		if len(es) != len(src) {
			t.Errorf("%d entries published, want all %d", len(es), len(src))
		}
		// The huge label shortened, its address kept.
		for _, e := range es {
			if e.IP == ip(3, 0) && (len(e.Service) > 2*maxNameBytes || !strings.HasSuffix(e.Service, fmt.Sprintf("… (%d bytes)", len(huge)))) {
				t.Errorf("the labelled container's service %.80q (%d bytes); want it shortened", e.Service, len(e.Service))
			}
		}
		checkFitted(t, reg, warns, 0, 0, 1, "")
	})
	t.Run("thousands of endpoints", func(t *testing.T) {
		var src endpointsOnce
		for i := range 2000 {
			src = append(src, Entry{IP: ip(1, i), MAC: "02:42:0a:01:64:64", Node: "n1", Network: "lan", Container: fmt.Sprintf("web.%04d.t%024d", i, i),
				ID: fmt.Sprintf("%064d", i), Service: "web", Slot: fmt.Sprintf("%04d", i), Task: fmt.Sprintf("t%024d", i)})
		}
		src = append(src, plain(200)...)
		stored, es, reg, warns := runFitted(t, src)
		kept, listed := map[string]bool{}, map[string]bool{}
		for _, e := range es {
			kept[e.IP] = !e.LeftOut
			listed[e.IP] = true
		}
		if len(listed) != len(src) {
			t.Errorf("%d addresses listed, want all %d: those left out by address", len(listed), len(src))
		}
		for i := range 200 {
			if kept[ip(2, i)] {
				t.Fatalf("%s, a plain container's, kept while tasks' entries were left out", ip(2, i))
			}
		}
		// Tasks' entries, all of one size, left out from the last address.
		tasks := 0
		for _, e := range es {
			if !e.LeftOut {
				tasks++
			}
		}
		for i := range 2000 {
			if kept[ip(1, i)] != (i < tasks) {
				t.Fatalf("%s kept: %v; want the first %d tasks' entries kept", ip(1, i), kept[ip(1, i)], tasks)
			}
		}
		if tasks == 2000 {
			t.Fatal("no task's entry left out: the test's inventory fits without them")
		}
		// As few as make it fit: with the next task's entry whole, it
		// would not.
		next := src[tasks]
		next.NodeID = "id10000000000000000000000"
		whole := slices.Clone(stored)
		for i, e := range whole {
			if e.IP == next.IP {
				whole[i] = next
			}
		}
		if b, _ := json.Marshal(whole); len(b) <= kvstore.MaxValueSize {
			t.Errorf("%s left out, though the inventory fits with it (%d bytes)", next.IP, len(b))
		}
		checkFitted(t, reg, warns, 200+2000-tasks, 0, 0, ip(2, 199)+"@lan,"+ip(2, 198)+"@lan")
	})
}

// runFitted runs Run over src until its first Put, and returns the
// entries stored, as stored and as Load reads them, the registry of its
// metrics and the warnings it logged.
func runFitted(t *testing.T, src endpointsOnce) (stored, loaded []Entry, reg *prometheus.Registry, warns []string) {
	t.Helper()
	const id = "id10000000000000000000000"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kv := &putAttempts{KV: kvtest.New(), errs: make(chan error, 1)}
	publishFacts(ctx, t, kv.KV, id, "n1")
	var logs bytes.Buffer
	reg = prometheus.NewRegistry()
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, src, kv, "n1", id, time.Hour, slog.New(slog.NewTextHandler(&logs, nil)), NewMetrics(reg))
	}()
	err := <-kv.errs
	cancel()
	<-done
	if err != nil {
		t.Fatalf("inventory not stored: %v", err)
	}
	p, _, err := kv.Get(context.Background(), KVPrefix+id)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(p.Value, &stored); err != nil {
		t.Fatal(err)
	}
	loaded, bad, err := load(context.Background(), kv.KV)
	if err != nil || len(bad) != 0 {
		t.Fatalf("load: %v, bad %+v", err, bad)
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "level=WARN") {
			warns = append(warns, line)
		}
	}
	return stored, loaded, reg, warns
}

// checkFitted checks the gauges of entries left out and shortened, and
// that one warning said so, with how many were left unlisted, naming first (unless "") first.
func checkFitted(t *testing.T, reg *prometheus.Registry, warns []string, leftOut, unlisted, shortened int, first string) {
	t.Helper()
	for name, want := range map[string]int{"underlay_inventory_entries_left_out": leftOut, "underlay_inventory_entries_shortened": shortened} {
		if got := testmetrics.Gauge(t, reg, name); got != float64(want) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	want := fmt.Sprintf("left_out=%d unlisted=%d shortened=%d", leftOut, unlisted, shortened)
	if len(warns) != 1 || !strings.Contains(warns[0], want) || !strings.Contains(warns[0], "entries="+first) || len(warns[0]) > 2000 {
		t.Errorf("warnings %.3000q, want one with %q naming %q first, under 2000 bytes", warns, want, first)
	}
}

// putAttempts is a KV that tells each Put's outcome.
type putAttempts struct {
	*kvtest.KV
	errs chan error
}

func (k *putAttempts) Put(ctx context.Context, key string, value []byte) error {
	err := k.KV.Put(ctx, key, value)
	select {
	case k.errs <- err:
	default:
	}
	return err
}
