package adapter

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// TestPruneSet: entries past the retention go; what is no alert entry
// (another writer's value, a truncated write) is kept and named. Before,
// prune deleted every value it could not read.
func TestPruneSet(t *testing.T) {
	before := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	pairs := api.KVPairs{
		{Key: "p/old", Value: []byte(`{"key":"a","service":"web","time":"2026-11-30T00:00:00Z"}`)},
		{Key: "p/new", Value: []byte(`{"key":"b","service":"web","time":"2026-12-02T00:00:00Z"}`)},
		{Key: "p/garbage", Value: []byte("kept by someone else")},
		{Key: "p/truncated", Value: []byte(`{"key":"c","serv`)},
		{Key: "p/empty-object", Value: []byte(`{}`)},
	}
	expired, unreadable := pruneSet(pairs, before)
	if want := []string{"p/old"}; !slices.Equal(expired, want) {
		t.Errorf("expired = %q, want %q", expired, want)
	}
	if want := []string{"p/garbage", "p/truncated", "p/empty-object"}; !slices.Equal(unreadable, want) {
		t.Errorf("unreadable = %q, want %q", unreadable, want)
	}
}

// TestAlertLogPrunesAPart: a prune listed every entry under the prefix,
// values and all — in dry-run a notification adds up to 1,000 — within the
// time of one Mark, under the webhook's turn: a log grown past what one
// listing reads in that time was never pruned again. A prune now lists a
// part of the log, the next part at the next prune; in a round of them
// every entry past the retention goes, and none within it.
func TestAlertLogPrunesAPart(t *testing.T) {
	f, c := newFakeKV(t)
	l := NewKVAlertLog(c, "", 0, slog.New(slog.NewTextHandler(io.Discard, nil))) // DefaultAlertRetention
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	const n = 4096
	for i := range n {
		at := start // past the retention at the marks below
		if i%2 == 1 {
			at = start.Add(2 * 24 * time.Hour) // within it
		}
		b, _ := json.Marshal(alertEntry{Key: fmt.Sprint(i), Service: "web", Time: at})
		f.put(l.Key(fmt.Sprint(i)), b)
	}
	ctx := context.Background()
	at := start.Add(DefaultAlertRetention + 24*time.Hour)
	if err := l.Mark(ctx, "fresh@0", "web", at); err != nil {
		t.Fatal(err)
	}
	if got := f.listedPairs(); got > n/32 {
		t.Errorf("one prune listed %d entries of %d, want a part of them (at most %d)", got, n+1, n/32)
	}
	for i := 1; i <= 300; i++ { // a round, and then some
		at = at.Add(time.Minute)
		if err := l.Mark(ctx, fmt.Sprintf("fresh@%d", i), "web", at); err != nil {
			t.Fatal(err)
		}
	}
	var expired, kept int
	for i := range n {
		switch {
		case f.get(l.Key(fmt.Sprint(i))) == nil && i%2 == 1:
			t.Fatalf("entry %d, within the retention, was pruned", i)
		case f.get(l.Key(fmt.Sprint(i))) != nil && i%2 == 0:
			expired++
		case i%2 == 1:
			kept++
		}
	}
	if expired != 0 || kept != n/2 {
		t.Errorf("after 301 marks, %d entries past the retention are left, and %d of %d within it; want none and all", expired, kept, n/2)
	}
	for i := 0; i <= 300; i++ {
		if f.get(l.Key(fmt.Sprintf("fresh@%d", i))) == nil {
			t.Fatalf("the mark fresh@%d is gone", i)
		}
	}
}

// TestAlertLogWarnsThroughItsLogger: the log's warnings (here, an entry
// under its prefix that is no alert firing, kept and named at its prune)
// went to slog.Default, which underlay never sets: plain text on stderr,
// outside control's JSON log and its level. They go to the logger given.
func TestAlertLogWarnsThroughItsLogger(t *testing.T) {
	f, c := newFakeKV(t)
	var logs bytes.Buffer
	l := NewKVAlertLog(c, "", 0, slog.New(slog.NewJSONHandler(&logs, nil)))
	stray := l.Key("stray")
	f.put(stray, []byte("not json"))
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i <= pruneParts; i++ { // every part pruned once
		at = at.Add(pruneEvery)
		if err := l.Mark(context.Background(), fmt.Sprintf("k%d", i), "web", at); err != nil {
			t.Fatal(err)
		}
	}
	if !strings.Contains(logs.String(), `"component":"alert_log"`) || !strings.Contains(logs.String(), stray) {
		t.Errorf("the given logger has no warning naming %s:\n%s", stray, logs.String())
	}
}
