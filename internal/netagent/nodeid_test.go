package netagent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestResolveIDDockerAnswers: Docker's answer wins and is recorded.
func TestResolveIDDockerAnswers(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, NodeIDFile), []byte("oldid\n"), 0o644)
	id, rec, err := ResolveID(context.Background(), func(context.Context) (string, error) { return "newid1", nil }, dir, time.Second, discard())
	if err != nil || id != "newid1" || rec {
		t.Fatalf("got %q recorded=%v err=%v, want newid1 from Docker", id, rec, err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, NodeIDFile))
	if strings.TrimSpace(string(b)) != "newid1" {
		t.Errorf("record holds %q, want newid1", b)
	}
}

// hangingDocker answers only when its context ends, as a dockerd
// restoring containers at boot answers no API call.
func hangingDocker(ctx context.Context) (string, error) {
	<-ctx.Done()
	return "", ctx.Err()
}

// TestResolveIDDockerHangs: at boot, with Docker not answering, the
// recorded identity is used at once (the plugin must answer dockerd).
func TestResolveIDDockerHangs(t *testing.T) {
	dir := t.TempDir()
	if err := recordNodeID(dir, "abc123"); err != nil {
		t.Fatal(err)
	}
	id, rec, err := ResolveID(context.Background(), hangingDocker, dir, 50*time.Millisecond, discard())
	if err != nil || id != "abc123" || !rec {
		t.Fatalf("got %q recorded=%v err=%v, want the recorded abc123", id, rec, err)
	}
}

// TestResolveIDDockerRefuses: Docker 29 refuses connections while it
// restores containers at boot (20.10 accepts and blocks): the recorded
// identity is used at once then too (it waited 21 s on 29 before).
func TestResolveIDDockerRefuses(t *testing.T) {
	dir := t.TempDir()
	if err := recordNodeID(dir, "abc123"); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	refuse := func(context.Context) (string, error) {
		calls.Add(1)
		return "", errors.New("dial unix /var/run/docker.sock: connect: connection refused")
	}
	id, rec, err := ResolveID(context.Background(), refuse, dir, time.Second, discard())
	if err != nil || id != "abc123" || !rec || calls.Load() != 1 {
		t.Fatalf("got %q recorded=%v err=%v after %d calls, want the recorded abc123 at once", id, rec, err, calls.Load())
	}
}

// TestResolveIDNoRecord: without a record it waits for Docker, however
// long Docker takes; a refused call is retried too.
func TestResolveIDNoRecord(t *testing.T) {
	var calls atomic.Int32
	ask := func(ctx context.Context) (string, error) {
		switch calls.Add(1) {
		case 1:
			return hangingDocker(ctx)
		case 2:
			return "", errors.New("connection refused")
		}
		return "late1", nil
	}
	id, rec, err := ResolveID(context.Background(), ask, t.TempDir(), 50*time.Millisecond, discard())
	if err != nil || id != "late1" || rec {
		t.Fatalf("got %q recorded=%v err=%v after %d calls, want late1 from Docker", id, rec, err, calls.Load())
	}
}

