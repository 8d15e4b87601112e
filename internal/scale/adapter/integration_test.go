package adapter_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/scale/adapter"
	"github.com/underlay/underlay/internal/testenv"
)

// TestIntegrationKVTokensAndAlertLog: tokens in a Consul key are followed
// as the key changes, and the alert log remembers firings across clients.
func TestIntegrationKVTokensAndAlertLog(t *testing.T) {
	testenv.Require(t)
	consul := testenv.StartConsul(t)
	kv := consul.Client().KV()
	const key = "underlay/scale/tokens"
	put := func(v string) {
		t.Helper()
		if _, err := kv.Put(&api.KVPair{Key: key, Value: []byte(v)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	put("# ops\nalpha\n")
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	tokens := adapter.NewKVTokens(consul.Client(), key, quiet)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tokens.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	testenv.Eventually(t, 5*time.Second, func() (bool, string) { return tokens.Valid("alpha"), "alpha not valid" })
	put("beta\n")
	testenv.Eventually(t, 5*time.Second, func() (bool, string) {
		return tokens.Valid("beta") && !tokens.Valid("alpha"), "alpha still valid or beta not yet"
	})
	if _, err := kv.Delete(key, nil); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() (bool, string) { return !tokens.Valid("beta"), "beta still valid after the key was deleted" })

	qctx := testenv.Context(t, 10*time.Second)
	log1 := adapter.NewKVAlertLog(consul.Client(), "", 0, quiet)
	log2 := adapter.NewKVAlertLog(consul.Client(), "", 0, quiet)
	if seen, err := log2.Seen(qctx, "fp@t"); err != nil || seen {
		t.Fatalf("Seen before Mark = %v, %v", seen, err)
	}
	if err := log1.Mark(qctx, "fp@t", "web", time.Now()); err != nil {
		t.Fatal(err)
	}
	if seen, err := log2.Seen(qctx, "fp@t"); err != nil || !seen {
		t.Fatalf("Seen after Mark by another client = %v, %v", seen, err)
	}
	// Entries past the retention are pruned by Run, a part of the log at
	// a time, whether firings come or not; what is no entry of the log
	// stays (before, it was deleted unread).
	stray := adapter.DefaultAlertPrefix + "/not-a-firing"
	if _, err := kv.Put(&api.KVPair{Key: stray, Value: []byte("kept by someone else")}, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Delete(stray, nil) })
	old := adapter.NewKVAlertLog(consul.Client(), "", time.Hour, quiet)
	if err := old.Mark(qctx, "old@t", "web", time.Now().Add(-2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	adapter.SetPruneEvery(old, time.Millisecond) // a round of 256 parts in well under a second
	rctx, stop := context.WithCancel(qctx)
	stopped := make(chan struct{})
	go func() { old.Run(rctx); close(stopped) }()
	testenv.Eventually(t, 8*time.Second, func() (bool, string) {
		seen, err := old.Seen(qctx, "old@t")
		return err == nil && !seen, fmt.Sprintf("an entry older than the retention still there (err %v)", err)
	})
	stop()
	<-stopped
	if seen, err := old.Seen(qctx, "fp@t"); err != nil || !seen {
		t.Errorf("an entry within the retention: seen %v, %v; want it kept", seen, err)
	}
	if p, _, err := kv.Get(stray, nil); err != nil || p == nil || string(p.Value) != "kept by someone else" {
		t.Errorf("a value under the prefix that is no firing: %v, %v; want it kept", p, err)
	}
}
