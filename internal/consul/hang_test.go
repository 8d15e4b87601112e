package consul

import (
	"context"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/testconsul"
)

// TestBlockingReadsGiveUpOnConsulThatDoesNotAnswer: a blocking read's wait
// is a parameter Consul honours, not a deadline of the client's own; a
// Consul agent that accepts the read and never answers held KV.Wait (the
// spares keeper's watch) and every KV.Watch (the network sync's and the
// IPAM plugin's wake-ups) for good. Each is given up after its wait,
// Consul's jitter on it and kvstore.WriteWait for the answer (here with a
// short wait: the bound is a minute and some).
func TestBlockingReadsGiveUpOnConsulThatDoesNotAnswer(t *testing.T) {
	kv := &KV{api: testconsul.Hung(t), wait: 50 * time.Millisecond}
	testconsul.GivesUp(t, "a blocking read of one key", "kv wait underlay/x", func() error {
		_, _, _, err := kv.Wait(context.Background(), "underlay/x", 7)
		return err
	})

	// A watch sends nothing while its reads fail: a read given up shows as
	// the next one the hung agent receives.
	hung, requests := testconsul.Counted(t)
	kv = &KV{api: hung, wait: 50 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kv.Watch(ctx, "underlay/")
	deadline := time.After(time.Minute)
	for n := 0; n < 2; n++ {
		select {
		case <-requests:
		case <-deadline:
			t.Fatalf("the watch still in read %d after a minute of a Consul agent that does not answer", n)
		}
	}
}
