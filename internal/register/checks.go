package register

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/underlay/underlay/internal/termtext"
)

// DefaultCheckInterval is used when SERVICE_CHECK_INTERVAL is absent, as in registrator.
const DefaultCheckInterval = 10 * time.Second

// MinDeregisterAfter is the shortest SERVICE_CHECK_DEREGISTER_AFTER Consul
// applies (its agent's CheckDeregisterIntervalMin): it reaps a service
// critical for less no sooner, whatever the registration says, and warns
// only in its own log. A shorter value is raised to it, with a warning:
// refusing it would leave the service unreaped, the opposite of what was
// asked, while the minimum is what Consul does anyway.
const MinDeregisterAfter = time.Minute

// HealthMirrorTTL is the TTL of the check mirroring a Docker HEALTHCHECK. The
// agent pushes every status change, so the TTL only has to outlive the agent
// between resyncs without forcing a write each time.
const HealthMirrorTTL = 8760 * time.Hour

// checkKinds are the SERVICE_CHECK_<KIND> keys that define a check, in
// registrator's order of precedence.
var checkKinds = []string{"http", "https", "ttl", "tcp", "grpc"}

// refusedKinds would make the Consul agent run a command named by a label.
var refusedKinds = map[string]bool{"script": true, "cmd": true, "docker": true, "args": true, "shell": true}

// checkModifiers tune a check rather than define one.
var checkModifiers = map[string]bool{
	"interval": true, "timeout": true, "deregister_after": true, "initial_status": true,
	"grpc_use_tls": true, "tls_skip_verify": true,
}

// buildChecks maps SERVICE_CHECK_* attributes to Consul checks for svc,
// the service of a port of protocol proto. Each check kind given becomes
// one check; bad values are dropped with a warning.
func buildChecks(svc Service, proto string, attrs map[string]setting, warn func(key, value, problem string)) []Check {
	for k, s := range attrs {
		kind, ok := strings.CutPrefix(k, "check_")
		if !ok || checkModifiers[kind] || isCheckKind(kind) {
			continue
		}
		if refusedKinds[kind] {
			warn(s.source, s.value, "script and command checks are refused: they would run code named by a label; use an HTTP, TCP, gRPC or TTL check")
		} else {
			warn(s.source, s.value, "unknown check kind; want one of HTTP, HTTPS, TCP, TTL, GRPC")
		}
	}
	mods := checkModifierValues(attrs, warn)
	hostPort := net.JoinHostPort(svc.Address, strconv.Itoa(svc.Port))
	var checks []Check
	for _, kind := range checkKinds {
		s, ok := attrs["check_"+kind]
		if !ok || (kind == "tcp" || kind == "grpc") && !truthy(s.value) {
			continue // SERVICE_CHECK_TCP=false asks for no check
		}
		// Every kind but TTL connects to the port over TCP, which a UDP
		// or SCTP port never answers: the check would fail forever. A
		// container-wide setting (or SERVICE_53_… on 53/tcp and 53/udp)
		// meant the TCP ports. One warning per key and protocol.
		if kind != "ttl" && (proto == "udp" || proto == "sctp") {
			warn(s.source, s.value, fmt.Sprintf("a %s check connects over TCP; not set on the container's %s ports", strings.ToUpper(kind), strings.ToUpper(proto)))
			continue
		}
		// Every kind but TTL connects to the service's address as it is:
		// one that is no IP address (only damaged Docker data or
		// --host-ip could give one) never answers, or is a name the
		// Consul agent would resolve.
		if _, err := netip.ParseAddr(svc.Address); kind != "ttl" && err != nil {
			warn(s.source, s.value, fmt.Sprintf("the service's address %s is not an IP address; check dropped", termtext.Q(svc.Address)))
			continue
		}
		c := Check{ID: svc.ID + ":check:" + kind, Name: fmt.Sprintf("%s check of %s", strings.ToUpper(kind), svc.Name)}
		switch kind {
		case "http", "https":
			if !strings.HasPrefix(s.value, "/") {
				warn(s.source, s.value, "HTTP check path must start with '/'; check dropped")
				continue
			}
			// The address is the URL's host as it is, which one that is no
			// host (a prefix length left on it) or needs escaping (an IPv6
			// zone) cannot be: the URL would name something else.
			if u, err := url.Parse(kind + "://" + hostPort + "/"); err != nil || u.Host != hostPort {
				warn(s.source, s.value, fmt.Sprintf("the service's address %s cannot be a URL's host; check dropped", termtext.Q(svc.Address)))
				continue
			}
			c.HTTP = fmt.Sprintf("%s://%s%s", kind, hostPort, s.value)
			// Consul parses the URL at each run: one it cannot (a control
			// character, a bad %-escape) makes a check that never passes.
			if u, err := url.Parse(c.HTTP); err != nil || u.Host != hostPort || u.User != nil {
				warn(s.source, s.value, "not a URL path Consul can request (control characters, or a '%' not followed by two hex digits); check dropped")
				continue
			}
			c.TLSSkipVerify = kind == "https" && truthy(attrs["check_tls_skip_verify"].value)
		case "tcp":
			c.TCP = hostPort
		case "grpc":
			c.GRPC = hostPort
			// registrator's value is "true"; anything else names the gRPC health service.
			if v := strings.TrimSpace(s.value); v != "" && !isBoolWord(v) {
				c.GRPC += "/" + v
			}
			c.GRPCUseTLS = truthy(attrs["check_grpc_use_tls"].value)
		case "ttl":
			d, err := time.ParseDuration(s.value)
			if err != nil || d <= 0 {
				warn(s.source, s.value, "not a positive duration such as 30s; TTL check dropped")
				continue
			}
			c.TTL = d
		}
		if kind != "ttl" {
			c.Interval = mods.interval
			c.Timeout = mods.timeout
		}
		c.DeregisterCriticalFor = mods.deregisterAfter
		c.InitialStatus = mods.initialStatus
		checks = append(checks, c)
	}
	return checks
}

