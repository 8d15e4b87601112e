// Package testlog is a log sink for unit tests that read back what a
// component logged while it runs goroutines of its own. It imports only
// the standard library.
package testlog

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
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

// Records is a slog.Handler that passes every record, at every level,
// with the attributes its logger was given (groups are ignored), to C;
// Await reads them back. C is buffered: a test that logs more than its
// buffer without reading blocks the logger.
type Records struct {
	C     chan slog.Record
	attrs []slog.Attr
}

// NewRecords is a Records whose channel holds n records.
func NewRecords(n int) *Records { return &Records{C: make(chan slog.Record, n)} }

// Enabled implements slog.Handler: every level is.
func (h *Records) Enabled(context.Context, slog.Level) bool { return true }

// Handle implements slog.Handler.
func (h *Records) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(h.attrs...)
	h.C <- r
	return nil
}

// WithAttrs implements slog.Handler.
func (h *Records) WithAttrs(as []slog.Attr) slog.Handler {
	return &Records{C: h.C, attrs: append(slices.Clip(h.attrs), as...)}
}

// WithGroup implements slog.Handler; the group is ignored.
func (h *Records) WithGroup(string) slog.Handler { return h }

// Await returns the first record to come that match accepts, skipping
// the others, and fails t when none came within d.
func (h *Records) Await(t testing.TB, d time.Duration, match func(slog.Record) bool) slog.Record {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case r := <-h.C:
			if match(r) {
				return r
			}
		case <-timeout:
			t.Fatalf("no matching log record within %s", d)
			return slog.Record{}
		}
	}
}

// Attr is the value of r's attribute key, as a string ("" when r has none).
func Attr(r slog.Record, key string) string {
	var v string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}

// Err waits for the next record whose message begins with msg, skipping
// the others, and returns its "err" attribute: the error logged (one that
// was logged as a string is made an error again), nil when it has none.
// It waits as long as it takes: run it under a bound of the test's
// (testconsul.GivesUp).
func (h *Records) Err(msg string) error {
	for r := range h.C {
		if !strings.HasPrefix(r.Message, msg) {
			continue
		}
		var err error
		r.Attrs(func(a slog.Attr) bool {
			if a.Key != "err" {
				return true
			}
			if e, ok := a.Value.Any().(error); ok {
				err = e
			} else {
				err = errors.New(a.Value.String())
			}
			return false
		})
		return err
	}
	return nil
}
