package register

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDesiredChecks(t *testing.T) {
	// The macvlan container registers as node1:web:80, "nginx", 10.1.2.3:80.
	const id = "node1:web:80"
	tests := []struct {
		name         string
		c            Container
		want         []Check
		wantWarnings []wantWarning
	}{
		{
			name: "no checks",
			c:    macvlanContainer(),
			want: nil,
		},
		{
			name: "HTTP with default interval",
			c:    macvlanContainer(labels("SERVICE_CHECK_HTTP", "/health")),
			want: []Check{{
				ID: id + ":check:http", Name: "HTTP check of nginx",
				HTTP: "http://10.1.2.3:80/health", Interval: DefaultCheckInterval,
			}},
		},
		{
			name: "HTTP path with query",
			c:    macvlanContainer(env("SERVICE_CHECK_HTTP=/health?full=1")),
			want: []Check{{
				ID: id + ":check:http", Name: "HTTP check of nginx",
				HTTP: "http://10.1.2.3:80/health?full=1", Interval: 10 * time.Second,
			}},
		},
		{
			name: "HTTPS with tls_skip_verify",
			c:    macvlanContainer(labels("SERVICE_CHECK_HTTPS", "/health", "SERVICE_CHECK_TLS_SKIP_VERIFY", "true")),
			want: []Check{{
				ID: id + ":check:https", Name: "HTTPS check of nginx",
				HTTP: "https://10.1.2.3:80/health", TLSSkipVerify: true, Interval: DefaultCheckInterval,
			}},
		},
		{
			name: "HTTPS verifies by default",
			c:    macvlanContainer(labels("SERVICE_CHECK_HTTPS", "/health")),
			want: []Check{{
				ID: id + ":check:https", Name: "HTTPS check of nginx",
				HTTP: "https://10.1.2.3:80/health", Interval: DefaultCheckInterval,
			}},
		},
		{
			name: "tls_skip_verify does not apply to HTTP",
			c:    macvlanContainer(labels("SERVICE_CHECK_HTTP", "/health", "SERVICE_CHECK_TLS_SKIP_VERIFY", "true")),
			want: []Check{{
				ID: id + ":check:http", Name: "HTTP check of nginx",
				HTTP: "http://10.1.2.3:80/health", Interval: DefaultCheckInterval,
			}},
		},
		{
			name: "HTTP path without leading slash is dropped",
			c:    macvlanContainer(labels("SERVICE_CHECK_HTTP", "health")),
			want: nil,
			wantWarnings: []wantWarning{
				{Key: "SERVICE_CHECK_HTTP", Value: "health", Problem: "must start with '/'; check dropped"},
			},
		},
		{
			name: "HTTPS full URL is dropped",
			c:    macvlanContainer(labels("SERVICE_CHECK_HTTPS", "https://evil.example/")),
			want: nil,
			wantWarnings: []wantWarning{
				{Key: "SERVICE_CHECK_HTTPS", Value: "https://evil.example/", Problem: "must start with '/'"},
			},
		},
		{
			name: "TCP",
			c:    macvlanContainer(labels("SERVICE_CHECK_TCP", "true")),
			want: []Check{{
				ID: id + ":check:tcp", Name: "TCP check of nginx",
				TCP: "10.1.2.3:80", Interval: DefaultCheckInterval,
			}},
		},
		{
			// registrator's SERVICE_CHECK_TCP=false turns the check off.
			name: "TCP and GRPC set false ask for no check",
			c:    macvlanContainer(labels("SERVICE_CHECK_TCP", "false", "SERVICE_CHECK_GRPC", "no")),
			want: nil,
		},
		{
			name: "TTL has no interval",
			c:    macvlanContainer(labels("SERVICE_CHECK_TTL", "30s", "SERVICE_CHECK_INTERVAL", "5s", "SERVICE_CHECK_TIMEOUT", "2s")),
			want: []Check{{
				ID: id + ":check:ttl", Name: "TTL check of nginx", TTL: 30 * time.Second,
			}},
		},
		{
			name: "bad TTL is dropped",
			c:    macvlanContainer(labels("SERVICE_CHECK_TTL", "abc")),
			want: nil,
			wantWarnings: []wantWarning{
				{Key: "SERVICE_CHECK_TTL", Value: "abc", Problem: "not a positive duration such as 30s; TTL check dropped"},
			},
		},
		{
			name: "zero TTL is dropped",
			c:    macvlanContainer(labels("SERVICE_CHECK_TTL", "0s")),
			want: nil,
			wantWarnings: []wantWarning{
				{Key: "SERVICE_CHECK_TTL", Value: "0s", Problem: "TTL check dropped"},
			},
		},
		{
			name: "GRPC true checks host:port",
			c:    macvlanContainer(labels("SERVICE_CHECK_GRPC", "true")),
			want: []Check{{
				ID: id + ":check:grpc", Name: "GRPC check of nginx",
				GRPC: "10.1.2.3:80", Interval: DefaultCheckInterval,
			}},
		},
		{
			name: "GRPC service name is appended",
			c:    macvlanContainer(labels("SERVICE_CHECK_GRPC", "my.Service")),
			want: []Check{{
				ID: id + ":check:grpc", Name: "GRPC check of nginx",
				GRPC: "10.1.2.3:80/my.Service", Interval: DefaultCheckInterval,
			}},
		},
		{
			name: "GRPC with TLS",
			c:    macvlanContainer(labels("SERVICE_CHECK_GRPC", "1", "SERVICE_CHECK_GRPC_USE_TLS", "yes")),
			want: []Check{{
				ID: id + ":check:grpc", Name: "GRPC check of nginx",
				GRPC: "10.1.2.3:80", GRPCUseTLS: true, Interval: DefaultCheckInterval,
			}},
		},
		{
			name: "bad interval warns and uses the default",
			c:    macvlanContainer(labels("SERVICE_CHECK_HTTP", "/health", "SERVICE_CHECK_INTERVAL", "10x")),
			want: []Check{{
				ID: id + ":check:http", Name: "HTTP check of nginx",
				HTTP: "http://10.1.2.3:80/health", Interval: DefaultCheckInterval,
			}},
			wantWarnings: []wantWarning{
				{Key: "SERVICE_CHECK_INTERVAL", Value: "10x", Problem: "not a positive duration such as 10s; ignored"},
			},
		},
		{
			name: "negative interval warns and uses the default",
			c:    macvlanContainer(labels("SERVICE_CHECK_TCP", "true", "SERVICE_CHECK_INTERVAL", "-5s")),
			want: []Check{{
				ID: id + ":check:tcp", Name: "TCP check of nginx",
				TCP: "10.1.2.3:80", Interval: DefaultCheckInterval,
			}},
			wantWarnings: []wantWarning{
				{Key: "SERVICE_CHECK_INTERVAL", Value: "-5s", Problem: "not a positive duration"},
			},
		},
		{
			name: "interval, timeout, deregister_after and initial_status",
			c: macvlanContainer(labels(
				"SERVICE_CHECK_HTTP", "/health",
				"SERVICE_CHECK_INTERVAL", "5s",
				"SERVICE_CHECK_TIMEOUT", "2s",
				"SERVICE_CHECK_DEREGISTER_AFTER", "90m",
				"SERVICE_CHECK_INITIAL_STATUS", "Passing",
			)),
			want: []Check{{
				ID: id + ":check:http", Name: "HTTP check of nginx",
				HTTP: "http://10.1.2.3:80/health", Interval: 5 * time.Second, Timeout: 2 * time.Second,
				DeregisterCriticalFor: 90 * time.Minute, InitialStatus: "passing",
			}},
		},
		{
			name: "TTL keeps deregister_after and initial_status",
			c: macvlanContainer(labels(
				"SERVICE_CHECK_TTL", "1m",
				"SERVICE_CHECK_DEREGISTER_AFTER", "10m",
				"SERVICE_CHECK_INITIAL_STATUS", "critical",
			)),
			want: []Check{{
				ID: id + ":check:ttl", Name: "TTL check of nginx", TTL: time.Minute,
				DeregisterCriticalFor: 10 * time.Minute, InitialStatus: "critical",
			}},
		},
		{
			name: "deregister_after of Consul's minimum is taken as it is",
			c: macvlanContainer(labels(
				"SERVICE_CHECK_TCP", "true",
				"SERVICE_CHECK_DEREGISTER_AFTER", "1m",
			)),
			want: []Check{{
				ID: id + ":check:tcp", Name: "TCP check of nginx",
				TCP: "10.1.2.3:80", Interval: DefaultCheckInterval,
				DeregisterCriticalFor: time.Minute,
			}},
		},
		{
			name: "zero interval, timeout and deregister_after warn and are ignored",
			c: macvlanContainer(labels(
				"SERVICE_CHECK_TCP", "true",
				"SERVICE_CHECK_INTERVAL", "0s",
				"SERVICE_CHECK_TIMEOUT", "0",
				"SERVICE_CHECK_DEREGISTER_AFTER", "0m",
			)),
			want: []Check{{
				ID: id + ":check:tcp", Name: "TCP check of nginx",
				TCP: "10.1.2.3:80", Interval: DefaultCheckInterval,
			}},
			wantWarnings: []wantWarning{
				{Key: "SERVICE_CHECK_INTERVAL", Value: "0s", Problem: "not a positive duration such as 10s; ignored"},
				{Key: "SERVICE_CHECK_TIMEOUT", Value: "0", Problem: "not a positive duration such as 10s; ignored"},
				{Key: "SERVICE_CHECK_DEREGISTER_AFTER", Value: "0m", Problem: "not a positive duration such as 10s; ignored"},
			},
		},
		{
			// Consul reaps no sooner than a minute whatever it is told:
			// the registration said 10s while Consul kept the service a
			// minute or more, and only Consul's own log said so.
			name: "deregister_after below Consul's minimum is raised to it",
			c: macvlanContainer(labels(
				"SERVICE_CHECK_TCP", "true",
				"SERVICE_CHECK_DEREGISTER_AFTER", "10s",
			)),
			want: []Check{{
				ID: id + ":check:tcp", Name: "TCP check of nginx",
				TCP: "10.1.2.3:80", Interval: DefaultCheckInterval,
				DeregisterCriticalFor: time.Minute,
			}},
			wantWarnings: []wantWarning{
				{Key: "SERVICE_CHECK_DEREGISTER_AFTER", Value: "10s", Problem: "below Consul's minimum of 1m0s, which Consul applies instead; 1m0s is used"},
			},
		},
		{
			name: "bad timeout, deregister_after and initial_status are ignored",
			c: macvlanContainer(labels(
				"SERVICE_CHECK_TCP", "true",
				"SERVICE_CHECK_TIMEOUT", "abc",
				"SERVICE_CHECK_DEREGISTER_AFTER", "soon",
				"SERVICE_CHECK_INITIAL_STATUS", "ok",
			)),
			want: []Check{{
				ID: id + ":check:tcp", Name: "TCP check of nginx",
				TCP: "10.1.2.3:80", Interval: DefaultCheckInterval,
			}},
			wantWarnings: []wantWarning{
				{Key: "SERVICE_CHECK_TIMEOUT", Value: "abc", Problem: "not a positive duration"},
				{Key: "SERVICE_CHECK_DEREGISTER_AFTER", Value: "soon", Problem: "not a positive duration"},
				{Key: "SERVICE_CHECK_INITIAL_STATUS", Value: "ok", Problem: "initial status must be passing, warning or critical"},
			},
		},
		{
			name: "script, cmd, docker, args and shell are refused",
			c: macvlanContainer(labels(
				"SERVICE_CHECK_SCRIPT", "curl localhost",
				"SERVICE_CHECK_CMD", "/bin/true",
				"SERVICE_CHECK_DOCKER", "pg_isready",
				"SERVICE_CHECK_ARGS", "a,b",
				"SERVICE_CHECK_SHELL", "/bin/sh",
			)),
			want: nil,
			wantWarnings: []wantWarning{
				{Key: "SERVICE_CHECK_SCRIPT", Value: "curl localhost", Problem: "refused"},
				{Key: "SERVICE_CHECK_CMD", Value: "/bin/true", Problem: "refused"},
				{Key: "SERVICE_CHECK_DOCKER", Value: "pg_isready", Problem: "refused"},
				{Key: "SERVICE_CHECK_ARGS", Value: "a,b", Problem: "refused"},
				{Key: "SERVICE_CHECK_SHELL", Value: "/bin/sh", Problem: "refused"},
			},
		},
		{
			name: "refused check does not stop the others",
			c:    macvlanContainer(labels("SERVICE_CHECK_SCRIPT", "x", "SERVICE_CHECK_TCP", "true")),
			want: []Check{{
				ID: id + ":check:tcp", Name: "TCP check of nginx",
				TCP: "10.1.2.3:80", Interval: DefaultCheckInterval,
			}},
			wantWarnings: []wantWarning{
				{Key: "SERVICE_CHECK_SCRIPT", Value: "x", Problem: "script and command checks are refused"},
			},
		},
		{
			name: "unknown check kind",
			c:    macvlanContainer(env("SERVICE_CHECK_FOO=bar")),
			want: nil,
			wantWarnings: []wantWarning{
				{Key: "SERVICE_CHECK_FOO", Value: "bar", Problem: "unknown check kind"},
			},
		},
		{
			name: "each kind given becomes a check, in fixed order",
			c: macvlanContainer(labels(
				"SERVICE_CHECK_TCP", "true",
				"SERVICE_CHECK_HTTP", "/h",
				"SERVICE_CHECK_GRPC", "true",
				"SERVICE_CHECK_TTL", "15s",
				"SERVICE_CHECK_HTTPS", "/s",
			)),
			want: []Check{
				{ID: id + ":check:http", Name: "HTTP check of nginx", HTTP: "http://10.1.2.3:80/h", Interval: DefaultCheckInterval},
				{ID: id + ":check:https", Name: "HTTPS check of nginx", HTTP: "https://10.1.2.3:80/s", Interval: DefaultCheckInterval},
				{ID: id + ":check:ttl", Name: "TTL check of nginx", TTL: 15 * time.Second},
				{ID: id + ":check:tcp", Name: "TCP check of nginx", TCP: "10.1.2.3:80", Interval: DefaultCheckInterval},
				{ID: id + ":check:grpc", Name: "GRPC check of nginx", GRPC: "10.1.2.3:80", Interval: DefaultCheckInterval},
			},
		},
		{
			name: "check uses SERVICE_NAME in its name",
			c:    macvlanContainer(labels("SERVICE_NAME", "front", "SERVICE_CHECK_TCP", "true")),
			want: []Check{{
				ID: id + ":check:tcp", Name: "TCP check of front",
				TCP: "10.1.2.3:80", Interval: DefaultCheckInterval,
			}},
		},
		{
			name: "IPv6 address is bracketed",
			c: macvlanContainer(labels("SERVICE_CHECK_HTTP", "/health", "SERVICE_CHECK_TCP", "1"), func(c *Container) {
				c.Networks = []Endpoint{{Network: "v6", Driver: "macvlan", IPv6: "fd00::3"}}
			}),
			want: []Check{
				{ID: id + ":check:http", Name: "HTTP check of nginx", HTTP: "http://[fd00::3]:80/health", Interval: DefaultCheckInterval},
				{ID: id + ":check:tcp", Name: "TCP check of nginx", TCP: "[fd00::3]:80", Interval: DefaultCheckInterval},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warnings := Desired(tt.c, testPolicy())
			if len(got) != 1 {
				t.Fatalf("Desired returned %d services, want 1; warnings %q", len(got), warningStrings(warnings))
			}
			if diff := cmp.Diff(tt.want, got[0].Checks); diff != "" {
				t.Errorf("Checks mismatch (-want +got):\n%s", diff)
			}
			checkWarnings(t, tt.c.Name, warnings, tt.wantWarnings)
		})
	}
}