func isCheckKind(kind string) bool {
	for _, k := range checkKinds {
		if k == kind {
			return true
		}
	}
	return false
}

func isBoolWord(s string) bool {
	switch strings.ToLower(s) {
	case "true", "false", "1", "0", "yes", "no", "on", "off":
		return true
	}
	return false
}

type checkMods struct {
	interval, timeout, deregisterAfter time.Duration
	initialStatus                      string
}

func checkModifierValues(attrs map[string]setting, warn func(key, value, problem string)) checkMods {
	duration := func(key string) time.Duration {
		s, ok := attrs[key]
		if !ok {
			return 0
		}
		d, err := time.ParseDuration(s.value)
		if err != nil || d <= 0 {
			warn(s.source, s.value, "not a positive duration such as 10s; ignored")
			return 0
		}
		return d
	}
	m := checkMods{
		interval:        duration("check_interval"),
		timeout:         duration("check_timeout"),
		deregisterAfter: duration("check_deregister_after"),
	}
	if m.deregisterAfter > 0 && m.deregisterAfter < MinDeregisterAfter {
		s := attrs["check_deregister_after"]
		warn(s.source, s.value, fmt.Sprintf("below Consul's minimum of %s, which Consul applies instead; %s is used", MinDeregisterAfter, MinDeregisterAfter))
		m.deregisterAfter = MinDeregisterAfter
	}
	if m.interval == 0 {
		m.interval = DefaultCheckInterval
	}
	if s, ok := attrs["check_initial_status"]; ok {
		switch v := strings.ToLower(s.value); v {
		case "passing", "warning", "critical":
			m.initialStatus = v
		default:
			warn(s.source, s.value, "initial status must be passing, warning or critical; ignored")
		}
	}
	return m
}
