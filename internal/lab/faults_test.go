package lab

import (
	"context"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func faultPlan(t *testing.T, cfg Config) *plan {
	t.Helper()
	p, err := newPlan(t.TempDir(), cfg.withDefaults(), netip.MustParsePrefix("172.31.7.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDaemonOf: each component names its daemon; control exists on
// managers only, agent and control not in a lab without agents or with the
// stack's; an unknown component is refused, naming it.
func TestDaemonOf(t *testing.T) {
	p := faultPlan(t, Config{Name: "f", Nodes: 2, UnderlayBin: "/usr/bin/underlay"})
	for _, c := range []struct {
		node      int
		component string
		key       string
		err       string
	}{
		{0, ComponentAgent, "underlay agent", ""},
		{1, ComponentAgent, "underlay agent", ""},
		{0, ComponentDockerd, "dockerd --host", ""},
		{1, ComponentConsul, "consul agent", ""},
		{0, ComponentControl, "underlay control", ""},
		{1, ComponentControl, "", "node2 is a worker"},
		{0, "containerd", "", `component "containerd": want one of agent, dockerd, consul, control`},
	} {
		d, err := p.daemonOf(&p.nodes[c.node], c.component)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s on node%d: error %v, want %q", c.component, c.node+1, err, c.err)
			}
			continue
		}
		if err != nil || d.key != c.key {
			t.Errorf("%s on node%d: %q, %v; want %q", c.component, c.node+1, d.key, err, c.key)
		}
	}
	wrapper, _ := p.daemonOf(&p.nodes[0], ComponentControl)
	if f := wrapperPIDFile(wrapper); f != "control.wrapper.pid" {
		t.Errorf("control's wrapper pid file %q", f)
	}
	stack := faultPlan(t, Config{Name: "s", Nodes: 1, UnderlayBin: "/usr/bin/underlay", Agents: AgentsStack})
	if _, err := stack.daemonOf(&stack.nodes[0], ComponentAgent); err == nil || !strings.Contains(err.Error(), "stack") {
		t.Errorf("agent of a stack lab: %v, want an error naming the stack", err)
	}
	none := faultPlan(t, Config{Name: "n", Nodes: 1, NoAgent: true})
	if _, err := none.daemonOf(&none.nodes[0], ComponentControl); err == nil {
		t.Error("control of a lab without agents: no error")
	}
	if _, err := none.daemonOf(&none.nodes[0], ComponentDockerd); err != nil {
		t.Errorf("dockerd of a lab without agents: %v", err)
	}
}

// TestIsWrapper: only the nsenter the lab started for that daemon of that
// node is taken for its wrapper: not another node's, not another daemon's,
// not a command that merely names it.
func TestIsWrapper(t *testing.T) {
	dir := "/var/lib/underlay/lab/f/node1"
	ns := func(d string, args ...string) []string {
		return append([]string{"nsenter", "--target", "42", "--net", "--mount", "--uts", "--pid", "--wd=" + d, "--"}, args...)
	}
	for _, c := range []struct {
		name string
		args []string
		key  string
		want bool
	}{
		{"agent", ns(dir, "/usr/bin/underlay", "agent", "--listen", "x"), "underlay agent", true},
		{"dockerd", ns(dir, "dockerd", "--host", "unix://x"), "dockerd --host", true},
		{"other daemon", ns(dir, "consul", "agent"), "underlay agent", false},
		{"other node", ns(dir+"0", "/usr/bin/underlay", "agent"), "underlay agent", false},
		{"no wd", []string{"nsenter", "--target", "42", "--", "/usr/bin/underlay", "agent"}, "underlay agent", false},
		{"not nsenter", []string{"bash", "-c", "--wd=" + dir, "--", "underlay", "agent"}, "underlay agent", false},
		{"empty", nil, "underlay agent", false},
	} {
		if got := isWrapper(c.args, dir, c.key); got != c.want {
			t.Errorf("%s: isWrapper = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestParsePID(t *testing.T) {
	if pid, err := parsePID([]byte("1234\n")); pid != 1234 || err != nil {
		t.Errorf("parsePID(1234) = %d, %v", pid, err)
	}
	for _, bad := range []string{"", "x", "1", "0", "-5"} {
		if _, err := parsePID([]byte(bad)); err == nil {
			t.Errorf("parsePID(%q): no error", bad)
		}
	}
}

// TestChildIn: a daemon is its wrapper's child in the node's PID
// namespace; a child elsewhere (nsenter's own helper) is not it.
func TestChildIn(t *testing.T) {
	procs := map[int]procLink{
		100: {ns: "root", ppid: 1},   // the wrapper
		101: {ns: "root", ppid: 100}, // not in the node
		205: {ns: "node", ppid: 100}, // the daemon
		206: {ns: "node", ppid: 205}, // its child
		300: {ns: "node", ppid: 999},
	}
	if got := childIn(procs, 100, "node"); got != 205 {
		t.Errorf("childIn = %d, want 205", got)
	}
	if got := childIn(procs, 100, "other"); got != 0 {
		t.Errorf("childIn in another namespace = %d, want 0", got)
	}
}

// TestHolderOfItsOwnNamespaces: a process merely named like node1's holder
// (any user can set its argv[0]), in this process's PID and network
// namespaces, is not taken for the holder. Taken, node1's processes
// would be every process of the machine (Freeze stops them all, Start
// kills the machine's Consul agent) and node1's eth0 the machine's.
func TestHolderOfItsOwnNamespaces(t *testing.T) {
	root := t.TempDir()
	cfg := Config{Name: "fake", Nodes: 1, NoAgent: true}.withDefaults()
	if err := writeRecord(root, &record{Config: cfg, Management: netip.MustParsePrefix("172.31.7.0/24")}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "fake", "node1")
	cmd := exec.Command("bash", "-c", "read -t 60 _", dir)
	cmd.Args[0] = holderName
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil { // returns once bash runs, named
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	// Start returns once the exec began; the kernel sets the new command
	// line a moment later (/proc/PID/cmdline reads empty until then).
	var got []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		got = cmdline(cmd.Process.Pid)
		if len(got) > 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(got) == 0 || got[0] != holderName || got[len(got)-1] != dir {
		t.Fatalf("impostor's command line %q", got)
	}
	if pid := holderPID(dir); pid != 0 {
		// Freeze would now stop every process of the machine: stop here.
		t.Fatalf("holderPID = %d (the impostor is %d): a process in this process's namespaces is taken for node1's holder", pid, cmd.Process.Pid)
	}
	labs := At(root)
	if n, err := labs.Freeze(context.Background(), "fake", "node1"); err == nil || !strings.Contains(err.Error(), "stopped") {
		t.Errorf("Freeze = %d, %v; want node1 stopped", n, err)
	}
	if pid, err := labs.PID("fake", "node1", ComponentConsul); err == nil || !strings.Contains(err.Error(), "stopped") {
		t.Errorf("PID of consul = %d, %v; want node1 stopped", pid, err)
	}
}

// TestKillIfStill: a VM's QEMU found before a long wait is killed after it
// only if it is still the VM's: its PID may since be another process's.
// Before, EnsureNode killed the PID it had found minutes earlier.
func TestKillIfStill(t *testing.T) {
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })
	pid := other.Process.Pid
	killIfStill(pid, func() int { return 0 }, time.Second) // the VM's QEMU is gone
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("process %d, no longer the VM's, was killed: %v", pid, err)
	}
	done := make(chan error, 1)
	go func() { done <- other.Wait() }()
	killIfStill(pid, func() int { return pid }, 5*time.Second)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the VM's own process was not killed")
	}
}