func TestDesiredChecksPerPort(t *testing.T) {
	tests := []struct {
		name string
		c    Container
		want map[string][]Check // by service ID
	}{
		{
			name: "port check only on that port",
			c: macvlanContainer(
				exposed(Port{80, "tcp"}, Port{9090, "tcp"}),
				labels("SERVICE_80_CHECK_HTTP", "/health", "SERVICE_9090_CHECK_TCP", "true"),
			),
			want: map[string][]Check{
				"node1:web:80": {{
					ID: "node1:web:80:check:http", Name: "HTTP check of nginx-80",
					HTTP: "http://10.1.2.3:80/health", Interval: DefaultCheckInterval,
				}},
				"node1:web:9090": {{
					ID: "node1:web:9090:check:tcp", Name: "TCP check of nginx-9090",
					TCP: "10.1.2.3:9090", Interval: DefaultCheckInterval,
				}},
			},
		},
		{
			name: "container-wide check on every port, port interval wins",
			c: macvlanContainer(
				exposed(Port{80, "tcp"}, Port{9090, "tcp"}),
				labels("SERVICE_CHECK_TCP", "true", "SERVICE_CHECK_INTERVAL", "30s", "SERVICE_9090_CHECK_INTERVAL", "3s"),
			),
			want: map[string][]Check{
				"node1:web:80": {{
					ID: "node1:web:80:check:tcp", Name: "TCP check of nginx-80",
					TCP: "10.1.2.3:80", Interval: 30 * time.Second,
				}},
				"node1:web:9090": {{
					ID: "node1:web:9090:check:tcp", Name: "TCP check of nginx-9090",
					TCP: "10.1.2.3:9090", Interval: 3 * time.Second,
				}},
			},
		},
		{
			name: "published port checks host IP and host port",
			c:    bridgeContainer(labels("SERVICE_80_CHECK_HTTP", "/health")),
			want: map[string][]Check{
				"node1:shop:80": {{
					ID: "node1:shop:80:check:http", Name: "HTTP check of shop-80",
					HTTP: "http://" + testHostIP + ":8080/health", Interval: DefaultCheckInterval,
				}},
				"node1:shop:443": nil,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svcs, warnings := Desired(tt.c, testPolicy())
			got := map[string][]Check{}
			for _, s := range svcs {
				got[s.ID] = s.Checks
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Checks by service mismatch (-want +got):\n%s", diff)
			}
			checkWarnings(t, tt.c.Name, warnings, nil)
		})
	}
}

