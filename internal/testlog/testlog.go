// Package testlog is a log sink for unit tests that read back what a
// component logged while it runs goroutines of its own. It imports only
// the standard library.
package testlog

import (
	"bytes"
	"sync"
)

// Buffer collects log output, safe for concurrent writes.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
