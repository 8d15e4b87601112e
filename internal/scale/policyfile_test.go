package scale

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/testfile"
)

func TestParsePolicyFile(t *testing.T) {
	f, err := ParsePolicyFile([]byte(`
services:
  web:
    min: 2
    max: 10
    step-up: 50%
    allow-down: true
  api:
    underlay.scale.max: 3
`))
	if err != nil {
		t.Fatal(err)
	}
	web := f.apply(Service{Name: "web", Labels: map[string]string{LabelMax: "4", "other": "x"}})
	p, err := ParsePolicy(web)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Enabled || p.Min != 2 || p.Max != 10 || !p.AllowDown || web["other"] != "x" {
		t.Errorf("web policy %+v from %v: want enabled, 2..10, allow-down, the file winning over labels", p, web)
	}
	if p, _ := ParsePolicy(f.apply(Service{Name: "api"})); p.Max != 3 {
		t.Errorf("api max %d, want 3 (prefixed key accepted)", p.Max)
	}
	if got := f.apply(Service{Name: "unlisted", Labels: map[string]string{"a": "b"}}); len(got) != 1 {
		t.Errorf("an unlisted service's labels changed: %v", got)
	}

	for _, tt := range []struct{ doc, want string }{
		{"services:\n  web:\n    min: 5\n    max: 2\n", "web"},
		{"services:\n  web:\n    max: lots\n", `"lots"`},
		{"services:\n  web:\n    nonsense: 1\n", "nonsense"},
		{"services:\n  web:\n    max: [1, 2]\n", "max: want a single value"},
		{"servics:\n  web: {}\n", "servics"},
		{"services:\n  web:\n    cooldown-up: 10000000000\n", `service web: bad scaling label: underlay.scale.cooldown-up="10000000000": above the most, 24h0m0s`},
		{"services:\n  web:\n    orbiter.cooldown: 10000000000\n", `underlay.scale.orbiter.cooldown`},
		{"services:\n  web:\n    max: 1e19\n", `underlay.scale.max="1e+19": not a whole number`},
		{"services:\n  web:\n    max: 99999999999999999999\n", `underlay.scale.max=`},
		{"services:\n  web:\n    stabilization-down: 999999h\n", `above the most`},
	} {
		if _, err := ParsePolicyFile([]byte(tt.doc)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParsePolicyFile(%q) = %v, want an error naming %q", tt.doc, err, tt.want)
		}
	}
}