func TestBuildChecksDirect(t *testing.T) {
	svc := Service{ID: "n:c:8080", Name: "api", Address: "192.0.2.1", Port: 8080}
	attrs := map[string]setting{
		"check_grpc":         {value: " TRUE ", source: "SERVICE_CHECK_GRPC"},
		"check_grpc_use_tls": {value: "off", source: "SERVICE_CHECK_GRPC_USE_TLS"},
		"name":               {value: "api", source: "SERVICE_NAME"},
	}
	var warnings []string
	got := buildChecks(svc, "tcp", attrs, func(key, value, problem string) {
		warnings = append(warnings, key+"="+value+": "+problem)
	})
	want := []Check{{
		ID: "n:c:8080:check:grpc", Name: "GRPC check of api",
		GRPC: "192.0.2.1:8080", Interval: DefaultCheckInterval,
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("buildChecks mismatch (-want +got):\n%s", diff)
	}
	if len(warnings) != 0 {
		t.Errorf("unexpected warnings %q", warnings)
	}
}

// TestBuildChecksHTTPOnAnAddressNoURLHolds: an HTTP check's URL is made
// from the service's address, and one that is not a host (a prefix length
// left on it) would put part of the address in the URL's path: the check
// would query another URL than the service's. Such a check is dropped
// with a warning.
//
// The warning names the address, the value at fault, not the path, which
// is good (seen failing: it said the path was no URL path Consul can
// request). An IPv6 address with a zone is an address, but a URL's host
// only with its '%' escaped, which Consul would not undo.
func TestBuildChecksHTTPOnAnAddressNoURLHolds(t *testing.T) {
	for _, addr := range []string{"192.0.2.1/24", "fe80::1%eth0"} {
		t.Run(addr, func(t *testing.T) {
			svc := Service{ID: "n:c:80", Name: "api", Address: addr, Port: 80}
			attrs := map[string]setting{"check_http": {value: "/health", source: "SERVICE_CHECK_HTTP"}}
			var warnings []string
			got := buildChecks(svc, "tcp", attrs, func(key, value, problem string) {
				warnings = append(warnings, key+"="+value+": "+problem)
			})
			if len(got) != 0 {
				t.Errorf("buildChecks = %+v, want no check", got)
			}
			if len(warnings) != 1 || !strings.HasPrefix(warnings[0], "SERVICE_CHECK_HTTP=/health: ") || !strings.HasSuffix(warnings[0], "check dropped") ||
				!strings.Contains(warnings[0], strconv.Quote(addr)) || strings.Contains(warnings[0], "path") {
				t.Errorf("warnings %q, want one that SERVICE_CHECK_HTTP=/health was dropped for the address %q, not the path", warnings, addr)
			}
		})
	}
}

// TestBuildChecksTCPOnAnAddressNoIP: a TCP or gRPC check connects to
// the service's address, and one that is no IP address (only damaged
// Docker data or --host-ip could give one) makes a check that never
// passes, or that connects where the Consul agent resolves the name.
// Such a check is dropped with a warning naming the address, as an HTTP
// check is; a TTL check, which connects nowhere, is kept. Before, the
// TCP and gRPC checks were made on 192.0.2.1/24:80 (seen failing).
func TestBuildChecksTCPOnAnAddressNoIP(t *testing.T) {
	svc := Service{ID: "n:c:80", Name: "api", Address: "192.0.2.1/24", Port: 80}
	attrs := map[string]setting{
		"check_tcp":  {value: "true", source: "SERVICE_CHECK_TCP"},
		"check_grpc": {value: "true", source: "SERVICE_CHECK_GRPC"},
		"check_ttl":  {value: "30s", source: "SERVICE_CHECK_TTL"},
	}
	var warnings []string
	got := buildChecks(svc, "tcp", attrs, func(key, value, problem string) {
		warnings = append(warnings, key+"="+value+": "+problem)
	})
	want := []Check{{ID: "n:c:80:check:ttl", Name: "TTL check of api", TTL: 30 * time.Second}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("buildChecks mismatch (-want +got):\n%s", diff)
	}
	for _, key := range []string{"SERVICE_CHECK_TCP", "SERVICE_CHECK_GRPC"} {
		if !slices.ContainsFunc(warnings, func(w string) bool {
			return strings.HasPrefix(w, key+"=true: ") && strings.Contains(w, `"192.0.2.1/24"`) && strings.HasSuffix(w, "check dropped")
		}) {
			t.Errorf("warnings %q, want one that %s was dropped for the address \"192.0.2.1/24\"", warnings, key)
		}
	}
	if len(warnings) != 2 {
		t.Errorf("warnings %q, want 2", warnings)
	}
}

// TestDesiredCheckHTTPPathConsulCannotRequest: Consul parses an HTTP
// check's URL at each run, and one it cannot parse (a control character,
// a '%' not followed by two hex digits) made a check that never passed,
// with no warning. Such a path is dropped with a warning. (Go refuses
// control characters in a URL, so none reached a request line.)
func TestDesiredCheckHTTPPathConsulCannotRequest(t *testing.T) {
	c := macvlanContainer(exposed(Port{80, "tcp"}, Port{81, "tcp"}, Port{82, "tcp"}),
		labels("SERVICE_80_CHECK_HTTP", "/a\r\nHost: evil.example", "SERVICE_81_CHECK_HTTPS", "/%zz", "SERVICE_82_CHECK_HTTP", "/ok?q=%41#frag"))
	got, warnings := Desired(c, testPolicy())
	checks := map[string][]Check{}
	for _, s := range got {
		checks[s.ID] = s.Checks
	}
	want := map[string][]Check{
		"node1:web:80": nil,
		"node1:web:81": nil,
		"node1:web:82": {{ID: "node1:web:82:check:http", Name: "HTTP check of nginx-82", HTTP: "http://10.1.2.3:82/ok?q=%41#frag", Interval: DefaultCheckInterval}},
	}
	if diff := cmp.Diff(want, checks); diff != "" {
		t.Errorf("checks mismatch (-want +got):\n%s", diff)
	}
	checkWarnings(t, c.Name, warnings, []wantWarning{
		{Key: "SERVICE_80_CHECK_HTTP", Value: "/a\r\nHost: evil.example", Problem: "not a URL path Consul can request"},
		{Key: "SERVICE_81_CHECK_HTTPS", Value: "/%zz", Problem: "not a URL path Consul can request"},
	})
}

// TestDesiredTCPChecksOnTCPPortsOnly: a container-wide SERVICE_CHECK_TCP
// (or HTTP, HTTPS, GRPC: all connect over TCP) was given to the services
// of the container's UDP and SCTP ports too, where it can never pass: the
// service showed failing forever. Such a check goes on TCP ports only, and
// the container is warned once per protocol why the others have none. A
// TTL check, which connects to nothing, stays on every port.
func TestDesiredTCPChecksOnTCPPortsOnly(t *testing.T) {
	c := macvlanContainer(
		exposed(Port{53, "tcp"}, Port{53, "udp"}, Port{5353, "udp"}, Port{9000, "sctp"}),
		labels("SERVICE_CHECK_TCP", "true", "SERVICE_CHECK_TTL", "30s"),
		env("SERVICE_CHECK_HTTP=/health", "SERVICE_53_CHECK_GRPC=true"),
	)
	svcs, warnings := Desired(c, testPolicy())
	got := map[string][]string{}
	for _, s := range svcs {
		got[s.ID] = nil
		for _, ch := range s.Checks {
			got[s.ID] = append(got[s.ID], ch.ID)
		}
	}
	want := map[string][]string{
		"node1:web:53":        {"node1:web:53:check:http", "node1:web:53:check:ttl", "node1:web:53:check:tcp", "node1:web:53:check:grpc"},
		"node1:web:53:udp":    {"node1:web:53:udp:check:ttl"},
		"node1:web:5353:udp":  {"node1:web:5353:udp:check:ttl"},
		"node1:web:9000:sctp": {"node1:web:9000:sctp:check:ttl"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("checks by service mismatch (-want +got):\n%s", diff)
	}
	checkWarnings(t, c.Name, warnings, []wantWarning{
		{Key: "SERVICE_CHECK_TCP", Value: "true", Problem: "connects over TCP; not set on the container's UDP ports"},
		{Key: "SERVICE_CHECK_TCP", Value: "true", Problem: "connects over TCP; not set on the container's SCTP ports"},
		{Key: "SERVICE_CHECK_HTTP", Value: "/health", Problem: "connects over TCP; not set on the container's UDP ports"},
		{Key: "SERVICE_CHECK_HTTP", Value: "/health", Problem: "connects over TCP; not set on the container's SCTP ports"},
		{Key: "SERVICE_53_CHECK_GRPC", Value: "true", Problem: "connects over TCP; not set on the container's UDP ports"},
	})
}

// TestBuildChecksAddressQuotedToShow: the warning of a check dropped for
// its address quotes the address with what would not show escaped
// (U+3164 reads as nothing); %q left it as it is.
func TestBuildChecksAddressQuotedToShow(t *testing.T) {
	svc := Service{ID: "n:c:80", Name: "api", Address: "192.0.2.1\u3164", Port: 80}
	attrs := map[string]setting{"check_tcp": {value: "true", source: "SERVICE_CHECK_TCP"}}
	var warnings []string
	buildChecks(svc, "tcp", attrs, func(key, value, problem string) {
		warnings = append(warnings, problem)
	})
	if want := `the service's address "192.0.2.1\u3164" is not an IP address; check dropped`; len(warnings) != 1 || warnings[0] != want {
		t.Errorf("warnings %q, want [%s]", warnings, want)
	}
}

// TestWarningStringQuotesToShow: a warning's String quotes the label's
// value with what would not show escaped.
func TestWarningStringQuotesToShow(t *testing.T) {
	w := Warning{Container: "c1", Key: "SERVICE_NAME", Value: "web\u3164", Problem: "not usable"}
	if got, want := w.String(), `container c1: SERVICE_NAME="web\u3164": not usable`; got != want {
		t.Errorf("String() = %s, want %s", got, want)
	}
}
