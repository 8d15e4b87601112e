package agent

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/netagent"
	"github.com/underlay/underlay/internal/register"
)

// TestPluginAnswersBeforeTheIdentityClaim: at boot, with Consul out of
// reach and Docker not answering (it restores containers), the agent's
// IPAM plugin answers dockerd's activation and capability calls at once,
// on the socket systemd passed or on its own, and refuses an address
// request, naming what it waits for: the node's identity claimed in
// Consul. It hands out no address before that claim.
func TestPluginAnswersBeforeTheIdentityClaim(t *testing.T) {
	for _, activated := range []bool{true, false} {
		name := map[bool]string{true: "socket activation", false: "socket made by the agent"}[activated]
		t.Run(name, func(t *testing.T) { testPluginBeforeTheClaim(t, activated) })
	}
}

func testPluginBeforeTheClaim(t *testing.T, activated bool) {
	dir := t.TempDir()
	dockerAPI, err := client.NewClientWithOpts(client.WithHost("unix://"+filepath.Join(dir, "no-docker.sock")), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer dockerAPI.Close()
	t.Setenv("CONSUL_HTTP_TOKEN_FILE", "")
	opts := consul.Options{Addr: "unix://" + filepath.Join(dir, "no-consul.sock")}
	consulAPI, err := consul.NewClient(opts)
	if err != nil {
		t.Fatal(err)
	}
	endpoint, err := consul.NewEndpoint(opts)
	if err != nil {
		t.Fatal(err)
	}
	// The identity recorded at the last start, as at a reboot.
	if err := os.WriteFile(filepath.Join(dir, netagent.NodeIDFile), []byte("abc123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "underlay.sock")
	ipamCfg := IPAMConfig{Enabled: true, Socket: socket, LeakGrace: time.Minute, Sweep: time.Minute, ClaimWait: time.Second}
	if activated {
		ln, err := net.Listen("unix", socket)
		if err != nil {
			t.Fatal(err)
		}
		ipamCfg.Listener = ln
	}
	cfg := Config{
		Register: register.Config{Policy: register.Policy{Node: "n1", HostIP: "192.0.2.1"}, Workers: 1, Resync: time.Minute},
		Networks: true, NetworkSync: time.Minute, StateDir: dir, IPAM: ipamCfg,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, Clients{Docker: dockerAPI, Consul: consulAPI, ConsulHTTP: endpoint}, slog.New(slog.DiscardHandler))
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	}()
	// dockerd's plugin client, which retries a socket not there yet, with
	// a deadline it lacks: it would wait.
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			for {
				c, err := (&net.Dialer{}).DialContext(ctx, "unix", socket)
				if err == nil || ctx.Err() != nil {
					return c, err
				}
				select {
				case <-ctx.Done():
					return nil, err
				case <-time.After(10 * time.Millisecond):
				}
			}
		}}}
	defer hc.CloseIdleConnections()
	call := func(method string, req any) (int, map[string]any, error) {
		b, _ := json.Marshal(req)
		resp, err := hc.Post("http://plugin/"+method, "application/vnd.docker.plugins.v1.2+json", bytes.NewReader(b))
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var out map[string]any
		if err := json.Unmarshal(body, &out); err != nil {
			return resp.StatusCode, nil, err
		}
		return resp.StatusCode, out, nil
	}
	for _, method := range []string{"Plugin.Activate", "IpamDriver.GetCapabilities", "IpamDriver.GetDefaultAddressSpaces"} {
		if code, out, err := call(method, struct{}{}); err != nil || code != http.StatusOK {
			t.Fatalf("%s before the identity is claimed: %d %v %v, want answered", method, code, out, err)
		}
	}
	// Within ClaimWait (1 s) and the client's timeout.
	hc.Timeout = 10 * time.Second
	code, out, err := call("IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4"})
	msg, _ := out["Err"].(string)
	if want := "node identity not yet claimed in Consul at " + endpoint.Addr; err != nil || code != http.StatusInternalServerError || !strings.Contains(msg, want) {
		t.Errorf("address request before the identity is claimed: %d %v %v, want refused with %q", code, out, err, want)
	}
}

// TestPluginServerOutlastsTheClaimWait: on the socket systemd passed, the
// plugin's server closed a connection WriteTimeout (30 s) after its
// request arrived, while the gate holds an address request for up to the
// claim wait (2 minutes by default) at boot: dockerd, restoring a
// container, got no answer at all, neither the address nor the gate's
// refusal naming what the node waits for. The server's write deadline
// outlasts the wait.
func TestPluginServerOutlastsTheClaimWait(t *testing.T) {
	for _, wait := range []time.Duration{0, 45 * time.Second, 10 * time.Minute} {
		cfg := IPAMConfig{Enabled: true, ClaimWait: wait}
		held := cmp.Or(wait, DefaultClaimWait)
		srv := pluginServer(cfg, ipam.NewGate("consul", held, nil), slog.New(slog.DiscardHandler))
		if srv.WriteTimeout != 0 && srv.WriteTimeout <= held {
			t.Errorf("claim wait %s: the plugin server's write timeout is %s, shorter than a request held for %s", wait, srv.WriteTimeout, held)
		}
		if srv.ReadHeaderTimeout == 0 {
			t.Errorf("claim wait %s: the plugin server has no header timeout", wait)
		}
	}
}
