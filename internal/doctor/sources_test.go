package doctor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	gocmp "github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/consul"
)

// fakeConsul answers /v1/status/leader with itself as leader (on the RPC
// port 8300, as Consul does) and a Date header offset from this host's clock.
func fakeConsul(t *testing.T, offset time.Duration, leader bool) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/status/leader" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Date", time.Now().Add(offset).UTC().Format(http.TimeFormat))
		w.Header().Set("Content-Type", "application/json")
		if !leader {
			fmt.Fprint(w, `""`)
			return
		}
		fmt.Fprint(w, `"127.0.0.1:8300"`)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestConsulAPIFacts(t *testing.T) {
	tests := []struct {
		name   string
		offset time.Duration
		leader bool
		want   []brief
		source string
	}{
		{"in sync", 0, true, []brief{{"consul/agent", "ok", ""}, {"consul/clock-skew", "ok", ""}}, "leader"},
		{"server 5s ahead", 5 * time.Second, true, []brief{{"consul/agent", "ok", ""},
			{"consul/clock-skew", "warn", "timedatectl set-ntp true   # or: chronyc makestep"}}, "leader"},
		{"no leader", 0, false, []brief{{"consul/agent", "fail", "consul members   # then: consul join SERVER_ADDRESS"},
			{"consul/clock-skew", "ok", ""}}, "local"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := fakeConsul(t, tt.offset, tt.leader)
			c := newConsulAPI(t, consul.Options{Addr: srv.URL})
			f := c.Facts(context.Background())
			rs := EvalConsul(f)
			got := briefs(rs)
			if len(got) != len(tt.want) {
				t.Fatalf("got %+v", rs)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("result %d: got %+v, want %+v (%s)", i, got[i], tt.want[i], rs[i].Message)
				}
			}
			if !strings.Contains(f.Source, tt.source) {
				t.Errorf("skew measured against %q, want the %s", f.Source, tt.source)
			}
		})
	}
}

func TestConsulAPIDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	c := newConsulAPI(t, consul.Options{Addr: addr})
	rs := EvalConsul(c.Facts(context.Background()))
	if len(rs) != 1 || rs[0].Check != "consul/agent" || rs[0].Status != Fail {
		t.Errorf("got %+v", rs)
	}
}

func TestDialTCP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	open := netip.MustParseAddrPort(l.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := DialTCP(ctx, open); err != nil {
		t.Errorf("listening port: %v", err)
	}
	l.Close()
	// A refused connection means the host answered: reached.
	if err := DialTCP(ctx, open); err != nil {
		t.Errorf("refused port counts as reached, got %v", err)
	}
}

func newConsulAPI(t *testing.T, o consul.Options) *ConsulAPI {
	t.Helper()
	c, err := consul.NewClient(o)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := consul.NewEndpoint(o)
	if err != nil {
		t.Fatal(err)
	}
	return NewConsulAPI(c, ep)
}

