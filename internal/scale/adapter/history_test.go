package adapter

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/scale"
)

// TestDecodeRecords: a record that cannot be read, or that names another
// service, is set apart with the command that removes it; the rest are
// listed oldest first (before, one such record failed the whole history:
// a 503 from the API and no history on the dashboard).
func TestDecodeRecords(t *testing.T) {
	p := "underlay/scale/history/web/"
	pairs := api.KVPairs{
		{Key: p + "20260101T000002.000000000Z-00000002", Value: []byte(`{"service":"web","direction":"down","from":2,"to":1}`)},
		{Key: p + "20260101T000001.000000000Z-00000001", Value: []byte(`{"service":"web","direction":"up","from":1,"to":2}`)},
		{Key: p + "20260101T000003.000000000Z-00000003", Value: []byte(`{"service":`)},
		{Key: p + "20260101T000004.000000000Z-00000004", Value: []byte(`{"service":"db","direction":"up","from":1,"to":2}`)},
		{Key: p + "last-up", Value: []byte(`garbage`)}, // not a decision record: read by Last
	}
	recs, bad := decodeRecords("web", pairs)
	var got []string
	for _, r := range recs {
		got = append(got, fmt.Sprintf("%s %d→%d", r.Direction, r.From, r.To))
	}
	if strings.Join(got, "; ") != "up 1→2; down 2→1" {
		t.Errorf("records %q, want the two of web, oldest first", got)
	}
	if len(bad) != 2 || bad[0].Key != pairs[2].Key || bad[1].Key != pairs[3].Key || !strings.Contains(bad[1].Error, `"db"`) ||
		bad[0].Fix != "consul kv delete "+pairs[2].Key || bad[0].Direction != "" {
		t.Errorf("unreadable %+v, want the undecodable record and db's, each with its fix", bad)
	}
}

func TestDecodeLast(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rec := func(r scale.Record) []byte {
		r.Time = at
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	scaled := scale.Record{Service: "web", Direction: scale.Up, Decision: scale.Decision{From: 1, To: 2}}
	if got, err := decodeLast("web", scale.Up, rec(scaled)); err != nil || !got.Equal(at) {
		t.Fatalf("a scale-up: %v, %v; want %v", got, err, at)
	}
	for _, tt := range []struct {
		name  string
		value []byte
		want  string
	}{
		{"undecodable", []byte("{"), "decode"},
		{"another service", rec(scale.Record{Service: "db", Direction: scale.Up, Decision: scale.Decision{From: 1, To: 2}}), `"db"`},
		{"the other direction", rec(scale.Record{Service: "web", Direction: scale.Down, Decision: scale.Decision{From: 2, To: 1}}), "down, not up"},
		{"refused", rec(scale.Record{Service: "web", Direction: scale.Up, Decision: scale.Decision{From: 2, To: 2, Refused: true}}), "changed nothing"},
		{"dry run", rec(scale.Record{Service: "web", Direction: scale.Up, Decision: scale.Decision{From: 1, To: 2}, DryRun: true}), "changed nothing"},
		{"no time", func() []byte { b, _ := json.Marshal(scaled); return b }(), "no time"},
	} {
		if _, err := decodeLast("web", scale.Up, tt.value); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error saying %q", tt.name, err, tt.want)
		}
	}
}

