package taskmetrics

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
// accepts the connection and never answers held the publish, and with it
// the loop, for good: no round more was sampled or published. The
// publish now gives up within the loop's period (kvstore.WriteContext)
// with a deadline error naming it, and the next round runs.
func TestPublishGivesUpOnConsulThatDoesNotAnswer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := testlog.NewRecords(64)
	src := &scriptedSource{rounds: [][]Sample{{{ContainerID: "c1", Service: "web", At: time.Now(), Memory: 1}}}}
	go Run(ctx, src, consul.NewKV(testconsul.Hung(t)), "n1", "id10000000000000000000000", 20*time.Millisecond, slog.New(logs), nil, nil)
	for _, round := range []string{"first round", "next round"} {
		testconsul.GivesUp(t, "the task metrics' publish, "+round, "publish task metrics of n1", func() error { return logs.Err("task metrics not published") })
	}
}

// TestPublishedGivenUpOnConsulThatDoesNotAnswer: what runs once the
// first report is stored (the agent's retirement of the report kept
// under the node's name, reads and a delete in Consul) is bounded as the
// publish is: one that hangs until its context ends is given up, and the
// next round runs.
func TestPublishedGivenUpOnConsulThatDoesNotAnswer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	puts := make(chan struct{}, 8)
	kv := &recordingKV{put: func() {
		select {
		case puts <- struct{}{}:
		default:
		}
	}}
	gaveUp := make(chan error, 1)
	published := func(ctx context.Context) {
		<-ctx.Done() // a Consul agent that never answers
		gaveUp <- ctx.Err()
	}
	src := &scriptedSource{rounds: [][]Sample{{{ContainerID: "c1", Service: "web", At: time.Now(), Memory: 1}}}}
	go Run(ctx, src, kv, "n1", "id10000000000000000000000", 20*time.Millisecond, slog.New(slog.DiscardHandler), nil, published)
	testconsul.GivesUp(t, "the retirement of the report under the node's name", "deadline", func() error {
		<-puts
		return <-gaveUp
	})
	select {
	case <-puts: // the next round published
	case <-time.After(time.Minute):
		t.Fatal("no round published after the first one's retirement hung")
	}
}
