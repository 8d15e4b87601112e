package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/underlay/underlay/internal/testdocker"
	"github.com/underlay/underlay/internal/testlog"
)

// swarmDocker is a stand-in for dockerd's API whose /info reports the
// swarm node ID set last, and tells served of each /info it answers.
type swarmDocker struct {
	mu     sync.Mutex
	nodeID string
	served chan string
}

func (d *swarmDocker) set(id string) {
	d.mu.Lock()
	d.nodeID = id
	d.mu.Unlock()
}

func (d *swarmDocker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasSuffix(r.URL.Path, "/_ping"):
		w.Header().Set("Api-Version", "1.44")
		w.Write([]byte("OK"))
	case strings.HasSuffix(r.URL.Path, "/info"):
		d.mu.Lock()
		id := d.nodeID
		d.mu.Unlock()
		state := "active"
		if id == "" {
			state = "inactive"
		}
		fmt.Fprintf(w, `{"Name":"n1","Swarm":{"NodeID":%q,"LocalNodeState":%q}}`, id, state)
		select {
		case d.served <- id:
		default:
		}
	default:
		http.Error(w, "not faked", http.StatusNotImplemented)
	}
}

// awaitServed waits until d has answered n more /info calls reporting id.
func (d *swarmDocker) awaitServed(t *testing.T, n int, id string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for n > 0 {
		select {
		case got := <-d.served:
			if got == id {
				n--
			}
		case <-timeout:
			t.Fatalf("dockerd's /info not asked %d more times", n)
		}
	}
}

// TestSwarmNodeIDWatch: a node that left the swarm (docker swarm leave:
// Docker reports no swarm node ID) kept its agent going with nothing in
// its log. The agent now warns once that the node left, naming its
// identity, goes on, says once when the node is back under that
// identity, and warns and stops (to start over under the new identity)
// once Docker names another.
func TestSwarmNodeIDWatch(t *testing.T) {
	recs := testlog.NewRecords(64)
	n, d := swarmNode(t, "abc123", slog.New(recs))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- n.watchSwarmNodeID(ctx, "abc123", time.Millisecond, false) }()

	isSwarm := func(r slog.Record) bool { return strings.Contains(r.Message, "swarm") }
	d.awaitServed(t, 2, "abc123")
	d.set("")
	r := recs.Await(t, 10*time.Second, isSwarm)
	if r.Level != slog.LevelWarn || !strings.Contains(r.Message, "left the swarm") || testlog.Attr(r, "node_id") != "abc123" {
		t.Errorf("record %q at %s, node_id %q; want a warning that the node left the swarm, naming abc123", r.Message, r.Level, testlog.Attr(r, "node_id"))
	}
	// Still out: said once only.
	d.awaitServed(t, 3, "")
	d.set("abc123")
	r = recs.Await(t, 10*time.Second, isSwarm)
	if r.Level != slog.LevelInfo || !strings.Contains(r.Message, "back in the swarm") {
		t.Errorf("record %q at %s; want the node back in the swarm, said once", r.Message, r.Level)
	}
	d.awaitServed(t, 2, "abc123")
	select {
	case err := <-done:
		t.Fatalf("the watch stopped while the node was out of the swarm or back: %v", err)
	default:
	}

	// Joined again as another node.
	d.set("def456")
	r = recs.Await(t, 10*time.Second, isSwarm)
	if r.Level != slog.LevelWarn || testlog.Attr(r, "node_id") != "abc123" || testlog.Attr(r, "new_node_id") != "def456" {
		t.Errorf("record %q at %s; want a warning naming abc123 and def456", r.Message, r.Level)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "from abc123 to def456") {
		t.Errorf("watch = %v; want an error naming the change", err)
	}
}

// TestSwarmNodeIDWatchConfirmsTheRecordedID: an agent that started under
// the identity recorded at its last start (Docker not answering at boot)
// checked it against Docker only at its first heartbeat once Docker
// answered: a record gone stale (the node joined the swarm again while
// the agent was down) served the IPAM plugin under the old identity for
// up to 10 s more, the allocations of the tasks swarm starts meanwhile
// recorded for a node the swarm no longer lists, which the leader
// reclaims while they are in use. Until Docker has answered once, an
// unconfirmed identity is checked every netagent.AskDockerFor, whatever
// the heartbeat.
func TestSwarmNodeIDWatchConfirmsTheRecordedID(t *testing.T) {
	n, _ := swarmNode(t, "def456", slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := n.watchSwarmNodeID(ctx, "abc123", time.Hour, true)
	if err == nil || !strings.Contains(err.Error(), "from abc123 to def456") {
		t.Errorf("watch of the recorded identity abc123, Docker answering def456, heartbeat an hour: %v; want the change found at Docker's first answer", err)
	}
}

// swarmNode is a node whose Docker is a swarmDocker answering nodeID,
// served until the test ends.
func swarmNode(t *testing.T, nodeID string, log *slog.Logger) (*node, *swarmDocker) {
	t.Helper()
	d := &swarmDocker{nodeID: nodeID, served: make(chan string, 1)}
	srv := httptest.NewServer(d)
	t.Cleanup(srv.Close)
	dockerAPI, err := client.NewClientWithOpts(client.WithHost("tcp://"+srv.Listener.Addr().String()), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dockerAPI.Close() })
	return &node{c: Clients{Docker: dockerAPI}, name: "n1", log: log}, d
}

// TestSwarmNodeIDWatchGivesUpOnDockerThatDoesNotAnswer: a dockerd that
// accepted the watch's /info and never answered held the watch for good:
// a node joined to the swarm again as another node went on serving its
// old identity. Each /info is now given up by the next tick, and the next
// one asks again.
func TestSwarmNodeIDWatchGivesUpOnDockerThatDoesNotAnswer(t *testing.T) {
	d := testdocker.New(t)
	var asked atomic.Int32
	api := d.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/info") {
			http.Error(w, "not faked", http.StatusNotImplemented)
			return
		}
		if asked.Add(1) == 1 {
			d.Hang(r)
			return
		}
		fmt.Fprint(w, `{"Name":"n1","Swarm":{"NodeID":"def456","LocalNodeState":"active"}}`)
	}))
	n := &node{c: Clients{Docker: api}, name: "n1", log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- n.watchSwarmNodeID(ctx, "abc123", 50*time.Millisecond, false) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "from abc123 to def456") {
			t.Errorf("watch = %v; want an error naming the change Docker's second answer shows", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the swarm node ID watch still waiting after a minute for a dockerd that does not answer its first /info")
	}
}

// TestDockerHostNameGivesUpOnDockerThatDoesNotAnswer: at start, the agent
// asks Docker for the node's name until it answers (waitFor); a dockerd
// that accepted the ask and never answered held the start for good, with
// no ask again. Each ask is now given up after its bound, with a deadline
// error naming it, and the next one is made.
func TestDockerHostNameGivesUpOnDockerThatDoesNotAnswer(t *testing.T) {
	d := testdocker.New(t)
	api := d.Serve(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { d.Hang(r) }))
	ask := dockerHostName(api, 50*time.Millisecond)
	testdocker.GivesUp(t, "the agent's ask for the Docker host name", "docker info", func() error {
		_, err := ask(context.Background())
		return err
	})
}
