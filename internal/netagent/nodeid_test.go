package netagent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/testfile"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// swarmID pads s with zeros to a swarm node ID's 25 characters (s is
// lowercase letters and digits), as the earliest swarmkit padded its IDs.
func swarmID(s string) string { return s + strings.Repeat("0", netspec.NodeIDLen-len(s)) }

// TestResolveIDDockerAnswers: Docker's answer wins and is recorded.
func TestResolveIDDockerAnswers(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, NodeIDFile), []byte(swarmID("oldid")+"\n"), 0o644)
	newID := swarmID("newid1")
	id, rec, err := ResolveID(context.Background(), func(context.Context) (string, error) { return newID, nil }, dir, time.Second, discard())
	if err != nil || id != newID || rec {
		t.Fatalf("got %q recorded=%v err=%v, want %s from Docker", id, rec, err, newID)
	}
	b, _ := os.ReadFile(filepath.Join(dir, NodeIDFile))
	if strings.TrimSpace(string(b)) != newID {
		t.Errorf("record holds %q, want %s", b, newID)
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
	if err := recordNodeID(dir, swarmID("abc123")); err != nil {
		t.Fatal(err)
	}
	id, rec, err := ResolveID(context.Background(), hangingDocker, dir, 50*time.Millisecond, discard())
	if err != nil || id != swarmID("abc123") || !rec {
		t.Fatalf("got %q recorded=%v err=%v, want the recorded abc123", id, rec, err)
	}
}

