package secretfile

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/testclock"
	"github.com/underlay/underlay/internal/testlog"
)

func TestFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secret")
	os.WriteFile(path, []byte("  hunter2-first \n"), 0o644)
	var logs testlog.Buffer
	clk := testclock.New(time.Now())
	f, err := Open(path, "test secret", slog.New(slog.NewTextHandler(&logs, nil)), WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(f.Value()); got != "hunter2-first" {
		t.Fatalf("value %q, want hunter2-first", got)
	}
	if !strings.Contains(logs.String(), "readable or writable by group or others") || !strings.Contains(logs.String(), "mode=0644") {
		t.Errorf("no warning for mode 0644: %s", logs.String())
	}

	// A change is seen once CheckEvery has passed, not before.
	os.WriteFile(path, []byte("hunter2-second\n"), 0o644)
	if got := string(f.Value()); got != "hunter2-first" {
		t.Errorf("value %q within CheckEvery of the last read, want the cached hunter2-first", got)
	}
	clk.Add(CheckEvery)
	if got := string(f.Value()); got != "hunter2-second" {
		t.Errorf("value %q after the change, want hunter2-second", got)
	}

	// Emptied (a rewrite in progress) or removed: the last value stays,
	// and the problem is logged once.
	for _, breakIt := range []func(){
		func() { os.WriteFile(path, []byte("\n  \n"), 0o600) },
		func() { os.Remove(path) },
	} {
		breakIt()
		for range 3 {
			clk.Add(CheckEvery)
			if got := string(f.Value()); got != "hunter2-second" {
				t.Errorf("value %q from a broken file, want hunter2-second kept", got)
			}
		}
	}
	if n := strings.Count(logs.String(), "unreadable"); n != 2 {
		t.Errorf("%d warnings for two problems met three times each, want 2:\n%s", n, logs.String())
	}
	os.WriteFile(path, []byte("hunter2-third"), 0o600)
	clk.Add(CheckEvery)
	if got := string(f.Value()); got != "hunter2-third" {
		t.Errorf("value %q, want hunter2-third", got)
	}
	if strings.Contains(logs.String(), "hunter2") {
		t.Errorf("a secret was logged:\n%s", logs.String())
	}

	for _, bad := range []struct{ name, content string }{{"empty", ""}, {"blank", " \n\t\n"}} {
		p := filepath.Join(dir, bad.name)
		os.WriteFile(p, []byte(bad.content), 0o600)
		if _, err := Open(p, "test secret", nil); err == nil || !strings.Contains(err.Error(), "empty") {
			t.Errorf("Open(%s) = %v, want an error saying empty", bad.name, err)
		}
	}
	if _, err := Open(filepath.Join(dir, "nope"), "test secret", nil); err == nil || !strings.Contains(err.Error(), "test secret file") {
		t.Errorf("Open(missing) = %v, want an error naming the secret", err)
	}
	if _, err := Open(dir, "test secret", nil); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Open(directory) = %v", err)
	}
}

// TestOpenOptionalClock: a file empty at start (no secret) is looked at
// again on the clock given with WithClock, as Open's: a secret written to
// it is not read before CheckEvery has passed on that clock, and is read
// once it has, with no wait in real time.
func TestOpenOptionalClock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(path, []byte("\n"), 0o600)
	clk := testclock.New(time.Now())
	f, err := OpenOptional(path, "test secret", nil, WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(f.Value()); got != "" {
		t.Fatalf("value %q from an empty file, want none", got)
	}
	os.WriteFile(path, []byte("written-later\n"), 0o600)
	if got := string(f.Value()); got != "" {
		t.Errorf("value %q within CheckEvery of the last read, want none yet", got)
	}
	clk.Add(CheckEvery)
	if got := string(f.Value()); got != "written-later" {
		t.Errorf("value %q once the clock passed CheckEvery, want written-later", got)
	}
}

// TestOpenChecked: a value the check refuses is an error at start and,
// written later, is not used; the refusal is logged once, without the
// value.
func TestOpenChecked(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secret")
	long := func(v []byte) error {
		if len(v) < 8 {
			return fmt.Errorf("%d bytes, want at least 8", len(v))
		}
		return nil
	}
	os.WriteFile(path, []byte("short"), 0o600)
	if _, err := OpenChecked(path, "test secret", long, nil); err == nil || !strings.Contains(err.Error(), "5 bytes, want at least 8") || !strings.Contains(err.Error(), path) {
		t.Fatalf("OpenChecked(short) = %v, want the check's error naming the file", err)
	}
	os.WriteFile(path, []byte("long-enough-1"), 0o600)
	var logs testlog.Buffer
	clk := testclock.New(time.Now())
	f, err := OpenChecked(path, "test secret", long, slog.New(slog.NewTextHandler(&logs, nil)), WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, []byte("short"), 0o600)
	for range 3 {
		clk.Add(CheckEvery)
		if got := string(f.Value()); got != "long-enough-1" {
			t.Errorf("value %q after a refused rewrite, want long-enough-1 kept", got)
		}
	}
	if n := strings.Count(logs.String(), "refused"); n != 1 {
		t.Errorf("%d warnings for a refused value met three times, want 1:\n%s", n, logs.String())
	}
	os.WriteFile(path, []byte("long-enough-2"), 0o600)
	clk.Add(CheckEvery)
	if got := string(f.Value()); got != "long-enough-2" {
		t.Errorf("value %q, want long-enough-2", got)
	}
	if strings.Contains(logs.String(), "short") || strings.Contains(logs.String(), "long-enough") {
		t.Errorf("a secret was logged:\n%s", logs.String())
	}
}