// TestResolveIDNoRecordSlowDocker: without a record, a dockerd slower
// than wait is waited for, not cut off and asked again forever (a TCG
// guest's agent never learnt its identity: CI of stop 19).
func TestResolveIDNoRecordSlowDocker(t *testing.T) {
	var calls atomic.Int32
	slow := func(ctx context.Context) (string, error) {
		calls.Add(1)
		select {
		case <-time.After(200 * time.Millisecond):
			return "slow1", nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	id, rec, err := ResolveID(ctx, slow, t.TempDir(), 50*time.Millisecond, discard())
	if err != nil || id != "slow1" || rec || calls.Load() != 1 {
		t.Fatalf("got %q recorded=%v err=%v after %d calls, want slow1 at the first call", id, rec, err, calls.Load())
	}
}

// TestResolveIDBadRecord: a record that is no node ID is ignored, never
// used as an identity.
func TestResolveIDBadRecord(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, NodeIDFile), []byte("../../etc/passwd\n"), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	id, _, err := ResolveID(ctx, hangingDocker, dir, 50*time.Millisecond, discard())
	if err == nil || id != "" {
		t.Fatalf("got %q, %v; want no identity from a bad record", id, err)
	}
	if _, err := readNodeID(dir); err == nil || !strings.Contains(err.Error(), "etc/passwd") {
		t.Errorf("bad record: %v, want an error naming its content", err)
	}
}

// TestResolveIDNotInSwarm: Docker answering "" (no swarm) is not an
// identity, and the record is not used while Docker answers.
func TestResolveIDNotInSwarm(t *testing.T) {
	dir := t.TempDir()
	recordNodeID(dir, "abc123")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	id, _, err := ResolveID(ctx, func(context.Context) (string, error) { return "", nil }, dir, 50*time.Millisecond, discard())
	if err == nil || id != "" {
		t.Fatalf("got %q, %v; want to wait for a swarm", id, err)
	}
}

// TestResolveIDDockerIgnoresDeadline: a Docker call that does not give up
// at its context's deadline (the client's version negotiation against a
// 20.10 restoring containers did not) still falls back on the record:
// ResolveID returns while the call is still blocked.
func TestResolveIDDockerIgnoresDeadline(t *testing.T) {
	dir := t.TempDir()
	if err := recordNodeID(dir, "abc123"); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	defer close(release)
	stuck := func(context.Context) (string, error) {
		<-release
		return "late", nil
	}
	id, rec, err := ResolveID(context.Background(), stuck, dir, 50*time.Millisecond, discard())
	if err != nil || id != "abc123" || !rec {
		t.Fatalf("got %q recorded=%v err=%v, want the recorded abc123", id, rec, err)
	}
}

// TestAskForAnswerWins: an answer that came in time is returned, never
// "did not answer" — the asking goroutine cancels the deadline's context
// once it has answered, which made select pick either case at random
// (TestResolveIDDockerAnswers failed so in a full run). The wait is an
// hour, never reached: with a second, a process held up that long on a
// loaded machine before the asking goroutine ran lost the answer to the
// deadline, rightly, and the test failed for it.
func TestAskForAnswerWins(t *testing.T) {
	var lost atomic.Int32
	done := make(chan struct{})
	for range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			for range 2000 {
				id, err := askFor(context.Background(), func(context.Context) (string, error) { return "id1", nil }, time.Hour)
				if err != nil || id != "id1" {
					lost.Add(1)
				}
			}
		}()
	}
	for range 8 {
		<-done
	}
	if n := lost.Load(); n != 0 {
		t.Fatalf("%d of 16000 answers given in time were lost", n)
	}
}

// TestResolveIDRefusesBadDockerAnswer: an answer from Docker that is no
// swarm node ID (a '/', a newline, an escape sequence) is refused, naming
// it quoted, and neither used nor recorded: the identity is a segment of
// every KV key the node writes (its reports, leases, facts). It was used
// as it came, only its recording refused.
func TestResolveIDRefusesBadDockerAnswer(t *testing.T) {
	dir := t.TempDir()
	recordNodeID(dir, "abc123")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	const bad = "x/../nodes/y\n\x1b[2J"
	id, _, err := ResolveID(ctx, func(context.Context) (string, error) { return bad, nil }, dir, 50*time.Millisecond, discard())
	if id != "" || err == nil || !strings.Contains(err.Error(), `"x/../nodes/y\n\x1b[2J"`) || ctx.Err() != nil {
		t.Fatalf("got %q, %v; want no identity, at once, and an error naming the answer quoted", id, err)
	}
	if rec, err := readNodeID(dir); rec != "abc123" || err != nil {
		t.Errorf("record %q, %v after a bad answer; want abc123 kept", rec, err)
	}
}