// TestResolveIDDockerRefuses: Docker 29 refuses connections while it
// restores containers at boot (20.10 accepts and blocks): the recorded
// identity is used at once then too (it waited 21 s on 29 before).
func TestResolveIDDockerRefuses(t *testing.T) {
	dir := t.TempDir()
	if err := recordNodeID(dir, swarmID("abc123")); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	refuse := func(context.Context) (string, error) {
		calls.Add(1)
		return "", errors.New("dial unix /var/run/docker.sock: connect: connection refused")
	}
	id, rec, err := ResolveID(context.Background(), refuse, dir, time.Second, discard())
	if err != nil || id != swarmID("abc123") || !rec || calls.Load() != 1 {
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
		return swarmID("late1"), nil
	}
	id, rec, err := ResolveID(context.Background(), ask, t.TempDir(), 50*time.Millisecond, discard())
	if err != nil || id != swarmID("late1") || rec {
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
			return swarmID("slow1"), nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	id, rec, err := ResolveID(ctx, slow, t.TempDir(), 50*time.Millisecond, discard())
	if err != nil || id != swarmID("slow1") || rec || calls.Load() != 1 {
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
	recordNodeID(dir, swarmID("abc123"))
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
	if err := recordNodeID(dir, swarmID("abc123")); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	defer close(release)
	stuck := func(context.Context) (string, error) {
		<-release
		return swarmID("late"), nil
	}
	id, rec, err := ResolveID(context.Background(), stuck, dir, 50*time.Millisecond, discard())
	if err != nil || id != swarmID("abc123") || !rec {
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
				id, err := askFor(context.Background(), func(context.Context) (string, error) { return swarmID("id1"), nil }, time.Hour)
				if err != nil || id != swarmID("id1") {
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
	recordNodeID(dir, swarmID("abc123"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	const bad = "x/../nodes/y\n\x1b[2J"
	id, _, err := ResolveID(ctx, func(context.Context) (string, error) { return bad, nil }, dir, 50*time.Millisecond, discard())
	if id != "" || err == nil || !strings.Contains(err.Error(), `"x/../nodes/y\n\x1b[2J"`) || ctx.Err() != nil {
		t.Fatalf("got %q, %v; want no identity, at once, and an error naming the answer quoted", id, err)
	}
	if rec, err := readNodeID(dir); rec != swarmID("abc123") || err != nil {
		t.Errorf("record %q, %v after a bad answer; want abc123 kept", rec, err)
	}
}

// TestResolveIDTakesOnlyIDsEveryReaderTakes: the identity is a segment of
// every key the node writes, and readers (the doctor's, task metrics')
// take only swarm node IDs (netspec.CheckNodeID: 25 lowercase letters and
// digits). An answer from Docker that is not one is refused, naming it
// and that it is Docker's, and neither used nor recorded; a record that
// is not one is not served as the identity, its error naming the file
// and what it holds.
func TestResolveIDTakesOnlyIDsEveryReaderTakes(t *testing.T) {
	good := swarmID("abc123")
	for _, tt := range []struct{ name, id, why string }{
		{"capitals", "1BCEF6UTIXB0L0CA7GXUIVSJ0", `'B' is not allowed`},
		{"64 characters", strings.Repeat("a", 64), "64 bytes, want 25"},
		{"too short", "abc123", "6 bytes, want 25"},
	} {
		t.Run("Docker answers "+tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := recordNodeID(dir, good); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			id, _, err := ResolveID(ctx, func(context.Context) (string, error) { return tt.id, nil }, dir, 50*time.Millisecond, discard())
			if id != "" || err == nil || ctx.Err() != nil {
				t.Fatalf("got %q, %v; want no identity, at once, and an error", id, err)
			}
			for _, want := range []string{"Docker", fmt.Sprintf("%q", tt.id), tt.why} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q; want it to say %q", err, want)
				}
			}
			if rec, err := readNodeID(dir); rec != good || err != nil {
				t.Errorf("record %q, %v after a bad answer; want %s kept", rec, err, good)
			}
		})
		t.Run("recorded "+tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, NodeIDFile)
			if err := os.WriteFile(path, []byte(tt.id+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			rec, err := readNodeID(dir)
			if rec != "" || err == nil {
				t.Fatalf("readNodeID: %q, %v; want the record refused", rec, err)
			}
			for _, want := range []string{path, fmt.Sprintf("%q", tt.id), tt.why} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q; want it to say %q", err, want)
				}
			}
			if err := recordNodeID(dir, tt.id); err == nil || !strings.Contains(err.Error(), tt.why) {
				t.Errorf("recordNodeID(%q): %v; want it refused, saying %q", tt.id, err, tt.why)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			if id, _, err := ResolveID(ctx, hangingDocker, dir, 50*time.Millisecond, discard()); id != "" || err == nil {
				t.Errorf("Docker silent: got %q, %v; want the record not served", id, err)
			}
		})
	}
}

// TestResolveIDReplacesARefusedRecordLoudly: an agent whose record holds
// an identity no reader takes (recorded under the old, looser rule: a
// capital letter, another length) does not serve it, and once Docker
// answers, records Docker's answer in its place, saying what the record
// held and where: the old content is not replaced without a word.
func TestResolveIDReplacesARefusedRecordLoudly(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, NodeIDFile)
	const old = "1BCEF6UTIXB0L0CA7GXUIVSJ0"
	if err := os.WriteFile(path, []byte(old+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	const want = "1bcef6utixb0l0ca7gxuivsj0"
	id, rec, err := ResolveID(context.Background(), func(context.Context) (string, error) { return want, nil }, dir, time.Second, log)
	if err != nil || id != want || rec {
		t.Fatalf("got %q recorded=%v err=%v, want %s from Docker", id, rec, err, want)
	}
	if got, err := readNodeID(dir); got != want || err != nil {
		t.Errorf("record %q, %v; want Docker's %s", got, err, want)
	}
	for _, w := range []string{"level=WARN", "replac", path, old, want} {
		if !strings.Contains(logs.String(), w) {
			t.Errorf("logs:\n%s\nwant them to say %q (the refused record replaced, what it held, where)", logs.String(), w)
		}
	}
}

// TestNodeIDRecordNotAFile: a node-id record that is a named pipe had the
// agent's start wait for ever for a writer in reading it (and the IPAM
// plugin, which answers dockerd as the recorded identity at boot, with
// it); one that is a link to an endless device was read without end.
// Only a regular file is read now, and no more of it than an ID with
// room for white space; anything else is an error naming the record, and
// is ignored as any bad record is.
func TestNodeIDRecordNotAFile(t *testing.T) {
	t.Run("named pipe", func(t *testing.T) {
		dir := t.TempDir()
		testfile.RefusesFIFO(t, "a node-id record", filepath.Join(dir, NodeIDFile), func() error {
			_, err := readNodeID(dir)
			return err
		})
	})
	t.Run("long", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, NodeIDFile)
		if err := os.WriteFile(path, bytes.Repeat([]byte("a"), 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := readNodeID(dir)
		if err == nil || !strings.Contains(err.Error(), path) || len(err.Error()) > 1024 {
			t.Errorf("a record of 1 MiB: %.200v (%d bytes); want a short error naming %s", err, len(fmt.Sprint(err)), path)
		}
	})
}

// TestNodeIDRecordWritten: the record holds the ID and a newline, and no
// temporary file is left beside it; replaced by another ID, likewise.
// (That it is synced to disk before and after its rename, against a
// power loss, no unit test can show.)
func TestNodeIDRecordWritten(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state") // made by recordNodeID
	for _, id := range []string{swarmID("abc123"), swarmID("def456")} {
		if err := recordNodeID(dir, id); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(filepath.Join(dir, NodeIDFile)); err != nil || string(b) != id+"\n" {
			t.Errorf("record %q, %v; want %q", b, err, id+"\n")
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 1 || entries[0].Name() != NodeIDFile {
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			t.Errorf("state directory holds %q; want only %s", names, NodeIDFile)
		}
	}
}
