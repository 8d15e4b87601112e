package scale_test

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/scale"
	"github.com/underlay/underlay/internal/testenv"
)

// BenchmarkIntegrationLabAutoscaler prints issue 6's figures on a 3-node
// lab: the autoscaler's own latency from a webhook to the Docker service
// update it sends, apart from the update itself, over sequential up and
// down calls; and the time from an `up` to every new replica registered
// and passing in Consul. The controller runs in this process against
// node1's dockerd and Consul, as `underlay control` on node1 would.
func BenchmarkIntegrationLabAutoscaler(b *testing.B) {
	testenv.Require(b)
	for b.Loop() {
		runAutoscalerBench(b)
	}
}

// benchCalls is the number of sequential up/down calls timed.
const benchCalls = 50

func runAutoscalerBench(b *testing.B) {
	al := startAutoscalerLab(b, "10.190.0.0/16")
	ctx := testenv.Context(b, 5*time.Minute)
	m := al.lab.Nodes[0]
	svc := "ulscale-bench-" + testenv.ID(b)
	// Up and down by 2 between 1 and 3, with nothing holding a call back.
	createLabService(b, m.Docker, svc, al.network, map[string]string{
		scale.LabelOrbiter: "true", scale.LabelMin: "1", scale.LabelMax: "3",
		scale.LabelStepUp: "2", scale.LabelStepDown: "2",
		scale.LabelCooldownUp: "0", scale.LabelCooldownDown: "0",
		scale.LabelAllowDown: "true", scale.LabelStabilizationDown: "0",
	})
	ctl := startLabControl(b, m.Docker, m.Consul)
	ctl.waitManaged(b, svc)
	waitPassing(b, m.Consul, svc, 1, 90*time.Second)

	call := func(dir string, from, to int) time.Duration {
		b.Helper()
		t0 := time.Now()
		code, raw := ctl.post(ctx, "/v1/orbiter/handle/autoswarm/"+svc+"/"+dir)
		d := time.Since(t0)
		var rec scale.Record
		json.Unmarshal([]byte(raw), &rec)
		if code != http.StatusOK || rec.Refused || rec.From != from || rec.To != to {
			b.Fatalf("%s: status %d %s; want %d → %d", dir, code, raw, from, to)
		}
		return d
	}
	// Warm up: the first call of a service reads its cooldowns from Consul.
	call("up", 1, 3)
	call("down", 3, 1)
	ctl.timing.take()

	var client []time.Duration
	for i := range benchCalls {
		if i%2 == 0 {
			client = append(client, call("up", 1, 3))
		} else {
			client = append(client, call("down", 3, 1))
		}
	}
	var before, own, update, server []time.Duration
	for _, r := range ctl.timing.take() {
		if r.updates != 1 {
			b.Fatalf("a request sent %d service updates, want 1", r.updates)
		}
		before = append(before, r.updateStart.Sub(r.received))
		own = append(own, r.updateStart.Sub(r.received)-r.inspect)
		update = append(update, r.update)
		server = append(server, r.total)
	}
	if len(before) != benchCalls {
		b.Fatalf("%d requests timed, want %d", len(before), benchCalls)
	}

	// From `up` to the new replicas in Consul, a few times: each round
	// starts from one replica registered and passing.
	const rounds = 3
	var registered, healthy []time.Duration
	for range rounds {
		waitPassing(b, m.Consul, svc, 1, 90*time.Second)
		waitRegistered(b, m.Consul, svc, 1, 90*time.Second)
		t0 := time.Now()
		call("up", 1, 3)
		var reg time.Duration
		testenv.Eventually(b, 90*time.Second, func() (bool, string) {
			if reg == 0 {
				if n, _ := instances(m.Consul, svc, false); n == 3 {
					reg = time.Since(t0)
				}
			}
			n, err := instances(m.Consul, svc, true)
			return n == 3, fmt.Sprintf("%d instances of %s passing, want 3 (%v)", n, svc, err)
		})
		healthy = append(healthy, time.Since(t0))
		if reg == 0 {
			reg = time.Since(t0)
		}
		registered = append(registered, reg)
		call("down", 3, 1)
	}

	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	fmt.Printf("autoscaler benchmark (3-node lab)\n")
	fmt.Printf("  %d sequential Orbiter up/down calls (1 ↔ 3 replicas, cooldowns 0, allow-down), controller on node1's dockerd and Consul:\n", benchCalls)
	fmt.Printf("  webhook received → Docker ServiceUpdate sent (excludes Docker's update): p50 %.2f ms  p99 %.2f ms\n", ms(percentile(before, 50)), ms(percentile(before, 99)))
	fmt.Printf("    of which the autoscaler's own work (Docker service reads taken out):   p50 %.2f ms  p99 %.2f ms\n", ms(percentile(own, 50)), ms(percentile(own, 99)))
	fmt.Printf("  Docker ServiceUpdate call itself (until node1's dockerd answers):        p50 %.2f ms  p99 %.2f ms\n", ms(percentile(update, 50)), ms(percentile(update, 99)))
	fmt.Printf("  whole request at the server (incl. update and history write to Consul): p50 %.2f ms  p99 %.2f ms\n", ms(percentile(server, 50)), ms(percentile(server, 99)))
	fmt.Printf("  whole request at the client (loopback HTTP):                             p50 %.2f ms  p99 %.2f ms\n", ms(percentile(client, 50)), ms(percentile(client, 99)))
	fmt.Printf("  (p99 by nearest rank: with %d samples, the slowest call)\n", benchCalls)
	fmt.Printf("  up 1 → 3 replicas until 3 registered in Consul:             %s (median of %d: %s)\n", durations(registered), rounds, percentile(registered, 50).Round(time.Millisecond))
	fmt.Printf("  up 1 → 3 replicas until 3 registered and passing in Consul: %s (median of %d: %s)\n", durations(healthy), rounds, percentile(healthy, 50).Round(time.Millisecond))
	b.ReportMetric(ms(percentile(before, 50)), "pre-update-p50-ms")
	b.ReportMetric(ms(percentile(before, 99)), "pre-update-p99-ms")
	b.ReportMetric(ms(percentile(own, 50)), "pre-update-no-inspect-p50-ms")
	b.ReportMetric(ms(percentile(own, 99)), "pre-update-no-inspect-p99-ms")
	b.ReportMetric(ms(percentile(update, 50)), "docker-update-p50-ms")
	b.ReportMetric(ms(percentile(update, 99)), "docker-update-p99-ms")
	b.ReportMetric(ms(percentile(server, 50)), "request-p50-ms")
	b.ReportMetric(ms(percentile(server, 99)), "request-p99-ms")
	b.ReportMetric(percentile(registered, 50).Seconds(), "up-to-registered-s")
	b.ReportMetric(percentile(healthy, 50).Seconds(), "up-to-passing-s")
}

// instances counts the instances of service in the catalog as c sees it;
// with onlyPassing, those whose every check (node checks included) passes.
func instances(c *api.Client, service string, onlyPassing bool) (int, error) {
	entries, _, err := c.Health().Service(service, "", onlyPassing, nil)
	return len(entries), err
}

// waitRegistered waits until exactly n instances of service are
// registered, whatever their checks say.
func waitRegistered(tb testing.TB, c *api.Client, service string, n int, timeout time.Duration) {
	tb.Helper()
	testenv.Eventually(tb, timeout, func() (bool, string) {
		got, err := instances(c, service, false)
		return got == n, fmt.Sprintf("%d instances of %s registered, want %d (%v)", got, service, n, err)
	})
}

// percentile is the nearest-rank p-th percentile of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(i, 0)]
}

// durations lists ds rounded to milliseconds.
func durations(ds []time.Duration) string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Round(time.Millisecond).String())
	}
	return strings.Join(out, ", ")
}
