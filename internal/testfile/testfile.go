// Package testfile holds checks shared by unit tests of readers of the
// agent's state files. It imports only the standard library.
package testfile

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// RefusesFIFO makes path a named pipe and checks that read, which reads
// it, returns an error naming path rather than waiting for a writer:
// opening a pipe for reading blocks until one comes, and a state file a
// reader opened that way held the agent's start for ever. what names the
// file in failures.
func RefusesFIFO(t *testing.T, what, path string, read func() error) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- read() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%s that is a named pipe: %v; want an error naming %s", what, err, path)
		}
	case <-time.After(10 * time.Second):
		// Guards the hang itself: opening a file takes no time. Open the
		// pipe for writing, so that the reader ends.
		if w, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
			w.Close()
		}
		t.Fatalf("reading %s that is a named pipe did not return", what)
	}
}
