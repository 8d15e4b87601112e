// Package testhang checks that a call to a peer that accepts it and never
// answers ends with a deadline error naming it: the one check behind
// testdocker.GivesUp and testconsul.GivesUp. It imports only the standard
// library.
package testhang

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// GivesUp checks that call (what name names), sent to peer (a dockerd, a
// Consul agent) that never answers, ends with a deadline error naming
// want. It waits a minute at most: not a measure of speed, the hang is
// what is tested.
func GivesUp(t testing.TB, peer, name, want string, call func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- call() }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s against %s that does not answer: %v, want a deadline exceeded naming %q", name, peer, err, want)
		}
	case <-time.After(time.Minute):
		t.Fatalf("%s still waiting after a minute for %s that does not answer", name, peer)
	}
}