// fakeDockerAPI answers the container list and inspect calls of a Docker
// daemon on loopback: list is the list's JSON; inspect the inspect JSON
// of each container ID ("!message": a 500 with that message), a missing
// one answering 404 as a container removed since the list does.
func fakeDockerAPI(t *testing.T, list string, inspect map[string]string) *DockerAPI {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		path := r.URL.Path[strings.Index(r.URL.Path[1:], "/")+1:] // without /v1.41
		if path == "/containers/json" {
			fmt.Fprint(w, list)
			return
		}
		id, ok := strings.CutSuffix(strings.TrimPrefix(path, "/containers/"), "/json")
		if j, found := inspect[id]; ok && found {
			if msg, failed := strings.CutPrefix(j, "!"); failed {
				w.WriteHeader(http.StatusInternalServerError)
				fmt.Fprintf(w, `{"message":%q}`, msg)
				return
			}
			fmt.Fprint(w, j)
			return
		}
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"message":"No such container: %s"}`, id)
	}))
	t.Cleanup(srv.Close)
	c, err := client.NewClientWithOpts(client.WithHost("tcp://"+srv.Listener.Addr().String()), client.WithVersion("1.41"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &DockerAPI{API: c}
}

// TestEndpointsSkipsContainersGone: a container that ended between the
// list and its inspection (a task scaled down, a job done: every moment
// on a busy node) failed the whole listing, and containers/reachable
// said "cannot list containers" for every other one. One gone is now
// passed over.
func TestEndpointsSkipsContainersGone(t *testing.T) {
	const gone, here = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	list := `[{"Id":"` + gone + `","Names":["/gone"],"NetworkSettings":{"Networks":{"lan":{"IPAddress":"10.0.0.5"}}}},
		{"Id":"` + here + `","Names":["/here"],"NetworkSettings":{"Networks":{"lan":{"IPAddress":"10.0.0.6"}}}}]`
	d := fakeDockerAPI(t, list, map[string]string{here: `{"Id":"` + here + `","Config":{"ExposedPorts":{"80/tcp":{}}}}`})
	ps, err := d.Endpoints(context.Background(), map[string]string{"lan": "lan"})
	if err != nil {
		t.Fatalf("Endpoints: %v", err)
	}
	want := []Probe{{Container: "here", Network: "lan", IP: netip.MustParseAddr("10.0.0.6"), Port: 80}}
	if fmt.Sprint(ps) != fmt.Sprint(want) {
		t.Errorf("Endpoints = %+v, want %+v", ps, want)
	}
}

// TestEndpointsShortID: a container ID shorter than 12 characters (a
// daemon or proxy that shortens them) with no name, or whose inspection
// failed, panicked slicing it to 12, and the panic ended the doctor, or
// the agent running it. It is now named as it is.
func TestEndpointsShortID(t *testing.T) {
	list := `[{"Id":"abc","Names":[],"NetworkSettings":{"Networks":{"lan":{"IPAddress":"10.0.0.5"}}}}]`
	d := fakeDockerAPI(t, list, map[string]string{"abc": `{"Id":"abc","Config":{"ExposedPorts":{"80/tcp":{}}}}`})
	ps, err := d.Endpoints(context.Background(), map[string]string{"lan": "lan"})
	if err != nil || len(ps) != 1 || ps[0].Container != "abc" {
		t.Errorf("Endpoints = %+v, %v; want container abc", ps, err)
	}
	d = fakeDockerAPI(t, `[{"Id":"x","Names":["/x"],"NetworkSettings":{"Networks":{"lan":{"IPAddress":"10.0.0.5"}}}}]`, map[string]string{"x": "!disk full"})
	if _, err := d.Endpoints(context.Background(), map[string]string{"lan": "lan"}); err == nil || !strings.Contains(err.Error(), "inspect container x: ") {
		t.Errorf("Endpoints with the inspection failing: %v, want an error naming container x", err)
	}
}

// TestIdentityBoundedWhenDockerHangs: before any check, the doctor asks
// Docker for this node's identity and name, with the command's context,
// which has no deadline: a hung dockerd (one that accepts and never
// answers, a case the doctor is for) hung `underlay doctor` for ever
// before it printed anything. Each question now gives up after
// IdentityTimeout, and the doctor goes on to its checks, which say
// Docker does not answer. The time is cut short here (the production
// one: TestRunnerDefaults); the bound is the same.
func TestIdentityBoundedWhenDockerHangs(t *testing.T) {
	hung := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hung:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(hung) })
	c, err := client.NewClientWithOpts(client.WithHost("tcp://"+srv.Listener.Addr().String()), client.WithVersion("1.41"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	d := &DockerAPI{API: c, IdentityTimeout: 20 * time.Millisecond}
	done := make(chan string, 2)
	go func() {
		done <- NodeID(context.Background(), d)
		done <- NodeName(context.Background(), "", d)
	}()
	for _, what := range []string{"NodeID", "NodeName"} {
		select {
		case got := <-done:
			if what == "NodeID" && got != "" {
				t.Errorf("NodeID = %q with Docker hung, want none", got)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not return in 10s with Docker hung, asking for %s at most", what, d.IdentityTimeout)
		}
	}
}

// leaderAt answers the requests to the leader's host (hostname, as a URL
// gives it), with this host's time, and passes the others to next.
type leaderAt struct {
	hostname string
	next     http.RoundTripper
	mu       sync.Mutex
	asked    []string // hosts of the requests it answered
}

func (l *leaderAt) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Hostname() != l.hostname {
		return l.next.RoundTrip(r)
	}
	l.mu.Lock()
	l.asked = append(l.asked, r.URL.Host)
	l.mu.Unlock()
	h := http.Header{"Date": {time.Now().UTC().Format(http.TimeFormat)}}
	return &http.Response{StatusCode: http.StatusOK, Header: h, Body: io.NopCloser(strings.NewReader(`""`)), Request: r}, nil
}

// TestConsulAPIFactsIPv6Leader: a leader address with an IPv6 zone
// (fe80::1%eth0) made a URL that does not parse (a zone is %25 in a
// URL): the skew was measured against the local agent, and the message
// blamed the leader's API as not reachable. The leader's API is now
// asked, at the zoned address.
func TestConsulAPIFactsIPv6Leader(t *testing.T) {
	for _, tt := range []struct{ leader, hostname, host string }{
		{"[fe80::1%eth0]:8300", "fe80::1%eth0", "[fe80::1%eth0]"},
		{"[2001:db8::1]:8300", "2001:db8::1", "[2001:db8::1]"},
	} {
		t.Run(tt.leader, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Date", time.Now().UTC().Format(http.TimeFormat))
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, "%q", tt.leader)
			}))
			t.Cleanup(srv.Close)
			c := newConsulAPI(t, consul.Options{Addr: srv.URL})
			rt := &leaderAt{hostname: tt.hostname, next: cmp.Or[http.RoundTripper](c.HTTP.Transport, http.DefaultTransport)}
			c.HTTP.Transport = rt
			f := c.Facts(context.Background())
			_, port, _ := net.SplitHostPort(c.Local)
			if want := tt.host + ":" + port; len(rt.asked) != 1 || rt.asked[0] != want || !strings.Contains(f.Source, "leader") {
				t.Errorf("asked %q, skew measured against %q (err %v); want the leader's API at %s", rt.asked, f.Source, f.DateErr, want)
			}
		})
	}
}

// TestEndpointsIPv4MappedAddress: Docker may give a container's address
// as an IPv4-mapped IPv6 address (::ffff:a.b.c.d), in its IPv6 field or
// its IPv4 one; the doctor took it for an IPv6 address, and an
// unreachable container's row sent the operator to `ip -6 route get` and
// the network's IPv6 checks. It is now the IPv4 address it is, probed
// once when both fields give it.
func TestEndpointsIPv4MappedAddress(t *testing.T) {
	list := `[{"Id":"a","Names":["/a"],"NetworkSettings":{"Networks":{"lan":{"IPAddress":"","GlobalIPv6Address":"::ffff:10.0.0.5"}}}},
		{"Id":"b","Names":["/b"],"NetworkSettings":{"Networks":{"lan":{"IPAddress":"10.0.0.6","GlobalIPv6Address":"::ffff:10.0.0.6"}}}},
		{"Id":"c","Names":["/c"],"NetworkSettings":{"Networks":{"lan":{"IPAddress":"::ffff:10.0.0.7","GlobalIPv6Address":"fd00::7"}}}}]`
	exposed := `{"Config":{"ExposedPorts":{"80/tcp":{}}}}`
	d := fakeDockerAPI(t, list, map[string]string{"a": exposed, "b": exposed, "c": exposed})
	ps, err := d.Endpoints(context.Background(), map[string]string{"lan": "lan"})
	if err != nil {
		t.Fatalf("Endpoints: %v", err)
	}
	var got []string
	for _, p := range ps {
		got = append(got, p.Container+" "+p.IP.String())
	}
	if diff := gocmp.Diff([]string{"a 10.0.0.5", "b 10.0.0.6", "c 10.0.0.7", "c fd00::7"}, got); diff != "" {
		t.Errorf("endpoints (-want +got):\n%s", diff)
	}
	rs := EvalContainers([]Probe{{Container: "a", Network: "lan", IP: netip.MustParseAddr("::ffff:10.0.0.5"), Port: 80,
		Err: errors.New("no route to host"), ShimLink: "ul-lan"}}, nil)
	if len(rs) != 1 || strings.Contains(rs[0].Fix, "-6") || strings.Contains(rs[0].Fix, "::ffff") || strings.Contains(rs[0].Message, "::ffff") {
		t.Errorf("an unreachable mapped address judged as %+v; want it described as 10.0.0.5, with ip route get", rs)
	}
}

// inspectGate is a Docker daemon on loopback whose container list holds
// n containers on network lan (c00, c01, … with 10.0.0.1, 10.0.0.2, …)
// and whose inspections answer (container i exposing port 1000+i) only
// once want of them are under way at once, or when released; it records
// the most it saw under way.
type inspectGate struct {
	mu       sync.Mutex
	inflight int
	most     int
	full     chan struct{} // closed when want inspections were under way at once
	release  chan struct{} // closed by the test: every inspection answers
}

func newInspectGate(t *testing.T, n, want int) (*inspectGate, *DockerAPI) {
	t.Helper()
	g := &inspectGate{full: make(chan struct{}), release: make(chan struct{})}
	var list []string
	for i := range n {
		list = append(list, fmt.Sprintf(`{"Id":"c%02d","Names":["/c%02d"],"NetworkSettings":{"Networks":{"lan":{"IPAddress":"10.0.0.%d"}}}}`, i, i, i+1))
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		path := r.URL.Path[strings.Index(r.URL.Path[1:], "/")+1:]
		if path == "/containers/json" {
			fmt.Fprint(w, "["+strings.Join(list, ",")+"]")
			return
		}
		id, _ := strings.CutSuffix(strings.TrimPrefix(path, "/containers/"), "/json")
		var i int
		fmt.Sscanf(id, "c%d", &i)
		g.mu.Lock()
		g.inflight++
		g.most = max(g.most, g.inflight)
		if g.inflight == want {
			select {
			case <-g.full:
			default:
				close(g.full)
			}
		}
		g.mu.Unlock()
		defer func() { g.mu.Lock(); g.inflight--; g.mu.Unlock() }()
		select {
		case <-g.full:
		case <-g.release:
		case <-r.Context().Done():
			return
		}
		fmt.Fprintf(w, `{"Id":%q,"Config":{"ExposedPorts":{"%d/tcp":{}}}}`, id, 1000+i)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(g.release) })
	c, err := client.NewClientWithOpts(client.WithHost("tcp://"+srv.Listener.Addr().String()), client.WithVersion("1.41"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return g, &DockerAPI{API: c}
}

// TestEndpointsInspectsConcurrently: Endpoints inspected the containers
// one at a time, so thousands of them on a slow dockerd took longer than
// the check's 15 s, and containers/reachable failed with "cannot list
// containers: … context deadline exceeded", probing none. It now
// inspects MaxInspects at once (never more), and gives the endpoints in
// the list's order, each with its own container's port.
func TestEndpointsInspectsConcurrently(t *testing.T) {
	const n = 5 * MaxInspects
	g, d := newInspectGate(t, n, MaxInspects)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ps, err := d.Endpoints(ctx, map[string]string{"lan": "lan"})
	g.mu.Lock()
	most := g.most
	g.mu.Unlock()
	if most != MaxInspects {
		t.Errorf("at most %d inspections under way at once, want %d", most, MaxInspects)
	}
	if err != nil {
		t.Fatalf("Endpoints: %v", err)
	}
	var want, got []string
	for i := range n {
		want = append(want, fmt.Sprintf("c%02d 10.0.0.%d:%d late=false", i, i+1, 1000+i))
	}
	for _, p := range ps {
		got = append(got, fmt.Sprintf("%s %s late=%v", p.Container, netip.AddrPortFrom(p.IP, uint16(p.Port)), p.Late))
	}
	if diff := gocmp.Diff(want, got); diff != "" {
		t.Errorf("endpoints (-want +got):\n%s", diff)
	}
}

// TestEndpointsOutOfTime: when the check's time ended with containers
// not yet inspected, the whole listing failed ("cannot list containers")
// and no container was probed or counted. Those not inspected are now
// endpoints not probed in time (Late), which containers/reachable counts
// in its warning, beside the ones inspected.
func TestEndpointsOutOfTime(t *testing.T) {
	_, d := newInspectGate(t, 3, 99) // never full: no inspection answers
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	ps, err := d.Endpoints(ctx, map[string]string{"lan": "lan"})
	if err != nil {
		t.Fatalf("Endpoints out of time: %v; want the endpoints not inspected marked late", err)
	}
	if len(ps) != 3 || !ps[0].Late || !ps[1].Late || !ps[2].Late {
		t.Fatalf("endpoints %+v; want the 3, each late", ps)
	}
	rs := EvalContainers(ps, nil)
	if len(rs) != 1 || rs[0].Status != Warn || !strings.Contains(rs[0].Message, "3 container address(es) not probed") {
		t.Errorf("judged as %+v; want a warning counting 3 addresses not probed", rs)
	}
}

// TestEndpointsZonedAddress: an address with a zone from Docker
// (fd00::1%x; …: no container's address has one, and a zone holds any
// text) was probed through the host interface it names, and an
// unreachable one's fix pasted the zone into the shell command it
// offers (`ip -6 route get fd00::1%x; rm -rf / #`). Such an address is
// now not a container's: not probed, and a probe's address is one
// shell word in its fix whatever it holds.
func TestEndpointsZonedAddress(t *testing.T) {
	list := `[{"Id":"a","Names":["/a"],"NetworkSettings":{"Networks":{"lan":{"IPAddress":"10.0.0.5","GlobalIPv6Address":"fd00::5%x; rm -rf / #"}}}}]`
	d := fakeDockerAPI(t, list, map[string]string{"a": `{"Config":{"ExposedPorts":{"80/tcp":{}}}}`})
	ps, err := d.Endpoints(context.Background(), map[string]string{"lan": "lan"})
	if err != nil || len(ps) != 1 || ps[0].IP != netip.MustParseAddr("10.0.0.5") {
		t.Errorf("Endpoints = %+v, %v; want a's IPv4 address only", ps, err)
	}
	rs := EvalContainers([]Probe{{Container: "a", Network: "lan", IP: netip.MustParseAddr("fd00::5%x; rm -rf / #"), Port: 80,
		Err: errors.New("no route to host"), ShimLink: "ul-lan"}}, nil)
	if len(rs) != 1 || !strings.HasPrefix(rs[0].Fix, "ip -6 route get 'fd00::5%x; rm -rf / #'   #") {
		t.Errorf("an unreachable zoned address's fix: %q; want the address as one shell word", rs[0].Fix)
	}
}

