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