// The file's enabled wins over the service's switch labels, as it does over
// every other label: a file entry turns a service labelled orbiter=false on,
// and one saying enabled: false turns a labelled service off.
func TestPolicyFileSwitchWinsOverLabels(t *testing.T) {
	f, err := ParsePolicyFile([]byte("services:\n  web:\n    max: 4\n  off:\n    enabled: false\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, labels := range []map[string]string{
		{LabelOrbiter: "false"},
		{LabelEnabled: "false"},
		{LabelOrbiter: "false", LabelEnabled: "false"},
		{LabelOrbiter: "maybe"},
	} {
		merged := f.apply(Service{Name: "web", Labels: labels})
		p, err := ParsePolicy(merged)
		if err != nil || !p.Enabled || p.Max != 4 || !OptedIn(merged) {
			t.Errorf("web labelled %v, listed in the file: policy %+v, err %v, opted in %v; want enabled by the file, max 4",
				labels, p, err, OptedIn(merged))
		}
	}
	for _, labels := range []map[string]string{
		{LabelOrbiter: "true"},
		{LabelEnabled: "true"},
	} {
		merged := f.apply(Service{Name: "off", Labels: labels})
		if p, err := ParsePolicy(merged); err != nil || p.Enabled || OptedIn(merged) {
			t.Errorf("off labelled %v, enabled: false in the file: policy %+v, err %v; want disabled by the file", labels, p, err)
		}
	}
}

// syncBuffer is a log destination tests read while the code logs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestPolicyFileFollowed: an edit of --policy-file counts while control
// runs, as every other file it is given: a changed bound holds from the
// next request, a service only the file enabled stops being autoscaled
// when its entry goes, and an edit refused (a bad value, a half-written
// file) keeps the last good policies, logged naming the bad value.
func TestPolicyFileFollowed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policies.yaml")
	write := func(doc string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("services:\n  web:\n    max: 5\n  api:\n    max: 3\n")
	first, err := ParsePolicyFile([]byte("services:\n  web:\n    max: 5\n  api:\n    max: 3\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := newAPIEnv(t, Config{Policies: first}, svc("web", 1), svc("api", 1))
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		e.ctrl.FollowPolicyFile(ctx, path, 10*time.Millisecond, slog.New(slog.NewTextHandler(logs, nil)))
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	policyOf := func(name string) (Policy, bool) {
		for _, s := range e.ctrl.Services() {
			if s.Service == name {
				return s.Policy, true
			}
		}
		return Policy{}, false
	}
	waitFor(t, func() bool { p, ok := policyOf("web"); return ok && p.Max == 5 })

	write("services:\n  web:\n    max: 2\n")
	waitFor(t, func() bool { p, ok := policyOf("web"); _, api := policyOf("api"); return ok && p.Max == 2 && !api })
	for range 3 {
		e.do(t, "POST", "/v1/underlay/services/web/scale", testToken, `{"direction":"up"}`)
	}
	if got := e.swarm.replicas("web"); got != 2 {
		t.Errorf("web has %d replicas, want 2: the edited maximum", got)
	}
	if code, body := e.do(t, "POST", "/v1/underlay/services/api/scale", testToken, `{"direction":"up"}`); code != 404 {
		t.Errorf("api, gone from the file: %d %s, want 404", code, body)
	}

	write("services:\n  web:\n    max: lots\n")
	waitFor(t, func() bool { return strings.Contains(logs.String(), `underlay.scale.max=\"lots\"`) })
	if p, ok := policyOf("web"); !ok || p.Max != 2 {
		t.Errorf("web policy %+v after a bad edit, want the last good one (max 2)", p)
	}
	write("services:\n  web:\n    max: 4\n")
	waitFor(t, func() bool { p, ok := policyOf("web"); return ok && p.Max == 4 })
}

// TestPolicyFileSettingGivenTwice: one setting written both ways —
// "min" and "underlay.scale.min" — is refused naming both, instead of
// one of them winning by the order a Go map happens to be walked in (a
// different minimum from one start of control to the next).
func TestPolicyFileSettingGivenTwice(t *testing.T) {
	doc := []byte("services:\n  web:\n    min: 2\n    underlay.scale.min: 5\n    max: 10\n")
	for i := 0; i < 50; i++ {
		f, err := ParsePolicyFile(doc)
		if err == nil {
			t.Fatalf("min: 2 and underlay.scale.min: 5 for one service: accepted with min %s, want an error naming both", f["web"][LabelMin])
		}
		if msg := err.Error(); !strings.Contains(msg, "service web") || !strings.Contains(msg, `"min"`) || !strings.Contains(msg, `"underlay.scale.min"`) {
			t.Fatalf("min given twice: %v, want an error naming the service and both keys", err)
		}
	}
}

// TestPolicyFileOneDocument: a file of several YAML documents is refused
// (its policies after the first "---" would be ignored without a word).
func TestPolicyFileOneDocument(t *testing.T) {
	doc := []byte("services:\n  web:\n    max: 5\n---\nservices:\n  api:\n    max: 3\n")
	f, err := ParsePolicyFile(doc)
	if err == nil || !strings.Contains(err.Error(), "document") {
		t.Errorf("a policy file of two YAML documents: %v, %v; want an error saying it holds more than one document", f, err)
	}
	// A document marker before the one document, and one closing it, are
	// no second document.
	for _, ok := range []string{"---\nservices:\n  web:\n    max: 5\n", "services:\n  web:\n    max: 5\n...\n"} {
		if _, err := ParsePolicyFile([]byte(ok)); err != nil {
			t.Errorf("ParsePolicyFile(%q): %v, want it accepted", ok, err)
		}
	}
}

// TestReadPolicyFile: the policy file is a regular file of at most 4 MiB,
// its errors naming it; a named pipe is refused, not waited on.
func TestReadPolicyFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("services:\n  web:\n    max: 4\n"), 0o644)
	if f, err := ReadPolicyFile(good, slog.New(slog.DiscardHandler)); err != nil || f["web"][LabelMax] != "4" {
		t.Errorf("ReadPolicyFile(good, slog.New(slog.DiscardHandler)) = %v, %v; want web's max 4", f, err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("services:\n  web:\n    max: lots\n"), 0o644)
	if _, err := ReadPolicyFile(bad, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), `"lots"`) {
		t.Errorf("ReadPolicyFile(bad, slog.New(slog.DiscardHandler)) = %v, want an error naming the file and the value", err)
	}
	big := filepath.Join(dir, "big.yaml")
	os.WriteFile(big, append([]byte("services:\n"), bytes.Repeat([]byte("# padding\n"), maxPolicyFile/10+1)...), 0o644)
	if _, err := ReadPolicyFile(big, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("ReadPolicyFile of over 4 MiB = %v, want it refused", err)
	}
	fifo := filepath.Join(dir, "fifo.yaml")
	testfile.RefusesFIFO(t, "the policy file", fifo, func() error {
		_, err := ReadPolicyFile(fifo, slog.New(slog.DiscardHandler))
		return err
	})
}

// TestPolicyFileWritableByOthersWarned: whoever may write the policy file
// sets every service's bounds (up to a million replicas): one that group
// or others may write is warned of, at start and by FollowPolicyFile
// (once, until it changes), as the secret files are.
func TestPolicyFileWritableByOthersWarned(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policies.yaml")
	os.WriteFile(path, []byte("services:\n  web:\n    max: 4\n"), 0o600)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	if _, err := ReadPolicyFile(path, log); err != nil || strings.Contains(logs.String(), "writable") {
		t.Fatalf("a policy file of mode 0600: %v, logs:\n%s\nwant no warning", err, logs.String())
	}
	for _, mode := range []os.FileMode{0o620, 0o602, 0o666} {
		logs.Reset()
		os.Chmod(path, mode)
		if _, err := ReadPolicyFile(path, log); err != nil || !strings.Contains(logs.String(), "writable by group or others") || !strings.Contains(logs.String(), path) {
			t.Errorf("a policy file of mode %#o: %v, logs:\n%s\nwant a warning naming the file", mode, err, logs.String())
		}
	}

	// Made writable by others while control runs: warned once.
	os.Chmod(path, 0o600)
	e := newAPIEnv(t, Config{}, svc("web", 1))
	follow := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		e.ctrl.FollowPolicyFile(ctx, path, 5*time.Millisecond, slog.New(slog.NewTextHandler(follow, nil)))
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	const applied = "its policies are in use"
	waitFor(t, func() bool { return strings.Contains(follow.String(), applied) }) // read once
	os.Chmod(path, 0o666)
	waitFor(t, func() bool { return strings.Contains(follow.String(), "writable by group or others") })
	// Later reads of the unchanged file warn no more: the edit below is
	// read after them, and is applied.
	os.WriteFile(path, []byte("services:\n  web:\n    max: 3\n"), 0o666)
	waitFor(t, func() bool { return strings.Count(follow.String(), applied) == 2 })
	if n := strings.Count(follow.String(), "writable by group or others"); n != 1 {
		t.Errorf("a policy file made writable by others while followed: warned %d times, want once:\n%s", n, follow.String())
	}
}

// TestPolicyFileEmpty: a policy file with no document (empty, blanks or
// comments only, or caught truncated by an editor) is refused saying so,
// not with a bare "EOF".
func TestPolicyFileEmpty(t *testing.T) {
	for _, doc := range []string{"", "\n \n", "# nothing yet\n"} {
		_, err := ParsePolicyFile([]byte(doc))
		if err == nil || !strings.Contains(err.Error(), "no YAML document") {
			t.Errorf("ParsePolicyFile(%q) = %v, want an error saying the file holds no document", doc, err)
		}
	}
}