// TestEndpointsBadExposedPort: an exposed port Docker's answer gives that
// is no TCP port number (0, 70000, a range, a word) reads as port 0,
// which sorted before the container's real one: the container counted
// as exposing no TCP port, and was not probed. Such a port is now passed
// over.
func TestEndpointsBadExposedPort(t *testing.T) {
	list := `[{"Id":"a","Names":["/a"],"NetworkSettings":{"Networks":{"lan":{"IPAddress":"10.0.0.5"}}}},
		{"Id":"b","Names":["/b"],"NetworkSettings":{"Networks":{"lan":{"IPAddress":"10.0.0.6"}}}}]`
	d := fakeDockerAPI(t, list, map[string]string{
		"a": `{"Config":{"ExposedPorts":{"0/tcp":{},"70000/tcp":{},"8000-8100/tcp":{},"web/tcp":{},"443/tcp":{},"80/udp":{}}}}`,
		"b": `{"Config":{"ExposedPorts":{"0/tcp":{},"-1/tcp":{}}}}`,
	})
	ps, err := d.Endpoints(context.Background(), map[string]string{"lan": "lan"})
	if err != nil || len(ps) != 2 || ps[0].Port != 443 || ps[1].Port != 0 {
		t.Errorf("Endpoints = %+v, %v; want a on 443, b with no port", ps, err)
	}
}

