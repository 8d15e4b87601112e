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
	expired, ahead, unreadable := pruneSet(pairs, before, before.Add(DefaultAlertRetention))
	if want := []string{"p/old"}; !slices.Equal(expired, want) {
		t.Errorf("expired = %q, want %q", expired, want)
	}
	if len(ahead) > 0 {
		t.Errorf("ahead = %q, want none", ahead)
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
	now := time.Now()
	const n = 4096
	for i := range n {
		at := now.Add(-DefaultAlertRetention - 24*time.Hour) // past the retention
		if i%2 == 1 {
			at = now.Add(-24 * time.Hour) // within it
		}
		b, _ := json.Marshal(alertEntry{Key: fmt.Sprint(i), Service: "web", Time: at})
		f.put(l.Key(fmt.Sprint(i)), b)
	}
	ctx := context.Background()
	l.prunePart(ctx, 0)
	if got := f.listedPairs(); got > n/32 {
		t.Errorf("one prune listed %d entries of %d, want a part of them (at most %d)", got, n, n/32)
	}
	for part := 1; part < pruneParts; part++ {
		l.prunePart(ctx, part)
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
		t.Errorf("after a round of prunes, %d entries past the retention are left, and %d of %d within it; want none and all", expired, kept, n/2)
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
	for part := range pruneParts {
		l.prunePart(context.Background(), part)
	}
	if !strings.Contains(logs.String(), `"component":"alert_log"`) || !strings.Contains(logs.String(), stray) {
		t.Errorf("the given logger has no warning naming %s:\n%s", stray, logs.String())
	}
}

// TestAlertLogPrunesFarFuture: an entry stamped far in the future (a
// clock set years ahead, or a hand-written value) was never past the
// retention, so it stayed for good and its firing counted as seen forever:
// Alertmanager's re-sends of it never scaled again. One more than a day
// ahead of this clock is now deleted at its prune, with a warning naming
// its key; one within that allowance of skew is kept.
func TestAlertLogPrunesFarFuture(t *testing.T) {
	f, c := newFakeKV(t)
	var logs bytes.Buffer
	l := NewKVAlertLog(c, "", 0, slog.New(slog.NewJSONHandler(&logs, nil)))
	now := time.Now()
	far, skewed := l.Key("far"), l.Key("skewed")
	for key, at := range map[string]time.Time{far: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), skewed: now.Add(time.Minute)} {
		b, _ := json.Marshal(alertEntry{Key: key, Service: "web", Time: at})
		f.put(key, b)
	}
	for part := range pruneParts {
		l.prunePart(context.Background(), part)
	}
	if f.get(far) != nil {
		t.Errorf("the entry stamped in 9999 was kept; want it deleted")
	}
	if f.get(skewed) == nil {
		t.Errorf("the entry a minute ahead was deleted; want it kept (clock skew)")
	}
	if !strings.Contains(logs.String(), far) || strings.Contains(logs.String(), skewed) {
		t.Errorf("warnings:\n%s\nwant one naming %s only", logs.String(), far)
	}
}

// TestAlertLogPrunesWithoutWrites: a prune ran only at a mark, a part at a
// time, so a round of the log took 256 marks: with firings a day apart,
// entries past the 7-day retention stayed for most of a year. Run prunes a
// part each interval, written or not.
func TestAlertLogPrunesWithoutWrites(t *testing.T) {
	f, c := newFakeKV(t)
	l := NewKVAlertLog(c, "", 0, slog.New(slog.NewTextHandler(io.Discard, nil)))
	l.every = time.Millisecond // a round in a quarter of a second
	now := time.Now()
	const n = 512
	for i := range n {
		at := now.Add(-DefaultAlertRetention - time.Hour) // past the retention
		if i%2 == 1 {
			at = now.Add(-time.Hour) // within it
		}
		b, _ := json.Marshal(alertEntry{Key: fmt.Sprint(i), Service: "web", Time: at})
		f.put(l.Key(fmt.Sprint(i)), b)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	defer func() { cancel(); <-done }()
	left := func() (expired, kept int) {
		for i := range n {
			if f.get(l.Key(fmt.Sprint(i))) != nil {
				if i%2 == 0 {
					expired++
				} else {
					kept++
				}
			}
		}
		return expired, kept
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		expired, kept := left()
		if kept != n/2 {
			t.Fatalf("%d of %d entries within the retention left, want all", kept, n/2)
		}
		if expired == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with no firing marked, %d of %d entries past the retention are left after 10s of pruning every %v", expired, n/2, l.every)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAlertLogWarningIsBounded: the warning of a prune named every entry
// it could not read, in one line: a writer filling the prefix with 100,000
// values made a line of megabytes each round. It names a few and counts
// the rest.
func TestAlertLogWarningIsBounded(t *testing.T) {
	f, c := newFakeKV(t)
	var logs bytes.Buffer
	l := NewKVAlertLog(c, "", 0, slog.New(slog.NewJSONHandler(&logs, nil)))
	const n = 1000
	for i := range n {
		f.put(fmt.Sprintf("%s/00stray-%04d", DefaultAlertPrefix, i), []byte("not json"))
	}
	l.prunePart(context.Background(), 0)
	out := logs.String()
	if !strings.Contains(out, "kept 1000 entries") {
		t.Fatalf("the warning does not count the 1000 entries kept:\n%.500s", out)
	}
	if named := strings.Count(out, "00stray-"); named > 10 {
		t.Errorf("the warning names %d entries (%d bytes), want at most 10", named, len(out))
	}
}
