package ipam_test

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

	"github.com/prometheus/client_golang/prometheus"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/testenv"
)

// TestIntegrationPluginProtocol speaks Docker's remote IPAM protocol to the
// plugin, as dockerd does, over HTTP against a real Consul: activation,
// pools by subnet (IPv4 and IPv6), the shared gateway, specific and any
// addresses, release, and Docker's error format.
func TestIntegrationPluginProtocol(t *testing.T) {
	testenv.Require(t)
	c := testenv.StartConsul(t)
	kv := consul.NewKV(c.Client())
	st := netspec.NewStore(kv)
	ctx := context.Background()
	spec := netspec.Spec{Name: "lan", Subnet: netip.MustParsePrefix("10.90.0.0/24"), Gateway: netip.MustParseAddr("10.90.0.1"),
		IPRange: netip.MustParsePrefix("10.90.0.128/25"), Aux: map[string]netip.Addr{"nas": netip.MustParseAddr("10.90.0.130")},
		Parent: "eth1", IPAM: netspec.Cluster, IPv6Subnet: netip.MustParsePrefix("fd00:90::/64")}
	if err := st.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	alloc := ipam.NewAllocator(kv, "n1", nil)
	reg := prometheus.NewRegistry()
	pl := &ipam.Plugin{Alloc: alloc, Pools: ipam.SpecPools{Store: st}, Log: slog.Default(), Metrics: ipam.NewMetrics(reg, alloc)}
	srv := httptest.NewServer(pl.Handler())
	defer srv.Close()

	call := func(method string, req any) (int, map[string]any) {
		t.Helper()
		b, _ := json.Marshal(req)
		resp, err := http.Post(srv.URL+"/"+method, "application/vnd.docker.plugins.v1.2+json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var out map[string]any
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatalf("%s: %s: %v", method, body, err)
		}
		return resp.StatusCode, out
	}
	if _, out := call("Plugin.Activate", nil); !strings.Contains(jsonString(out), "IpamDriver") {
		t.Errorf("activate: %v", out)
	}
	if _, out := call("IpamDriver.GetCapabilities", nil); out["RequiresMACAddress"] != false {
		t.Errorf("capabilities: %v", out)
	}
	call("IpamDriver.GetDefaultAddressSpaces", nil)

	// The pool IDs name the network's generation: its spec's CreateIndex.
	specPair, _, err := kv.Get(ctx, netspec.SpecKey(spec.Name))
	if err != nil {
		t.Fatal(err)
	}
	id4, id6 := fmt.Sprintf("lan/v4@%d", specPair.CreateIndex), fmt.Sprintf("lan/v6@%d", specPair.CreateIndex)
	_, pool4 := call("IpamDriver.RequestPool", map[string]any{"AddressSpace": "underlay-local", "Pool": "10.90.0.0/24"})
	if pool4["PoolID"] != id4 || pool4["Pool"] != "10.90.0.0/24" {
		t.Fatalf("RequestPool v4: %v, want pool ID %s", pool4, id4)
	}
	_, pool6 := call("IpamDriver.RequestPool", map[string]any{"Pool": "fd00:90::/64", "V6": true})
	if pool6["PoolID"] != id6 {
		t.Fatalf("RequestPool v6: %v, want pool ID %s", pool6, id6)
	}
	code, out := call("IpamDriver.RequestPool", map[string]any{"Pool": "10.91.0.0/24"})
	if code != 500 || !strings.Contains(out["Err"].(string), "10.91.0.0/24") {
		t.Errorf("unknown pool: %d %v", code, out)
	}

	// The gateway, asked for by every node, is shared.
	for range 3 {
		_, gw := call("IpamDriver.RequestAddress", map[string]any{"PoolID": id4, "Address": "10.90.0.1",
			"Options": map[string]string{"RequestAddressType": "com.docker.network.gateway"}})
		if gw["Address"] != "10.90.0.1/24" {
			t.Fatalf("gateway: %v", gw)
		}
	}
	// Any address: inside the range, never the aux address.
	seen := map[string]bool{}
	for range 10 {
		_, a := call("IpamDriver.RequestAddress", map[string]any{"PoolID": id4})
		addr := a["Address"].(string)
		p := netip.MustParsePrefix(addr)
		if p.Bits() != 24 || !spec.IPRange.Contains(p.Addr()) || p.Addr().String() == "10.90.0.130" || seen[addr] {
			t.Errorf("address %s: outside the range, reserved or repeated", addr)
		}
		seen[addr] = true
	}
	// A specific address, then the same again: refused, naming it.
	if _, a := call("IpamDriver.RequestAddress", map[string]any{"PoolID": id4, "Address": "10.90.0.200"}); a["Address"] != "10.90.0.200/24" {
		t.Errorf("specific address: %v", a)
	}
	if code, a := call("IpamDriver.RequestAddress", map[string]any{"PoolID": id4, "Address": "10.90.0.200"}); code != 500 || !strings.Contains(a["Err"].(string), "10.90.0.200") {
		t.Errorf("second claim of 10.90.0.200: %d %v", code, a)
	}
	if code, a := call("IpamDriver.RequestAddress", map[string]any{"PoolID": id4, "Address": "10.90.0.5"}); code != 500 {
		t.Errorf("address outside --ip-range handed out: %v", a)
	}
	// IPv6 works the same way.
	_, a6 := call("IpamDriver.RequestAddress", map[string]any{"PoolID": id6})
	if p, err := netip.ParsePrefix(a6["Address"].(string)); err != nil || p.Bits() != 64 || !spec.IPv6Subnet.Contains(p.Addr()) || p.Addr() == netip.MustParseAddr("fd00:90::1") {
		t.Errorf("IPv6 address %v", a6)
	}
	// Release, twice: both succeed; the address is free again.
	for range 2 {
		if code, r := call("IpamDriver.ReleaseAddress", map[string]any{"PoolID": id4, "Address": "10.90.0.200"}); code != 200 {
			t.Errorf("release: %d %v", code, r)
		}
	}
	if _, a := call("IpamDriver.RequestAddress", map[string]any{"PoolID": id4, "Address": "10.90.0.200"}); a["Address"] != "10.90.0.200/24" {
		t.Errorf("released address not free again: %v", a)
	}
	if code, _ := call("IpamDriver.ReleaseAddress", map[string]any{"PoolID": id4, "Address": "10.90.0.1"}); code != 200 {
		t.Error("releasing the shared gateway failed")
	}
	call("IpamDriver.ReleasePool", map[string]any{"PoolID": id4})

	// Consul down: a clear error at once, never a guessed address.
	c.Stop()
	code, out = call("IpamDriver.RequestAddress", map[string]any{"PoolID": id4})
	if code != 500 || !strings.Contains(out["Err"].(string), "underlay ipam") {
		t.Errorf("with Consul down: %d %v", code, out)
	}

	// Every address request and release was timed, by result.
	counts := map[string]uint64{}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "underlay_ipam_request_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			var key []string
			for _, l := range m.GetLabel() {
				key = append(key, l.GetValue())
			}
			counts[strings.Join(key, "/")] = m.GetHistogram().GetSampleCount()
		}
	}
	// 10 any + 1 specific + IPv6 + the specific again = 13 requests; the
	// second claim, the out-of-range one and the Consul-down one failed.
	want := map[string]uint64{"request/ok": 13, "request/error": 3, "release/ok": 2}
	if fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Errorf("request metrics %v, want %v", counts, want)
	}
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
