package adapter

import (
	"context"
	"encoding/base64"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// TestTokensAfterConsulRestarted: the Consul holding control's bearer
// tokens fails a blocking query and comes back with other tokens, its
// index started again (a dev agent restarted, the key written anew). The
// tokens read at once: the new one is valid, the old one no longer.
// Before, Run waited again on its index from before the restart, which
// Consul answers only at the wait time, five minutes, the old token valid
// all that time.
func TestTokensAfterConsulRestarted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	token, index, queries := "old-token", uint64(5000), 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wait, _ := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64)
		mu.Lock()
		queries++
		if queries == 2 {
			// The agent stops as it holds the query, and comes back with
			// the key written anew.
			token, index = "new-token", 3
			mu.Unlock()
			http.Error(w, "agent stopping", http.StatusInternalServerError)
			return
		}
		value, now := token, index
		mu.Unlock()
		if wait != 0 && now <= wait {
			// As Consul's blockingQuery: nothing past the index waited
			// on, so wait (here until the client gives up).
			<-r.Context().Done()
			return
		}
		w.Header().Set("X-Consul-Index", strconv.FormatUint(now, 10))
		w.Write([]byte(`[{"Key":"underlay/control/tokens","Value":"` + base64.StdEncoding.EncodeToString([]byte(value+"\n")) + `","ModifyIndex":` + strconv.FormatUint(now, 10) + `}]`))
	}))
	defer srv.Close()
	c, err := consul.NewClient(consul.Options{Addr: strings.TrimPrefix(srv.URL, "http://")})
	if err != nil {
		t.Fatal(err)
	}
	k := NewKVTokens(c, "underlay/control/tokens", slog.New(slog.DiscardHandler))
	done := make(chan struct{})
	go func() { k.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	// Polled: Run tells nothing else of what it read.
	for !k.Valid("new-token") || k.Valid("old-token") {
		select {
		case <-ctx.Done():
			t.Fatalf("after Consul restarted with new-token: new-token valid %v, old-token valid %v", k.Valid("new-token"), k.Valid("old-token"))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestTokensIndexWentBackwards: the Consul holding control's bearer tokens
// restarted between two blocking queries, the key written anew; the second
// query, waiting on the index from before, is answered at the wait's end
// with a lower index. The next query restarts the loop with index 0,
// answered at once, as Consul's blocking-query rules say. Before, it
// waited on index 1.
func TestTokensIndexWentBackwards(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	now := uint64(5000)
	asked := make(chan uint64, 8) // the index each query waited on, as it came
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wait, _ := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64)
		asked <- wait
		mu.Lock()
		if wait == 5000 {
			now = 2 // restarted, the key written anew; answered at the wait's end
		}
		index := now
		mu.Unlock()
		if wait != 0 && wait != 5000 && index <= wait {
			<-r.Context().Done() // nothing past the index waited on
			return
		}
		w.Header().Set("X-Consul-Index", strconv.FormatUint(index, 10))
		w.Write([]byte(`[{"Key":"underlay/control/tokens","Value":"` + base64.StdEncoding.EncodeToString([]byte("a-token\n")) + `","ModifyIndex":` + strconv.FormatUint(index, 10) + `}]`))
	}))
	defer srv.Close()
	c, err := consul.NewClient(consul.Options{Addr: strings.TrimPrefix(srv.URL, "http://")})
	if err != nil {
		t.Fatal(err)
	}
	k := NewKVTokens(c, "underlay/control/tokens", slog.New(slog.DiscardHandler))
	done := make(chan struct{})
	go func() { k.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	kvtest.WaitedOn(ctx, t, asked, "the token reads", 0, 5000, 0, 2)
}
