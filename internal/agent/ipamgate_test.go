package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/underlay/underlay/internal/dockerhost"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

// listingDocker is a stand-in for dockerd with one running container on
// network pool holding held, whose container listing is answered only
// once release is closed; listing is closed as the first one arrives.
type listingDocker struct {
	held             string
	listing, release chan struct{}
}

func (d *listingDocker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case strings.HasSuffix(p, "/_ping"):
		w.Header().Set("Api-Version", "1.44")
		w.Write([]byte("OK"))
	case strings.HasSuffix(p, "/events"):
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	case strings.HasSuffix(p, "/containers/json"):
		select {
		case <-d.listing:
		default:
			close(d.listing)
		}
		select {
		case <-d.release:
		case <-r.Context().Done():
			return
		}
		fmt.Fprintf(w, `[{"Id":"c1","Names":["/c1"],"State":"running","Created":1,"NetworkSettings":{"Networks":{"pool":{"NetworkID":"pnet","IPAddress":%q}}}}]`, d.held)
	case strings.HasSuffix(p, "/networks/pnet"):
		w.Write([]byte(`{"Id":"pnet","Name":"pool","Driver":"macvlan"}`))
	default:
		http.Error(w, "not faked", http.StatusNotImplemented)
	}
}

// gatedIPAM runs the agent's IPAM (runIPAM) on d, its identity claimed,
// and returns a request to its plugin for addr (any address when "").
func gatedIPAM(t *testing.T, d *listingDocker, listingWait time.Duration) func(addr string) (int, map[string]any) {
	t.Helper()
	const id = "abc1230000000000000000000"
	srv := httptest.NewServer(d)
	t.Cleanup(srv.Close)
	api, err := client.NewClientWithOpts(client.WithHost("tcp://"+srv.Listener.Addr().String()), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	kv := nodeKV(kvtest.New(), id)
	store := netspec.NewStore(kv)
	spec := netspec.Spec{Name: "pool", Subnet: netip.MustParsePrefix("10.20.0.0/24"), Gateway: netip.MustParseAddr("10.20.0.1"),
		Parent: "eth1", IPAM: netspec.Cluster}
	if err := store.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	gate := ipam.NewGate("127.0.0.1:8500", 2*time.Second, nil)
	n := &node{cfg: Config{IPAM: IPAMConfig{Enabled: true, LeakGrace: time.Minute, Sweep: time.Hour, ListingWait: listingWait}}, c: Clients{Docker: api},
		src: dockerhost.NewSource(api), name: "n1", reg: prometheus.NewRegistry(), log: slog.New(slog.DiscardHandler), gate: gate}
	g, gctx := errgroup.WithContext(ctx)
	n.runIPAM(gctx, g, kv, store, dockerhost.NewNetworks(api), id)
	t.Cleanup(func() {
		cancel()
		g.Wait()
	})
	plugin := httptest.NewServer(gate.Handler())
	t.Cleanup(plugin.Close)
	// request asks for addr, or any address when it is "".
	request := func(addr string) (int, map[string]any) {
		t.Helper()
		b, _ := json.Marshal(map[string]any{"PoolID": "pool/v4", "Address": addr})
		resp, err := http.Post(plugin.URL+"/IpamDriver.RequestAddress", "application/vnd.docker.plugins.v1.2+json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var out map[string]any
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatalf("answer %q: %v", body, err)
		}
		return resp.StatusCode, out
	}

	return request
}

// TestPluginServesOnlyOnceTheContainersAreListed: the agent opened its
// IPAM plugin's gate as soon as the node's identity was claimed, while
// its reclaimer's first listing of the node's containers was still under
// way: an agent restarted after Consul lost a running container's
// address (its node taken for departed, a stray release) handed that
// address to the first container that asked, a second holder. The gate
// now opens once the first listing has been taken in; until then
// requests wait, and are refused naming the listing.
func TestPluginServesOnlyOnceTheContainersAreListed(t *testing.T) {
	held := "10.20.0.2" // the first address a request would be given
	d := &listingDocker{held: held, listing: make(chan struct{}), release: make(chan struct{})}
	request := gatedIPAM(t, d, 0)

	// Consul records none of the container's address: it lost it.
	<-d.listing // the reclaimer's first listing, not answered yet
	code, out := request(held)
	msg, _ := out["Err"].(string)
	if want := "listing this node's containers"; code != http.StatusInternalServerError || !strings.Contains(msg, want) {
		t.Fatalf("request for %s, which a container here holds, before the node's containers were listed: %d %v, want refused with %q", held, code, out, want)
	}
	close(d.release)
	code, out = request(held)
	msg, _ = out["Err"].(string)
	if want := "a container on this node holds it"; code != http.StatusInternalServerError || !strings.Contains(msg, want) {
		t.Errorf("request for %s, which a container here holds, once the containers are listed: %d %v, want refused with %q", held, code, out, want)
	}
	code, out = request("")
	if got, _ := out["Address"].(string); code != http.StatusOK || got == "" || strings.HasPrefix(got, held+"/") {
		t.Errorf("request for any address once the containers are listed: %d %v, want served one other than %s", code, out, held)
	}
}

// TestPluginServesAfterTheListingWait: at boot dockerd serves its API,
// and so the listing of the containers, only once those it restores have
// started, and they wait for the plugin: a gate opened only by the
// listing held them for the claim wait (2 minutes) and refused them, and
// dockerd does not try a failed restore again. Past the listing wait the
// plugin serves. Before (the gate opened by the listing alone): "request
// while the containers cannot be listed: 500 …, want served once the
// listing wait is over".
func TestPluginServesAfterTheListingWait(t *testing.T) {
	d := &listingDocker{held: "10.20.0.2", listing: make(chan struct{}), release: make(chan struct{})}
	request := gatedIPAM(t, d, 300*time.Millisecond)
	<-d.listing // never answered, as by a dockerd restoring containers
	if code, out := request(""); code != http.StatusOK {
		t.Errorf("request while the containers cannot be listed: %d %v, want served once the listing wait is over", code, out)
	}
}