// TestEndpointsOrderAcrossNetworks: a container's endpoints on several
// underlay networks came in the order of Go's map of its networks,
// different from one run to the next, and so did its rows (unreachable
// addresses, the first MaxRows of them kept): the table, and the
// report's rows, changed between runs with nothing else changed. They
// now come by network name.
func TestEndpointsOrderAcrossNetworks(t *testing.T) {
	list := `[{"Id":"a","Names":["/a"],"NetworkSettings":{"Networks":{"net-c":{"IPAddress":"10.0.3.5"},"net-a":{"IPAddress":"10.0.1.5"},"net-b":{"IPAddress":"10.0.2.5"},"net-d":{"IPAddress":"10.0.4.5"}}}}]`
	d := fakeDockerAPI(t, list, map[string]string{"a": `{"Config":{"ExposedPorts":{"80/tcp":{}}}}`})
	nets := map[string]string{"net-a": "net-a", "net-b": "net-b", "net-c": "net-c", "net-d": "net-d"}
	for i := range 20 {
		ps, err := d.Endpoints(context.Background(), nets)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range ps {
			got = append(got, p.Network)
		}
		if diff := gocmp.Diff([]string{"net-a", "net-b", "net-c", "net-d"}, got); diff != "" {
			t.Fatalf("run %d: networks (-want +got):\n%s", i, diff)
		}
	}
}

