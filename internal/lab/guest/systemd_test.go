package guest

import (
	"slices"
	"testing"
)

func TestHostUnitsToMask(t *testing.T) {
	wants := []string{
		"/etc/systemd/system/multi-user.target.wants/docker.service",
		"/etc/systemd/system/multi-user.target.wants/postgresql.service",
		"/etc/systemd/system/multi-user.target.wants/remote-fs.target",
		"/etc/systemd/system/sockets.target.wants/docker.socket",
		"/etc/systemd/system/timers.target.wants/apt-daily.timer",
		"/etc/systemd/system/getty.target.wants/getty@tty1.service",
		"/etc/systemd/system/sysinit.target.wants/" + ServerUnit,
	}
	got := HostUnitsToMask(wants)
	want := []string{"postgresql.service", "docker.socket", "apt-daily.timer", "getty@tty1.service",
		"serial-getty@ttyS0.service", "containerd.service"}
	if !slices.Equal(got, want) {
		t.Errorf("HostUnitsToMask = %v, want %v", got, want)
	}
}

func TestExecLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"/usr/bin/consul", "agent", "-node", "lab-node1"}, `/usr/bin/consul agent -node lab-node1`},
		{[]string{"/usr/bin/consul", "-client", "127.0.0.1 172.31.0.11"}, `/usr/bin/consul -client "127.0.0.1 172.31.0.11"`},
		{[]string{"/bin/x", "100%", "$HOME", `a"b\c`, ""}, `/bin/x "100%%" "$$HOME" "a\"b\\c" ""`},
	} {
		if got := ExecLine(tc.args); got != tc.want {
			t.Errorf("ExecLine(%q) = %s, want %s", tc.args, got, tc.want)
		}
	}
	if got, want := EnvLine("PATH", "/a:/b $x 5%"), `"PATH=/a:/b $x 5%%"`; got != want {
		t.Errorf("EnvLine = %s, want %s", got, want)
	}
}
