package testenv

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

// TestConsulStartTellsItsAgentFromAnother: an agent restarted on its
// ports finds one of them taken and exits, while another agent, that took
// its HTTP port, answers there with a leader of its own. The start fails:
// the test would otherwise work on the other agent's state.
func TestConsulStartTellsItsAgentFromAnother(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/status/leader":
			fmt.Fprint(w, `"127.0.0.1:8300"`)
		case "/v1/agent/self":
			fmt.Fprint(w, `{"Config":{"NodeID":"0b1a7c65-0000-0000-0000-000000000000"}}`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer other.Close()
	dir := t.TempDir()
	// A consul whose port is taken: it says so and exits.
	bin := filepath.Join(dir, "consul")
	script := "#!/bin/sh\necho 'listen tcp 127.0.0.1:1: bind: address already in use'\nexit 1\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	c := &Consul{t: t, bin: bin, dataDir: dir}
	c.ports[0] = other.Listener.Addr().(*net.TCPAddr).Port
	err := c.start()
	if err == nil {
		c.Stop()
		t.Fatalf("start of an agent that exited returned no error: the server that took its port at %s answered for it", c.Addr())
	}
	if !errors.Is(err, errExited) {
		t.Fatalf("start: %v, want %v", err, errExited)
	}
}