// TestConsulAPIDateNotRedirectedElsewhere: the clock-skew request went
// out on the Consul endpoint's HTTP client, which followed a redirect to
// any host (Consul's own client refuses them: consul.sameHost), so an
// answer naming another host had the request sent there, with the TLS
// client certificate of the Options offered, and the skew measured
// against that host's clock. The redirect now fails the read, and the
// other host sees no request.
func TestConsulAPIDateNotRedirectedElsewhere(t *testing.T) {
	var mu sync.Mutex
	var got int
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got++
		mu.Unlock()
		w.Header().Set("Date", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat))
		fmt.Fprint(w, `"127.0.0.1:8300"`)
	}))
	t.Cleanup(elsewhere.Close)
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+r.URL.RequestURI(), http.StatusTemporaryRedirect)
	}))
	t.Cleanup(agent.Close)
	c := newConsulAPI(t, consul.Options{Addr: agent.URL, Token: "secret"})
	_, _, err := c.date(context.Background(), strings.TrimPrefix(agent.URL, "http://"))
	if err == nil || !strings.Contains(err.Error(), "redirect to "+elsewhere.URL) {
		t.Errorf("a Date read redirected to %s gave %v; want it refused, naming where it led", elsewhere.URL, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got != 0 {
		t.Errorf("the host redirected to got %d requests; want none", got)
	}
}

// A container other containers link to is listed by dockerd with the
// links' names too ("/web/db" for db as web's link), sorted, so often
// first: the probe names it by its own name, as docker ps does.
func TestEndpointsOfNameContainersByTheirOwnName(t *testing.T) {
	for _, tc := range []struct {
		names []string
		want  string
	}{
		{[]string{"/web/db", "/db"}, "db"},
		{[]string{"/api/cache", "/cache", "/web/cache"}, "cache"},
		{[]string{"/db"}, "db"},
		{nil, "0123456789ab"},
	} {
		c := container.Summary{ID: "0123456789abcdef", Names: tc.names, NetworkSettings: &container.NetworkSettingsSummary{
			Networks: map[string]*network.EndpointSettings{"lan": {IPAddress: "10.0.0.5"}},
		}}
		got := endpointsOf(c, map[string]string{"lan": "lan"})
		if len(got) != 1 || got[0].Container != tc.want {
			t.Errorf("endpointsOf(names %q) = %+v, want one probe of container %q", tc.names, got, tc.want)
		}
	}
}
