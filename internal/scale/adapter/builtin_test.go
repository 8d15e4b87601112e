package adapter

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/taskmetrics"
	"github.com/underlay/underlay/internal/testlog"
)

// TestBuiltinLeavesOutBadReports: the queries average the nodes' own
// reports only; a report left out is logged once while it stays the same,
// again when its problem changes, and a query that finds no task says how
// many were left out.
func TestBuiltinLeavesOutBadReports(t *testing.T) {
	ctx := context.Background()
	now := time.Now().UTC()
	report := func(node string, at time.Time, tasks int, cpu float64) string {
		return fmt.Sprintf(`{"node":%q,"at":%q,"services":{"web":{"tasks":%d,"cpu":%v,"memory":100}}}`, node, at.Format(time.RFC3339Nano), tasks, cpu)
	}
	kv := kvtest.New()
	kv.Put(ctx, taskmetrics.KVPrefix+"n1", []byte(report("n1", now, 2, 1.0)))
	kv.Put(ctx, taskmetrics.KVPrefix+"ghost", []byte(report("ghost", now.AddDate(1, 0, 0), 100, 0)))
	var buf testlog.Buffer
	b := NewBuiltin(kv, slog.New(slog.NewTextHandler(&buf, nil)))
	for range 2 {
		if cpu, err := b.Query(ctx, "underlay:cpu@web"); err != nil || cpu != 0.5 {
			t.Fatalf("cpu of web: %v, %v; want 0.5 from n1 alone", cpu, err)
		}
	}
	if n := strings.Count(buf.String(), "key="+taskmetrics.KVPrefix+"ghost"); n != 1 {
		t.Errorf("the report left out was logged %d times over two queries, want once:\n%s", n, buf.String())
	}
	kv.Put(ctx, taskmetrics.KVPrefix+"ghost", []byte("{"))
	if _, err := b.Query(ctx, "underlay:cpu@web"); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(buf.String(), "key="+taskmetrics.KVPrefix+"ghost"); n != 2 {
		t.Errorf("the report's new problem was not logged (%d lines):\n%s", n, buf.String())
	}
	if _, err := b.Query(ctx, "underlay:memory@api"); err == nil || !strings.Contains(err.Error(), "no agent reports tasks of api (1 report not counted") {
		t.Errorf("query of a service no node reports: %v, want it to say one report was left out", err)
	}
}
