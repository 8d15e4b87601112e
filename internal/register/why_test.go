package register

import "testing"

// TestDesiredWhy: each way Desired leaves a running container without a
// service gives its reason, and a container with services none.
func TestDesiredWhy(t *testing.T) {
	explicit := testPolicy()
	explicit.Explicit = true
	limited := testPolicy()
	limited.Labels = map[string]string{"register": ""}
	noHostIP := testPolicy()
	noHostIP.HostIP = ""
	hostNet := func(c *Container) { c.NetworkMode, c.Networks = "host", nil }
	noPorts := func(c *Container) { c.Exposed, c.Published = nil, nil }
	bridgeOnly := func(c *Container) { c.Published = nil }
	for _, tc := range []struct {
		name string
		c    Container
		p    Policy
		want string
	}{
		{"registered", macvlanContainer(), testPolicy(), ""},
		{"registered from published ports", bridgeContainer(), testPolicy(), ""},
		{"not running", macvlanContainer(func(c *Container) { c.Running = false }), testPolicy(), LeftOutNotRunning},
		{"without the agent's labels", macvlanContainer(), limited, LeftOutLabels},
		{"SERVICE_IGNORE", macvlanContainer(labels("SERVICE_IGNORE", "true")), testPolicy(), LeftOutIgnore},
		{"SERVICE_IGNORE in the environment", macvlanContainer(env("SERVICE_IGNORE=1")), testPolicy(), LeftOutIgnore},
		{"host network with no host IP", macvlanContainer(hostNet), noHostIP, LeftOutNoHostIP},
		{"host network with no port", macvlanContainer(hostNet, noPorts), testPolicy(), LeftOutNoPort},
		{"macvlan with no port", macvlanContainer(noPorts), testPolicy(), LeftOutNoPort},
		{"bridge with no port", bridgeContainer(noPorts), testPolicy(), LeftOutNoPort},
		{"ports that are no port numbers", macvlanContainer(exposed(Port{0, "tcp"})), testPolicy(), LeftOutNoPort},
		{"SERVICE_NETWORK with no address", macvlanContainer(labels("SERVICE_NETWORK", "other")), testPolicy(), LeftOutNoAddress},
		{"bridge, exposed and not published", bridgeContainer(bridgeOnly), testPolicy(), LeftOutNotOnNetwork},
		{"bridge, published on loopback only", bridgeContainer(func(c *Container) {
			c.Published = []Binding{{Port: Port{80, "tcp"}, HostIP: "127.0.0.1", HostPort: 8080}}
		}), testPolicy(), LeftOutPublishedUnusable},
		{"bridge, published on all interfaces with no host IP", bridgeContainer(), noHostIP, LeftOutPublishedUnusable},
		{"every port ignored", bridgeContainer(labels("SERVICE_80_IGNORE", "1", "SERVICE_443_IGNORE", "yes")), testPolicy(), LeftOutPortsIgnored},
		{"--explicit and no name", macvlanContainer(), explicit, LeftOutExplicit},
		{"--explicit and a name", macvlanContainer(labels("SERVICE_NAME", "web")), explicit, ""},
		{"--explicit, one port ignored, the other unnamed", bridgeContainer(labels("SERVICE_80_IGNORE", "1")), explicit, LeftOutIgnoredOrExplicit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svcs, warnings, why := DesiredWhy(tc.c, tc.p)
			if why != tc.want {
				t.Errorf("reason %q, want %q", why, tc.want)
			}
			if (len(svcs) == 0) != (why != "") {
				t.Errorf("%d services with reason %q: a reason is given exactly when there is no service", len(svcs), why)
			}
			d, dw := Desired(tc.c, tc.p)
			if len(d) != len(svcs) || len(dw) != len(warnings) {
				t.Errorf("Desired: %d services, %d warnings; DesiredWhy: %d, %d", len(d), len(dw), len(svcs), len(warnings))
			}
		})
	}
}
