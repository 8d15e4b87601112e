package adapter

import (
	"context"
	"fmt"
	"log/slog"
	"math"
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
	kv.Put(ctx, taskmetrics.KVPrefix+"ghost", []byte(report("n1", now, 100, 0))) // a forged key
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

// TestBuiltinJudgesReportsByItsOwnClock: a report's age was its agent's
// stamp against control's clock. n1's clock runs 5 minutes behind: its
// reports, published every few seconds, all read as stale, so web's tasks
// on n1 were never counted. n2's agent died with its clock 50 s ahead: its
// last report counted for 50 s past MaxAge. A report is now as old as the
// time since control saw its stamp change; one first seen dated ahead
// counts only once it changes (see TestBuiltinCountsANodeWhoseClockIsAhead).
func TestBuiltinJudgesReportsByItsOwnClock(t *testing.T) {
	c := newClocked(t)
	c.publish("n0", c.now, 1, 0.2) // a node whose clock is right
	c.publish("n1", c.now.Add(-5*time.Minute), 1, 1)
	c.publish("n2", c.now.Add(50*time.Second), 1, 0.8)
	c.wantCPU(0.2, "n0's: n1's report, first seen, counts from its stamp; n2's, dated ahead, once it changes")
	c.now = c.now.Add(10 * time.Second)
	c.publish("n0", c.now, 1, 0.2)
	c.publish("n1", c.now.Add(-5*time.Minute), 1, 1)
	c.wantCPU(0.6, "n0's and n1's, published again; n2's never changed")
	c.now = c.now.Add(55 * time.Second) // n2's report, unchanged, was last seen changed 65 s ago
	c.publish("n0", c.now, 1, 0.2)
	c.publish("n1", c.now.Add(-5*time.Minute), 1, 1)
	c.wantCPU(0.6, "n0's and n1's: n2's agent stopped over a minute ago")
}

// TestBuiltinCountsANodeWhoseClockIsAhead: a report dated more than a
// minute ahead of control's clock was refused, so a node whose clock ran
// 2 minutes ahead had none of its tasks counted while its agent published
// every few seconds. Reports are dated by control's own clock (Hear): one
// first seen dated ahead counts once it changes, proof that its agent
// lives — a stray one dated a year ahead (100 idle tasks of web) never
// does — and stops counting MaxAge after it last changed, as any other.
func TestBuiltinCountsANodeWhoseClockIsAhead(t *testing.T) {
	c := newClocked(t)
	c.publish("ghost", c.now.AddDate(1, 0, 0), 100, 0)
	for i := range 3 {
		c.publish("n0", c.now, 1, 0.2)
		c.publish("n1", c.now.Add(2*time.Minute), 1, 0.6)
		if i == 0 {
			c.wantCPU(0.2, "n0's: n1's report, first seen dated ahead, counts once it changes; the ghost's never")
		} else {
			c.wantCPU(0.4, "n0's and n1's, whose clock is 2 minutes ahead")
		}
		c.now = c.now.Add(10 * time.Second)
	}
	c.now = c.now.Add(time.Minute) // n1's agent stopped: its report, unchanged, ages by this clock
	c.publish("n0", c.now, 1, 0.2)
	c.wantCPU(0.2, "n0's: n1's report unchanged for over a minute")
}

// clocked is a Builtin over a test KV, on a clock the test sets.
type clocked struct {
	t   *testing.T
	kv  *kvtest.KV
	b   *Builtin
	now time.Time
}

func newClocked(t *testing.T) *clocked {
	c := &clocked{t: t, kv: kvtest.New(), now: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)}
	c.b = NewBuiltin(c.kv, slog.New(slog.DiscardHandler))
	c.b.now = func() time.Time { return c.now }
	return c
}

// publish writes node's report of web, stamped at.
func (c *clocked) publish(node string, at time.Time, tasks int, cpu float64) {
	c.kv.Put(context.Background(), taskmetrics.KVPrefix+node,
		fmt.Appendf(nil, `{"node":%q,"at":%q,"services":{"web":{"tasks":%d,"cpu":%v,"memory":100}}}`, node, at.Format(time.RFC3339Nano), tasks, cpu))
}

// wantCPU checks web's CPU per replica now; why says which reports count.
func (c *clocked) wantCPU(want float64, why string) {
	c.t.Helper()
	if cpu, err := c.b.Query(context.Background(), "underlay:cpu@web"); err != nil || math.Abs(cpu-want) > 1e-9 {
		c.t.Errorf("at %s, cpu of web: %v, %v; want %v (%s)", c.now.Format(time.TimeOnly), cpu, err, want, why)
	}
}

// TestBuiltinCountsNodesOfOneName: two swarm nodes of one host name
// publish under their swarm node IDs, and both count; the report one of
// them kept under the name before its agent was upgraded does not (it
// would count its tasks twice).
func TestBuiltinCountsNodesOfOneName(t *testing.T) {
	c := newClocked(t)
	at := c.now.Format(time.RFC3339Nano)
	for key, value := range map[string]string{
		taskmetrics.IDPrefix + "ida0000000000000000000000": `{"node":"n1","node_id":"ida0000000000000000000000","at":%q,"services":{"web":{"tasks":1,"cpu":0.2}}}`,
		taskmetrics.IDPrefix + "idb0000000000000000000000": `{"node":"n1","node_id":"idb0000000000000000000000","at":%q,"services":{"web":{"tasks":1,"cpu":0.6}}}`,
		taskmetrics.KVPrefix + "n1":                        `{"node":"n1","at":%q,"services":{"web":{"tasks":100,"cpu":0}}}`,
	} {
		c.kv.Put(context.Background(), key, fmt.Appendf(nil, value, at))
	}
	c.wantCPU(0.4, "ida0000000000000000000000's and idb0000000000000000000000's, not the name's")
}
