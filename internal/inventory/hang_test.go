package inventory

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/testconsul"
	"github.com/underlay/underlay/internal/testlog"
)

// TestPublishGivesUpOnConsulThatDoesNotAnswer: a Consul agent that
// accepts the connection and never answers held the inventory's publish,
// and with it the loop, for good: no change of the node's containers was
// published again. The publish now gives up within the loop's period
// (kvstore.WriteContext) with a deadline error naming it, and the next
// round runs.
func TestPublishGivesUpOnConsulThatDoesNotAnswer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := testlog.NewRecords(64)
	src := endpointsOnce{{IP: "10.0.0.5", Node: "n1", Network: "lan", Container: "a"}}
	go Run(ctx, src, consul.NewKV(testconsul.Hung(t)), "n1", "id10000000000000000000000", 20*time.Millisecond, slog.New(logs), nil)
	for _, round := range []string{"first round", "next round"} {
		testconsul.GivesUp(t, "the inventory's publish, "+round, "publish inventory of id10000000000000000000000", func() error { return logs.Err("inventory not published") })
	}
}
