package register

import (
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// consulMetaKey is the form Consul 1.8 takes for a Meta key; it refuses a
// registration whose Meta breaks it, or its limits, whole (HTTP 400).
var consulMetaKey = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// FuzzDesired: whatever labels and environment a container carries,
// Desired returns services Consul takes (Meta within its limits, tagged
// addresses it reads as their family) under IDs its HTTP API can
// deregister and names it can look up, unique within the container,
// hashed, the same each time, within the bounds on services and tags, a
// reason (DesiredWhy) exactly when there is no service, and
// warnings that name the container, within their bounds.
func FuzzDesired(f *testing.F) {
	for _, seed := range []struct {
		labels, env string
		port        uint16
		extra       uint8 // SERVICE_X<n> labels added: Consul's Meta limit
	}{
		{"SERVICE_NAME=web\nSERVICE_TAGS=a,b", "", 0, 0},
		{"SERVICE_ID=..", "SERVICE_80_ID=a/b", 443, 0},
		{"SERVICE_CHECK_HTTP=/h\nSERVICE_CHECK_INTERVAL=5s\nSERVICE_CHECK_SCRIPT=x", "SERVICE_CHECK_TTL=10x", 0, 0},
		{"SERVICE_CONSUL-X=1\nSERVICE_UNDERLAY_NODE=n\nSERVICE_443_ID=dns", "SERVICE_53_NAME=d", 53, 0},
		{"SERVICE_A=1", "SERVICE_ID=a\x01b", 8080, 70},
		{"com.docker.swarm.task.id=" + strings.Repeat("t", 513) + "\nSERVICE_SWARM_SLOT=1", "", 0, 0},
		{"SERVICE_TAGS=" + strings.Repeat("t,", 3000) + "\nSERVICE_ID=" + strings.Repeat("i", 300), "SERVICE_NAME=a/../b", 0, 200},
		{"SERVICE_ID=node1:other:80\ncom.docker.swarm.service.name=..", "SERVICE_CHECK_HTTP=/%zz", 0, 0},
	} {
		f.Add(seed.labels, seed.env, seed.port, seed.extra)
	}
	f.Fuzz(func(t *testing.T, labelText, envText string, port uint16, extra uint8) {
		c := macvlanContainer(func(c *Container) {
			c.Labels = map[string]string{}
			for _, line := range strings.Split(labelText, "\n") {
				k, v, _ := strings.Cut(line, "=")
				c.Labels[k] = v
			}
			for i := range int(extra) {
				c.Labels[fmt.Sprintf("SERVICE_X%03d", i)] = "v"
			}
			c.Env = strings.Split(envText, "\n")
			if port != 0 && port != 80 {
				c.Exposed = append(c.Exposed, Port{int(port), "tcp"})
			}
		})
		svcs, warnings, why := DesiredWhy(c, testPolicy())
		if (len(svcs) == 0) != (why != "") {
			t.Errorf("%d services with reason %q: a reason is given exactly when there is no service", len(svcs), why)
		}
		if len(svcs) > MaxServices {
			t.Errorf("%d services, at most %d wanted", len(svcs), MaxServices)
		}
		if len(warnings) > maxWarnings+1 {
			t.Errorf("%d warnings, at most %d wanted", len(warnings), maxWarnings+1)
		}
		ids := map[string]bool{}
		for _, s := range svcs {
			if !usableName(s.Name) || len(s.Tags) > maxTags {
				t.Errorf("service %q: name %q unusable, or %d tags", s.ID, s.Name, len(s.Tags))
			}
			for tag, a := range s.TaggedAddresses {
				if ip := net.ParseIP(a.Address); ip == nil || (tag == "lan_ipv4") != (ip.To4() != nil) {
					t.Errorf("service %q: Consul refuses %s %q", s.ID, tag, a.Address)
				}
			}
			if !usableID(s.ID) || ids[s.ID] {
				t.Errorf("service ID %q: unusable or repeated", s.ID)
			}
			ids[s.ID] = true
			if len(s.Meta) > MaxMeta {
				t.Errorf("service %q: %d Meta pairs, Consul takes %d", s.ID, len(s.Meta), MaxMeta)
			}
			for k, v := range s.Meta {
				if !consulMetaKey.MatchString(k) || len(k) > 128 || strings.HasPrefix(k, "consul-") || len(v) > 512 {
					t.Errorf("service %q: Meta %q=%q is not one Consul takes", s.ID, k, v)
				}
			}
			if got, want := s.Meta[MetaHash], Hash(s); got != want {
				t.Errorf("service %q: hash %q, Hash(service) = %q", s.ID, got, want)
			}
			for _, ch := range s.Checks {
				if !usableID(ch.ID) {
					t.Errorf("check ID %q is unusable", ch.ID)
				}
			}
		}
		for _, w := range warnings {
			if w.Container != c.Name {
				t.Errorf("warning %v names container %q", w, w.Container)
			}
			if len(w.Key) > maxWarningValue+32 || len(w.Value) > maxWarningValue+32 {
				t.Errorf("warning quotes a %d-byte key and a %d-byte value", len(w.Key), len(w.Value))
			}
		}
		again, againWarnings := Desired(c, testPolicy())
		if !cmp.Equal(svcs, again) || !cmp.Equal(warnings, againWarnings) {
			t.Errorf("Desired differs between two calls:\n%s\n%s", cmp.Diff(svcs, again), cmp.Diff(warnings, againWarnings))
		}
	})
}
