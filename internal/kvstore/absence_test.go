package kvstore_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// TestAbsenceGone: only a direct read answering "absent" proves a key
// gone, and only one that answers at all makes it readable; a key
// present is not gone, and a refused read is neither, warned
// of once while it lasts, and again once it comes back after a read
// succeeded.
func TestAbsenceGone(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	if err := kv.Put(ctx, "p/here", []byte("v")); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var a kvstore.Absence
	if !a.Gone(ctx, kv, log, "p/absent") {
		t.Error("an absent key: not gone")
	}
	if a.Gone(ctx, kv, log, "p/here") {
		t.Error("a key present: gone")
	}
	if !a.Readable(ctx, kv, log, "p/here") || !a.Readable(ctx, kv, log, "p/absent") {
		t.Error("keys read, present or absent: not readable")
	}
	kv.DenyRead("p/")
	for range 3 {
		if a.Gone(ctx, kv, log, "p/absent") || a.Readable(ctx, kv, log, "p/absent") {
			t.Error("a key whose read is refused: gone, or readable")
		}
	}
	if n := strings.Count(buf.String(), "level=WARN"); n != 1 || !strings.Contains(buf.String(), "key=p/absent") || !strings.Contains(buf.String(), "read rights") {
		t.Errorf("want one warning naming the key and the token's read rights, got %d:\n%s", n, buf.String())
	}
	kv.DenyRead()
	if !a.Gone(ctx, kv, log, "p/absent") {
		t.Error("an absent key, readable again: not gone")
	}
	kv.DenyRead("p/")
	buf.Reset()
	a.Gone(ctx, kv, log, "p/absent")
	if n := strings.Count(buf.String(), "level=WARN"); n != 1 {
		t.Errorf("refused again after a read succeeded: %d warnings, want 1:\n%s", n, buf.String())
	}
}
