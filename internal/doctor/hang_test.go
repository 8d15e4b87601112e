package doctor

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/testconsul"
	"github.com/underlay/underlay/internal/testlog"
)

// TestReportGivesUpOnConsulThatDoesNotAnswer: a Consul agent that accepts
// the connection and never answers held the doctor report's publish, and
// with it the loop, for good: no check ran again, and the report, the
// node's heartbeat on the dashboard, went stale. The publish now gives up
// within the loop's period (kvstore.WriteContext) with a deadline error
// naming it, and the next round runs.
func TestReportGivesUpOnConsulThatDoesNotAnswer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := testlog.NewRecords(64)
	checks := []Check{fixedCheck{[]Result{{Check: "x", Status: OK}}}}
	go RunPeriodically(ctx, consul.NewKV(testconsul.Hung(t)), "node1", "id10000000000000000000000", "v9", checks, 20*time.Millisecond, slog.New(logs), nil)
	for _, round := range []string{"first round", "next round"} {
		testconsul.GivesUp(t, "the doctor report's publish, "+round, "publish doctor report of node1", func() error { return logs.Err("doctor report not published") })
	}
}