// TestHistoryListStaysUnderTheService: the history route takes any
// service name, and "." or ".." made a key whose dot segment Consul's
// HTTP mux cleans away, redirecting the list (with control's ACL token)
// to the parent prefix: GET /v1/underlay/services/%2E%2E/history listed
// everything under underlay/scale/ — other services' records, the alert
// log, the leader key, a --token-consul-key kept there — as bad records,
// to anyone when reads are open.
func TestHistoryListStaysUnderTheService(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	// A mux, as Consul's agent serves its API: a path with a dot segment
	// is redirected to its clean form.
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/kv/", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked = append(asked, r.URL.Path)
		mu.Unlock()
		w.Header().Set("X-Consul-Index", "1")
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, "[]")
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c, err := api.NewClient(&api.Config{Address: strings.TrimPrefix(srv.URL, "http://")})
	if err != nil {
		t.Fatal(err)
	}
	h := NewKVHistory(c, "", 0)
	for _, service := range []string{".", "..", "web"} {
		if _, _, err := h.List(context.Background(), service); err != nil {
			t.Fatalf("list %q: %v", service, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range asked {
		rest, ok := strings.CutPrefix(p, "/v1/kv/"+DefaultHistoryPrefix+"/")
		if !ok || rest == "" {
			t.Errorf("Consul was asked for %s, outside a service's prefix under %s/", p, DefaultHistoryPrefix)
		}
	}
}

// TestHistoryLastKeepsTheLatestScale: records reach the history out of
// order — appended after the decision lock is let go, so one decision's
// write can land after the next one's, and an old leader's after the new
// leader's — and an older applied scale must not replace the time of a
// later one under last-up or last-down: cooldowns, after a restart or at a
// new leader, are timed from there. Before, the last write won: the
// cooldown ran from the older scale, and ended early.
func TestHistoryLastKeepsTheLatestScale(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	up := func(seq uint64, at time.Time, from, to int) scale.Record {
		return scale.Record{Seq: seq, Time: at, Service: "web", Direction: scale.Up, Decision: scale.Decision{From: from, To: to}}
	}
	encode := func(r scale.Record) []byte {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	lastUp := func(t *testing.T, h *KVHistory) time.Time {
		t.Helper()
		last, bad, err := h.Last(ctx, "web")
		if err != nil || len(bad) > 0 {
			t.Fatalf("last: %v %v", bad, err)
		}
		return last.Up
	}
	key := DefaultHistoryPrefix + "/web/last-up"

	t.Run("an older record appended after a later one", func(t *testing.T) {
		_, c := newFakeKV(t)
		h := NewKVHistory(c, "", 0)
		if err := h.Append(ctx, up(2, t0.Add(time.Minute), 2, 3)); err != nil {
			t.Fatal(err)
		}
		if err := h.Append(ctx, up(1, t0, 1, 2)); err != nil {
			t.Fatal(err)
		}
		if got := lastUp(t, h); !got.Equal(t0.Add(time.Minute)) {
			t.Errorf("last scale-up at %v, want %v: the later of the two", got, t0.Add(time.Minute))
		}
		if recs, _, _ := h.List(ctx, "web"); len(recs) != 2 {
			t.Errorf("%d records, want both", len(recs))
		}
	})

	t.Run("a later record written between the read and the write", func(t *testing.T) {
		kv, c := newFakeKV(t)
		h := NewKVHistory(c, "", 0)
		var once sync.Once
		kv.beforeWrite = func(k string) {
			if k == key {
				once.Do(func() { kv.put(key, encode(up(9, t0.Add(time.Hour), 5, 6))) }) // another leader's
			}
		}
		if err := h.Append(ctx, up(1, t0, 1, 2)); err != nil {
			t.Fatal(err)
		}
		if got := lastUp(t, h); !got.Equal(t0.Add(time.Hour)) {
			t.Errorf("last scale-up at %v, want %v, written meanwhile by another leader", got, t0.Add(time.Hour))
		}
	})

	t.Run("an unreadable value is replaced", func(t *testing.T) {
		kv, c := newFakeKV(t)
		h := NewKVHistory(c, "", 0)
		kv.put(key, []byte("garbage"))
		if err := h.Append(ctx, up(1, t0, 1, 2)); err != nil {
			t.Fatal(err)
		}
		if got := lastUp(t, h); !got.Equal(t0) {
			t.Errorf("last scale-up at %v, want %v", got, t0)
		}
	})

	t.Run("a key written before every try", func(t *testing.T) {
		kv, c := newFakeKV(t)
		h := NewKVHistory(c, "", 0)
		n := 0
		kv.beforeWrite = func(k string) {
			if k == key {
				n++
				kv.put(key, encode(up(uint64(n), t0.Add(-time.Duration(n)*time.Minute), 1, 2))) // older each time
			}
		}
		err := h.Append(ctx, up(1, t0, 1, 2))
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("append: %v, want an error naming %s", err, key)
		}
	})
}

// TestDecodeRecordsGivesNoDeleteConsulRedirects: an unreadable record
// under a key with an empty, "." or ".." segment had `consul kv delete
// KEY` as its fix, whose path Consul's HTTP API redirects to another key:
// the delete misses it. It has no command, and its error says how it goes.
func TestDecodeRecordsGivesNoDeleteConsulRedirects(t *testing.T) {
	p := "underlay/scale/history/web/"
	pairs := api.KVPairs{{Key: p + "..", Value: []byte(`{`)}, {Key: p + "a//b", Value: []byte(`{`)}, {Key: p + "a/./b", Value: []byte(`{`)}}
	_, bad := decodeRecords("web", pairs)
	if len(bad) != 3 {
		t.Fatalf("unreadable %+v, want the 3", bad)
	}
	for _, b := range bad {
		if b.Fix != "" || !strings.Contains(b.Error, "PUT /v1/txn") {
			t.Errorf("unreadable %+v: want no fix, and its error saying to delete it by a transaction", b)
		}
	}
}