// TestFIFOIsRefused: a secret's path naming a FIFO (a mistake, or a file
// swapped by whoever may write its directory) blocked Open until some
// process opened the FIFO for writing, and read again, blocked Value,
// holding its lock, so that every caller after it hung too. A FIFO is
// now refused at once, as any other file that is not a regular one, and
// a rotation to one keeps the last value.
func TestFIFOIsRefused(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// Whatever happens, no open of the FIFO stays blocked past the test:
	// a writer's open lets a blocked reader's through.
	t.Cleanup(func() {
		if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
	})
	opened := make(chan error, 1)
	go func() {
		_, err := Open(fifo, "test secret", nil)
		opened <- err
	}()
	select {
	case err := <-opened:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("Open(FIFO) = %v, want an error saying it is not a regular file", err)
		}
	case <-time.After(5 * time.Second):
		// Let the blocked open through, so that the goroutine ends.
		if w, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			w.Close()
		}
		t.Fatal("Open(FIFO) blocked")
	}

	path := filepath.Join(dir, "secret")
	os.WriteFile(path, []byte("hunter2"), 0o600)
	clk := testclock.New(time.Now())
	f, err := Open(path, "test secret", nil, WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(fifo, path); err != nil {
		t.Fatal(err)
	}
	clk.Add(CheckEvery)
	got := make(chan string, 1)
	go func() { got <- string(f.Value()) }()
	select {
	case v := <-got:
		if v != "hunter2" {
			t.Errorf("value %q once the file became a FIFO, want hunter2 kept", v)
		}
	case <-time.After(5 * time.Second):
		if w, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
			w.Close()
		}
		t.Fatal("Value blocked on a FIFO")
	}
}

// TestOwner: a secret file 0600 but owned by another unprivileged user
// passed with no word, though that user may replace the token. Such an
// owner is now warned of, naming its uid; the process's own user and
// root are not.
func TestOwner(t *testing.T) {
	for _, tt := range []struct {
		owner, euid uint32
		want        string
	}{
		{1000, 1000, ""},
		{0, 1000, ""},
		{0, 0, ""},
		{1001, 1000, "belongs to uid 1001, neither this process's user (uid 1000) nor root"},
		{65534, 0, "belongs to uid 65534, neither this process's user (uid 0) nor root"},
	} {
		if got := OwnerProblem(tt.owner, tt.euid); !strings.Contains(got, tt.want) || (tt.want == "") != (got == "") {
			t.Errorf("OwnerProblem(%d, %d) = %q, want %q", tt.owner, tt.euid, got, tt.want)
		}
	}
	// A file of this process's user: no warning.
	path := filepath.Join(t.TempDir(), "token")
	os.WriteFile(path, []byte("secret-value"), 0o600)
	var logs testlog.Buffer
	clk := testclock.New(time.Now())
	f, err := Open(path, "test secret", slog.New(slog.NewTextHandler(&logs, nil)), WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "belongs to") {
		t.Errorf("a file of this process's user warned of:\n%s", logs.String())
	}
	if os.Geteuid() != 0 {
		return // only root can give the file to another user
	}
	// Given to another user, it is warned of at its next read.
	if err := os.Chown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	clk.Add(CheckEvery)
	f.Value()
	if !strings.Contains(logs.String(), "belongs to uid 65534") || strings.Contains(logs.String(), "secret-value") {
		t.Errorf("after chown to 65534: log\n%s\nwant a warning naming uid 65534, and no secret", logs.String())
	}
}

// TestFailClosed: with FailClosed, a file emptied or removed while in use
// yields no value until it holds one again, and the problem is logged
// once; without it, the last value stays.
func TestFailClosed(t *testing.T) {
	for _, c := range []struct {
		name  string
		empty func(path string)
	}{
		{"emptied", func(path string) { os.WriteFile(path, []byte(" \n"), 0o600) }},
		{"removed", func(path string) { os.Remove(path) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "secret")
			os.WriteFile(path, []byte("first\n"), 0o600)
			clk := testclock.New(time.Now())
			var logs bytes.Buffer
			closed, err := Open(path, "test secret", slog.New(slog.NewTextHandler(&logs, nil)), WithClock(clk.Now), FailClosed())
			if err != nil {
				t.Fatal(err)
			}
			open, err := Open(path, "test secret", nil, WithClock(clk.Now))
			if err != nil {
				t.Fatal(err)
			}
			c.empty(path)
			clk.Add(CheckEvery)
			if got := closed.Value(); got != nil {
				t.Errorf("FailClosed: value %q after the file was %s, want none", got, c.name)
			}
			if got := string(open.Value()); got != "first" {
				t.Errorf("without FailClosed: value %q after the file was %s, want the last one, first", got, c.name)
			}
			clk.Add(CheckEvery)
			closed.Value()
			if n := strings.Count(logs.String(), "none in use"); n != 1 {
				t.Errorf("logged %d times, want once:\n%s", n, logs.String())
			}
			os.WriteFile(path, []byte("second\n"), 0o600)
			clk.Add(CheckEvery)
			if got := string(closed.Value()); got != "second" {
				t.Errorf("FailClosed: value %q once the file holds one again, want second", got)
			}
			if strings.Contains(logs.String(), "first") || strings.Contains(logs.String(), "second") {
				t.Errorf("a value was logged:\n%s", logs.String())
			}
		})
	}
}
