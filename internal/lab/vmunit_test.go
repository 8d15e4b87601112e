package lab

import (
	"strings"
	"testing"
)

func TestDaemonUnit(t *testing.T) {
	if got := daemonUnitName("dockerd --host"); got != "docker.service" {
		t.Errorf("dockerd's unit = %s", got)
	}
	if got := daemonUnitName("consul agent"); got != "ul-lab-consul-agent.service" {
		t.Errorf("consul's unit = %s", got)
	}
	d := daemon{key: "dockerd --host", args: []string{"dockerd", "--host", "unix:///run/docker.sock"}, log: "dockerd.log"}
	u := daemonUnit(d, "/usr/sbin/dockerd", []string{"PATH=/usr/bin:/bin", "A=b c"}, "/var/lib/underlay/lab/x/node1/dockerd.log")
	for _, want := range []string{
		"Type=notify\n",
		`Environment="PATH=/usr/bin:/bin"` + "\n",
		`Environment="A=b c"` + "\n",
		`Environment="UNDERLAY_LAB_DAEMON=dockerd --host"` + "\n",
		"ExecStart=/usr/sbin/dockerd --host unix:///run/docker.sock\n",
		"StandardOutput=append:/var/lib/underlay/lab/x/node1/dockerd.log\n",
		"Restart=no\n", "KillMode=process\n", "WantedBy=multi-user.target\n",
	} {
		if !strings.Contains(u, want) {
			t.Errorf("dockerd's unit lacks %q:\n%s", want, u)
		}
	}
	c := daemonUnit(daemon{key: "consul agent", args: []string{"consul", "agent"}}, "/usr/local/bin/consul", nil, "/l")
	if !strings.Contains(c, "Type=exec\n") || strings.Contains(c, "KillMode") {
		t.Errorf("consul's unit:\n%s", c)
	}
}

func TestSystemdNeedsVM(t *testing.T) {
	cfg := Config{Name: "x", Nodes: 1, NoAgent: true, Systemd: true}.withDefaults()
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--systemd") {
		t.Errorf("Validate of systemd namespace nodes = %v, want an error naming --systemd", err)
	}
}
