package dockerhost

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
)

// TestEventsAfterNegotiation: Docker's client reads its API version to
// build an events request without negotiating it, while another
// goroutine's first request negotiates and writes it: a data race (the
// race detector's, in CI: negotiateAPIVersionPing against
// Events.func1), in the agent at each start, where the IPAM reclaimer's
// first listing and the connect watch's subscription go out together.
// Each subscription now negotiates first. Run with -race (CI does): fresh
// clients, each subscribing while it lists.
func TestEventsAfterNegotiation(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Api-Version", "1.41")
		switch {
		case strings.HasSuffix(r.URL.Path, "/_ping"):
			io.WriteString(w, "OK")
		case strings.HasSuffix(r.URL.Path, "/version"):
			io.WriteString(w, `{"ApiVersion":"1.41","Version":"20.10.24"}`)
		case strings.HasSuffix(r.URL.Path, "/containers/json"):
			io.WriteString(w, "[]")
		case strings.HasSuffix(r.URL.Path, "/events"):
			fmt.Fprintf(w, `{"Type":"container","Action":"start","Actor":{"ID":"c1"},"timeNano":%d}`+"\n", time.Now().UnixNano())
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	host := "tcp://" + strings.TrimPrefix(srv.URL, "http://")
	for range 20 {
		c, err := NewClientAt(host)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		var wg sync.WaitGroup
		wg.Go(func() {
			if _, err := c.ContainerList(ctx, container.ListOptions{}); err != nil {
				t.Errorf("list: %v", err)
			}
		})
		msgs, errs := Subscribe(ctx, c, eventFilter(), 1, func(m events.Message) (events.Message, bool) { return m, true })
		select {
		case m := <-msgs:
			if m.Actor.ID != "c1" {
				t.Errorf("event %+v, want c1's start", m)
			}
		case err := <-errs:
			t.Errorf("events: %v", err)
		}
		wg.Wait()
		cancel()
		c.Close()
	}
}
